"""`rnnfast dynamics`: train an RNN on a task, then open the black box (Sussillo & Barak 2013).

Trains a TaskRNN (rnnfast.tasks) on a task, by default the 3-bit flip-flop, or loads one saved
by this command; runs it on held-out trials; starts fixed-point searches from the states it
visited (plus noise) under the task's delay input (rnnfast.dynamics.find_fixed_points); and
prints what it found: how many stable points, saddles and unstable points, their leading
eigenvalues and what the readout says at each. With --png, a picture of the trajectories and
the points in the top three principal components, and of the eigenvalues (matplotlib, the
optional extra `rnnfast[plot]`, imported only then). This module is command-line layer: it
prints.
"""
import sys
import time

import numpy as np

from rnnfast.cli.arguments import (leak_fraction, non_negative_float, non_negative_int,
                                   positive_float, positive_int)
from rnnfast.cli.figures import PLOT_HINT, png_figure_class, png_hint, write_png
from rnnfast.dynamics import find_fixed_points, principal_components, sample_states
from rnnfast.tasks import (TASKS, TaskRNN, TaskTrainer, evaluate_task, load_task_model,
                           make_task, task_checkpoint)
from rnnfast.tasks.model import RECURRENT_INITS
from rnnfast.train import checkpoint, optim
from rnnfast.train import NonFiniteError
from rnnfast.utils.threads import blas_threads_at_most

DEFAULT_CHECKPOINT = "rnnfast-dynamics.npz"
# Everything the defaults and --quick set, option by option (an explicit option wins).
DEFAULTS = {"hidden_size": 64, "steps": 1500, "batch_size": 64, "lr": 5e-3, "clip_norm": 1.0,
            "inits": 1024, "recurrent_init": "torch"}
QUICK = {"hidden_size": 16, "steps": 500, "batch_size": 32, "lr": 1e-2, "clip_norm": 1.0,
         "inits": 256, "recurrent_init": "torch"}
# The decision tasks hold a choice or a stimulus through a delay: they train from a network that
# starts by holding its state, with a smaller step (measured: a torch-initialised network
# stayed at the trivial output for delayed match-to-sample).
_SLOW_TASK = {"lr": 1e-3, "steps": 3000, "recurrent_init": "identity"}
TASK_DEFAULTS = {"flipflop": {}, "decision": _SLOW_TASK, "context": _SLOW_TASK,
                 "match": _SLOW_TASK}
EVAL_TRIALS = 256  # held-out trials: the accuracy, and the trajectories the searches start from
PROGRESS_LINES = 5  # lines of training progress
SHOWN_TRAJECTORIES = 12  # trials drawn in the picture


