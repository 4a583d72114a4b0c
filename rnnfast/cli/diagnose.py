"""`rnnfast diagnose`: vanishing and exploding gradients, seen on a task and on a trained model.

Without --checkpoint it runs the adding problem (Hochreiter & Schmidhuber 1997): at each step
the input is a value in U(0, 1) and a marker channel that is 1 at one step in each half of the
sequence; the target is the sum of the two marked values, read by a Linear layer from the last
state and scored by the mean squared error. Always predicting the mean, 1, scores 1/6; a model
that keeps only the later, nearer value scores 1/12; a solution scores near 0. To solve it the
gradient has to carry the error back to the first marker, up to T steps.

For W_hh drawn as one Gaussian matrix scaled to several spectral radii, and orthogonal, it
measures at initialisation on the longest span how ||dh_T/dh_t|| (rnnfast.diagnostics) and the
task loss's ||dL/dh_t|| (``RNN.backward(..., return_norms=True)``) change with the lag T - t,
then trains each setting briefly at every span (rnnfast.RNN + Linear + Adam, gradients
clipped) and reports the final MSE. With --checkpoint it measures a character model saved by
`rnnfast train` on a piece of text instead: each layer's W_hh, ||dh_T/dh_t|| by lag, the
gradient of the last character's loss by lag, and the saturation per step.

Output: tables and a text chart (log scale) on the terminal; with --png, the same curves as a
picture (matplotlib, the optional extra `rnnfast[plot]`, imported only then). This module is
command-line layer: it prints.
"""
import argparse
import importlib.util
import math
import os
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from rnnfast.train import checkpoint
from rnnfast.diagnostics import gradient_flow as diagnostics
from rnnfast.train import optim
from rnnfast.cli.arguments import (non_negative_float, non_negative_int, positive_float,
                                positive_int)
from rnnfast.nn import Linear
from rnnfast.nn.rnn import RNN

# Everything the defaults and --quick set, option by option (an explicit option wins).
DEFAULTS = {"spans": (10, 30, 100), "radii": (0.5, 1.0, 1.5, "orthogonal"), "hidden_size": 32,
            "steps": 2000, "batch_size": 32, "lr": 3e-3, "clip_norm": 1.0}
QUICK = {"spans": (10, 30), "radii": (0.5, 1.0, 1.5, "orthogonal"), "hidden_size": 12,
         "steps": 25, "batch_size": 16, "lr": 3e-3, "clip_norm": 1.0}
ORTHOGONAL = "orthogonal"
EVAL_SEQUENCES = 512  # the held-out batch of the final MSE (its standard error is ~5%)
GRAD_SEQUENCES = 32  # sequences whose loss gradient ||dL/dh_t|| is measured at initialisation
JACOBIAN_SEQUENCES = 4  # sequences whose ||dh_T/dh_t|| is measured
CHECKPOINT_WINDOWS = 8  # text windows fed to a checkpoint's model
BASELINE_MSE = 1 / 6  # always predicting E[target] = 1: the variance of the sum of two U(0, 1)
RECENT_ONLY_MSE = 1 / 12  # knowing only the later value: the variance of the earlier one
SOLVED_MSE = 0.01
CHART_WIDTH = 50
CHART_DECADES = 12  # the text chart's log scale spans at most this many powers of ten
BARS = "▁▂▃▄▅▆▇█"
ASCII_BARS = "_.-=+*%#"
PLOT_HINT = 'pip install "rnnfast[plot]" (matplotlib)'


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
                        help="with --checkpoint: the text to feed the model (default: a piece "
                             "of Python's standard library source)")
    parser.add_argument("--quick", action="store_true",
                        help="a small run of a few seconds: spans 10,30, H=12, 25 steps")


def _settings(args):
    """The options with the defaults (or --quick's) filled in."""
    base = QUICK if args.quick else DEFAULTS
    return {key: getattr(args, key) if getattr(args, key) is not None else default
            for key, default in base.items()}


# -- the adding problem ----------------------------------------------------------------------

