"""Threads: resolving n_threads, and holding the BLAS libraries to it during a call.

The kernels take their thread count as a parameter (OpenMP, for small steps). Large steps and
the big GEMMs run in BLAS, whose own thread pool is set through threadpoolctl, only when the
caller asks for fewer threads than BLAS would use: the default (all cores) costs nothing.
"""
import functools
import operator
import os

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
    if isinstance(n_threads, bool):
        raise TypeError(f"n_threads must be a positive int or None; got {n_threads!r}")
    try:
        n = operator.index(n_threads)
    except TypeError:
        raise TypeError(f"n_threads must be a positive int or None; "
                        f"got {type(n_threads).__name__} {n_threads!r}") from None
    if n < 1:
        raise ValueError(f"n_threads must be at least 1; got {n}")
    return n


def _blas_libraries():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        controller = ThreadpoolController()
        _controller = [lib for lib in controller.lib_controllers if lib.user_api == "blas"]
    return _controller


class blas_threads_at_most:
    """Within the block, every loaded BLAS uses at most n_threads threads.

    Only libraries above the limit are touched (a few microseconds each), and they are
    restored afterwards; with n_threads at or above the core count, nothing is done at all.
    (A class rather than a generator: this runs on every call of the API.)
    """

    __slots__ = ("n_threads", "lowered")

    def __init__(self, n_threads):
        self.n_threads = n_threads
        self.lowered = ()

    def __enter__(self):
        if self.n_threads < available_cores():
            lowered = []
            for lib in _blas_libraries():
                current = lib.get_num_threads()
                if current > self.n_threads:
                    lib.set_num_threads(self.n_threads)
                    lowered.append((lib, current))
            self.lowered = lowered
        return self

    def __exit__(self, *exc_info):
        for lib, previous in self.lowered:
            lib.set_num_threads(previous)
        return False
