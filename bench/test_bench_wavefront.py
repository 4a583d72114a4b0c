"""The wavefront: a stacked 2-layer RNN at small batches, forward + backward, on one thread
(``n_threads=1``: the sequential path) and on two (the layers side by side,
rnnfast.nn.wavefront, forced: the adaptive choice off). One benchmark group per shape:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/test_bench_wavefront.py \\
        --benchmark-group-by=group

pytest-benchmark times one candidate after the other; for the figure of record run this file as
a script, which interleaves them (one call of each in turn) and prints medians, the speed-up,
the machine's load average (two-thread figures need the second core free) and, as the ceiling
of the moment, the speed-up of two independent one-layer calls run side by side on two threads
over the same two one after the other (``--model`` adds what two free cores would give, from
the per-chunk CPU times: see two_core_model):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/test_bench_wavefront.py --model
"""
import argparse
import math
import os
import statistics
import time

import numpy as np
import pytest

import rnnfast
from rnnfast.benchmarking import paired_ratio, time_interleaved
from rnnfast.nn import rnn_calls, wavefront

# (T, B, D, H), two layers: long thin sequences and small batches, each pass 5-100 ms.
SHAPES = [(500, 1, 256, 256), (4000, 1, 64, 64), (1000, 4, 128, 128), (1000, 8, 128, 128),
          (200, 8, 256, 256)]
MODES = {"one thread": 1, "two threads": 2}


def make_call(shape, n_threads, dtype=np.float32, num_layers=2):
    """A zero-argument forward + backward of a stacked RNN on n_threads."""
    T, B, D, H = shape
    rng = np.random.default_rng(0)
    rnn = rnnfast.RNN(D, H, num_layers=num_layers, dtype=dtype, seed=0, n_threads=n_threads)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    dout = rng.standard_normal((T, B, H)).astype(dtype)

    def call():
        rnn.forward(x)
        rnn.backward(dout)

    return call


def forced(call):
    """call with the wavefront forced (the adaptive choice off) during it."""
    def on_the_wavefront():
        wavefront.ADAPT = False
        try:
            call()
        finally:
            wavefront.ADAPT = True

    return on_the_wavefront


def independent_pair(shape, dtype=np.float32):
    """(one after the other, side by side): two independent one-layer forward + backward
    calls of the shape, n_threads=1 each, on one thread and on two: the speed-up this machine
    gives two threads at that moment, the ceiling of the wavefront's."""
    calls = [make_call(shape, 1, dtype, num_layers=1) for _ in range(2)]
    pool = wavefront._workers(1)

    def one_after_the_other():
        for call in calls:
            call()

    def side_by_side():
        other = pool.submit(calls[1])
        calls[0]()
        other.result()

    return one_after_the_other, side_by_side


def two_core_model(shape, dtype=np.float32, repeats=5):
    """(sequential CPU seconds, the wavefront's makespan on two free cores): every chunk's pass
    of the forced wavefront timed in its thread's CPU time, then scheduled as the wavefront
    runs them (layer l on thread l; forward (l, k) after (l - 1, k) and (l, k - 1), backward
    the same in reverse) without the hand-overs: what two free cores would give, from what a
    shared machine can measure. Best of repeats. Two layers."""
    T, B, D, H = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    dout = rng.standard_normal((T, B, H)).astype(dtype)
    sequential = rnnfast.RNN(D, H, num_layers=2, dtype=dtype, seed=0, n_threads=1)
    rnn = rnnfast.RNN(D, H, num_layers=2, dtype=dtype, seed=0, n_threads=2)
    seconds = {}
    forward_pass, backward_pass = rnn._forward_pass, rnn._backward_pass

    def timed(pass_, key_of):
        def run(*args):
            start = time.thread_time()
            result = pass_(*args)
            seconds[key_of(args)] = time.thread_time() - start
            return result
        return run

    chunk_of = {}
    rnn._forward_pass = timed(forward_pass, lambda a: ("forward", a[3], chunk_of.setdefault(
        (a[3], id(a[0])), len([k for k in chunk_of if k[0] == a[3]]))))
    rnn._backward_pass = timed(backward_pass, lambda a: ("backward", id(a[1])))
    best_sequential = best_makespan = math.inf
    wavefront.ADAPT = False
    try:
        for _ in range(repeats):
            start = time.thread_time()
            sequential.forward(x)
            sequential.backward(dout)
            best_sequential = min(best_sequential, time.thread_time() - start)
            seconds.clear()
            chunk_of.clear()
            rnn.forward(x)
            caches = rnn._saved.caches
            rnn.backward(dout)
            K = len(caches[0])
            forward = [[seconds["forward", layer, k] for k in range(K)] for layer in (0, 1)]
            backward = [[seconds["backward", id(caches[layer][k])] for k in range(K)]
                        for layer in (0, 1)]
            done = [0.0, 0.0]
            for k in range(K):
                done[0] += forward[0][k]
                done[1] = max(done[1], done[0]) + forward[1][k]
            makespan, done = done[1], [0.0, 0.0]
            for k in reversed(range(K)):
                done[1] += backward[1][k]
                done[0] = max(done[0], done[1]) + backward[0][k]
            best_makespan = min(best_makespan, makespan + done[0])
    finally:
        wavefront.ADAPT = True
    return best_sequential, best_makespan


