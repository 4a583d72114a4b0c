"""`rnnfast demo` (the default command): one forward and backward pass with both backends on a
shape of the user's choice; how well they agree and how fast each is."""
import numpy as np

from rnnfast import benchmarking
from rnnfast.cli.arguments import non_negative_int, positive_int
from rnnfast.functional import BACKENDS, NONLINEARITIES, rnn_backward, rnn_forward

DESCRIPTION = ("Run a forward and backward pass of a vanilla RNN with the Cython and the NumPy "
               "backends; print their agreement and their speed.")


def configure_parser(parser):
    """Add the options of `rnnfast demo` to ``parser``."""
    parser.add_argument("--steps", "-T", type=positive_int, default=100,
                        help="time steps T (default 100)")
    parser.add_argument("--batch", "-B", type=positive_int, default=8,
                        help="batch size B (default 8)")
    parser.add_argument("--input-size", "-D", type=positive_int, default=64,
                        help="input size D (default 64)")
    parser.add_argument("--hidden-size", "-H", type=positive_int, default=128,
                        help="hidden size H (default 128)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--nonlinearity", choices=NONLINEARITIES, default="tanh")
    parser.add_argument("--repeat", type=positive_int, default=15,
                        help="timed rounds per backend, interleaved (default 15)")
    parser.add_argument("--seed", type=non_negative_int, default=0)


def run(args):
    T, B, D, H = args.steps, args.batch, args.input_size, args.hidden_size
    problem = benchmarking.make_problem((T, B, D, H), args.dtype, seed=args.seed)

    def passes(backend):
        out, cache = rnn_forward(*problem.args, nonlinearity=args.nonlinearity, backend=backend)
        return out, rnn_backward(problem.G, cache)

    print(f"rnnfast: vanilla RNN, T={T} B={B} D={D} H={H}, {args.dtype}, {args.nonlinearity}")
    out_c, grads_c = passes("cython")
    out_n, grads_n = passes("numpy")
    print("agreement of the Cython backend with the NumPy reference (max |diff| / max |ref|):")
    print(f"  {'out':6s} {benchmarking.relative_error(out_c, out_n):.2e}")
    for name in grads_c._fields:
        error = benchmarking.relative_error(getattr(grads_c, name), getattr(grads_n, name))
        print(f"  {name:6s} {error:.2e}")

    # One call per window, round-robin, so that a slow phase of the machine hits both alike.
    samples, _ = benchmarking.time_interleaved(
        {backend: (lambda b=backend: passes(b)) for backend in BACKENDS}, budget_s=0.0,
        min_windows=args.repeat, max_windows=args.repeat, window_s=0.0)
    medians = {backend: float(np.median(s)) for backend, s in samples.items()}
    print(f"forward+backward, median of {args.repeat} interleaved rounds:")
    for backend, seconds in medians.items():
        print(f"  {backend:7s} {seconds * 1e3:9.3f} ms")
    print(f"  speed-up of cython over numpy: {medians['numpy'] / medians['cython']:.1f}x")
    return 0