def adding_batch(T, B, rng, dtype=np.float32):
    """B sequences of the adding problem: x (T, B, 2) and the targets (B, 1).

    Channel 0 holds values from U(0, 1); channel 1 is 1 at one step of the first half and one
    of the second half (T >= 2), else 0. The target is the sum of the two marked values.
    """
    half = T // 2
    values = rng.uniform(0.0, 1.0, (T, B))
    first = rng.integers(0, half, B)
    second = rng.integers(half, T, B)
    rows = np.arange(B)
    markers = np.zeros((T, B))
    markers[first, rows] = 1.0
    markers[second, rows] = 1.0
    x = np.stack([values, markers], axis=2)
    y = values[first, rows] + values[second, rows]
    return x.astype(dtype), y[:, None].astype(dtype)


def _label(radius):
    return "orthogonal" if radius == ORTHOGONAL else f"radius {radius:g}"


def recurrent_matrix(radius, gaussian):
    """W_hh for a setting: ``gaussian`` scaled to spectral radius ``radius``, or for
    "orthogonal" the Q of its QR decomposition with the signs fixed (diag(R) > 0), which makes
    Q uniformly distributed over the orthogonal group when ``gaussian`` has i.i.d. entries."""
    if radius == ORTHOGONAL:
        q, r = np.linalg.qr(gaussian)
        return q * np.where(np.diag(r) < 0, -1.0, 1.0)
    return gaussian * (radius / diagnostics.spectral_radius(gaussian))


def _adding_model(H, W_hh, seed):
    """An RNN(2 -> H) with the given W_hh and torch's initialisation elsewhere, and its head."""
    rnn = RNN(2, H, seed=np.random.default_rng([seed, 1]))
    rnn.parameters()["weight_hh_l0"][...] = W_hh
    head = Linear(H, 1, seed=np.random.default_rng([seed, 2]))
    return rnn, head


def _loss_and_grad(rnn, head, x, y):
    """MSE of the head on the last state; (loss, out, dL/dout)."""
    out, _ = rnn.forward(x)
    prediction = head.forward(out[-1:])  # (1, B, 1)
    error = prediction[0] - y
    loss = float(np.mean(error.astype(np.float64) ** 2))
    dlast = head.backward((2 * error / error.size)[None].astype(out.dtype))
    dout = np.zeros_like(out)
    dout[-1] = dlast[0]
    return loss, out, dout


@dataclass
class Curves:
    """Measurements at initialisation, indexed by lag (0 = the last step)."""

    jacobian: np.ndarray  # RMS singular value of dh_T/dh_t over JACOBIAN_SEQUENCES sequences
    gradient: np.ndarray  # ||dL/dh_t|| / ||dL/dh_T|| (RMS over sequences)
    saturation: float  # mean fraction of saturated units over steps and sequences
    radius: float  # spectral radius of W_hh
    sigma: float  # largest singular value of W_hh


@dataclass
class Outcome:
    """One setting at one span: the MSE on the held-out batch before and after training."""

    mse_before: float
    mse_after: float
    losses: list = field(default_factory=list)  # training loss per step
    stopped: Optional[str] = None  # why training stopped early (non-finite values)
    radius_after: float = math.nan  # spectral radius of the trained W_hh
    per_step_after: float = math.nan  # per-step factor of |J| over the span, after training


def _rms(norms):
    """Root mean square over the batch axis (last) of norms (T, B)."""
    return np.sqrt(np.mean(np.square(norms), axis=-1))


def _jacobian_curve(x, h0, W_xh, W_hh, b, nonlinearity, n_threads=None):
    """The RMS singular value of dh_T/dh_t by lag, over the sequences of x, and the method."""
    T, B, D = x.shape
    H = W_hh.shape[0]
    method = diagnostics.resolve_jacobian_method("auto", T, B, D, H, 32)
    norms = diagnostics.jacobian_norms(x, h0, W_xh, W_hh, b, nonlinearity=nonlinearity,
                                       method=method, seed=0, n_threads=n_threads)
    return _rms(norms)[::-1] / np.sqrt(H), method


def _float64_state(part):
    return {name: array.astype(np.float64) for name, array in part.state_dict().items()}


def _relative_gradient(norms):
    """||dL/dh_t|| (T, B) -> RMS over the batch by lag, relative to lag 0."""
    gradient = _rms(np.asarray(norms, dtype=np.float64))[::-1]
    return gradient / gradient[0] if gradient[0] > 0 else gradient


