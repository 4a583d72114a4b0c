"""The C allocator's thresholds: freed blocks kept for reuse instead of handed back to the system.

A training step allocates the same large arrays every time (states, logits, their gradients:
about 10 MiB at `rnnfast train`'s defaults) and frees them at its end. glibc's malloc serves
blocks above its mmap threshold with fresh mappings and hands free memory at the top of the heap
back once it exceeds its trim threshold; both thresholds adapt, up to 32 and 64 MiB, but a step's
many blocks of different sizes keep them low. Each step then faulted its arrays' pages in again:
measured here, ~1000 page faults per step at the defaults, 2-3 ms of its ~21 ms in the kernel,
and 18.5 ms per step instead of 21.5 ms with the thresholds at their ceilings. Setting them there
keeps up to 64 MiB of freed memory with the process, which is what glibc's own adaptation would
come to, at once.
"""
import ctypes
import sys

__all__ = ["reuse_freed_memory"]

# mallopt's parameters (malloc.h) and the ceilings of glibc's adaptive thresholds on 64-bit
# systems (DEFAULT_MMAP_THRESHOLD_MAX, and twice that for the trim threshold, as it adapts).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

_done = False


def reuse_freed_memory():
    """Set glibc's mmap threshold to 32 MiB and its trim threshold to 64 MiB, once per process,
    so that freed blocks up to 32 MiB are reused without page faults.

    Returns True where the C library is glibc and took both settings, else False (nothing is
    changed: other allocators keep their own policy). The settings are process-wide and stay:
    up to 64 MiB of freed memory may stay with the process; blocks above 32 MiB are still
    mapped and unmapped each time.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
