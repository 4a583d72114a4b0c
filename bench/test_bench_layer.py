"""What the layer costs on top of the functional passes: ``rnnfast.RNN`` (one layer) forward +
backward against ``rnn_forward`` + ``rnn_backward`` on the same weights and arrays. One
benchmark group per dtype and shape:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/test_bench_layer.py \\
        --benchmark-group-by=group

pytest-benchmark times one candidate after the other; for the figure of record run this file as
a script, which pins the process to one core, interleaves the two (one window of each in turn)
and prints medians and the ratio layer / functional, of wall time and of the thread's CPU time
(which a machine shared with other processes disturbs less: time spent descheduled is not
counted):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/test_bench_layer.py
"""
import argparse
import os
import statistics
import time

import numpy as np
import pytest

import rnnfast
from rnnfast.benchmarking import paired_ratio, pinned_to_one_core, time_interleaved

# The fixed cost of a call, a short sequence of a small model (issue 11's yardstick), a long
# thin one, and a mid-sized batch.
SHAPES = [(1, 1, 8, 8), (25, 1, 65, 100), (100, 1, 32, 32), (100, 8, 64, 64)]
DTYPES = [np.float32, np.float64]


def make_candidates(shape, dtype):
    """{"layer": ..., "functional": ...}: zero-argument forward + backward calls, one layer,
    the same weights, inputs and upstream gradient."""
    T, B, D, H = shape
    rng = np.random.default_rng(0)
    layer = rnnfast.RNN(D, H, dtype=dtype, seed=0)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    dout = rng.standard_normal((T, B, H)).astype(dtype)
    W_xh, W_hh, b = layer.direction_weights(0)

    def through_the_layer():
        layer.forward(x)
        layer.backward(dout)

    def functional():
        _, cache = rnnfast.rnn_forward(x, None, W_xh, W_hh, b)
        rnnfast.rnn_backward(dout, cache)

    return {"layer": through_the_layer, "functional": functional}


@pytest.mark.parametrize("candidate", ["layer", "functional"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}_B{}_D{}_H{}".format(*s))
def test_layer_against_functional(benchmark, shape, dtype, candidate):
    run = make_candidates(shape, dtype)[candidate]
    run()
    benchmark.group = (f"RNN layer vs functional, fwd+bwd, {np.dtype(dtype).name}, "
                       f"T,B,D,H={','.join(map(str, shape))}")
    benchmark.extra_info.update(candidate=candidate, shape=list(shape))
    benchmark(run)


def cpu_time_windows(candidates, rounds, window_s=0.01):
    """Seconds of this thread's CPU time per call, one figure per window, interleaved."""
    calls = {}
    for name, run in candidates.items():
        start = time.thread_time()
        run()
        calls[name] = max(1, int(window_s / max(time.thread_time() - start, 1e-7)))
    samples = {name: [] for name in candidates}
    for round_ in range(rounds):
        names = list(candidates)[round_ % 2:] + list(candidates)[:round_ % 2]
        for name in names:
            start = time.thread_time()
            for _ in range(calls[name]):
                candidates[name]()
            samples[name].append((time.thread_time() - start) / calls[name])
    return samples


def main():
    """Interleaved windows on one pinned core: medians and the ratio layer / functional."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1), pinned_to_one_core() as core:
        print(f"RNN (one layer) forward + backward against rnn_forward + rnn_backward, one "
              f"core (core {core}); medians of {args.rounds} interleaved windows; load "
              f"average {os.getloadavg()[0]:.2f}")
        print(f"{'':<23} {'wall time':^30}  {'CPU time':^30}")
        print(f"{'dtype':<8} {'T,B,D,H':<14} " + f"{'layer':>10} {'functional':>11} "
              f"{'ratio':>6}  " * 2)
        for dtype in DTYPES:
            for shape in SHAPES:
                candidates = make_candidates(shape, dtype)
                walls, _ = time_interleaved(candidates, budget_s=0.0, min_windows=args.rounds,
                                            max_windows=args.rounds)
                cpus = cpu_time_windows(candidates, args.rounds)
                line = f"{np.dtype(dtype).name:<8} {','.join(map(str, shape)):<14} "
                for times in (walls, cpus):
                    layer, functional = (statistics.median(times[name]) * 1e6
                                         for name in ("layer", "functional"))
                    ratio = paired_ratio(times["layer"], times["functional"])
                    line += f"{layer:>7.1f} us {functional:>8.1f} us {ratio:>6.2f}  "
                print(line.rstrip())


if __name__ == "__main__":
    main()
