"""`rnnfast bench`: the speed of rnnfast against its peers, measured in one interleaved run.

For each shape (T, B, D, H), dtype and pass ("forward", or "forward+backward" with the loss
sum(out * G) so that every step has an upstream gradient) it times rnnfast's compiled backend
against its NumPy reference, a batched NumPy peer, torch.nn.RNN, numba and JAX (those
installed; rnnfast.benchmarking.peers), after checking that every candidate agrees with the
reference: hot (calls back to back) and interleaved (one call of each in turn), round-robin
(rnnfast.benchmarking.timing); one-thread runs are pinned to one core. The machine's GEMM
throughput (NumPy matmul on square 1024 and 2048 matrices, best GFLOP/s at the start and at the
end of the run) is the yardstick for rnnfast's GFLOP/s; SciPy's BLAS, which the kernels call, is
measured beside it. This module parses the options, runs rnnfast.benchmarking.run_benchmark
and prints the report.
"""
import argparse
import json
import os
import sys

from rnnfast import benchmarking
from rnnfast.benchmarking import AGREEMENT, PEERS, SLOW_BLAS_ENV, SUBJECT, YARDSTICK
from rnnfast.cli import figures
from rnnfast.cli.arguments import positive_float, positive_int
from rnnfast.cli.output import format_seconds, format_table
from rnnfast.cli.progress import Progress

PASS_LABELS = {"forward": "fwd", "forward+backward": "fwd+bwd"}


def _sizes(names):
    """argparse type: "T,B,D,H" (for names "TBDH") -> (T, B, D, H), each a positive integer."""
    words = {3: "three", 4: "four"}

    def parse(text):
        try:
            shape = tuple(int(part) for part in text.split(","))
        except ValueError:
            shape = ()
        if len(shape) != len(names) or min(shape) < 1:
            raise argparse.ArgumentTypeError(
                f"expected {','.join(names)} ({words[len(names)]} positive integers); got "
                f"{text!r}")
        return shape

    return parse


_shape, _plot_shape = _sizes("TBDH"), _sizes("TDH")


def configure_parser(parser):
    """Add the options of `rnnfast bench` to ``parser``."""
    parser.description = (
        "Time rnnfast's Cython backend against its NumPy reference, a batched NumPy peer, "
        "torch.nn.RNN, numba and JAX (those installed) over a grid of shapes, hot (calls back "
        "to back) and interleaved (one call of each in turn), and report medians, the speed-up "
        "over the best peer, GFLOP/s and the share of this machine's GEMM throughput.")
    parser.add_argument("--quick", action="store_true",
                        help=f"{len(benchmarking.QUICK_SHAPES)} shapes and a short time budget "
                             "per row (well under a minute)")
    parser.add_argument("--shapes", nargs="+", type=_shape, metavar="T,B,D,H",
                        help="shapes to measure (default: the full grid, or --quick's)")
    parser.add_argument("--dtype", nargs="+", choices=benchmarking.DTYPES,
                        default=list(benchmarking.DTYPES), dest="dtypes",
                        help="dtypes (default: both)")
    parser.add_argument("--pass", nargs="+", choices=benchmarking.PASSES,
                        default=list(benchmarking.PASSES), dest="passes",
                        help="passes (default: both)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="threads for BLAS, PyTorch and rnnfast (default 1, with the process "
                             "pinned to one core)")
    parser.add_argument("--rounds", type=positive_int,
                        help="exactly this many interleaved windows per candidate and row "
                             "(default: as many as fit in --budget)")
    parser.add_argument("--budget", type=positive_float,
                        help=f"seconds of timing per row (default "
                             f"{benchmarking.timing_settings()['budget_s']:g}, "
                             f"{benchmarking.timing_settings(quick=True)['budget_s']:g} with "
                             f"--quick)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--exclude", nargs="+", default=[], choices=list(PEERS),
                        metavar="PEER", help="leave these candidates out (not cython or numpy: "
                                             "the subject and the reference)")
    parser.add_argument("--json", metavar="FILE",
                        help="also write every measurement and the machine information as JSON")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="instead of the grid: GFLOP/s against the batch size (--plot-batches) "
                             "at T, D, H = --plot-shape, forward+backward, the first --dtype, "
                             "every candidate on one thread and on two, with the GEMM peak, "
                             "drawn to FILE.png (needs matplotlib)")
    parser.add_argument("--plot-batches", nargs="+", type=positive_int, metavar="B",
                        default=list(benchmarking.BATCHES), help="batch sizes of --plot "
                        "(default: %(default)s)")
    parser.add_argument("--plot-shape", type=_plot_shape, default=(50, 256, 256),
                        metavar="T,D,H", help="the rest of --plot's shape (default 50,256,256)")
    parser.add_argument("--gemm-sizes", nargs="+", type=positive_int, metavar="N",
                        help="square GEMMs of the peak with --plot (default 1024 2048)")


# -- the report ------------------------------------------------------------------------------

