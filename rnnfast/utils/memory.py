"""Memory: a request that cannot fit fails with a MemoryError naming its size, before any work.

Every public function lists what it allocates that grows with its arguments and calls
``check_allocation`` before it allocates or copies anything; ``surely_fits`` is the quick test
that lets small calls skip the list.
"""
import functools
import os

import numpy as np

__all__ = ["memory_limit", "format_bytes", "buffer_bytes", "surely_fits", "check_allocation"]


def _meminfo_bytes(field):
    """A field of /proc/meminfo (Linux) in bytes, or None."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # the file says kB, meaning KiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_limit():
    """The memory limit of this process's control group (a container's), or None.

    Read at the root of the cgroup file system, which is the container's own in a cgroup
    namespace: v2 (memory.max) or v1 (memory/memory.limit_in_bytes, "unlimited" being a
    number near 2**63).
    """
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as file:
                text = file.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


@functools.lru_cache(maxsize=None)
def memory_limit():
    """(bytes, description): the most memory this process can ever hold, read once.

    Physical memory plus swap, capped by the container's limit. Not MemAvailable: that moves
    with whatever else runs (this machine is shared), so the same call would fail or pass by
    chance; the total is a property of the machine, and a request beyond it can never succeed.
    Without this check such a request does not always fail cleanly either: with Linux's
    overcommit, np.empty of more than is free succeeds, and the process is killed when the
    kernel first writes the pages. Requests below the total but above what is free right now
    are left to NumPy, whose own MemoryError passes through. None where the size is unknown.
    """
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None
    swap = _meminfo_bytes("SwapTotal") or 0
    limit, description = physical + swap, "of RAM + swap" if swap else "of RAM"
    cgroup = _cgroup_limit()
    if cgroup is not None and cgroup < limit:
        limit, description = cgroup, "allowed by this container's memory limit"
    return limit, description


def format_bytes(size):
    """size in bytes as a short decimal figure: 512 B, 3.2 MB, 4.5 TB."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB"):
        if size < 1000 or unit == "EB":
            return f"{size} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


def buffer_bytes(shape, dtype):
    """Bytes of an array of shape (Python ints: no overflow, however large) and dtype."""
    count = 1
    for size in shape:
        count *= size
    return count * (dtype.itemsize if isinstance(dtype, np.dtype) else np.dtype(dtype).itemsize)


def surely_fits(upper_bound):
    """Whether upper_bound bytes fit in this machine's memory: a quick test, so that calls on
    small problems (most calls) need not list what they allocate for check_allocation."""
    limit = memory_limit()
    return limit is None or upper_bound <= limit[0]


def check_allocation(caller, buffers, advice=""):
    """Raise MemoryError before anything is allocated if buffers cannot fit in this machine.

    buffers: (description, shape, dtype) of everything the call allocates that grows with its
    arguments (None entries are skipped); the message names the largest one and the total.
    This runs on every call: the sum comes first, the message only when it is needed.
    """
    limit = memory_limit()
    if limit is None:
        return
    buffers = [buffer for buffer in buffers if buffer is not None]
    sizes = [buffer_bytes(shape, dtype) for _, shape, dtype in buffers]
    total = sum(sizes)
    limit_bytes, limit_description = limit
    if total <= limit_bytes:
        return
    largest = max(range(len(buffers)), key=sizes.__getitem__)
    what, shape, dtype = buffers[largest]
    message = (f"{caller} would allocate {format_bytes(sizes[largest])} for {what} = "
               f"{tuple(int(size) for size in shape)} {np.dtype(dtype).name}")
    if len(buffers) > 1:
        plural = "s" if len(buffers) > 2 else ""
        message += (f" ({format_bytes(total)} in all, with {len(buffers) - 1} smaller "
                    f"buffer{plural})")
    message += f"; this machine has {format_bytes(limit_bytes)} {limit_description}"
    raise MemoryError(message + (f": {advice}" if advice else ""))