def _measure_at_init(rnn, head, T, seed):
    """Curves on the adding problem at span T, before training, computed in float64 (float32
    would round the smallest norms, 1e-30 and below, to zero)."""
    rnn64 = RNN(rnn.input_size, rnn.hidden_size, nonlinearity=rnn.nonlinearity,
                dtype=np.float64, seed=0)
    rnn64.load_state_dict(_float64_state(rnn))
    head64 = Linear(head.in_features, head.out_features, dtype=np.float64, seed=0)
    head64.load_state_dict(_float64_state(head))
    x, y = adding_batch(T, GRAD_SEQUENCES, np.random.default_rng([seed, T, 3]),
                        dtype=np.float64)
    _, out, dout = _loss_and_grad(rnn64, head64, x, y)
    _, _, norms = rnn64.backward(dout, return_norms=True)
    gradient = _relative_gradient(norms[0, 0])
    p = rnn64.parameters()
    x64 = x[:, :JACOBIAN_SEQUENCES]
    jacobian, _ = _jacobian_curve(x64, None, p["weight_ih_l0"], p["weight_hh_l0"],
                                  p["bias_ih_l0"] + p["bias_hh_l0"], rnn.nonlinearity)
    return Curves(jacobian, gradient, float(diagnostics.saturation(out).mean()),
                  diagnostics.spectral_radius(p["weight_hh_l0"]),
                  diagnostics.largest_singular_value(p["weight_hh_l0"]))


def _eval_mse(rnn, head, x, y):
    out, _ = rnn.forward(x)
    error = head.forward(out[-1:])[0].astype(np.float64) - y
    return float(np.mean(error ** 2))


def _train(rnn, head, T, s, seed):
    """Train on fresh batches for s["steps"] steps; the MSE on a held-out batch before and
    after."""
    x_eval, y_eval = adding_batch(T, EVAL_SEQUENCES, np.random.default_rng([seed, T, 4]))
    outcome = Outcome(_eval_mse(rnn, head, x_eval, y_eval), math.nan)
    params = {f"rnn.{k}": v for k, v in rnn.parameters().items()}
    params.update({f"head.{k}": v for k, v in head.parameters().items()})
    adam = optim.Adam(params, lr=s["lr"])
    rng = np.random.default_rng([seed, T, 5])
    for step in range(1, s["steps"] + 1):
        x, y = adding_batch(T, s["batch_size"], rng)
        loss, _, dout = _loss_and_grad(rnn, head, x, y)
        rnn.backward(dout)
        grads = {f"rnn.{k}": v for k, v in rnn.grads.items()}
        grads.update({f"head.{k}": v for k, v in head.grads.items()})
        norm = optim.clip_grad_norm(grads, s["clip_norm"] or math.inf)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            what = "gradient" if math.isfinite(loss) else "loss"
            outcome.stopped = f"training stopped at step {step}: the {what} is not finite"
            return outcome
        adam.step(grads)
        outcome.losses.append(loss)
    outcome.mse_after = _eval_mse(rnn, head, x_eval, y_eval)
    p = {name: array.astype(np.float64) for name, array in rnn.parameters().items()}
    outcome.radius_after = diagnostics.spectral_radius(p["weight_hh_l0"])
    jacobian, _ = _jacobian_curve(x_eval[:, :JACOBIAN_SEQUENCES].astype(np.float64), None,
                                  p["weight_ih_l0"], p["weight_hh_l0"],
                                  p["bias_ih_l0"] + p["bias_hh_l0"], rnn.nonlinearity)
    outcome.per_step_after = _per_step(jacobian)
    return outcome


def _run_task(s, seed, report):
    """Every setting at every span: (curves at the longest span, outcomes[(radius, T)])."""
    H = s["hidden_size"]
    gaussian = np.random.default_rng([seed, 0]).standard_normal((H, H))
    longest = max(s["spans"])
    curves, outcomes = {}, {}
    for radius in s["radii"]:
        W_hh = recurrent_matrix(radius, gaussian)
        for T in s["spans"]:
            rnn, head = _adding_model(H, W_hh, seed)
            if T == longest:
                curves[radius] = _measure_at_init(rnn, head, T, seed)
            outcomes[radius, T] = _train(rnn, head, T, s, seed)
            report(radius, T)
    return curves, outcomes


# -- text output -----------------------------------------------------------------------------

