"""`rnnfast diagnose`: vanishing and exploding gradients, seen on a task and on a trained model.

Without --checkpoint it runs the adding-problem experiment of rnnfast.diagnostics (gradient
flow by lag at initialisation for W_hh at several spectral radii and orthogonal, then a short
training run of each at every span); with --checkpoint it measures a character model saved by
`rnnfast train` on a piece of text instead. This module parses the options, calls the library
and prints tables and text charts (rnnfast.cli.output); with --png, the same curves as a
picture (rnnfast.cli.figures, matplotlib).
"""
import argparse
import math
import sys
import time

import numpy as np

from rnnfast import diagnostics
from rnnfast.charlm import load_model, read_text
from rnnfast.cli import figures
from rnnfast.cli.arguments import (non_negative_float, non_negative_int, positive_float,
                                   positive_int)
from rnnfast.cli.figures import PLOT_HINT, setting_label
from rnnfast.cli.output import (chart_bars, chart_lines, format_number, format_table,
                                linear_sparkline)
from rnnfast.cli.progress import Progress
from rnnfast.diagnostics import (BASELINE_MSE, EVAL_SEQUENCES, GRAD_SEQUENCES,
                                 JACOBIAN_SEQUENCES, ORTHOGONAL, RECENT_ONLY_MSE, SOLVED_MSE,
                                 per_step)
from rnnfast.train import CheckpointError

DEFAULTS = diagnostics.ADDING_DEFAULTS
QUICK = {"spans": (10, 30), "radii": DEFAULTS["radii"], "hidden_size": 12, "steps": 25,
         "batch_size": 16, "lr": 3e-3, "clip_norm": 1.0}


# -- options ---------------------------------------------------------------------------------

def _span_list(text):
    try:
        spans = tuple(int(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as "
                                         f"10,30,100; got {text!r}") from None
    bad = [span for span in spans if span < 2]
    if bad:
        raise argparse.ArgumentTypeError(f"every span must be at least 2 (the task puts one "
                                         f"marker in each half); got {bad[0]}")
    return tuple(sorted(set(spans)))


def _radius_list(text):
    radii = []
    for item in text.split(","):
        item = item.strip()
        if item.lower() in ("orthogonal", "orth", "o"):
            radii.append(ORTHOGONAL)
            continue
        try:
            radius = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated spectral radii (numbers > 0) or 'orthogonal', such "
                f"as 0.5,1,1.5,orthogonal; got {item!r}") from None
        if not (radius > 0 and math.isfinite(radius)):
            raise argparse.ArgumentTypeError(f"a spectral radius must be a finite number > 0; "
                                             f"got {item}")
        radii.append(radius)
    return tuple(dict.fromkeys(radii))  # without repeats, in order


def configure_parser(parser):
    """Add the options of `rnnfast diagnose` to ``parser``."""
    d = DEFAULTS
    parser.add_argument("--spans", type=_span_list, metavar="T,T,...",
                        help=f"sequence lengths of the adding problem (default "
                             f"{','.join(map(str, d['spans']))}); the gradient curves use the "
                             f"longest, also with --checkpoint")
    parser.add_argument("--radii", type=_radius_list, metavar="R,R,...",
                        help="spectral radii of the initial W_hh, and/or 'orthogonal' (default "
                             "0.5,1,1.5,orthogonal)")
    parser.add_argument("--hidden-size", dest="hidden_size", type=positive_int, metavar="H",
                        help=f"hidden units H (default {d['hidden_size']})")
    parser.add_argument("--steps", type=non_negative_int, metavar="N",
                        help=f"training steps per setting and span (default {d['steps']}; 0: "
                             f"only the measurements at initialisation)")
    parser.add_argument("--batch-size", dest="batch_size", type=positive_int, metavar="B",
                        help=f"sequences per training step (default {d['batch_size']})")
    parser.add_argument("--lr", type=positive_float,
                        help=f"Adam's learning rate (default {d['lr']:g})")
    parser.add_argument("--clip-norm", dest="clip_norm", type=non_negative_float, metavar="MAX",
                        help=f"clip the gradients to this global norm (default "
                             f"{d['clip_norm']:g}; 0: no clipping)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seeds the weights and the data (default 0)")
    parser.add_argument("--png", metavar="PATH",
                        help=f"also draw the curves into this PNG file (needs {PLOT_HINT})")
    parser.add_argument("--checkpoint", metavar="CKPT",
                        help="diagnose a character model saved by `rnnfast train` instead of "
                             "the adding problem (--radii, --hidden-size and the training "
                             "options do not apply)")
    parser.add_argument("--text", metavar="FILE",
                        help="with --checkpoint: the text (UTF-8) to feed the model (default: a "
                             "piece of Python's standard library source)")
    parser.add_argument("--quick", action="store_true",
                        help="a small run of a few seconds: spans 10,30, H=12, 25 steps")


