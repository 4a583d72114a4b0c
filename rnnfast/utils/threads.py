"""Threads: resolving n_threads, and holding the BLAS libraries to it during a call.

The kernels take their thread count as a parameter (their team of threads, for small steps). Large steps and
the big GEMMs run in BLAS, whose own thread pool is set through threadpoolctl, only when the
caller asks for fewer threads than BLAS would use: the default (all cores) costs nothing.
"""
import functools
import os
import threading

from rnnfast.utils.validation import check_int

_controller = None  # threadpoolctl's controllers of the loaded BLAS libraries, on first use


@functools.lru_cache(maxsize=None)
def available_cores():
    """The number of cores this process may run on (read once)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_n_threads(n_threads):
    """n_threads as a positive int; None means every available core."""
    if n_threads is None:
        return available_cores()
    return check_int(n_threads, "n_threads", low=1)


def _blas_libraries():
    """threadpoolctl's controllers of the loaded BLAS libraries, found once: (process_wide,
    per_thread).

    A BLAS thread setting is one for the whole process (OpenBLAS on pthreads, whose pool all
    threads share; MKL, BLIS), except for OpenBLAS built on OpenMP, where it is each calling
    thread's OpenMP setting (threadpoolctl's OpenBLASController documents both).
    """
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        libraries = [lib for lib in ThreadpoolController().lib_controllers
                     if lib.user_api == "blas"]
        per_thread = [lib for lib in libraries if getattr(lib, "threading_layer", "") == "openmp"
                      and lib.internal_api == "openblas"]
        _controller = ([lib for lib in libraries if lib not in per_thread], per_thread)
    return _controller


class blas_threads_at_most:
    """Within the block, every loaded BLAS uses at most n_threads threads.

    Only libraries above the limit are touched (a few microseconds each), and they are
    restored afterwards; with n_threads at or above the core count, nothing is done at all.
    (A class rather than a generator: this runs on every call of the API.)

    The kernels release the GIL, so blocks in several Python threads overlap. A per-thread
    setting is saved and restored by each block. A process-wide one cannot be: a block entered
    inside another would find the other's limit and restore it for good when it leaves last,
    and the first to leave would lift the limit under the other. So process-wide settings are
    counted under a lock: the first block in progress saves them, every entry and exit applies
    the smallest limit still requested, and the last block restores them.
    """

    __slots__ = ("n_threads", "counted", "lowered")

    def __init__(self, n_threads):
        self.n_threads = n_threads
        self.counted = False
        self.lowered = ()

    def __enter__(self):
        if self.n_threads >= available_cores():
            return self
        with _lock:
            process_wide, per_thread = _blas_libraries()
            if process_wide:
                if not _requests:
                    _saved.update((lib, lib.get_num_threads()) for lib in process_wide)
                _requests[self.n_threads] = _requests.get(self.n_threads, 0) + 1
                _apply_smallest_request()
                self.counted = True
        lowered = []
        for lib in per_thread:
            current = lib.get_num_threads()
            if current > self.n_threads:
                lib.set_num_threads(self.n_threads)
                lowered.append((lib, current))
        self.lowered = lowered
        return self

    def __exit__(self, *exc_info):
        for lib, previous in self.lowered:
            lib.set_num_threads(previous)
        self.lowered = ()
        if self.counted:
            self.counted = False
            with _lock:
                _requests[self.n_threads] -= 1
                if not _requests[self.n_threads]:
                    del _requests[self.n_threads]
                _apply_smallest_request()
        return False


# The blocks of blas_threads_at_most in progress, in every thread: limit -> how many; the
# process-wide settings before the first of them; and the value each has been given since.
_lock = threading.Lock()
_requests = {}
_saved = {}
_applied = {}


def _apply_smallest_request():
    """Give each process-wide library min(its saved setting, the smallest limit in progress),
    or its saved setting when no block is in progress. Called with _lock held; a library is
    only called when its setting changes."""
    limit = min(_requests) if _requests else None
    for lib, original in _saved.items():
        wanted = original if limit is None else min(original, limit)
        if _applied.get(lib, original) != wanted:
            _set_process_wide(lib, wanted)
        _applied[lib] = wanted
    if limit is None:
        _saved.clear()
        _applied.clear()


def _set_process_wide(lib, n_threads):
    """lib.set_num_threads(n_threads), from whichever thread calls.

    threadpoolctl (from 3.6) lets only one Python thread, the first to set a limit, change a
    process-wide OpenBLAS pool, and silently ignores the others: calls made from a worker
    thread after one from the main thread would run BLAS uncapped (on more threads, and
    rounded differently). _lock orders rnnfast's own changes, so each takes control for its
    change and gives it back.
    """
    release = getattr(type(lib), "clear_controlling_thread", None)
    if release is not None:
        release(force=True)
    lib.set_num_threads(n_threads)
    if release is not None:
        release()
