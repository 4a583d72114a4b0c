"""Command line: `rnnfast` (or `python -m rnnfast`). With the _*_command modules, the only
modules that print.

    rnnfast [demo]   one forward and backward pass with both backends on a default shape: how
                     well they agree and how fast each is (the default command)
    rnnfast train    train a character-level language model (rnnfast/_train_command.py)
    rnnfast sample   generate text from a checkpoint of `rnnfast train`
    rnnfast bench    the benchmark against NumPy and PyTorch (rnnfast/_bench_command.py)
    rnnfast diagnose vanishing and exploding gradients: how the gradient changes with the lag,
                     on the adding problem or a trained model (rnnfast/_diagnose_command.py)
    rnnfast dynamics train an RNN on a task (the 3-bit flip-flop) and find its fixed points
                     (rnnfast/cli/dynamics.py)
"""
import argparse
import sys
import time

import numpy as np

from rnnfast.cli import bench as _bench_command
from rnnfast.cli import diagnose as _diagnose_command
from rnnfast.cli import dynamics as _dynamics_command
from rnnfast.cli import train as _train_command
from rnnfast.functional import BACKENDS, NONLINEARITIES, rnn_backward, rnn_forward

COMMANDS = ("demo", "train", "sample", "bench", "diagnose", "dynamics")


def _parser():
    parser = argparse.ArgumentParser(
        prog="rnnfast",
        description="Fast vanilla RNNs on the CPU. Without a command, runs `demo`.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="forward and backward with both backends: agreement and speed",
        description="Run a forward and backward pass of a vanilla RNN with the Cython and the "
                    "NumPy backends; print their agreement and their speed.",
    )
    _configure_demo(demo)
    parser.set_defaults(demo_parser=demo)
    train = commands.add_parser(
        "train", help="train a character-level language model on a text",
        description="Train a character-level RNN language model with truncated BPTT on a text "
                    "file (or, without one, on the source of Python's standard library), for "
                    "two minutes by default. Shows the loss, validation loss and samples; saves "
                    "a checkpoint every N steps, at the end and on Ctrl-C.",
    )
    _train_command.configure_train_parser(train)
    sample = commands.add_parser(
        "sample", help="generate text from a checkpoint of `rnnfast train`",
        description="Generate text from a character-level model saved by `rnnfast train`.",
    )
    _train_command.configure_sample_parser(sample)
    bench = commands.add_parser(
        "bench", help="benchmark against NumPy and PyTorch",
        description="Time rnnfast against its NumPy reference, a batched NumPy peer and "
                    "PyTorch's nn.RNN, interleaved, on a grid of shapes; print a table.",
    )
    _bench_command.configure_parser(bench)
    diagnose = commands.add_parser(
        "diagnose", help="vanishing and exploding gradients: the gradient by lag",
        description="Measure how the gradient that reaches an earlier hidden state shrinks or "
                    "grows with the distance: on the adding problem, for W_hh initialised at "
                    "several spectral radii and orthogonal, with a short training run each; or, "
                    "with --checkpoint, on a model saved by `rnnfast train`. Prints tables and "
                    "a text chart; --png draws a picture (needs matplotlib).",
    )
    _diagnose_command.configure_parser(diagnose)
    dynamics = commands.add_parser(
        "dynamics", help="fixed points of an RNN trained on a task (the 3-bit flip-flop)",
        description="Train an RNN with a linear readout on a task (by default the 3-bit "
                    "flip-flop), or load one saved by this command; find its fixed points "
                    "from the states it visits and linearise it there: how many stable "
                    "points and saddles, their eigenvalues. --png draws them (needs "
                    "matplotlib).",
    )
    _dynamics_command.configure_parser(dynamics)
    return parser


def _configure_demo(parser):
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


def _check_demo_args(parser, args):
    for name in ("steps", "batch", "input_size", "hidden_size", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")


def _problem(args):
    shape = (args.steps, args.batch, args.input_size, args.hidden_size)
    return _bench_command.make_problem(shape, args.dtype, seed=args.seed)


def _run(p, backend, nonlinearity):
    out, cache = rnn_forward(p.x, p.h0, p.W_xh, p.W_hh, p.b, nonlinearity=nonlinearity,
                             backend=backend)
    return out, rnn_backward(p.G, cache)


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
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "demo")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench_command.run(args)
    if args.command == "train":
        return _train_command.run_train(args)
    if args.command == "sample":
        return _train_command.run_sample(args)
    if args.command == "diagnose":
        return _diagnose_command.run(args)
    if args.command == "dynamics":
        return _dynamics_command.run(args)
    _check_demo_args(args.demo_parser, args)
    return _demo(args)


def _demo(args):
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