def configure_parser(parser):
    """Add the options of `rnnfast dynamics` to ``parser``."""
    d = DEFAULTS
    parser.add_argument("--task", choices=tuple(TASKS), default="flipflop",
                        help="the task to train on (default flipflop: the N-bit flip-flop)")
    parser.add_argument("--bits", type=positive_int, default=3,
                        help="the flip-flop's N (default 3)")
    parser.add_argument("--checkpoint", metavar="CKPT",
                        help="analyse a network saved by this command instead of training one")
    parser.add_argument("--save", metavar="PATH", default=DEFAULT_CHECKPOINT,
                        help=f"where to save the trained network (default {DEFAULT_CHECKPOINT})")
    train = parser.add_argument_group("training")
    train.add_argument("--hidden-size", dest="hidden_size", type=positive_int, metavar="H",
                       help=f"hidden units (default {d['hidden_size']})")
    train.add_argument("--nonlinearity", choices=("tanh", "relu"), default="tanh")
    train.add_argument("--leak", type=leak_fraction, default=1.0, metavar="ALPHA",
                       help="α = dt/τ of a leaky (continuous-time) network, h_t = (1 - α) "
                            "h_{t-1} + α f(a_t) (default 1: the Elman RNN)")
    train.add_argument("--noise-std", dest="noise_std", type=non_negative_float, default=0.0,
                       metavar="SIGMA",
                       help="recurrent noise σ on the pre-activation while training, of "
                            "standard deviation sqrt(2/α) σ per step (default 0: none)")
    train.add_argument("--init", dest="recurrent_init", choices=RECURRENT_INITS,
                       help="W_hh at the start: torch.nn.RNN's (the flip-flop's default) or "
                            "0.9 I + noise (the other tasks' default)")
    train.add_argument("--steps", type=positive_int, metavar="N",
                       help=f"training steps of Adam (default {d['steps']}; "
                            f"{_SLOW_TASK['steps']} for the tasks other than the flip-flop)")
    train.add_argument("--batch-size", dest="batch_size", type=positive_int, metavar="B",
                       help=f"trials per step (default {d['batch_size']})")
    train.add_argument("--lr", type=positive_float,
                       help=f"Adam's learning rate (default {d['lr']:g}; {_SLOW_TASK['lr']:g} "
                            f"for the other tasks)")
    train.add_argument("--clip-norm", dest="clip_norm", type=non_negative_float, metavar="MAX",
                       help=f"clip the gradients to this global norm (default "
                            f"{d['clip_norm']:g}; 0: no clipping)")
    train.add_argument("--seed", type=non_negative_int, default=0,
                       help="seeds the weights, the trials and the searches (default 0)")
    search = parser.add_argument_group("fixed points")
    search.add_argument("--inits", type=positive_int, metavar="N",
                        help=f"searches, started from states of held-out trials (default "
                             f"{d['inits']})")
    search.add_argument("--noise", type=non_negative_float, default=0.5,
                        help="standard deviation of the noise added to the starting states, "
                             "which spreads them towards the saddles (default 0.5)")
    search.add_argument("--tol", type=positive_float, default=1e-12,
                        help="converged when q = ½||F(h) - h||² < TOL (default 1e-12)")
    search.add_argument("--max-iter", dest="max_iter", type=positive_int, default=100,
                        help="most iterations per search (default 100)")
    search.add_argument("--slow-tol", dest="slow_tol", type=positive_float,
                        help="also report slow points, local minima of q below this")
    search.add_argument("--input", metavar="X,X,...",
                        help="the constant input of the search, comma-separated (default: the "
                             "task's delay input: zero for the flip-flop, the fixation cue for "
                             "the others)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="threads for the kernels and BLAS (default 1)")
    parser.add_argument("--png", metavar="PATH",
                        help=f"also draw trajectories, points and eigenvalues into this PNG "
                             f"file (needs {PLOT_HINT})")
    parser.add_argument("--quick", action="store_true",
                        help="a small run of a few seconds: H=16, 500 steps, 256 searches")


def _settings(args):
    """The options with the defaults filled in: --quick's or the task's (an explicit option
    wins)."""
    base = dict(DEFAULTS, **TASK_DEFAULTS[args.task])
    if args.quick:
        base.update(QUICK, **{key: value for key, value in TASK_DEFAULTS[args.task].items()
                              if key != "steps"})
    return {key: getattr(args, key) if getattr(args, key) is not None else default
            for key, default in base.items()}


def _error(message):
    print(f"rnnfast dynamics: error: {message}", file=sys.stderr)
    return 2


def _task_label(task):
    if task.name == "flipflop":
        return f"{task.n_bits}-bit flip-flop"
    return {"decision": "perceptual decision making", "context": "context-dependent "
            "integration", "match": "delayed match-to-sample"}[task.name]


# -- training ----------------------------------------------------------------------------------

def _new_model(task, args, s):
    """The network to train: the one place its settings are chosen."""
    return TaskRNN(task.input_size, s["hidden_size"], task.output_size,
                   nonlinearity=args.nonlinearity, leak=args.leak, noise_std=args.noise_std,
                   recurrent_init=s["recurrent_init"], seed=args.seed, n_threads=args.threads)


def _train(model, task, args, s):
    """Train with Adam, printing a few progress lines; returns the seconds it took."""
    trainer = TaskTrainer(model, task, optim.Adam(model.parameters(), lr=s["lr"]),
                          batch_size=s["batch_size"], clip_norm=s["clip_norm"] or None,
                          seed=np.random.default_rng([args.seed, 1]))
    every = max(1, s["steps"] // PROGRESS_LINES)
    start = time.perf_counter()
    for step in range(1, s["steps"] + 1):
        loss = trainer.step()
        if step % every == 0 or step == s["steps"]:
            print(f"  step {step:6d}  loss {loss:.5f}  ({time.perf_counter() - start:.1f} s)",
                  flush=True)
    return time.perf_counter() - start


def _model_and_task(args, s):
    """(model, task) trained here or loaded, or an exit code."""
    if args.checkpoint:
        try:
            model, task = load_task_model(args.checkpoint, n_threads=args.threads)
        except checkpoint.CheckpointError as exc:
            return _error(str(exc))
        c = model.config
        leaky = f", leak α = {c['leak']:g}" if c["leak"] != 1 else ""
        print(f"rnnfast dynamics: {args.checkpoint}: {_task_label(task)}, a {c['nonlinearity']} "
              f"RNN with H = {c['hidden_size']} + linear readout{leaky}")
        return model, task
    task = make_task(args.task, n_bits=args.bits) if args.task == "flipflop" else \
        make_task(args.task)
    model = _new_model(task, args, s)
    leaky = f", leak α = {args.leak:g}" if args.leak != 1 else ""
    noisy = f", recurrent noise σ = {args.noise_std:g}" if args.noise_std else ""
    print(f"rnnfast dynamics: {_task_label(task)}, a {args.nonlinearity} RNN with H = "
          f"{s['hidden_size']} + linear readout{leaky}{noisy}")
    print(f"  training: {s['steps']} steps of Adam (lr {s['lr']:g}), batches of "
          f"{s['batch_size']} trials, gradients clipped to norm "
          f"{s['clip_norm'] if s['clip_norm'] else 'off'}, {s['recurrent_init']} initial W_hh, "
          f"seed {args.seed}", flush=True)
    try:
        seconds = _train(model, task, args, s)
    except NonFiniteError as exc:
        return _error(f"training failed: {exc}")
    meta, sections = task_checkpoint(model, task, {"steps": s["steps"], "seed": args.seed})
    try:
        checkpoint.save(args.save, meta, sections)
    except OSError as exc:
        return _error(f"cannot write --save {args.save}: {exc}")
    print(f"  trained in {seconds:.1f} s; saved {args.save}")
    return model, task


# -- the report --------------------------------------------------------------------------------

def _kind(fp, k):
    prefix = "slow " if fp.slow[k] else ""
    if fp.stable[k]:
        return prefix + "stable"
    if fp.saddle[k]:
        return prefix + "saddle"
    if fp.unstable_dims[k] == fp.points.shape[1]:
        return prefix + "unstable"
    return prefix + "marginal"


def _complex(z):
    if abs(z.imag) < 1e-12:
        return f"{z.real:.3f}"
    return f"{z.real:.3f}{z.imag:+.3f}i"


def _table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  " + "  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
              for row in rows]
    return lines


def _readout(model, points):
    W, b = (model.readout.weight.astype(np.float64), model.readout.bias.astype(np.float64))
    return points @ W.T + b


def _print_points(fp, model, seconds, n_inits):
    K, H = fp.points.shape
    iterations = fp.iterations
    print(f"  {K} distinct points in {seconds:.2f} s; {n_inits - len(fp.unconverged)} of "
          f"{n_inits} searches converged (iterations: median {int(np.median(iterations))}, "
          f"max {int(iterations.max())})")
    saddles = fp.saddle
    by_dims = {int(d): int(np.sum(saddles & (fp.unstable_dims == d)))
               for d in np.unique(fp.unstable_dims[saddles])}
    split = ", ".join(f"{n} with {d} unstable direction{'s' if d > 1 else ''}"
                      for d, n in by_dims.items())
    others = K - int(fp.stable.sum()) - int(saddles.sum())
    print(f"  {int(fp.stable.sum())} stable, {int(saddles.sum())} saddles"
          + (f" ({split})" if split else "") + (f", {others} other" if others else "")
          + (f"; {int(fp.slow.sum())} of them slow points" if fp.slow.any() else ""))
    if not K:
        return
    readout = _readout(model, fp.points)
    rows = []
    for k in range(K):
        values = readout[k]
        shown = ("(" + ", ".join(f"{v:+.2f}" for v in values) + ")" if len(values) <= 4
                 else f"|y| {np.linalg.norm(values):.2f}")
        lead = fp.eigenvalues[k]
        rows.append([k, _kind(fp, k), int(fp.unstable_dims[k]), f"{abs(lead[0]):.3f}",
                     _complex(lead[0]), _complex(lead[1]) if H > 1 else "", f"{fp.q[k]:.1e}",
                     int(fp.counts[k]), shown])
    print()
    for line in _table(["#", "kind", "unstable", "|λ1|", "λ1", "λ2", "q", "starts", "readout"],
                       rows):
        print(line)
    print("  λ: eigenvalues of the Jacobian dF/dh at the point, by decreasing modulus (stable: "
          "all |λ| < 1); starts: searches that ended there; readout: W_hy h* + b_y")


# -- the picture -------------------------------------------------------------------------------

def _figure(Figure, fp, states, title):
    """Trajectories and points in the top principal components, and the eigenvalues."""
    projection = principal_components(states, 3)
    fig = Figure(figsize=(13, 6))
    k = len(projection.explained)
    ax = fig.add_subplot(1, 2, 1, projection="3d" if k == 3 else None)
    for trial in range(min(SHOWN_TRAJECTORIES, states.shape[1])):
        path = projection.project(states[:, trial])
        ax.plot(*path.T[:k], color="0.6", linewidth=0.6)
    points = projection.project(fp.points)
    if len(fp):
        stable, saddle = fp.stable, fp.saddle
        other = ~stable & ~saddle
        ax.scatter(*points[stable].T[:k], color="black", s=40, label="stable", depthshade=False)
        ax.scatter(*points[saddle].T[:k], color="red", marker="x", s=40, label="saddle",
                   depthshade=False)
        if other.any():
            ax.scatter(*points[other].T[:k], color="blue", marker="^", s=40, label="other",
                       depthshade=False)
        _, vectors = fp.eig()
        scale = 0.1 * np.ptp(projection.project(states.reshape(-1, states.shape[-1])), axis=0)
        for index in np.flatnonzero(saddle):  # each saddle's unstable directions
            for j in range(int(fp.unstable_dims[index])):
                direction = projection.components @ vectors[index][:, j].real
                norm = np.linalg.norm(direction)
                if norm > 0:
                    segment = np.outer([-1, 1], direction / norm * scale[:k].max())
                    ax.plot(*(points[index][:k] + segment).T, color="red", linewidth=1)
        ax.legend(fontsize=8)
    explained = ", ".join(f"{100 * e:.0f}%" for e in projection.explained)
    ax.set_title(f"trajectories and fixed points, top PCs ({explained} of the variance)",
                 fontsize=10)
    for axis, name in zip("xyz"[:k], ("PC1", "PC2", "PC3")):
        getattr(ax, f"set_{axis}label")(name)
    ax2 = fig.add_subplot(1, 2, 2)
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200))
    ax2.plot(circle.real, circle.imag, color="0.5", linewidth=1)
    for mask, color, label in ((fp.stable, "black", "at stable points"),
                               (fp.saddle, "red", "at saddles")):
        values = fp.eigenvalues[mask].ravel()
        if values.size:
            ax2.scatter(values.real, values.imag, s=8, color=color, alpha=0.5, label=label)
    ax2.set_aspect("equal")
    ax2.set_xlabel("Re λ")
    ax2.set_ylabel("Im λ")
    ax2.set_title("eigenvalues of dF/dh (unit circle: |λ| = 1)", fontsize=10)
    ax2.grid(True, alpha=0.3)
    if len(fp):
        ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# -- the command -------------------------------------------------------------------------------