def _library_line(lib):
    """One thread library: API, version, kernel, threads, file and the package it serves."""
    threads = f"{lib['num_threads']} thread" + ("" if lib["num_threads"] == 1 else "s")
    where = f"{os.path.basename(lib['filepath'] or '?')} ({lib['owner']})"
    if lib["user_api"] != "blas":
        return f"{lib['user_api']}: {threads}, {where}"
    return (f"{lib['user_api']}: {lib['internal_api']} {lib['version']}, "
            f"{lib['architecture']} kernel, {threads}, {where}")


def header_lines(run):
    """What was measured on: machine, versions, BLAS, threads, the GEMM yardstick."""
    info = run.info
    v = info["versions"]
    flags = ", ".join(info["cpu_flags"]) or "unknown"
    lines = [
        f"rnnfast {v['rnnfast']} bench: vanilla RNN (tanh)",
        f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"SIMD: {flags}; {info['platform']}",
        f"python {v['python']}, numpy {v['numpy']}, scipy {v['scipy']}, "
        f"torch {v['torch'] or 'not used'}",
    ]
    lines += map(_library_line, info["thread_libraries"])
    pinned = "" if run.pinned_core is None else f"; the process pinned to core {run.pinned_core}"
    lines.append(f"threads used: {run.threads} (BLAS and OpenMP via threadpoolctl, "
                 f"torch.set_num_threads, rnnfast n_threads={run.threads}{pinned})")
    for library, by_dtype in run.gemm.items():
        role = "the yardstick of % GEMM" if library == YARDSTICK else "what rnnfast's kernels call"
        lines.append(f"GEMM {library} ({role}), best GFLOP/s on n x n: " + "; ".join(
            f"{dtype} " + ", ".join(f"n={n} {g:.1f}" for n, g in by_size.items())
            for dtype, by_size in by_dtype.items()))
    return lines


def _timing_line(run):
    timing = run.timing
    how_many = (f"{timing['min_windows']} per candidate" if timing.get("max_windows") else
                f"~{timing['budget_s']:g} s per row and mode (at least {timing['min_windows']} "
                f"windows)")
    return (f"timing: every candidate warmed up, then round-robin in two modes: hot, windows of "
            f"~{benchmarking.WINDOW_S * 1e3:.0f} ms of calls back to back; interleaved, one "
            f"call of each in turn; {how_many}; median time per call; speed-up = median over "
            f"rounds of peer / cython")


MODE_TITLES = {"hot": "hot: each candidate's calls back to back",
               "interleaved": "interleaved: one call of each candidate in turn (cold caches)"}


def _row_cells(row, impls, gemm_best, mode):
    T, B, D, H = row.shape
    times = [format_seconds(row.medians[mode][impl]) + ("!" if impl in row.disagreeing else "")
             for impl in impls]
    best = row.best_peer(mode)
    gflops = row.gflops(mode=mode)
    cells = ([f"{T},{B},{D},{H}", row.dtype, PASS_LABELS[row.pass_name]] + times
             + [PEERS[best].label if best else "-",
                f"{row.speedup(best, mode):.2f}x" if best else "-",
                f"{gflops:.2f}", f"{100 * gflops / gemm_best[row.dtype]:.1f}%"])
    if mode == "interleaved":
        cells.append(f"{row.medians[mode][SUBJECT] / row.medians['hot'][SUBJECT]:.2f}x")
    return cells


def table_lines(run, mode="hot"):
    """The table of one mode: a row per (shape, dtype, pass); each candidate's median time, the
    best peer and rnnfast's speed-up over it, GFLOP/s, % GEMM (and, interleaved, how much
    slower rnnfast ran than hot)."""
    labels = {impl: PEERS[impl].label for impl in run.impls}
    headers = (["T,B,D,H", "dtype", "pass"] + [labels[impl] for impl in run.impls]
               + ["best peer", "x best", "GFLOP/s", "% GEMM"])
    if mode == "interleaved":
        headers.append("cython / hot")
    rows = [_row_cells(row, run.impls, run.yardstick(), mode) for row in run.rows]
    return [MODE_TITLES[mode]] + format_table(headers, rows, left_columns=3)


def _disagreement_lines(run):
    """The candidates that disagreed with the reference, if any."""
    disagreeing = run.disagreeing()
    if not disagreeing:
        return []
    return ["", f"! disagrees with the NumPy reference beyond the sanity bound {AGREEMENT} "
                "(max |diff| / max |ref| over out and gradients):"] + [
        f"  {impl} at {row.shape} {row.dtype} {row.pass_name}: {row.errors[impl]:.2e}"
        for row, impl in disagreeing]


# -- the command -----------------------------------------------------------------------------

