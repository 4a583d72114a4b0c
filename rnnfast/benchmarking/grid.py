"""A benchmark run: every (shape, dtype, pass) of a grid, each candidate checked against the
reference and then timed in two modes, between two measurements of the machine's GEMM
throughput (the yardstick of rnnfast's GFLOP/s).

The modes (``MODES``): "hot", each candidate's calls back to back in windows of ~10 ms (a
benchmark loop: caches and branch predictors warm), and "interleaved", one call of each
candidate in turn (every call starts where the others left the caches, as in a program that
does other work between calls). Both rotate the candidates round-robin.

``run_benchmark`` is what `rnnfast bench` measures; it returns a ``BenchmarkRun`` holding every
figure and the raw windows (``to_json`` for the report), and prints nothing.
"""
import contextlib
import sys
from dataclasses import dataclass, field

import numpy as np

from rnnfast.benchmarking.machine import machine_info
from rnnfast.benchmarking.peers import ORACLE, SUBJECT, make_runner, result_error
from rnnfast.benchmarking.problems import flops, make_problem
from rnnfast.benchmarking.timing import (GEMM_LIBRARIES, GEMM_SIZES, WINDOW_S,
                                         gemm_throughput, paired_ratio, pinned_to_one_core,
                                         time_interleaved, warm_up)

__all__ = ["Row", "BenchmarkRun", "measure_row", "run_benchmark", "timing_settings",
           "AGREEMENT", "YARDSTICK", "MODES"]

# The two ways of timing (see the top of this module), and their windows' target lengths.
MODES = {"hot": WINDOW_S, "interleaved": 0.0}

# Timing: the budget per row and mode (seconds) and the minimum number of windows per
# candidate, for a full and a quick run; GEMM repeats for each.
BUDGET_S, QUICK_BUDGET_S = 2.5, 0.3
MIN_WINDOWS, QUICK_MIN_WINDOWS = 7, 3
GEMM_REPEATS, QUICK_GEMM_REPEATS = 3, 1
# The GEMM whose throughput rnnfast's GFLOP/s are a share of.
YARDSTICK = "numpy"

# Largest max|a - b| / max|b| against the reference for a candidate to count as agreeing: a
# sanity check on what is timed (tests/ holds the real tolerances). float32 is loose because
# T = 1000 steps of float32 rounding, in any summation order, drift that far.
AGREEMENT = {"float32": 1e-3, "float64": 1e-8}


def timing_settings(quick=False, budget_s=None, rounds=None):
    """Keyword arguments of ``time_interleaved`` for a row and mode: exactly ``rounds`` windows
    per candidate, or as many as fit in ``budget_s`` (default 2.5 s, 0.3 s when ``quick``)
    with at least 7 (3 when quick)."""
    if rounds:
        return {"budget_s": 0.0, "min_windows": rounds, "max_windows": rounds}
    return {"budget_s": budget_s or (QUICK_BUDGET_S if quick else BUDGET_S),
            "min_windows": QUICK_MIN_WINDOWS if quick else MIN_WINDOWS}


@dataclass
class Row:
    """The measurements of one (shape, dtype, pass), in each mode of MODES."""

    shape: tuple
    dtype: str
    pass_name: str
    medians: dict  # mode -> impl -> seconds per call (median over windows)
    samples: dict  # mode -> impl -> seconds per call, one per window
    calls_per_window: dict  # mode -> impl -> calls
    errors: dict  # impl -> relative error against the reference
    disagreeing: list  # impls whose error exceeds AGREEMENT

    @property
    def flops(self):
        return flops(self.shape, self.pass_name)

    @property
    def peers(self):
        return [impl for impl in self.errors if impl != SUBJECT]

    def speedup(self, peer, mode="hot"):
        """How many times faster the subject (cython) ran than ``peer``: the median over rounds
        of peer time / subject time within a round (``paired_ratio``)."""
        return paired_ratio(self.samples[mode][peer], self.samples[mode][SUBJECT])

    def ratio_of_medians(self, peer, mode="hot"):
        """peer median / subject median: the other estimate of the speed-up."""
        return self.medians[mode][peer] / self.medians[mode][SUBJECT]

    def best_peer(self, mode="hot"):
        """The fastest peer in ``mode`` (smallest median), or None when there is none."""
        return min(self.peers, key=lambda peer: self.medians[mode][peer], default=None)

    def gflops(self, impl=SUBJECT, mode="hot"):
        return self.flops / self.medians[mode][impl] / 1e9


def measure_row(shape, dtype, pass_name, impls, timing, n_threads):
    """Check every implementation against the reference, warm each up, then time them in
    each mode, round-robin."""
    problem = make_problem(shape, dtype)
    runners = {impl: make_runner(impl, problem, pass_name, n_threads) for impl in impls}
    expected = runners[ORACLE]()
    errors = {impl: result_error(run(), expected) for impl, run in runners.items()}
    warm_up(runners)
    samples, calls = {}, {}
    for mode, window_s in MODES.items():
        samples[mode], calls[mode] = time_interleaved(runners, window_s=window_s, **timing)
    return Row(shape, dtype, pass_name,
               medians={mode: {impl: float(np.median(s)) for impl, s in by_impl.items()}
                        for mode, by_impl in samples.items()},
               samples=samples, calls_per_window=calls, errors=errors,
               disagreeing=[impl for impl, e in errors.items() if e > AGREEMENT[dtype]])


