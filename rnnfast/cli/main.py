"""Command line: `rnnfast` (or `python -m rnnfast`). One module per command, each parsing its
options, calling the library and printing (the only modules of the package that print):

    rnnfast [demo]   one forward and backward pass with both backends on a default shape: how
                     well they agree and how fast each is (the default command; cli/demo.py)
    rnnfast train    train a character-level language model (cli/train.py)
    rnnfast sample   generate text from a checkpoint of `rnnfast train` (cli/train.py)
    rnnfast bench    the benchmark against NumPy and PyTorch (cli/bench.py)
    rnnfast diagnose vanishing and exploding gradients: how the gradient changes with the lag,
                     on the adding problem or a trained model (cli/diagnose.py)
    rnnfast dynamics train an RNN on a task (the 3-bit flip-flop) and find its fixed points
                     (cli/dynamics.py)
    rnnfast reservoir fit an echo state network on the Mackey-Glass series: one-step and
                     free-running NRMSE, and the time taken (cli/reservoir.py)

A Ctrl-C that reaches here (outside `rnnfast train`'s own handling, or a second one there)
ends the command with one line and exit status 130, as shells report a SIGINT.
"""
import argparse
import sys

from rnnfast.cli import bench, demo, diagnose, dynamics, reservoir, train

COMMANDS = ("demo", "train", "sample", "bench", "diagnose", "dynamics", "reservoir")
INTERRUPTED = 130  # 128 + SIGINT


def build_parser():
    """The parser of `rnnfast` and its commands."""
    parser = argparse.ArgumentParser(
        prog="rnnfast",
        description="Fast vanilla RNNs on the CPU. Without a command, runs `demo`.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.configure_parser(commands.add_parser(
        "demo", help="forward and backward with both backends: agreement and speed",
        description=demo.DESCRIPTION))
    train.configure_train_parser(commands.add_parser(
        "train", help="train a character-level language model on a text",
        description=train.TRAIN_DESCRIPTION, epilog=train.TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    train.configure_sample_parser(commands.add_parser(
        "sample", help="generate text from a checkpoint of `rnnfast train`",
        description="Generate text from a character-level model saved by `rnnfast train`: the "
                    "--prime, then the characters the model draws after it."))
    bench.configure_parser(commands.add_parser(
        "bench", help="benchmark against NumPy and PyTorch",
        description="Time rnnfast against its NumPy reference, a batched NumPy peer and "
                    "PyTorch's nn.RNN, interleaved, on a grid of shapes; print a table."))
    diagnose.configure_parser(commands.add_parser(
        "diagnose", help="vanishing and exploding gradients: the gradient by lag",
        description="Measure how the gradient that reaches an earlier hidden state shrinks or "
                    "grows with the distance: on the adding problem, for W_hh initialised at "
                    "several spectral radii and orthogonal, with a short training run each; or, "
                    "with --checkpoint, on a model saved by `rnnfast train`. Prints tables and "
                    "a text chart; --png draws a picture (needs matplotlib)."))
    dynamics.configure_parser(commands.add_parser(
        "dynamics", help="fixed points of an RNN trained on a task (the 3-bit flip-flop)",
        description="Train an RNN with a linear readout on a task (by default the 3-bit "
                    "flip-flop), or load one saved by this command; find its fixed points "
                    "from the states it visits and linearise it there: how many stable "
                    "points and saddles, their eigenvalues. --png draws them (needs "
                    "matplotlib)."))
    reservoir.configure_parser(commands.add_parser(
        "reservoir", help="an echo state network on Mackey-Glass: one-step and free-running "
                          "NRMSE", description=reservoir.DESCRIPTION))
    return parser


RUNNERS = {"demo": demo.run, "train": train.run_train, "sample": train.run_sample,
           "bench": bench.run, "diagnose": diagnose.run, "dynamics": dynamics.run,
           "reservoir": reservoir.run}


def main(argv=None):
    """Run the command in ``argv`` (default: sys.argv[1:]); returns its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "demo")
    args = build_parser().parse_args(argv)
    try:
        return RUNNERS[args.command](args)
    except KeyboardInterrupt:
        end_line = "\n" if sys.stderr.isatty() else ""  # below a progress line
        print(f"{end_line}rnnfast {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