def _settings(args):
    """The options with the defaults (or --quick's) filled in."""
    base = QUICK if args.quick else DEFAULTS
    return {key: getattr(args, key) if getattr(args, key) is not None else default
            for key, default in base.items()}


# -- text output -----------------------------------------------------------------------------

def _shown_lags(T):
    return [lag for lag in dict.fromkeys((1, 3, 10, 30, 100, 300, T - 1)) if 0 < lag < T]


def _table(header, rows):
    return format_table(header, rows, indent="  ", rule=False)


def _lag_header(first, lags):
    return [f"{first} lag {lags[0]}"] + [str(lag) for lag in lags[1:]] + ["per step"]


def _curve_cells(curve, lags):
    return [format_number(curve[lag]) for lag in lags] + [f"{per_step(curve):.3f}"]


def _mse(value):
    return "nan" if not np.isfinite(value) else f"{value:.3f}"


def _adding_report(experiment, seconds):
    """The lines of the adding experiment's report: gradient flow, then learning."""
    s, curves, outcomes = experiment.settings, experiment.curves, experiment.outcomes
    longest = max(s["spans"])
    lags = _shown_lags(longest)
    labels = {radius: setting_label(radius) for radius in s["radii"]}
    lines = ["", f"gradient flow at initialisation, T = {longest} (lag = how many steps back "
                 f"from the last state)",
             f"  |J| = ||dh_T/dh_t||_F / sqrt(H): the RMS singular value of the Jacobian "
             f"(exact, {JACOBIAN_SEQUENCES} sequences)"]
    lines += _table(["W_hh", "rho", "sigma_max", "saturated"] + _lag_header("|J|", lags),
                    [[labels[r], f"{c.radius:.3g}", f"{c.sigma:.3g}", f"{c.saturation:.0%}"]
                     + _curve_cells(c.jacobian, lags) for r, c in curves.items()])
    lines += ["  rho: spectral radius of W_hh; sigma_max: its largest singular value; saturated: "
              "units with |h| > 0.99; per step: (|J| at the largest lag)^(1/lag)", ""]
    lines += chart_lines({labels[r]: c.jacobian for r, c in curves.items()}, "|J| by lag")
    lines += ["", f"  |g| = ||dL/dh_t|| / ||dL/dh_T||: the gradient of the task's loss "
                  f"(RNN.backward(..., return_norms=True), RMS over {GRAD_SEQUENCES} sequences)"]
    lines += _table(["W_hh"] + _lag_header("|g|", lags),
                    [[labels[r]] + _curve_cells(c.gradient, lags) for r, c in curves.items()])
    lines += [""] + chart_lines({labels[r]: c.gradient for r, c in curves.items()}, "|g| by lag")

    lines.append("")
    if s["steps"]:
        lines.append(f"learning: MSE on {EVAL_SEQUENCES} held-out sequences after {s['steps']} "
                     f"steps (before training in brackets)")
    else:
        lines.append(f"learning: MSE on {EVAL_SEQUENCES} held-out sequences at initialisation "
                     f"(--steps 0: no training)")
    rows = []
    for radius in s["radii"]:
        row = [labels[radius]]
        for T in s["spans"]:
            o = outcomes[radius, T]
            after = "stopped" if o.stopped else _mse(o.mse_after)
            row.append(f"{after} ({_mse(o.mse_before)})" if s["steps"] else _mse(o.mse_before))
        rows.append(row)
    lines += _table(["W_hh"] + [f"T = {T}" for T in s["spans"]], rows)
    lines += [f"  {labels[radius]}, T = {T}: {outcomes[radius, T].stopped}"
              for radius in s["radii"] for T in s["spans"] if outcomes[radius, T].stopped]
    lines.append(f"  reference points: {BASELINE_MSE:.3f} = always predicting the mean (1/6); "
                 f"{RECENT_ONLY_MSE:.3f} = only the later number remembered (1/12); "
                 f"below {SOLVED_MSE} = solved")
    if s["steps"]:
        lines += ["", "after training: spectral radius of W_hh / per-step factor of |J| over the "
                      "span (at initialisation in the first table)"]
        lines += _table(["W_hh"] + [f"T = {T}" for T in s["spans"]], [[labels[radius]] + [
            "-" if outcomes[radius, T].stopped else
            f"{outcomes[radius, T].radius_after:.2f} / {outcomes[radius, T].per_step_after:.3f}"
            for T in s["spans"]] for radius in s["radii"]])
    return lines + [f"({seconds:.1f} s)"]


