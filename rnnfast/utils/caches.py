"""The machine's caches: the sizes of one core's L1 data cache and L2, which the kernels' step
switch compares W_hh with (rnnfast/_kernels/switches.pxi: a small step reads W_hh once per group
of rows, and beyond L2 each of those reads comes from farther out; a copy of W_hh on cache lines
pays unless it pushes a W_hh that fits L1 out of it)."""
import functools
import glob
import os

__all__ = ["l1_data_cache_bytes", "l2_cache_bytes"]

# where the system does not say (not Linux, no sysfs)
FALLBACK_L1_DATA_BYTES = 32 << 10
FALLBACK_L2_BYTES = 1 << 20
SYSFS_CPUS = "/sys/devices/system/cpu"

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size_bytes(text):
    """Bytes of a sysfs cache size ("2048K", "1M", "512")."""
    text = text.strip().upper()
    if text and text[-1] in _UNITS:
        return int(text[:-1]) * _UNITS[text[-1]]
    return int(text)


def _sysfs_cache_bytes(level, kinds, cpu):
    """The size in bytes of the cache of `level` and of a type in `kinds` that Linux's sysfs
    gives for core `cpu` (None: the first core this process may run on), or None."""
    if cpu is None:
        try:
            cpu = min(os.sched_getaffinity(0))
        except (AttributeError, OSError, ValueError):
            cpu = 0
    for index in sorted(glob.glob(os.path.join(SYSFS_CPUS, f"cpu{cpu}", "cache", "index*"))):
        try:
            with open(os.path.join(index, "level")) as found_level, \
                    open(os.path.join(index, "type")) as kind, \
                    open(os.path.join(index, "size")) as size:
                if found_level.read().strip() == str(level) and kind.read().strip() in kinds:
                    return _size_bytes(size.read())
        except (OSError, ValueError):
            continue
    return None


@functools.lru_cache(maxsize=None)
def l1_data_cache_bytes(cpu=None):
    """The L1 data cache of one core in bytes, from sysfs as for l2_cache_bytes;
    FALLBACK_L1_DATA_BYTES where it cannot be read."""
    found = _sysfs_cache_bytes(1, ("Data", "Unified"), cpu)
    return FALLBACK_L1_DATA_BYTES if found is None else found


@functools.lru_cache(maxsize=None)
def l2_cache_bytes(cpu=None):
    """The L2 (data or unified) cache of one core in bytes, as Linux's sysfs gives it for the
    first core this process may run on (or ``cpu``); FALLBACK_L2_BYTES where it cannot be read."""
    found = _sysfs_cache_bytes(2, ("Unified", "Data"), cpu)
    return FALLBACK_L2_BYTES if found is None else found