def _bars():
    """The chart's characters: block elements where the output can encode them."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        BARS.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return ASCII_BARS
    return BARS


def log_range(curves, decades=CHART_DECADES):
    """(lo, hi): log10 of the smallest and largest positive finite values of the curves, lo
    raised to hi - decades if the values span more."""
    values = np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in curves])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return 0.0, 0.0
    hi = float(np.log10(values.max()))
    return max(float(np.log10(values.min())), hi - decades), hi


def sparkline(values, lo, hi, width=CHART_WIDTH, bars=BARS):
    """One character per column, its height log10(value) on the scale lo..hi (log10 values).

    Columns sample the values evenly (every value when there are at most ``width``); zero is a
    blank, NaN or inf a '?'.
    """
    values = np.asarray(values, dtype=np.float64)
    columns = np.unique(np.round(np.linspace(0, len(values) - 1, min(width, len(values))))
                        .astype(int))
    chars = []
    for v in values[columns]:
        if not np.isfinite(v):
            chars.append("?")
        elif v <= 0:
            chars.append(" ")
        else:
            level = 0.5 if hi <= lo else (math.log10(v) - lo) / (hi - lo)
            chars.append(bars[min(len(bars) - 1, max(0, int(level * len(bars))))])
    return "".join(chars)


def _shown_lags(T):
    return [lag for lag in dict.fromkeys((1, 3, 10, 30, 100, 300, T - 1)) if 0 < lag < T]


def _fmt(value):
    if value is None or not np.isfinite(value):
        return "nan" if value is not None and np.isnan(value) else str(value)
    return f"{value:.2g}" if 1e-2 <= abs(value) < 1e3 else f"{value:.1e}"


def _per_step(curve):
    """Geometric mean factor per step over the whole curve: (c[lag] / c[0])^(1 / lag) at the
    largest lag (NaN if a value is zero or not finite)."""
    curve = np.asarray(curve, dtype=np.float64)
    if len(curve) < 2 or not (curve[0] > 0 and curve[-1] > 0) or not np.isfinite(curve).all():
        return math.nan
    return float((curve[-1] / curve[0]) ** (1 / (len(curve) - 1)))


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  " + "  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w)
                              for i, (h, w) in enumerate(zip(header, widths)))]
    for row in rows:
        lines.append("  " + "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                      for i, (c, w) in enumerate(zip(row, widths))))
    return lines


def _chart_lines(named_curves, what):
    """A text chart: one sparkline per curve on a common log scale, lag 0 at the left."""
    lo, hi = log_range(list(named_curves.values()))
    bars = _bars()
    T = max(len(c) for c in named_curves.values())
    width = max(len(name) for name in named_curves)
    lowest = log_range(list(named_curves.values()), decades=math.inf)[0]
    floor = " or less" if lowest < lo else ""
    lines = [f"  {what}, log scale: {bars[0]} = 1e{round(lo):+d}{floor} ... {bars[-1]} = "
             f"1e{round(hi):+d}; lag 0 at the left, lag {T - 1} at the right"]
    for name, curve in named_curves.items():
        lines.append(f"  {name.ljust(width)}  {sparkline(curve, lo, hi, bars=bars)}  "
                     f"{_fmt(curve[-1])}")
    return lines


def _print_task_report(s, curves, outcomes, seconds):
    longest = max(s["spans"])
    lags = _shown_lags(longest)
    labels = {radius: _label(radius) for radius in s["radii"]}
    print()
    print(f"gradient flow at initialisation, T = {longest} (lag = how many steps back from the "
          f"last state)")
    print(f"  |J| = ||dh_T/dh_t||_F / sqrt(H): the RMS singular value of the Jacobian "
          f"(exact, {JACOBIAN_SEQUENCES} sequences)")
    rows = [[labels[r], f"{c.radius:.3g}", f"{c.sigma:.3g}", f"{c.saturation:.0%}"]
            + [_fmt(c.jacobian[lag]) for lag in lags] + [f"{_per_step(c.jacobian):.3f}"]
            for r, c in curves.items()]
    header = ["W_hh", "rho", "sigma_max", "saturated"] + [f"|J| lag {lags[0]}"] + \
        [str(lag) for lag in lags[1:]] + ["per step"]
    for line in _table(header, rows):
        print(line)
    print("  rho: spectral radius of W_hh; sigma_max: its largest singular value; saturated: "
          "units with |h| > 0.99; per step: (|J| at the largest lag)^(1/lag)")
    print()
    for line in _chart_lines({labels[r]: c.jacobian for r, c in curves.items()}, "|J| by lag"):
        print(line)
    print()
    print(f"  |g| = ||dL/dh_t|| / ||dL/dh_T||: the gradient of the task's loss "
          f"(RNN.backward(..., return_norms=True), RMS over {GRAD_SEQUENCES} sequences)")
    rows = [[labels[r]] + [_fmt(c.gradient[lag]) for lag in lags]
            + [f"{_per_step(c.gradient):.3f}"] for r, c in curves.items()]
    for line in _table(["W_hh", f"|g| lag {lags[0]}"] + [str(lag) for lag in lags[1:]]
                       + ["per step"], rows):
        print(line)
    print()
    for line in _chart_lines({labels[r]: c.gradient for r, c in curves.items()}, "|g| by lag"):
        print(line)

    print()
    if s["steps"]:
        print(f"learning: MSE on {EVAL_SEQUENCES} held-out sequences after {s['steps']} steps "
              f"(before training in brackets)")
    else:
        print(f"learning: MSE on {EVAL_SEQUENCES} held-out sequences at initialisation "
              f"(--steps 0: no training)")
    rows = []
    for radius in s["radii"]:
        row = [labels[radius]]
        for T in s["spans"]:
            o = outcomes[radius, T]
            after = "stopped" if o.stopped else _fmt_mse(o.mse_after)
            row.append(f"{after} ({_fmt_mse(o.mse_before)})" if s["steps"] else
                       _fmt_mse(o.mse_before))
        rows.append(row)
    for line in _table(["W_hh"] + [f"T = {T}" for T in s["spans"]], rows):
        print(line)
    for radius in s["radii"]:
        for T in s["spans"]:
            if outcomes[radius, T].stopped:
                print(f"  {labels[radius]}, T = {T}: {outcomes[radius, T].stopped}")
    print(f"  reference points: {BASELINE_MSE:.3f} = always predicting the mean (1/6); "
          f"{RECENT_ONLY_MSE:.3f} = only the later number remembered (1/12); "
          f"below {SOLVED_MSE} = solved")
    if s["steps"]:
        print()
        print("after training: spectral radius of W_hh / per-step factor of |J| over the span "
              "(at initialisation in the first table)")
        rows = [[labels[radius]] + [
            "-" if outcomes[radius, T].stopped else
            f"{outcomes[radius, T].radius_after:.2f} / {outcomes[radius, T].per_step_after:.3f}"
            for T in s["spans"]] for radius in s["radii"]]
        for line in _table(["W_hh"] + [f"T = {T}" for T in s["spans"]], rows):
            print(line)
    print(f"({seconds:.1f} s)")


def _fmt_mse(value):
    return "nan" if not np.isfinite(value) else f"{value:.3f}"


# -- the picture -----------------------------------------------------------------------------

def _matplotlib_installed():
    """Whether matplotlib can be imported, without importing it (a hint does not need its C++
    modules, which are slow to load and abort under a preloaded ASan runtime)."""
    if "matplotlib" in sys.modules:
        return sys.modules["matplotlib"] is not None
    return importlib.util.find_spec("matplotlib") is not None


def _figure_class():
    """matplotlib's Figure (drawn with the Agg canvas, no GUI), or None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def _plot_curves(ax, named_curves, title, ylabel):
    for name, curve in named_curves.items():
        curve = np.asarray(curve, dtype=np.float64)
        shown = np.where(curve > 0, curve, np.nan)
        ax.semilogy(np.arange(len(curve)), shown, label=name)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("lag T - t (steps back from the last state)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)


def _task_figure(Figure, s, curves, outcomes):
    labels = {radius: _label(radius) for radius in s["radii"]}
    longest = max(s["spans"])
    fig = Figure(figsize=(15, 4.4))
    axes = fig.subplots(1, 3)
    _plot_curves(axes[0], {labels[r]: c.jacobian for r, c in curves.items()},
                 f"||dh_T/dh_t||_F / sqrt(H) at initialisation, T = {longest}",
                 "RMS singular value of the Jacobian")
    _plot_curves(axes[1], {labels[r]: c.gradient for r, c in curves.items()},
                 f"task gradient ||dL/dh_t|| / ||dL/dh_T||, T = {longest}", "relative norm")
    ax = axes[2]
    for radius in s["radii"]:
        mse = [outcomes[radius, T].mse_after if s["steps"] else outcomes[radius, T].mse_before
               for T in s["spans"]]
        ax.plot(s["spans"], mse, marker="o", label=labels[radius])
    ax.axhline(BASELINE_MSE, color="gray", linestyle="--", linewidth=1)
    ax.axhline(RECENT_ONLY_MSE, color="gray", linestyle=":", linewidth=1)
    ax.text(s["spans"][0], BASELINE_MSE, " predict the mean (1/6)", fontsize=7, va="bottom")
    ax.text(s["spans"][0], RECENT_ONLY_MSE, " only the later number (1/12)", fontsize=7,
            va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")  # 0.003 (solved) and 0.03 (nearly) differ as much as 0.03 and 0.3
    ax.minorticks_off()
    ax.set_xticks(s["spans"], [str(T) for T in s["spans"]])
    ax.set_xlabel("span T")
    ax.set_ylabel("MSE on held-out sequences")
    when = f"after {s['steps']} steps of Adam" if s["steps"] else "at initialisation"
    ax.set_title(f"adding problem: MSE {when}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"rnnfast diagnose: vanilla tanh RNN, H = {s['hidden_size']}", fontsize=11)
    fig.tight_layout()
    return fig


def _write_png(fig, path):
    fig.savefig(path, dpi=100)


# -- a checkpoint ----------------------------------------------------------------------------

def _default_text():
    """(text, description): a module of Python's standard library, or None."""
    path = os.path.join(sysconfig.get_paths()["stdlib"], "textwrap.py")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), f"Python's {path}"
    except OSError:
        return None, None


def _checkpoint_windows(model, vocab, text, description, T, seed):
    """ids (warm-up + T + 1, B) from the text, characters the vocabulary lacks skipped (or, with
    no usable text, generated by the model itself); and a description."""
    from rnnfast.charlm.model import generate

    warm = T
    needed = warm + T + 1
    known = set(vocab.chars)
    kept = "".join(ch for ch in (text or "") if ch in known)
    skipped = len(text or "") - len(kept)
    notes = []
    if len(kept) < T + 1:
        kept = generate(model, vocab, CHECKPOINT_WINDOWS * needed, seed=seed)
        description = "text generated by the model itself"
        notes.append("no usable text" if text is None else
                     f"fewer than {T + 1} characters of the text are in the vocabulary")
    elif skipped:
        notes.append(f"{skipped:,} characters the vocabulary lacks skipped")
    ids = vocab.encode(kept)
    if len(ids) < needed:
        notes.append("the text repeats to fill the windows")
        ids = np.resize(ids, needed)
    starts = np.linspace(0, len(ids) - needed, CHECKPOINT_WINDOWS).astype(int)
    windows = np.stack([ids[s:s + needed] for s in starts], axis=1)
    return windows, description, notes


@dataclass
class CheckpointReport:
    layers: list  # per (layer, direction): dict of label, rho, sigma, jacobian, saturation
    gradients: dict  # per layer: ||dL_T/dh_t|| / ||dL_T/dh_T|| by lag
    method: str


def _diagnose_model(model, ids, warm, T):
    """The measurements on a CharRNN over ids (warm + T + 1, B)."""
    from rnnfast.nn import softmax_cross_entropy

    from rnnfast.charlm.model import CharRNN

    # In float64, so that the smallest norms (1e-40 and below) are not rounded to zero.
    model64 = CharRNN(**{**model.config, "dtype": "float64"}, n_threads=model.rnn.n_threads)
    model64.load_state_dict({name: array.astype(np.float64)
                             for name, array in model.state_dict().items()})
    model = model64.eval()
    rnn = model.rnn
    _, h0 = rnn.forward(model.embedding.forward(ids[:warm]))  # a state that has read text
    inputs = model.embedding.forward(ids[warm:warm + T])
    layers = []
    method = None
    for layer, direction, args, out in rnn.direction_runs(inputs, h0):
        jacobian, method = _jacobian_curve(*args, rnn.nonlinearity, rnn.n_threads)
        W_hh = args[3]
        layers.append({
            "label": f"layer {layer}" + (" reverse" if direction else ""),
            "rho": diagnostics.spectral_radius(W_hh),
            "sigma": diagnostics.largest_singular_value(W_hh),
            "jacobian": jacobian,
            "saturation": diagnostics.saturation(out, rnn.nonlinearity)[::-1 if direction
                                                                         else 1],
        })
    # The gradient of the loss of the last character alone, at every layer.
    logits, _ = model.forward(ids[warm:warm + T], h0)
    targets = ids[warm + 1:warm + T + 1]
    mask = np.zeros(targets.shape, dtype=bool)
    mask[-1] = True
    _, dlogits = softmax_cross_entropy(logits, targets, mask)
    _, _, norms = rnn.backward(model.output.backward(dlogits), return_norms=True)
    gradients = {f"layer {layer}": _relative_gradient(norms[layer, 0])
                 for layer in range(rnn.num_layers)}
    return CheckpointReport(layers, gradients, method)


def _run_checkpoint(args, s):
    from rnnfast.charlm.model import load_model

    try:
        model, vocab = load_model(args.checkpoint)
    except checkpoint.CheckpointError as exc:
        print(f"rnnfast diagnose: error: {exc}", file=sys.stderr)
        return 2
    if args.text is not None:
        try:
            with open(args.text, encoding="utf-8") as f:
                text, description = f.read(), args.text
        except (OSError, UnicodeDecodeError) as exc:
            print(f"rnnfast diagnose: error: cannot read --text {args.text}: {exc}",
                  file=sys.stderr)
            return 2
    else:
        text, description = _default_text()
    T = max(s["spans"])
    ids, description, notes = _checkpoint_windows(model, vocab, text, description, T,
                                                  args.seed)
    start = time.perf_counter()
    report = _diagnose_model(model, ids, T, T)
    seconds = time.perf_counter() - start

    c = model.config
    print(f"rnnfast diagnose: checkpoint {args.checkpoint}: {c['num_layers']} x RNN("
          f"{c['hidden_size']}, {c['nonlinearity']}), vocabulary of {c['vocab_size']}, "
          f"{c['dtype']}")
    print(f"  input: {CHECKPOINT_WINDOWS} windows of {T} characters from {description}, each "
          f"after {T} characters of warm-up" + "".join(f"; {n}" for n in notes))
    print()
    print(f"gradient flow through each layer's recurrence, T = {T}")
    how = "an estimate from 32 random probes" if report.method == "probes" else "exact"
    print(f"  |J| = ||dh_T/dh_t||_F / sqrt(H): the RMS singular value of the Jacobian ({how}, "
          f"{CHECKPOINT_WINDOWS} windows)")
    lags = _shown_lags(T)
    rows = [[L["label"], f"{L['rho']:.3g}", f"{L['sigma']:.3g}",
             f"{L['saturation'].mean():.0%}"] + [_fmt(L["jacobian"][lag]) for lag in lags]
            + [f"{_per_step(L['jacobian']):.3f}"] for L in report.layers]
    header = ["layer", "rho", "sigma_max", "saturated", f"|J| lag {lags[0]}"] + \
        [str(lag) for lag in lags[1:]] + ["per step"]
    for line in _table(header, rows):
        print(line)
    print("  rho: spectral radius of W_hh; sigma_max: its largest singular value; saturated: "
          f"units with {'|h| > 0.99' if c['nonlinearity'] == 'tanh' else 'h = 0'}, mean over "
          f"steps")
    print()
    for line in _chart_lines({L["label"]: L["jacobian"] for L in report.layers}, "|J| by lag"):
        print(line)
    print()
    print("  |g| = ||dL/dh_t|| / ||dL/dh_T|| for the loss of the last character alone "
          "(RNN.backward(..., return_norms=True), RMS over the windows)")
    for line in _table(["layer", f"|g| lag {lags[0]}"] + [str(lag) for lag in lags[1:]]
                       + ["per step"],
                       [[name] + [_fmt(g[lag]) for lag in lags] + [f"{_per_step(g):.3f}"]
                        for name, g in report.gradients.items()]):
        print(line)
    print()
    for line in _chart_lines(report.gradients, "|g| by lag"):
        print(line)
    print()
    print("saturation per step (t = 0 at the left)")
    width = max(len(L["label"]) for L in report.layers)
    bars = _bars()
    for L in report.layers:
        sat = L["saturation"]
        print(f"  {L['label'].ljust(width)}  {_linear_sparkline(sat, bars)}  mean "
              f"{sat.mean():.0%}, min {sat.min():.0%}, max {sat.max():.0%}")
    print(f"({seconds:.1f} s)")
    return report


def _linear_sparkline(values, bars, width=CHART_WIDTH):
    """Fractions in [0, 1] as a sparkline on a linear scale (0 a blank)."""
    values = np.asarray(values, dtype=np.float64)
    columns = np.unique(np.round(np.linspace(0, len(values) - 1, min(width, len(values))))
                        .astype(int))
    return "".join(" " if v <= 0 else bars[min(len(bars) - 1, int(v * len(bars)))]
                   for v in values[columns])


def _checkpoint_figure(Figure, args, report):
    fig = Figure(figsize=(15, 4.4))
    axes = fig.subplots(1, 3)
    T = len(report.layers[0]["jacobian"])
    _plot_curves(axes[0], {L["label"]: L["jacobian"] for L in report.layers},
                 f"||dh_T/dh_t||_F / sqrt(H), T = {T}", "RMS singular value of the Jacobian")
    _plot_curves(axes[1], report.gradients,
                 "last character's loss: ||dL/dh_t|| / ||dL/dh_T||", "relative norm")
    ax = axes[2]
    for L in report.layers:
        ax.plot(np.arange(T), L["saturation"], label=L["label"])
    ax.set_ylim(0, 1)
    ax.set_xlabel("step t")
    ax.set_ylabel("fraction of saturated units")
    ax.set_title("saturation per step", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"rnnfast diagnose: {os.path.basename(args.checkpoint)}", fontsize=11)
    fig.tight_layout()
    return fig


# -- the command -----------------------------------------------------------------------------

def run(args):
    """Run `rnnfast diagnose`. Returns 0, or 2 when it cannot (a bad checkpoint or --text,
    --png without matplotlib or to an unwritable place)."""
    s = _settings(args)
    Figure = None
    if args.png:
        Figure = _figure_class()
        if Figure is None:
            print(f"rnnfast diagnose: error: --png needs matplotlib: {PLOT_HINT}; without "
                  f"--png the command prints its tables and charts", file=sys.stderr)
            return 2
        folder = os.path.dirname(os.path.abspath(args.png))
        if not os.path.isdir(folder):
            print(f"rnnfast diagnose: error: --png {args.png}: folder {folder} does not exist",
                  file=sys.stderr)
            return 2

    if args.checkpoint:
        result = _run_checkpoint(args, s)
        if isinstance(result, int):
            return result
        figure = (lambda: _checkpoint_figure(Figure, args, result))
    else:
        radii = ", ".join(f"{r:g}" for r in s["radii"] if r != ORTHOGONAL)
        print(f"rnnfast diagnose: the adding problem, a tanh RNN with H = {s['hidden_size']}, "
              f"spans T = {', '.join(map(str, s['spans']))}")
        print("  input per step: a value in U(0, 1) and a marker, 1 at one step in each half; "
              "target: the sum of the two marked values, read by a Linear on the last state")
        print("  W_hh: one Gaussian matrix" + (f" scaled to spectral radius {radii}" if radii
                                                else "")
              + (" and orthogonal (QR of it)" if ORTHOGONAL in s["radii"] else ""))
        if s["steps"]:
            print(f"  training: {s['steps']} steps of Adam (lr {s['lr']:g}), batches of "
                  f"{s['batch_size']}, gradients clipped to norm "
                  f"{s['clip_norm'] if s['clip_norm'] else 'off'}, float32, seed {args.seed}")
        sys.stdout.flush()
        start = time.perf_counter()
        total = len(s["radii"]) * len(s["spans"])
        done = []

        interactive = sys.stderr.isatty()

        def report(radius, T):  # progress on a terminal only, redrawn in place
            done.append((radius, T))
            if interactive:
                print(f"\r  {len(done)}/{total} runs ({time.perf_counter() - start:.0f} s)",
                      end="", file=sys.stderr, flush=True)

        curves, outcomes = _run_task(s, args.seed, report)
        if interactive:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        _print_task_report(s, curves, outcomes, time.perf_counter() - start)
        figure = (lambda: _task_figure(Figure, s, curves, outcomes))

    print()
    if args.png:
        try:
            _write_png(figure(), args.png)
        except OSError as exc:
            print(f"rnnfast diagnose: error: cannot write --png {args.png}: {exc}",
                  file=sys.stderr)
            return 2
        print(f"wrote {args.png}")
    elif not _matplotlib_installed():
        print(f"for a picture of these curves: {PLOT_HINT}, then add --png PATH")
    else:
        print("for a picture of these curves, add --png PATH")
    return 0
