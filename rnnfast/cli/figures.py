"""The pictures of `rnnfast diagnose --png`: the curves of its tables, drawn with matplotlib
(the optional extra `rnnfast[plot]`, imported only when a picture is asked for)."""
import importlib.util
import os
import sys

import numpy as np

from rnnfast.diagnostics import BASELINE_MSE, ORTHOGONAL, RECENT_ONLY_MSE

PLOT_HINT = 'pip install "rnnfast[plot]" (matplotlib)'


def matplotlib_installed():
    """Whether matplotlib can be imported, without importing it (a hint does not need its C++
    modules, which are slow to load and abort under a preloaded ASan runtime)."""
    if "matplotlib" in sys.modules:
        return sys.modules["matplotlib"] is not None
    return importlib.util.find_spec("matplotlib") is not None


def figure_class():
    """matplotlib's Figure (drawn with the Agg canvas, no GUI), or None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def png_figure_class(path, option, prints):
    """(Figure, None) for a command asked to draw into the PNG file ``path`` (its option
    ``option``), or (None, the error message) without matplotlib or when the file's folder does
    not exist; ``prints`` says what the command prints without the option."""
    Figure = figure_class()
    if Figure is None:
        return None, (f"{option} needs matplotlib: {PLOT_HINT}; without {option} the command "
                      f"prints {prints}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return None, f"{option} {path}: folder {folder} does not exist"
    return Figure, None


def setting_label(radius):
    """How a setting of the adding experiment is named in tables and legends."""
    return "orthogonal" if radius == ORTHOGONAL else f"radius {radius:g}"


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


def adding_figure(Figure, experiment):
    """Three panels: |J| and |g| by lag at initialisation, and the MSE by span."""
    s, curves, outcomes = experiment.settings, experiment.curves, experiment.outcomes
    labels = {radius: setting_label(radius) for radius in s["radii"]}
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


def language_model_figure(Figure, checkpoint_path, report):
    """Three panels: |J| and |g| by lag for each layer, and the saturation per step."""
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
    fig.suptitle(f"rnnfast diagnose: {os.path.basename(checkpoint_path)}", fontsize=11)
    fig.tight_layout()
    return fig


def write_png(fig, path):
    """Write the figure to the PNG file ``path``: None, or the error message if it cannot."""
    try:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    except OSError as exc:
        return f"cannot write {path}: {exc}"
    return None


def png_hint(what):
    """The line a command prints without --png: how to get a picture of ``what``."""
    if not matplotlib_installed():
        return f"for a picture of {what}: {PLOT_HINT}, then add --png PATH"
    return f"for a picture of {what}, add --png PATH"


def batch_sweep_figure(Figure, sweep, labels, mode="hot"):
    """GFLOP/s against the batch size of every candidate but rnnfast's NumPy reference, one
    thread solid and two dashed, with the GEMM peak on as many threads as horizontal lines.
    ``labels`` names the candidates (impl -> label)."""
    fig = Figure(figsize=(9, 5.5))
    ax = fig.subplots()
    colours = {}
    for n_threads in sweep.runs:
        style = "-" if n_threads == 1 else "--"
        thread_word = "thread" if n_threads == 1 else "threads"
        for impl in sweep.impls:
            if impl == "numpy":  # the reference: the per-step textbook loop, not a peer to pick
                continue
            line, = ax.plot(sweep.batches, sweep.gflops(impl, n_threads, mode), style,
                            marker="o", markersize=3, color=colours.get(impl),
                            label=f"{labels[impl]}, {n_threads} {thread_word}")
            colours[impl] = line.get_color()
        ax.axhline(sweep.gemm_peak(n_threads), color="gray", linestyle=":" if n_threads == 1
                   else "-.", linewidth=1, label=f"GEMM peak, {n_threads} {thread_word}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sweep.batches, [str(B) for B in sweep.batches])
    ax.minorticks_off()
    ax.set_xlabel("batch size B")
    ax.set_ylabel("GFLOP/s (forward + backward)")
    ax.set_title(f"T = {sweep.T}, D = {sweep.D}, H = {sweep.H}, {sweep.dtype}, medians "
                 f"({mode})", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig
