"""The timing harness: interleaved windows, paired ratios, one pinned core, GEMM throughput.

This machine (like any shared or virtual one) has phases of a fraction of a second to seconds
in which everything runs up to 2x slower. So candidates are timed round-robin (A, B, C, A, B,
C, ...) in short windows of a few calls each, the starting candidate rotating every round; a
candidate's figure is the median over its windows of the time per call, and a speed-up is the
median over rounds of the ratio of two candidates' windows in the same round (``paired_ratio``).
Only ratios within one run are meaningful: never compare absolute times across runs.
"""
import contextlib
import gc
import os
import sys
import threading
import time

import numpy as np

from rnnfast.utils.threads import available_cores

__all__ = ["WINDOW_S", "warm_up", "time_interleaved", "paired_ratio", "pinned_to_one_core",
           "gemm_throughput", "GEMM_SIZES", "GEMM_LIBRARIES"]

# The target length of one window, in seconds.
WINDOW_S = 0.01
# Every candidate is warmed up for at least this long and this many calls before it is timed.
WARM_UP_S, WARM_UP_CALLS = 0.05, 3
GEMM_SIZES = (1024, 2048)
# NumPy's GEMM is the yardstick of the machine's throughput; SciPy's BLAS, which rnnfast's
# kernels call, is measured beside it because the two wheels ship different OpenBLAS builds.
GEMM_LIBRARIES = ("numpy", "scipy")


def _time_window(run, calls):
    """Seconds per call of ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / calls


def _calls_per_window(run, window_s):
    """How many calls fill a window of about ``window_s`` (at least one); the call that
    measures it is the warm-up."""
    return max(1, int(window_s / _time_window(run, 1)))


def warm_up(runners, seconds=WARM_UP_S, min_calls=WARM_UP_CALLS):
    """Call every runner, in turn, until each has run ``min_calls`` times and ``seconds`` have
    passed for it: first calls (compilation, page faults, lazy imports, a processor that has
    just left an idle state) are kept out of what is timed afterwards."""
    for run in runners.values():
        start = time.perf_counter()
        calls = 0
        while calls < min_calls or time.perf_counter() - start < seconds:
            run()
            calls += 1


def time_interleaved(runners, budget_s, min_windows, max_windows=None, window_s=WINDOW_S):
    """Seconds per call of each runner, one figure per window, timed round-robin; and the
    number of calls in each runner's windows.

    Parameters
    ----------
    runners : dict of str to callable
        The candidates, each a zero-argument callable.
    budget_s : float
        Rounds go on until this many seconds have passed and every runner has ``min_windows``
        windows, or until ``max_windows`` (None: no limit).
    min_windows, max_windows : int
    window_s : float
        The target length of a window: each runner gets as many calls per window as fill it,
        at least one (0: one call per window). The call that sizes it warms the runner up.

    Returns
    -------
    samples : dict of str to list of float
        Seconds per call in each of the runner's windows, in round order.
    calls : dict of str to int
        Calls per window of each runner.

    Every round gives each runner one window, starting with a different runner each round.
    Garbage collection is off meanwhile.
    """
    names = list(runners)
    calls = {name: _calls_per_window(runners[name], window_s) for name in names}
    samples = {name: [] for name in names}
    start = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_ in range(max_windows or sys.maxsize):
            first = round_ % len(names)
            for name in names[first:] + names[:first]:
                samples[name].append(_time_window(runners[name], calls[name]))
            if round_ + 1 >= min_windows and time.perf_counter() - start >= budget_s:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples, calls


def paired_ratio(numerator, denominator):
    """The median over rounds of numerator[i] / denominator[i]: how many times slower the first
    candidate ran than the second. Two windows of one round are seconds apart at most, so a
    slow phase of the machine mostly hits both; pairing them makes the ratio steadier than the
    ratio of medians when rounds are few."""
    return float(np.median(np.divide(numerator, denominator)))


@contextlib.contextmanager
def pinned_to_one_core(core=None, every_thread=True):
    """Within the block, the whole process runs on one core (``os.sched_setaffinity``), so that
    one-thread figures are not helped or hurt by the scheduler moving threads between cores;
    the affinity is restored afterwards. Yields the core, or None where affinity cannot be set
    (not Linux). ``core``: which one (default: the lowest this process may use).
    ``every_thread=False`` pins the calling thread only: for one-thread steps timed between
    steps on two threads, where the pools those left spinning would otherwise take turns
    with the step on its core (a program on one thread has no such pools)."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    allowed = os.sched_getaffinity(0)
    core = min(allowed) if core is None else core
    available_cores()  # rnnfast counts the cores once: before the pinning, not under it
    # sched_setaffinity(0) sets the calling thread's only: the threads other libraries started
    # before (JAX's pool, torch's, OpenBLAS's, rnnfast's team) are pinned one by one, and
    # threads started inside the block inherit the pinning.
    before = {}
    for thread in _threads() if every_thread else [threading.get_native_id()]:
        try:
            before[thread] = os.sched_getaffinity(thread)
            os.sched_setaffinity(thread, {core})
        except OSError:  # the thread has ended
            before.pop(thread, None)
    try:
        yield core
    finally:
        for thread in _threads() if every_thread else before:
            try:
                os.sched_setaffinity(thread, before.get(thread, allowed))
            except OSError:
                pass


def _threads():
    """The ids of this process's threads (the calling one first), where Linux lists them."""
    own = threading.get_native_id()
    try:
        others = [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        others = []
    return [own] + [thread for thread in others if thread != own]


def _gemm_call(library, a, b, c):
    """A zero-argument call of ``library``'s GEMM computing c = a @ b in place."""
    if library == "numpy":
        return lambda: np.matmul(a, b, out=c)
    from scipy.linalg import blas

    gemm = blas.get_blas_funcs("gemm", dtype=a.dtype)  # Fortran order: no copies
    return lambda: gemm(1.0, a, b, beta=0.0, c=c, overwrite_c=1)


def _timed(function):
    """Seconds one call of ``function`` takes."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def gemm_throughput(dtype, library="numpy", sizes=GEMM_SIZES, repeats=3):
    """Best GFLOP/s of a BLAS GEMM on square matrices of each size, {n: GFLOP/s}: NumPy's
    matmul, or SciPy's BLAS (the library rnnfast's kernels call through
    scipy.linalg.cython_blas)."""
    rng = np.random.default_rng(0)
    best = {}
    for n in sizes:
        a, b = (np.asfortranarray(rng.standard_normal((n, n)), dtype) for _ in range(2))
        c = np.zeros((n, n), dtype=dtype, order="F")
        call = _gemm_call(library, a, b, c)
        call()  # warm-up: page in, spin up BLAS
        seconds = min(_timed(call) for _ in range(repeats))
        best[n] = 2 * n ** 3 / seconds / 1e9
    return best
