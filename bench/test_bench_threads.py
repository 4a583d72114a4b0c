"""Two threads against one, right after other thread pools have run: a forward + backward pass on
n_threads=2 must never be much slower than on n_threads=1, whatever ran just before it.

Each round runs, for each case, the disturbance and then a pass on one thread, the disturbance
again and then a pass on two (in alternating order); the cases:

    quiet    nothing before the pass
    numpy    a NumPy GEMM on two BLAS threads (OpenBLAS's workers then spin for a while)
    torch    a torch matmul on two threads (its OpenMP workers spin too)
    jax      a jitted JAX call (on its own thread pool)
    busy     another process spinning on one of the cores, all the time

The figure is the two-thread / one-thread time ratio per shape and case (the median of the
per-round ratios; above 1 two threads are slower). Beside it, the same ratio for one thread
against one thread again (a third pass in each round): the noise floor of the machine at that
moment. Run on a machine with at least 2 cores, not
pinned (the point is the second core):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/test_bench_threads.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/test_bench_threads.py --quick

or, for one pytest-benchmark group per shape and case (two threads are needed):

    RNNFAST_BENCH_THREADS=2 env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        pytest bench/test_bench_threads.py --benchmark-group-by=group
"""
import argparse
import multiprocessing
import os
import statistics
import time

import numpy as np
import pytest

import rnnfast
from rnnfast.benchmarking import flops, import_torch, machine_info

# B from 1 to 256 at several H; T so that a pass is a few milliseconds on one core.
BATCHES = (1, 4, 16, 32, 64, 128, 256)
HIDDEN = (64, 128, 256, 512)
QUICK_BATCHES = (1, 16, 64, 256)
QUICK_HIDDEN = (128, 256)
CASES = ("quiet", "numpy", "torch", "jax", "busy")
PASS_MULTIPLY_ADDS = 2e7  # T * B * H * (D + H) of one pass, about


