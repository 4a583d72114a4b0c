"""Command line: `python -m rnnfast` (or `rnnfast`). The only module that prints.

With no arguments it runs one forward and backward pass with both backends on a default shape
and reports how well they agree and how fast each is.
"""
import argparse
import time

import numpy as np

from rnnfast.functional import BACKENDS, NONLINEARITIES, rnn_backward, rnn_forward


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="rnnfast",
        description="Run a forward and backward pass of a vanilla RNN with the Cython and the "
                    "NumPy backends; print their agreement and their speed.",
    )
    parser.add_argument("--steps", "-T", type=int, default=100, help="time steps T (default 100)")
    parser.add_argument("--batch", "-B", type=int, default=8, help="batch size B (default 8)")
    parser.add_argument("--input-size", "-D", type=int, default=64, help="input size D (default 64)")
    parser.add_argument("--hidden-size", "-H", type=int, default=128,
                        help="hidden size H (default 128)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--nonlinearity", choices=NONLINEARITIES, default="tanh")
    parser.add_argument("--repeat", type=int, default=15,
                        help="timed rounds per backend, interleaved (default 15)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "input_size", "hidden_size", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def _problem(args):
    rng = np.random.default_rng(args.seed)
    T, B, D, H = args.steps, args.batch, args.input_size, args.hidden_size
    dtype = np.dtype(args.dtype)
    # Weights at PyTorch's nn.RNN initialisation: uniform(-1/sqrt(H), 1/sqrt(H)).
    bound = 1 / np.sqrt(H)
    return dict(
        x=rng.standard_normal((T, B, D)).astype(dtype),
        h0=rng.standard_normal((B, H)).astype(dtype),
        W_xh=rng.uniform(-bound, bound, (H, D)).astype(dtype),
        W_hh=rng.uniform(-bound, bound, (H, H)).astype(dtype),
        b=rng.uniform(-bound, bound, H).astype(dtype),
        dout=rng.standard_normal((T, B, H)).astype(dtype),
    )


def _run(problem, backend, nonlinearity):
    p = problem
    out, cache = rnn_forward(p["x"], p["h0"], p["W_xh"], p["W_hh"], p["b"],
                             nonlinearity=nonlinearity, backend=backend)
    return out, rnn_backward(p["dout"], cache)


def _relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-300))


def _time_interleaved(problem, nonlinearity, repeat):
    """Median seconds per forward+backward for each backend, timed round-robin (A, B, A, B...)
    so that a slow phase of the machine hits every backend alike."""
    times = {backend: [] for backend in BACKENDS}
    for backend in BACKENDS:  # warm-up
        _run(problem, backend, nonlinearity)
    for _ in range(repeat):
        for backend in BACKENDS:
            start = time.perf_counter()
            _run(problem, backend, nonlinearity)
            times[backend].append(time.perf_counter() - start)
    return {backend: float(np.median(t)) for backend, t in times.items()}


def main(argv=None):
    args = _parse(argv)
    problem = _problem(args)
    T, B, D, H = args.steps, args.batch, args.input_size, args.hidden_size
    print(f"rnnfast: vanilla RNN, T={T} B={B} D={D} H={H}, {args.dtype}, {args.nonlinearity}")

    out_c, grads_c = _run(problem, "cython", args.nonlinearity)
    out_n, grads_n = _run(problem, "numpy", args.nonlinearity)
    print("agreement of the Cython backend with the NumPy reference (max |diff| / max |ref|):")
    print(f"  {'out':6s} {_relative_error(out_c, out_n):.2e}")
    for name in grads_c._fields:
        print(f"  {name:6s} {_relative_error(getattr(grads_c, name), getattr(grads_n, name)):.2e}")

    medians = _time_interleaved(problem, args.nonlinearity, args.repeat)
    print(f"forward+backward, median of {args.repeat} interleaved rounds:")
    for backend, seconds in medians.items():
        print(f"  {backend:7s} {seconds * 1e3:9.3f} ms")
    print(f"  speed-up of cython over numpy: {medians['numpy'] / medians['cython']:.1f}x")
    return 0