def _search_input(args, task):
    if args.input is None:
        return task.delay_input()
    try:
        x = np.array([float(item) for item in args.input.split(",")])
    except ValueError:
        raise ValueError(f"--input must be comma-separated numbers; got {args.input!r}") from None
    if x.shape != (task.input_size,) or not np.isfinite(x).all():
        raise ValueError(f"--input must have {task.input_size} finite numbers (the task's "
                         f"inputs); got {args.input!r}")
    return x


def run(args):
    """Run `rnnfast dynamics`. Returns 0, or 2 when it cannot (a bad checkpoint or option,
    --png without matplotlib or to an unwritable place)."""
    # NumPy's own GEMMs (the readout, the solver) on --threads too: on a busy machine, BLAS
    # threads waiting for a core that another process holds cost far more than they give.
    with blas_threads_at_most(args.threads):
        return _run(args)


def _run(args):
    s = _settings(args)
    Figure = None
    if args.png:
        Figure, problem = png_figure_class(args.png, "--png", "its tables")
        if problem:
            return _error(problem)
    result = _model_and_task(args, s)
    if isinstance(result, int):
        return result
    model, task = result
    try:
        x = _search_input(args, task)
    except ValueError as exc:
        return _error(str(exc))

    held_out = task.batch(EVAL_TRIALS, np.random.default_rng([args.seed, 2]), dtype=model.dtype)
    loss, accuracy = evaluate_task(model, task, held_out)
    print(f"  held-out trials: loss {loss:.5f}, accuracy {100 * accuracy:.1f}% "
          f"({EVAL_TRIALS} trials)")
    _, states = model.forward(held_out.inputs)
    starts = sample_states(states, s["inits"], noise=args.noise, mask=held_out.mask,
                           seed=np.random.default_rng([args.seed, 3]))
    print()
    print(f"fixed points under the constant input x = ({', '.join(f'{v:g}' for v in x)}), "
          f"from {s['inits']} states of the held-out trials + noise {args.noise:g}")
    start = time.perf_counter()
    fp = find_fixed_points(model, starts, x, tol=args.tol, max_iter=args.max_iter,
                           slow_tol=args.slow_tol, n_threads=args.threads)
    _print_points(fp, model, time.perf_counter() - start, s["inits"])
    print()
    if args.png:
        title = f"rnnfast dynamics: {_task_label(task)}, H = {model.config['hidden_size']}"
        problem = write_png(_figure(Figure, fp, states.astype(np.float64), title), args.png)
        if problem:
            return _error(f"--png: {problem}")
        print(f"wrote {args.png}")
    else:
        print(png_hint("the trajectories and points"))
    return 0