def _measure_gemm(dtypes, quick, sizes=GEMM_SIZES):
    """GFLOP/s as {library: {dtype: {size: GFLOP/s}}}."""
    repeats = QUICK_GEMM_REPEATS if quick else GEMM_REPEATS
    return {library: {dtype: gemm_throughput(np.dtype(dtype), library, sizes, repeats)
                      for dtype in dtypes}
            for library in GEMM_LIBRARIES}


def _best_of(first, second):
    """Two nested dicts of numbers of one layout merged by taking the larger number."""
    if isinstance(first, dict):
        return {key: _best_of(first[key], second[key]) for key in first}
    return max(first, second)


@dataclass
class BenchmarkRun:
    """What one run measured, and on what."""

    info: dict  # machine_info(), read before the process was pinned to one core
    impls: list
    threads: int
    pinned_core: object  # the core a one-thread run ran on, or None
    timing: dict  # the keyword arguments of time_interleaved
    quick: bool
    gemm: dict  # {library: {dtype: {size: GFLOP/s}}}, the best of the start and the end
    rows: list = field(default_factory=list)

    def yardstick(self):
        """Per dtype, the machine's GEMM throughput that rnnfast's GFLOP/s are a share of."""
        return {dtype: max(by_size.values()) for dtype, by_size in self.gemm[YARDSTICK].items()}

    def disagreeing(self):
        """(row, impl) for every candidate that disagreed with the reference."""
        return [(row, impl) for row in self.rows for impl in row.disagreeing]

    def to_json(self, warnings=()):
        """Everything measured, the machine and the settings, as one JSON-able dict."""
        yardstick = self.yardstick()
        peers = [impl for impl in self.impls if impl != SUBJECT]
        return {
            "machine": self.info, "warnings": list(warnings),
            "settings": {"threads": self.threads, "pinned_core": self.pinned_core,
                         "quick": self.quick, "window_s": MODES, **self.timing,
                         "implementations": self.impls, "subject": SUBJECT, "oracle": ORACLE},
            "gemm_gflops": {library: {dtype: {str(n): g for n, g in by_size.items()}
                                      for dtype, by_size in by_dtype.items()}
                            for library, by_dtype in self.gemm.items()},
            "gemm_yardstick": {"library": YARDSTICK, "gflops": yardstick},
            "rows": [_row_json(row, peers, yardstick) for row in self.rows],
        }


def _row_json(row, peers, yardstick):
    """One row of to_json: every figure of every mode."""
    return {"shape": dict(zip("TBDH", row.shape)), "dtype": row.dtype, "pass": row.pass_name,
            "flops": row.flops, "median_s": row.medians,
            "speedup_of_cython": {mode: {peer: row.speedup(peer, mode) for peer in peers}
                                  for mode in MODES},
            "ratio_of_medians": {mode: {peer: row.ratio_of_medians(peer, mode) for peer in peers}
                                 for mode in MODES},
            "best_peer": {mode: row.best_peer(mode) for mode in MODES},
            "gflops": {mode: {impl: row.gflops(impl, mode) for impl in row.errors}
                       for mode in MODES},
            "gemm_share_of_cython": {mode: row.gflops(mode=mode) / yardstick[row.dtype]
                                     for mode in MODES},
            "relative_error": row.errors, "disagreeing": row.disagreeing,
            "calls_per_window": row.calls_per_window,
            "seconds_per_call_by_window": row.samples}


def run_benchmark(shapes, dtypes, passes, impls, threads=1, timing=None, quick=False,
                  on_row=None, gemm_sizes=GEMM_SIZES):
    """Measure every (shape, dtype, pass) with every implementation in ``impls``.

    Parameters
    ----------
    shapes : list of (T, B, D, H)
    dtypes : list of {"float32", "float64"}
    passes : list of {"forward", "forward+backward"}
    impls : list of str
        Names of ``PEERS`` (must include the subject, "cython", and the oracle, "numpy").
    threads : int
        Threads of BLAS and OpenMP (threadpoolctl), PyTorch and rnnfast. With 1 thread the
        process is pinned to one core for the whole measurement.
    timing : dict or None
        ``timing_settings(...)``, for each mode; default ``timing_settings(quick)``.
    quick : bool
        Fewer GEMM repeats (and the quick timing, by default).
    on_row : callable or None
        Called as on_row(i, n, shape, dtype, pass_name) before row i of n is measured.
    gemm_sizes : tuple of int
        The square GEMMs of the yardstick (default 1024 and 2048).

    Returns
    -------
    BenchmarkRun

    Raises
    ------
    ImportError
        threadpoolctl is not installed (it holds BLAS to ``threads``).
    """
    import threadpoolctl

    timing = timing or timing_settings(quick)
    cases = [(shape, dtype, pass_name) for shape in shapes for dtype in dtypes
             for pass_name in passes]
    with threadpoolctl.threadpool_limits(limits=threads):
        if "torch" in impls:  # imported by PEERS' availability check, before the limits
            sys.modules["torch"].set_num_threads(threads)
        info = machine_info()
        pinning = pinned_to_one_core() if threads == 1 else contextlib.nullcontext()
        with pinning as core:
            # The GEMM at both ends of the run, so that one slow phase cannot spoil it.
            run = BenchmarkRun(info, list(impls), threads, core, timing, quick,
                               _measure_gemm(dtypes, quick, gemm_sizes))
            for i, (shape, dtype, pass_name) in enumerate(cases, 1):
                if on_row is not None:
                    on_row(i, len(cases), shape, dtype, pass_name)
                run.rows.append(measure_row(shape, dtype, pass_name, impls, timing, threads))
            run.gemm = _best_of(run.gemm, _measure_gemm(dtypes, quick, gemm_sizes))
    return run
