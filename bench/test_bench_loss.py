"""The softmax cross-entropy of a token model (rnnfast.softmax_cross_entropy): rnnfast's kernel
against the NumPy reference and torch's cross-entropy forward + backward, at the logits of
`rnnfast train`'s step (64 x 32 positions) over 163 and 10,000 classes. One group per shape
and dtype:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/test_bench_loss.py \\
        --benchmark-group-by=group

Run as a script, it times the candidates round-robin (one call each in turn, hot: 20 calls per
window, and interleaved: one) and prints medians and the kernel's speed-ups, one thread with
the process pinned to one core, then the kernel on two threads against itself on one:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/test_bench_loss.py
"""
import os

import numpy as np
import pytest

import rnnfast
from rnnfast.benchmarking import import_torch, paired_ratio, pinned_to_one_core, time_interleaved

SHAPES = [(64, 32, 163), (64, 32, 10_000)]
DTYPES = ("float32", "float64")


def _problem(T, B, V, dtype):
    rng = np.random.default_rng(0)
    return (3 * rng.standard_normal((T, B, V))).astype(dtype), rng.integers(0, V, (T, B))


def _candidates(T, B, V, dtype, threads=1):
    logits, targets = _problem(T, B, V, dtype)
    runners = {
        "rnnfast": lambda: rnnfast.softmax_cross_entropy(logits, targets, n_threads=threads),
        "numpy": lambda: rnnfast.softmax_cross_entropy(logits, targets, backend="numpy")}
    torch = import_torch()
    if torch is not None:
        weights = torch.tensor(logits.reshape(T * B, V), requires_grad=True)
        labels = torch.tensor(targets.reshape(T * B))

        def torch_loss():
            weights.grad = None
            torch.nn.functional.cross_entropy(weights, labels).backward()
            return weights.grad

        runners["torch"] = torch_loss
    return runners


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}V{}".format(*s))
@pytest.mark.parametrize("impl", ["rnnfast", "numpy", "torch"])
def test_softmax_cross_entropy(benchmark, bench_threads, shape, dtype, impl):
    runners = _candidates(*shape, dtype, bench_threads)
    if impl not in runners:
        pytest.skip("PyTorch is not installed")
    benchmark.group = "softmax cross-entropy T{}B{}V{} {}".format(*shape, dtype)
    benchmark(runners[impl])


def _table(threads_label, runners, rounds):
    hot, _ = time_interleaved(runners, budget_s=0.0, min_windows=rounds, max_windows=rounds,
                              window_s=0.01)
    cold, _ = time_interleaved(runners, budget_s=0.0, min_windows=rounds, max_windows=rounds,
                               window_s=0.0)
    cells = []
    for name in runners:
        cells.append(f"{name} {np.median(hot[name]) * 1e3:.3f}/{np.median(cold[name]) * 1e3:.3f}")
    line = "  ".join(cells)
    for name in runners:
        if name != "rnnfast":
            line += (f"  vs {name}: {paired_ratio(hot[name], hot['rnnfast']):.2f}x/"
                     f"{paired_ratio(cold[name], cold['rnnfast']):.2f}x")
    print(f"{threads_label}  {line}")


if __name__ == "__main__":
    from threadpoolctl import threadpool_limits

    torch = import_torch()
    print("ms, hot/interleaved medians of 30 rounds; speed-ups = the other's time / rnnfast's")
    for shape in SHAPES:
        for dtype in DTYPES:
            print("T{}B{}V{} {}".format(*shape, dtype))
            if torch is not None:
                torch.set_num_threads(1)
            with threadpool_limits(1), pinned_to_one_core():
                _table("  1 thread ", _candidates(*shape, dtype), 30)
            if len(os.sched_getaffinity(0)) >= 2:
                one = _candidates(*shape, dtype)["rnnfast"]
                two = _candidates(*shape, dtype, threads=2)["rnnfast"]
                _table("  2 vs 1   ", {"rnnfast": two, "rnnfast 1": one}, 30)