def _adding_header(s, seed):
    radii = ", ".join(f"{r:g}" for r in s["radii"] if r != ORTHOGONAL)
    lines = [f"rnnfast diagnose: the adding problem, a tanh RNN with H = {s['hidden_size']}, "
             f"spans T = {', '.join(map(str, s['spans']))}",
             "  input per step: a value in U(0, 1) and a marker, 1 at one step in each half; "
             "target: the sum of the two marked values, read by a Linear on the last state",
             "  W_hh: one Gaussian matrix" + (f" scaled to spectral radius {radii}" if radii
                                              else "")
             + (" and orthogonal (QR of it)" if ORTHOGONAL in s["radii"] else "")]
    if s["steps"]:
        lines.append(f"  training: {s['steps']} steps of Adam (lr {s['lr']:g}), batches of "
                     f"{s['batch_size']}, gradients clipped to norm "
                     f"{s['clip_norm'] if s['clip_norm'] else 'off'}, float32, seed {seed}")
    return lines


def _language_model_report(path, model, T, description, notes, report, seconds):
    """The lines of a checkpoint's report: the layers' W_hh and |J|, |g|, saturation."""
    c = model.config
    lags = _shown_lags(T)
    how = "an estimate from 32 random probes" if report.method == "probes" else "exact"
    saturated = "|h| > 0.99" if c["nonlinearity"] == "tanh" else "h = 0"
    lines = [f"rnnfast diagnose: checkpoint {path}: {c['num_layers']} x RNN({c['hidden_size']}, "
             f"{c['nonlinearity']}), vocabulary of {c['vocab_size']}, {c['dtype']}",
             f"  input: {diagnostics.WINDOWS} windows of {T} characters from {description}, "
             f"each after {T} characters of warm-up" + "".join(f"; {n}" for n in notes),
             "", f"gradient flow through each layer's recurrence, T = {T}",
             f"  |J| = ||dh_T/dh_t||_F / sqrt(H): the RMS singular value of the Jacobian ({how}, "
             f"{diagnostics.WINDOWS} windows)"]
    lines += _table(["layer", "rho", "sigma_max", "saturated"] + _lag_header("|J|", lags),
                    [[L["label"], f"{L['rho']:.3g}", f"{L['sigma']:.3g}",
                      f"{L['saturation'].mean():.0%}"] + _curve_cells(L["jacobian"], lags)
                     for L in report.layers])
    lines += ["  rho: spectral radius of W_hh; sigma_max: its largest singular value; saturated: "
              f"units with {saturated}, mean over steps", ""]
    lines += chart_lines({L["label"]: L["jacobian"] for L in report.layers}, "|J| by lag")
    lines += ["", "  |g| = ||dL/dh_t|| / ||dL/dh_T|| for the loss of the last character alone "
                  "(RNN.backward(..., return_norms=True), RMS over the windows)"]
    lines += _table(["layer"] + _lag_header("|g|", lags),
                    [[name] + _curve_cells(g, lags) for name, g in report.gradients.items()])
    lines += [""] + chart_lines(report.gradients, "|g| by lag")
    lines += ["", "saturation per step (t = 0 at the left)"]
    width = max(len(L["label"]) for L in report.layers)
    bars = chart_bars()
    for L in report.layers:
        sat = L["saturation"]
        lines.append(f"  {L['label'].ljust(width)}  {linear_sparkline(sat, bars)}  mean "
                     f"{sat.mean():.0%}, min {sat.min():.0%}, max {sat.max():.0%}")
    return lines + [f"({seconds:.1f} s)"]


