"""The machine's caches: the size of one core's L2, which the kernels' step switch compares
W_hh with (rnnfast/_kernels/switches.pxi: a small step reads W_hh once per group of rows, and
beyond L2 each of those reads comes from farther out)."""
import functools
import glob
import os

__all__ = ["l2_cache_bytes"]

FALLBACK_L2_BYTES = 1 << 20  # where the system does not say (not Linux, no sysfs)
SYSFS_CPUS = "/sys/devices/system/cpu"

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size_bytes(text):
    """Bytes of a sysfs cache size ("2048K", "1M", "512")."""
    text = text.strip().upper()
    if text and text[-1] in _UNITS:
        return int(text[:-1]) * _UNITS[text[-1]]
    return int(text)


@functools.lru_cache(maxsize=None)
def l2_cache_bytes(cpu=None):
    """The L2 (data or unified) cache of one core in bytes, as Linux's sysfs gives it for the
    first core this process may run on (or ``cpu``); FALLBACK_L2_BYTES where it cannot be read."""
    if cpu is None:
        try:
            cpu = min(os.sched_getaffinity(0))
        except (AttributeError, OSError, ValueError):
            cpu = 0
    for index in sorted(glob.glob(os.path.join(SYSFS_CPUS, f"cpu{cpu}", "cache", "index*"))):
        try:
            with open(os.path.join(index, "level")) as level, \
                    open(os.path.join(index, "type")) as kind, \
                    open(os.path.join(index, "size")) as size:
                if level.read().strip() == "2" and kind.read().strip() in ("Unified", "Data"):
                    return _size_bytes(size.read())
        except (OSError, ValueError):
            continue
    return FALLBACK_L2_BYTES
