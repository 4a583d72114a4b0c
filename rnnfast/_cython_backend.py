"""The fast backend: allocation around the whole-pass Cython kernels of rnnfast._recurrence.

Each pass is one call into compiled code without the GIL: the input projection and the weight
gradients as single GEMMs over all T*B rows, and the time loop between them. This module only
allocates the outputs and the scratch buffers, and chooses the step path. Inputs arrive
validated and C-contiguous from rnnfast.functional.
"""
import os

import numpy as np

from rnnfast import _recurrence
from rnnfast._grads import RNNGrads


def _kernel_builds():
    """The compiled builds of the kernels that this machine can run, by name."""
    builds = {"baseline": _recurrence}
    try:
        from rnnfast import _recurrence_avx2
    except ImportError:  # not built: a platform other than x86-64
        pass
    else:
        if _recurrence.cpu_has_avx2_fma():
            builds["avx2"] = _recurrence_avx2
    return builds


KERNEL_BUILDS = _kernel_builds()
# The fastest build this processor runs; RNNFAST_KERNEL=baseline forces the portable one.
KERNEL = os.environ.get("RNNFAST_KERNEL") or ("avx2" if "avx2" in KERNEL_BUILDS else "baseline")
if KERNEL not in KERNEL_BUILDS:
    raise ImportError(f"RNNFAST_KERNEL={KERNEL!r} is not available on this machine; "
                      f"choose one of {', '.join(KERNEL_BUILDS)}")

# Steps with at least this many multiply-adds (B * H * H) call BLAS GEMM; smaller steps, and every
# single-sequence step (a GEMV, where BLAS's packing costs more than it saves), use the
# register-blocked micro-kernel. Measured with bench/test_bench_rnn.py (single thread).
# The one place this switch lives.
BLAS_MIN_BATCH = 2
BLAS_MIN_STEP_FLOPS = 8 * 32 * 32



def _specialisations(kernel):
    """The kernels' float32 and float64 versions, to call directly: Cython's dispatch on the
    argument types costs microseconds per call, as much as a whole short sequence."""
    module = KERNEL_BUILDS[kernel]
    return ({np.dtype(np.float32): module.forward_pass["float"],
             np.dtype(np.float64): module.forward_pass["double"]},
            {np.dtype(np.float32): module.backward_pass["float"],
             np.dtype(np.float64): module.backward_pass["double"]})


_FORWARD, _BACKWARD = _specialisations(KERNEL)
_NO_BIAS = {np.dtype(np.float32): np.empty(0, np.float32),
            np.dtype(np.float64): np.empty(0, np.float64)}


# Small steps are shared among threads only from this many multiply-adds (B * H * H) up: below,
# the barrier that ends every step costs more than the second core saves. Measured with
# `rnnfast bench --threads 2`.
THREADS_MIN_STEP_FLOPS = 128 * 128 * 4


def use_blas(B, H):
    """Whether a (B, H) step goes to BLAS rather than the small-step kernel."""
    return B >= BLAS_MIN_BATCH and B * H * H >= BLAS_MIN_STEP_FLOPS


def kernel_threads(B, H, n_threads):
    """The threads the small-step loop uses for (B, H) steps: n_threads where a step is big
    enough to pay for sharing it, else 1. (BLAS steps use BLAS's own threads.)"""
    return n_threads if B * H * H >= THREADS_MIN_STEP_FLOPS else 1


def _step_scratch(H, dtype):
    """Scratch for W_hh^T or W_hh with rows zero-padded to a multiple of COLUMN_PAD."""
    return np.empty((H, H + -H % _recurrence.COLUMN_PAD), dtype=dtype)


def forward(x, h0, W_xh, W_hh, b, nonlinearity, n_threads):
    T, B, D = x.shape
    H = W_hh.shape[0]
    out = np.empty((T, B, H), dtype=x.dtype)
    if h0 is None:
        h0 = np.zeros((B, H), dtype=x.dtype)
    _FORWARD[x.dtype](x, h0, W_xh, W_hh, _NO_BIAS[x.dtype] if b is None else b, out,
                             _step_scratch(H, x.dtype), nonlinearity == "relu", use_blas(B, H),
                             kernel_threads(B, H, n_threads))
    return out


def backward(dout, dh_n, x, h0, W_xh, W_hh, has_bias, out, nonlinearity, n_threads):
    T, B, D = x.shape
    H = W_hh.shape[0]
    dtype = x.dtype
    zeros_BH = np.zeros((B, H), dtype=dtype) if dh_n is None or h0 is None else None
    dx = np.empty_like(x)
    dh0 = np.empty((B, H), dtype=dtype)
    dW_xh = np.empty_like(W_xh)
    dW_hh = np.empty_like(W_hh)
    db = np.empty(H, dtype=dtype) if has_bias else _NO_BIAS[dtype]
    _BACKWARD[dtype](
        dout, zeros_BH if dh_n is None else dh_n, x, zeros_BH if h0 is None else h0, W_xh, W_hh, out, np.empty_like(out), _step_scratch(H, dtype),
        dx, dh0, dW_xh, dW_hh, db, nonlinearity == "relu", use_blas(B, H),
        kernel_threads(B, H, n_threads),
    )
    return RNNGrads(dx, dh0, dW_xh, dW_hh, db if has_bias else None)
