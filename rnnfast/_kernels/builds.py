"""The compiled builds of the kernels this machine runs, and the one in use.

recurrence_impl.pxi is compiled three times: ``recurrence`` for the baseline instruction set and,
on x86-64, ``recurrence_avx2`` with AVX2 and FMA and ``recurrence_avx512`` with AVX-512 (F, VL)
besides. The fastest build the processor runs is used; ``RNNFAST_KERNEL=baseline`` (or
``avx2``) forces another.
"""
import os

from rnnfast._kernels import recurrence as _baseline

__all__ = ["KERNEL_BUILDS", "KERNEL", "COLUMN_PAD", "MIN_BLOCK_BYTES"]


def _kernel_builds():
    """The compiled builds of the kernels that this machine can run, by name."""
    builds = {"baseline": _baseline}
    try:
        from rnnfast._kernels import recurrence_avx2
    except ImportError:  # not built: a platform other than x86-64
        pass
    else:
        if _baseline.cpu_has_avx2_fma():
            builds["avx2"] = recurrence_avx2
    try:
        from rnnfast._kernels import recurrence_avx512
    except ImportError:
        pass
    else:
        if _baseline.cpu_has_avx512():
            builds["avx512"] = recurrence_avx512
    return builds


KERNEL_BUILDS = _kernel_builds()
# The last build listed is the widest this processor runs.
KERNEL = os.environ.get("RNNFAST_KERNEL") or list(KERNEL_BUILDS)[-1]
if KERNEL not in KERNEL_BUILDS:
    raise ImportError(f"RNNFAST_KERNEL={KERNEL!r} is not available on this machine; "
                      f"choose one of {', '.join(KERNEL_BUILDS)}")

# The step matrix's rows are padded to a multiple of this (the same in every build).
COLUMN_PAD = _baseline.COLUMN_PAD
# The narrowest micro-kernel column block of any build, in bytes: scratch sized by it fits
# every build.
MIN_BLOCK_BYTES = min(module.BLOCK_BYTES for module in KERNEL_BUILDS.values())