# -- the command -----------------------------------------------------------------------------

def _error(message):
    print(f"rnnfast diagnose: error: {message}", file=sys.stderr)
    return 2


def _run_checkpoint(args, s):
    """Measure and print a checkpoint's model; a function drawing its figure, or an exit
    status when it cannot."""
    try:
        model, vocab = load_model(args.checkpoint)
    except CheckpointError as exc:
        return _error(exc)
    if args.text is not None:
        try:
            text, description = read_text(args.text), args.text
        except ValueError as exc:
            return _error(f"cannot read --text {args.text}: {exc}")
    else:
        text, description = diagnostics.default_text()
    T = max(s["spans"])
    ids, description, notes = diagnostics.text_windows(model, vocab, text, description, T,
                                                       args.seed)
    start = time.perf_counter()
    report = diagnostics.diagnose_language_model(model, ids, T, T)
    seconds = time.perf_counter() - start
    for line in _language_model_report(args.checkpoint, model, T, description, notes, report,
                                       seconds):
        print(line)
    return lambda Figure: figures.language_model_figure(Figure, args.checkpoint, report)


def _run_adding(args, s):
    """Run and print the adding experiment; a function drawing its figure."""
    for line in _adding_header(s, args.seed):
        print(line)
    sys.stdout.flush()
    start = time.perf_counter()
    total = len(s["radii"]) * len(s["spans"])
    progress = Progress(log_every=None)  # on a terminal only, redrawn in place
    done = []

    def on_run(radius, T):
        done.append((radius, T))
        progress.show(f"  {len(done)}/{total} runs ({time.perf_counter() - start:.0f} s)")

    experiment = diagnostics.run_adding_experiment(s, args.seed, on_run)
    progress.clear()
    for line in _adding_report(experiment, time.perf_counter() - start):
        print(line)
    return lambda Figure: figures.adding_figure(Figure, experiment)


def run(args):
    """Run `rnnfast diagnose`. Returns 0, or 2 when it cannot (a bad checkpoint or --text,
    --png without matplotlib or to an unwritable place)."""
    s = _settings(args)
    Figure = None
    if args.png:
        Figure, problem = figures.png_figure_class(args.png, "--png", "its tables and charts")
        if problem:
            return _error(problem)
    draw = _run_checkpoint(args, s) if args.checkpoint else _run_adding(args, s)
    if isinstance(draw, int):
        return draw
    print()
    if args.png:
        problem = figures.write_png(draw(Figure), args.png)
        if problem:
            return _error(f"--png: {problem}")
        print(f"wrote {args.png}")
    else:
        print(figures.png_hint("these curves"))
    return 0
