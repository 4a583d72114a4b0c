"""`rnnfast reservoir`: an echo state network on the Mackey-Glass series.

Generates the series (rnnfast.reservoir.datasets.mackey_glass, tau = 17), trains an ESN
(rnnfast.reservoir) to predict the next value, and prints the one-step NRMSE on held-out
steps and the NRMSE of the free-running (generative) forecast, each normalised by the
standard deviation and by the range of the target, with the time each part took. With
--png, a picture of target against prediction (matplotlib, the optional extra `rnnfast[plot]`,
imported only then). This module is command-line layer: it prints.
"""
import sys
import time

import numpy as np

from rnnfast.cli.arguments import non_negative_float, non_negative_int, positive_float, positive_int
from rnnfast.cli.figures import PLOT_HINT, png_figure_class, png_hint, write_png
from rnnfast.reservoir import ESN, Reservoir, datasets, nrmse

DESCRIPTION = ("Fit an echo state network on the Mackey-Glass series (tau = 17): the one-step "
               "and the free-running NRMSE on held-out steps, and the time each part takes. "
               "--png draws target against prediction (needs matplotlib).")
# Everything the defaults and --quick set, option by option (an explicit option wins).
DEFAULTS = {"units": 500, "train": 4000, "test": 1000, "horizon": 500, "warmup": 100}
QUICK = {"units": 200, "train": 1500, "test": 300, "horizon": 100, "warmup": 100}
TRANSIENT = 500  # samples of the series dropped before anything (the start from x0)
SHOWN_TEST_STEPS = 500  # one-step predictions drawn


def configure_parser(parser):
    """Add the options of `rnnfast reservoir` to ``parser``."""
    d = DEFAULTS
    series = parser.add_argument_group("the series")
    series.add_argument("--tau", type=positive_float, default=17.0,
                        help="the Mackey-Glass delay (default 17, chaotic)")
    series.add_argument("--train", type=positive_int, metavar="STEPS",
                        help=f"training steps (default {d['train']})")
    series.add_argument("--test", type=positive_int, metavar="STEPS",
                        help=f"held-out steps of one-step prediction (default {d['test']})")
    series.add_argument("--horizon", type=positive_int, metavar="STEPS",
                        help=f"free-running steps after the training series (default "
                             f"{d['horizon']})")
    series.add_argument("--warmup", type=non_negative_int, metavar="STEPS",
                        help=f"training steps discarded while the state forgets its zero "
                             f"start (default {d['warmup']})")
    esn = parser.add_argument_group("the echo state network")
    esn.add_argument("--units", type=positive_int, metavar="H",
                     help=f"reservoir units (default {d['units']})")
    esn.add_argument("--connectivity", type=positive_float, default=0.1,
                     help="fraction of W's entries that are not zero (default 0.1)")
    esn.add_argument("--spectral-radius", dest="spectral_radius", type=positive_float,
                     default=1.25, help="W's spectral radius (default 1.25)")
    esn.add_argument("--leak", type=positive_float, default=0.3,
                     help="the leak rate, in (0, 1] (default 0.3)")
    esn.add_argument("--input-scaling", dest="input_scaling", type=positive_float, default=1.0,
                     help="W_in's weights are +-this (default 1)")
    esn.add_argument("--ridge", type=non_negative_float, default=1e-9,
                     help="the readout's L2 penalty (default 1e-9)")
    esn.add_argument("--seed", type=non_negative_int, default=0,
                     help="seeds the reservoir (default 0)")
    parser.add_argument("--png", metavar="PATH",
                        help=f"also draw target against prediction into this PNG file (needs "
                             f"{PLOT_HINT})")
    parser.add_argument("--quick", action="store_true",
                        help=f"a run of a second or two: H = {QUICK['units']}, "
                             f"{QUICK['train']} training steps")


def _settings(args):
    base = QUICK if args.quick else DEFAULTS
    return {key: getattr(args, key) if getattr(args, key) is not None else default
            for key, default in base.items()}


def _error(message):
    print(f"rnnfast reservoir: error: {message}", file=sys.stderr)
    return 2


def _timed(function, *arguments):
    start = time.perf_counter()
    result = function(*arguments)
    return result, time.perf_counter() - start


def _scores(target, prediction):
    return (f"NRMSE {nrmse(target, prediction):.3e} (by the std), "
            f"{nrmse(target, prediction, 'range'):.3e} (by the range)")