def grid(batches=BATCHES, hidden=HIDDEN):
    """(T, B, D, H) shapes with D = H and T from 5 to 2000."""
    return [(int(min(2000, max(5, PASS_MULTIPLY_ADDS // (B * H * 2 * H)))), B, H, H)
            for H in hidden for B in batches]


def make_pass(shape, dtype=np.float32):
    """A zero-argument forward + backward pass on n_threads threads, for each count."""
    T, B, D, H = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    W_xh = (rng.standard_normal((H, D)) / np.sqrt(D)).astype(dtype)
    W_hh = (0.9 * rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    b = np.zeros(H, dtype)
    dout = rng.standard_normal((T, B, H)).astype(dtype)

    def run(n_threads):
        _, cache = rnnfast.rnn_forward(x, None, W_xh, W_hh, b, n_threads=n_threads)
        rnnfast.rnn_backward(dout, cache, n_threads=n_threads)

    return run


def _spin_forever():
    while True:
        pass


class Disturbances:
    """The cases' disturbances as zero-argument calls (None where nothing runs before the
    pass); "busy" starts its spinning process on entry and stops it on exit (see busy())."""

    def __init__(self):
        a = np.random.default_rng(1).standard_normal((384, 384)).astype(np.float32)
        self.calls = {"quiet": None, "busy": None}
        self.calls["numpy"] = lambda: a @ a  # NumPy's BLAS on its default threads (2 here)
        torch = import_torch()
        if torch is not None:
            torch.set_num_threads(2)
            t = torch.from_numpy(a)
            self.calls["torch"] = lambda: torch.mm(t, t)
        try:
            import jax
            import jax.numpy as jnp

            jitted = jax.jit(lambda m: jnp.tanh(m @ m))
            j = jnp.asarray(a)
            jitted(j).block_until_ready()
            self.calls["jax"] = lambda: jitted(j).block_until_ready()
        except ImportError:
            pass

    @property
    def cases(self):
        return [case for case in CASES if case in self.calls]


class busy:
    """Within the block, another process spins on the last core of this one's."""

    def __enter__(self):
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(target=_spin_forever, daemon=True)
        self.process.start()
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(self.process.pid, {cores[-1]})
        time.sleep(0.05)
        return self

    def __exit__(self, *exc_info):
        self.process.terminate()
        self.process.join()
        return False


def _timed(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure_case(run, before, rounds):
    """Seconds per pass on one thread, on two, and on one again (the control), each right
    after ``before`` (or nothing), interleaved in a rotating order; returns the three lists."""
    candidates = ((1, "one"), (2, "two"), (1, "control"))
    times = {name: [] for _, name in candidates}
    for round_ in range(rounds):
        for i in range(len(candidates)):
            n, name = candidates[(i + round_) % len(candidates)]
            if before is not None:
                before()
            times[name].append(_timed(lambda: run(n)))
    return times["one"], times["two"], times["control"]


def measure(shapes, rounds, cases=None, progress=None):
    """{(shape, case): (median seconds on 1 thread, on 2, median per-round ratio 2 / 1, the
    same ratio of the control: 1 / 1)}."""
    disturbances = Disturbances()
    results = {}
    for case in cases or disturbances.cases:
        before = disturbances.calls[case]
        with (busy() if case == "busy" else _nothing()):
            for shape in shapes:
                run = make_pass(shape)
                run(1), run(2)  # warm-up: first-call costs, the team started
                one, two, control = measure_case(run, before, rounds)
                results[shape, case] = (statistics.median(one), statistics.median(two),
                                        statistics.median(b / a for a, b in zip(one, two)),
                                        statistics.median(c / a for a, c in zip(one, control)))
                if progress is not None:
                    progress(shape, case, results[shape, case])
    return results


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


@pytest.fixture(scope="module")
def disturbances(bench_threads):
    if bench_threads < 2 or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("two threads against one needs RNNFAST_BENCH_THREADS=2 and 2 cores")
    return Disturbances()


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("case", ["quiet", "numpy", "torch", "jax"])
@pytest.mark.parametrize("shape", grid(QUICK_BATCHES, QUICK_HIDDEN),
                         ids=lambda s: "T{}_B{}_D{}_H{}".format(*s))
def test_pass_after_other_pools(benchmark, disturbances, shape, case, n_threads):
    if case not in disturbances.calls:
        pytest.skip(f"{case} is not installed")
    run, before = make_pass(shape), disturbances.calls[case]
    run(n_threads)

    def after_disturbance():
        if before is not None:
            before()
        run(n_threads)

    benchmark.group = f"fwd+bwd after {case}, T,B,D,H={','.join(map(str, shape))}"
    benchmark.extra_info.update(shape=list(shape), case=case, n_threads=n_threads)
    benchmark(after_disturbance)


def main():
    """Two threads / one per shape and case; medians of interleaved rounds."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=None)
    parser.add_argument("--batches", nargs="+", type=int, help="batch sizes (default: all)")
    parser.add_argument("--hidden", nargs="+", type=int, help="hidden sizes (default: all)")
    args = parser.parse_args()
    batches, hidden = (QUICK_BATCHES, QUICK_HIDDEN) if args.quick else (BATCHES, HIDDEN)
    shapes = grid(args.batches or batches, args.hidden or hidden)
    info = machine_info()
    print(f"machine: {info.get('cpu', '?')}; load {os.getloadavg()}")
    print(f"forward + backward, float32, medians of {args.rounds} interleaved rounds; "
          "ratio = 2 threads / 1 thread (median per round)")
    print(f"{'T,B,D,H':<16} {'case':<6} {'1 thread':>10} {'2 threads':>10} {'2 / 1':>6} "
          f"{'1 / 1':>6} {'GFLOP/s 2':>9}")

    def progress(shape, case, result):
        one, two, ratio, control = result
        gflops = flops(shape, "forward+backward") / two / 1e9
        print(f"{','.join(map(str, shape)):<16} {case:<6} {one * 1e3:>7.2f} ms "
              f"{two * 1e3:>7.2f} ms {ratio:>6.3f} {control:>6.3f} {gflops:>9.1f}", flush=True)

    results = measure(shapes, args.rounds, args.cases, progress)
    worst = max(results.items(), key=lambda item: item[1][2])
    noisiest = max(results.items(), key=lambda item: abs(item[1][3] - 1))
    print(f"worst 2 / 1: {worst[1][2]:.3f} at {worst[0][0]} after {worst[0][1]}; noisiest "
          f"1 / 1: {noisiest[1][3]:.3f} at {noisiest[0][0]} after {noisiest[0][1]}; "
          f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
