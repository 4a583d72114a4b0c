"""What a leak costs: a leaky forward + backward against the plain RNN's at the same shape, and
the forward pass without gradient storage (need_grad=False, what reservoirs run) against the
plain forward. One benchmark group per shape and dtype, on `rnnfast bench`'s shapes:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/test_bench_leak.py \\
        --benchmark-group-by=group

pytest-benchmark times one candidate after the other; for the figure of record run this file as
a script, which pins the process to one core, interleaves the candidates (`rnnfast bench`'s
timer) and prints the ratios:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/test_bench_leak.py
"""
import argparse
import os
import statistics

import numpy as np
import pytest

import rnnfast
from rnnfast.benchmarking import DTYPES, SHAPES, make_problem, time_interleaved

LEAK = 0.3  # any value in (0, 1) runs the same code; leak=1 runs the plain kernels


def runners(shape, dtype, n_threads=1):
    """The candidates: zero-argument calls, by name."""
    p = make_problem(shape, dtype)
    H = shape[3]
    per_unit = np.random.default_rng(1).uniform(0.05, 1, H).astype(dtype)
    args = (p.x, p.h0, p.W_xh, p.W_hh, p.b)

    def forward_backward(leak):
        def run():
            _, cache = rnnfast.rnn_forward(*args, leak=leak, n_threads=n_threads)
            return rnnfast.rnn_backward(p.G, cache, n_threads=n_threads)
        return run

    def forward(leak, need_grad):
        return lambda: rnnfast.rnn_forward(*args, leak=leak, need_grad=need_grad,
                                           n_threads=n_threads)

    return {"fwd+bwd plain": forward_backward(1.0), "fwd+bwd leaky": forward_backward(LEAK),
            "fwd+bwd per-unit": forward_backward(per_unit),
            "fwd plain": forward(1.0, True), "fwd leaky": forward(LEAK, True),
            "fwd leaky no grad": forward(LEAK, False)}


@pytest.mark.parametrize("candidate", list(runners((1, 1, 1, 1), "float64")))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}_B{}_D{}_H{}".format(*s))
def test_leak_cost(benchmark, bench_threads, shape, dtype, candidate):
    run = runners(shape, dtype, bench_threads)[candidate]
    run()  # warm-up
    benchmark.group = f"leak T,B,D,H={','.join(map(str, shape))} {dtype}"
    benchmark.extra_info.update(candidate=candidate, shape=list(shape), dtype=dtype)
    benchmark(run)


# The ratios the script prints: (name, numerator, denominator).
RATIOS = [("leaky/plain fwd+bwd", "fwd+bwd leaky", "fwd+bwd plain"),
          ("per-unit/plain fwd+bwd", "fwd+bwd per-unit", "fwd+bwd plain"),
          ("leaky/plain fwd", "fwd leaky", "fwd plain"),
          ("no-grad/plain fwd", "fwd leaky no grad", "fwd plain")]


def main():
    """Interleaved rounds of short windows on one core: per shape and dtype, the plain forward
    + backward's best window, and each ratio of a leaky candidate to its plain one, as the
    ratio of their best windows and [the median of the per-round ratios]. Short windows over
    many rounds make both figures robust to other processes on a shared machine."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per shape and dtype")
    parser.add_argument("--window", type=float, default=0.002, help="seconds per window")
    parser.add_argument("--core", type=int, default=1, help="the core to pin the process to")
    args = parser.parse_args()
    import threadpoolctl

    os.sched_setaffinity(0, {args.core})
    print(f"one core (#{args.core}); leak {LEAK}, or per unit; best-window ratio [median ratio]")
    print(f"{'T,B,D,H':<16} {'dtype':<8} {'plain fwd+bwd':>13}  "
          + "  ".join(f"{name:>24}" for name, _, _ in RATIOS))
    with threadpoolctl.threadpool_limits(limits=1):
        for shape in SHAPES:
            for dtype in DTYPES:
                candidates = runners(shape, dtype)
                for run in candidates.values():
                    run()  # warm-up
                samples, _ = time_interleaved(candidates, args.budget, min_windows=5,
                                              window_s=args.window)
                best = {name: min(times) for name, times in samples.items()}
                cells = []
                for _, top, bottom in RATIOS:
                    per_round = statistics.median(a / b for a, b in zip(samples[top],
                                                                        samples[bottom]))
                    cells.append(f"{best[top] / best[bottom]:.3f} [{per_round:.3f}]")
                print(f"{','.join(map(str, shape)):<16} {dtype:<8} "
                      f"{best['fwd+bwd plain'] * 1e3:>10.3f} ms  "
                      + "  ".join(f"{cell:>24}" for cell in cells), flush=True)


if __name__ == "__main__":
    main()