def _figure(Figure, test_target, test_prediction, free_target, generated, title):
    fig = Figure(figsize=(13, 6))
    top, bottom = fig.subplots(2, 1)
    shown = min(SHOWN_TEST_STEPS, len(test_target))
    steps = np.arange(shown)
    top.plot(steps, test_target[:shown, 0], color="black", linewidth=1.2, label="target")
    top.plot(steps, test_prediction[:shown, 0], color="tab:orange", linewidth=1,
             linestyle="--", label="one-step prediction")
    top.set_title("held-out steps: each prediction from the true series up to the step before",
                  fontsize=10)
    top.legend(fontsize=8, loc="upper right")
    steps = np.arange(len(free_target))
    bottom.plot(steps, free_target[:, 0], color="black", linewidth=1.2, label="target")
    bottom.plot(steps, generated[:, 0], color="tab:red", linewidth=1, linestyle="--",
                label="free-running: each output fed back as the next input")
    bottom.set_title("after the training series, closed loop", fontsize=10)
    bottom.set_xlabel("steps")
    bottom.legend(fontsize=8, loc="upper right")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def run(args):
    s = _settings(args)
    if not 0 < args.leak <= 1:
        return _error(f"--leak must be in (0, 1]; got {args.leak:g}")
    if not 0 < args.connectivity <= 1:
        return _error(f"--connectivity must be in (0, 1]; got {args.connectivity:g}")
    if s["warmup"] >= s["train"]:
        return _error(f"--warmup ({s['warmup']}) must be below --train ({s['train']})")
    Figure = None
    if args.png:
        Figure, problem = png_figure_class(args.png, "--png", "its figures")
        if problem:
            return _error(problem)
    total = TRANSIENT + s["train"] + max(s["test"], s["horizon"]) + 1
    try:
        series, seconds = _timed(lambda: datasets.mackey_glass(total, tau=args.tau))
    except ValueError as exc:
        return _error(str(exc))
    series = series[TRANSIENT:]
    u, y = series[:-1], series[1:]  # predict the next value
    train, test = s["train"], s["test"]
    print(f"rnnfast reservoir: Mackey-Glass, tau = {args.tau:g}, {len(series)} steps "
          f"(RK4 at dt = 0.1, one sample per time unit; {seconds:.2f} s)")
    reservoir = Reservoir(s["units"], spectral_radius=args.spectral_radius, leak=args.leak,
                          connectivity=args.connectivity, input_scaling=args.input_scaling,
                          seed=args.seed, input_size=1)
    esn = ESN(reservoir, ridge=args.ridge)
    print(f"  echo state network: {s['units']} units, {reservoir.nnz} nonzero weights "
          f"({reservoir.step_path()} step), spectral radius {args.spectral_radius:g}, leak "
          f"{args.leak:g}, ridge {args.ridge:g}, seed {args.seed}")
    _, seconds = _timed(esn.fit, u[:train], y[:train], s["warmup"])
    print(f"  fit on {train} steps ({s['warmup']} of warm-up): {seconds:.3f} s "
          f"({train / seconds:,.0f} steps/s, reservoir and readout)")
    after_training = esn.state
    prediction, seconds = _timed(esn.predict, u[train:train + test])
    target = y[train:train + test]
    print(f"  one-step prediction, {test} held-out steps: {_scores(target, prediction)}; "
          f"{seconds:.3f} s")
    esn.state = after_training
    generated, seconds = _timed(esn.generate, s["horizon"])
    free_target = u[train:train + s["horizon"]]  # the series right after training
    print(f"  free-running, {s['horizon']} steps after the training series: "
          f"{_scores(free_target, generated)}; {seconds:.3f} s")
    for steps in (50, 100, 200):
        if steps < s["horizon"]:
            print(f"    over its first {steps} steps: "
                  f"{_scores(free_target[:steps], generated[:steps])}")
    if args.png:
        title = (f"rnnfast reservoir: ESN, H = {s['units']}, on Mackey-Glass (tau = "
                 f"{args.tau:g})")
        problem = write_png(_figure(Figure, target, prediction, free_target, generated, title),
                            args.png)
        if problem:
            return _error(f"--png: {problem}")
        print(f"wrote {args.png}")
    else:
        print(png_hint("target against prediction"))
    return 0