def _json_path_problem(path, option):
    """Why ``path`` cannot be written, or None: checked before a run of minutes, not after."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"{option} {path}: no folder {folder}"
    if not os.access(folder, os.W_OK):
        return f"{option} {path}: folder {folder} is not writable"
    return None


def _plot_problem(path):
    """Why --plot cannot draw to ``path``, or None."""
    if not figures.matplotlib_installed():
        return f"--plot needs matplotlib: {figures.PLOT_HINT}"
    return _json_path_problem(path, "--plot")


def _run_plot(args, impls):
    """--plot: the batch sweep, a table of its GFLOP/s, and the picture."""
    T, D, H = args.plot_shape
    dtype = args.dtypes[0]
    progress = Progress(log_every=0)

    def show(n_threads, i, n, shape, dtype, pass_name):
        progress.show(f"[{n_threads} thread(s): {i}/{n}] T={T} B={shape[1]} D={D} H={H} {dtype}")

    sweep = benchmarking.sweep_batches(
        impls, tuple(args.plot_batches), T, D, H, dtype,
        timing=benchmarking.timing_settings(True, args.budget, args.rounds),
        gemm_sizes=tuple(args.gemm_sizes or benchmarking.GEMM_SIZES), on_row=show)
    progress.finish("")
    first = next(iter(sweep.runs.values()))
    for line in header_lines(first):
        print(line)
    print(f"GFLOP/s (hot medians), forward+backward, T={T}, D={D}, H={H}, {dtype}; GEMM peak: "
          + ", ".join(f"{sweep.gemm_peak(n):.1f} on {n} thread(s)" for n in sweep.runs))
    headers = ["impl", "threads"] + [f"B={B}" for B in sweep.batches]
    rows = [[PEERS[impl].label, str(n)] + [f"{g:.1f}" for g in sweep.gflops(impl, n)]
            for n in sweep.runs for impl in sweep.impls]
    for line in format_table(headers, rows, left_columns=2):
        print(line)
    labels = {impl: "rnnfast" if impl == SUBJECT else PEERS[impl].label for impl in sweep.impls}
    problem = figures.write_png(figures.batch_sweep_figure(figures.figure_class(), sweep, labels),
                                args.plot)
    if problem:
        print(f"rnnfast bench: --plot: {problem}", file=sys.stderr)
        return 2
    print(f"wrote {args.plot}")
    disagreeing = False
    for run in sweep.runs.values():
        for line in _disagreement_lines(run):
            print(line)
        disagreeing = disagreeing or bool(run.disagreeing())
    return 1 if disagreeing else 0


def run(args):
    """Run the benchmark described by ``args`` and print the report. Returns 0; 1 when some
    implementation disagreed with the reference; 2 when it cannot run (threadpoolctl missing,
    --json not writable)."""
    try:
        import threadpoolctl  # noqa: F401 - run_benchmark holds BLAS to --threads with it
    except ImportError:
        print("rnnfast bench needs threadpoolctl to pin BLAS threads: pip install threadpoolctl "
              "(it is in rnnfast's test and bench extras)", file=sys.stderr)
        return 2
    problem = (args.json and _json_path_problem(args.json, "--json")
               or args.plot and _plot_problem(args.plot))
    if problem:
        print(f"rnnfast bench: {problem}", file=sys.stderr)
        return 2
    warnings = [f"{name} is set: it slows a current OpenBLAS on this processor; for true numbers "
                f"run `env -u {' -u '.join(SLOW_BLAS_ENV)} rnnfast bench`"
                for name in benchmarking.slow_blas_environment()]
    for warning in warnings:
        print("WARNING: " + warning, flush=True)
    # torch is imported here, before the thread limits, so that its OpenMP is limited too.
    excluded = set(args.exclude) | ({"torch"} if args.no_torch else set())
    if excluded & {SUBJECT, benchmarking.ORACLE}:
        print("rnnfast bench: --exclude cannot leave out cython or numpy (the subject and the "
              "reference)", file=sys.stderr)
        return 2
    impls = benchmarking.available_implementations(exclude=tuple(excluded))
    for name, peer in PEERS.items():
        if name not in excluded and not peer.available():
            print(f"skipped {peer.label}: not installed ({peer.install})", flush=True)
    if args.plot:
        return _run_plot(args, impls)
    progress = Progress(log_every=0)

    def show(i, n, shape, dtype, pass_name):
        T, B, D, H = shape
        progress.show(f"[{i}/{n}] T={T} B={B} D={D} H={H} {dtype} {pass_name}")

    record = benchmarking.run_benchmark(
        args.shapes or (benchmarking.QUICK_SHAPES if args.quick else benchmarking.SHAPES),
        args.dtypes, args.passes, impls, threads=args.threads, quick=args.quick,
        timing=benchmarking.timing_settings(args.quick, args.budget, args.rounds), on_row=show)
    progress.finish("")
    tables = []
    for mode in benchmarking.MODES:
        tables += [""] + table_lines(record, mode)
    for line in header_lines(record) + [_timing_line(record)] + tables + _disagreement_lines(record):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record.to_json(warnings), f, indent=1)
        print(f"\nwrote {args.json}")
    return 1 if record.disagreeing() else 0
