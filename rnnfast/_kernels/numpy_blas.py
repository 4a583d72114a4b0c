"""NumPy's OpenBLAS for the kernels' float32 weight gradients on the thread team.

A one-thread pass leaves its float32 weight gradients to NumPy after the pass (entry.pyx,
numpy_weight_grads_min_flops): NumPy's OpenBLAS ran these transposed GEMMs 1.16-1.47x faster
than SciPy's here. A pass on several threads computes them inside, in ranges on the team, with
the sgemm that blas.pyx is given here: NumPy's, where NumPy's wheel bundles it (an OpenBLAS
with 64-bit integers, ``scipy_sgemm_64_``), else SciPy's. So a pass on two threads that the
team cannot help costs what one thread's does.
"""
import ctypes
import glob
import os

import numpy as np

from rnnfast._kernels import blas

__all__ = ["use_numpy_sgemm"]


def use_numpy_sgemm():
    """Point the kernels' weight gradients at NumPy's bundled sgemm; returns whether found."""
    libraries = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libraries, "libscipy_openblas64_*"))):
        try:
            sgemm = ctypes.CDLL(path).scipy_sgemm_64_
        except (OSError, AttributeError):
            continue
        blas.use_weights_sgemm(ctypes.cast(sgemm, ctypes.c_void_p).value)
        return True
    return False


use_numpy_sgemm()