def chunks(shape, num_layers=2):
    """How many chunks the wavefront cuts the shape into on two threads (None: it does not
    run there)."""
    T, B, D, H = shape
    plan = wavefront.plan(rnnfast.RNN(D, H, num_layers=num_layers, n_threads=2), T, B,
                          rnn_calls.Steps(T, B, None))
    return None if plan is None else len(plan.bounds) - 1


@pytest.fixture
def forced_wavefront(monkeypatch):
    monkeypatch.setattr(wavefront, "ADAPT", False)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}_B{}_D{}_H{}".format(*s))
def test_stacked_layers(benchmark, forced_wavefront, shape, mode):
    call = make_call(shape, MODES[mode])
    call()
    benchmark.group = f"2 layers, fwd+bwd, float32, T,B,D,H={','.join(map(str, shape))}"
    benchmark.extra_info.update(mode=mode, shape=list(shape), chunks=chunks(shape))
    benchmark(call)


def main():
    """Interleaved calls: medians, the speed-up of two threads over one, the load."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--model", action="store_true",
                        help="also the two-core model from per-chunk CPU times (2 layers)")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    dtype = np.dtype(args.dtype)
    with threadpool_limits(1):
        print(f"{args.layers}-layer RNN forward + backward, {dtype.name}: n_threads=1 (the "
              f"sequential path) against 2 (the wavefront forced, and as the layer chooses); "
              f"medians of {args.rounds} interleaved calls; load average before: "
              f"{os.getloadavg()[0]:.2f}")
        print(f"{'T,B,D,H':<16} {'chunks':>6} {'one thread':>11} {'two threads':>12} "
              f"{'speed-up':>9} {'chosen':>7} {'ceiling':>8}")
        for shape in SHAPES:
            candidates = {"one thread": make_call(shape, 1, dtype, args.layers),
                          "two threads": forced(make_call(shape, 2, dtype, args.layers)),
                          "chosen": make_call(shape, 2, dtype, args.layers)}
            candidates["pair, one thread"], candidates["pair, two threads"] = (
                independent_pair(shape, dtype))
            times, _ = time_interleaved(candidates, budget_s=0.0, min_windows=args.rounds,
                                        max_windows=args.rounds, window_s=0.0)
            one, two = (statistics.median(times[mode]) * 1e3 for mode in MODES)
            speedup = paired_ratio(times["one thread"], times["two threads"])
            chosen = paired_ratio(times["one thread"], times["chosen"])
            ceiling = paired_ratio(times["pair, one thread"], times["pair, two threads"])
            print(f"{','.join(map(str, shape)):<16} {chunks(shape, args.layers) or '-':>6} "
                  f"{one:>8.2f} ms {two:>9.2f} ms {speedup:>8.2f}x {chosen:>6.2f}x "
                  f"{ceiling:>7.2f}x")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        if args.model:
            print("Two free cores, modelled: the forced wavefront's chunks timed in CPU time and "
                  "scheduled without hand-overs, against the sequential pass's CPU time")
            for shape in [shape for shape in SHAPES if chunks(shape, args.layers)]:
                sequential, makespan = two_core_model(shape, dtype)
                print(f"{','.join(map(str, shape)):<16} {sequential * 1e3:>8.2f} ms "
                      f"{makespan * 1e3:>9.2f} ms {sequential / makespan:>8.2f}x")


if __name__ == "__main__":
    main()
