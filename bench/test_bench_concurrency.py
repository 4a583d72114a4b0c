"""Independent calls from several Python threads: the kernels release the GIL, so N forward +
backward calls with n_threads=1 each should take about 1/k of the time on k threads (up to the
number of cores). One benchmark group per shape: the N calls one after another, and the same N
calls shared among 2 Python threads (a ThreadPoolExecutor made once, outside the timing).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/test_bench_concurrency.py \\
        --benchmark-group-by=group

pytest-benchmark times one candidate after the other; for the figure of record run this file as
a script, which interleaves the two and prints medians and the speed-up:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/test_bench_concurrency.py
"""
import argparse
import statistics
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rnnfast
from rnnfast.benchmarking import paired_ratio, time_interleaved

N_CALLS = 8
# A long thin sequence (micro-kernel, GEMV-like steps), a mid-sized batch, and a batch whose
# steps go to BLAS; float32, each call about 1-20 ms on one core.
SHAPES = [(1000, 1, 16, 64), (100, 8, 64, 64), (100, 32, 128, 128)]


def make_calls(shape, n_calls, dtype=np.float32):
    """n_calls separate problems of one shape (the weights shared, read-only)."""
    T, B, D, H = shape
    rng = np.random.default_rng(0)
    W_xh = (rng.standard_normal((H, D)) / np.sqrt(D)).astype(dtype)
    W_hh = (0.9 * rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    b = np.zeros(H, dtype)
    for array in (W_xh, W_hh, b):
        array.flags.writeable = False
    return [(rng.standard_normal((T, B, D)).astype(dtype), W_xh, W_hh, b,
             rng.standard_normal((T, B, H)).astype(dtype)) for _ in range(n_calls)]


def one_call(problem):
    x, W_xh, W_hh, b, dout = problem
    _, cache = rnnfast.rnn_forward(x, None, W_xh, W_hh, b, n_threads=1)
    return rnnfast.rnn_backward(dout, cache, n_threads=1)


def sequential(calls):
    for problem in calls:
        one_call(problem)


def threaded(pool, calls):
    list(pool.map(one_call, calls))


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


@pytest.mark.parametrize("mode", ["sequential", "2 threads"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}_B{}_D{}_H{}".format(*s))
def test_independent_calls(benchmark, pool, shape, mode):
    calls = make_calls(shape, N_CALLS)
    run = (lambda: sequential(calls)) if mode == "sequential" else (lambda: threaded(pool, calls))
    run()  # warm-up: first-call costs, the pool's threads started
    benchmark.group = f"{N_CALLS} x fwd+bwd, n_threads=1, T,B,D,H={','.join(map(str, shape))}"
    benchmark.extra_info.update(mode=mode, shape=list(shape), n_calls=N_CALLS)
    benchmark(run)


def main():
    """Interleaved rounds (sequential, then threaded, then sequential...): medians and the
    speed-up per shape."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=N_CALLS)
    args = parser.parse_args()
    with ThreadPoolExecutor(max_workers=2) as executor:
        print(f"{args.calls} independent forward+backward calls, float32, n_threads=1 each; "
              f"medians of {args.rounds} interleaved rounds")
        print(f"{'T,B,D,H':<16} {'sequential':>12} {'2 threads':>12} {'speed-up':>9}")
        for shape in SHAPES:
            calls = make_calls(shape, args.calls)
            candidates = {"sequential": lambda: sequential(calls),
                          "threaded": lambda: threaded(executor, calls)}
            times, _ = time_interleaved(candidates, budget_s=0.0, min_windows=args.rounds,
                                        max_windows=args.rounds, window_s=0.0)
            seq, par = (statistics.median(times[name]) for name in ("sequential", "threaded"))
            ratios = paired_ratio(times["sequential"], times["threaded"])
            print(f"{','.join(map(str, shape)):<16} {seq * 1e3:>9.2f} ms {par * 1e3:>9.2f} ms "
                  f"{ratios:>8.2f}x")


if __name__ == "__main__":
    main()
