"""The fast backend: large GEMMs in NumPy around the Cython time loops of rnnfast._recurrence.

Forward: P = X W_xh^T + b for all T*B rows at once, written into the output buffer, then the
recurrence runs in place on it. Backward: the BPTT chain writes da for every step into one
(T, B, H) buffer; the weight gradients, dx and dh0 are then single GEMMs over all rows.
Inputs arrive validated and C-contiguous from rnnfast.functional.
"""
import numpy as np

from rnnfast import _recurrence
from rnnfast._grads import RNNGrads

# Steps with at least this many multiply-adds (B * H * H) call BLAS GEMM; smaller steps, and every
# single-sequence step (a GEMV, where BLAS's packing costs more than it saves), use the
# register-blocked loop. Measured with bench/test_bench_rnn.py (single thread): the small loop
# wins for B = 1 at every H up to 512 and for B = 4, H = 32; BLAS wins from B = 4, H = 64 and
# B = 8, H = 32 on. The one place this switch lives.
BLAS_MIN_STEP_FLOPS = 8 * 32 * 32


def use_blas(B, H):
    """Whether a (B, H) step goes to BLAS rather than the small-step kernel."""
    return B > 1 and B * H * H >= BLAS_MIN_STEP_FLOPS


def forward(x, h0, W_xh, W_hh, b, nonlinearity):
    T, B, D = x.shape
    H = W_hh.shape[0]
    out = np.empty((T, B, H), dtype=x.dtype)
    np.matmul(x.reshape(T * B, D), W_xh.T, out=out.reshape(T * B, H))  # P = X @ W_xh.T
    if b is not None:
        out += b
    if h0 is None:
        h0 = np.zeros((B, H), dtype=x.dtype)
    W_hh_T = np.ascontiguousarray(W_hh.T)  # the forward step right-multiplies by W_hh^T
    _recurrence.forward_recurrence(out, h0, W_hh_T, nonlinearity == "relu", use_blas(B, H))
    return out


def backward(dout, dh_n, x, h0, W_xh, W_hh, has_bias, out, nonlinearity):
    T, B, D = x.shape
    H = W_hh.shape[0]
    if dh_n is None:
        dh_n = np.zeros((B, H), dtype=x.dtype)
    da = np.empty_like(out)
    _recurrence.backward_recurrence(da, dout, out, dh_n, W_hh, nonlinearity == "relu",
                                    use_blas(B, H))
    da_rows = da.reshape(T * B, H)
    dx = (da_rows @ W_xh).reshape(T, B, D)  # dx_t = W_xh^T da_t
    dW_xh = da_rows.T @ x.reshape(T * B, D)  # sum_t da_t x_t^T
    # dW_hh = sum_t da_t h_{t-1}^T: steps 1..T-1 pair with out[0..T-2], step 0 with h0.
    dW_hh = da[1:].reshape(-1, H).T @ out[:-1].reshape(-1, H)
    if h0 is not None:
        dW_hh += da[0].T @ h0
    dh0 = da[0] @ W_hh  # W_hh^T da_0
    db = da_rows.sum(axis=0) if has_bias else None
    return RNNGrads(dx, dh0, dW_xh, dW_hh, db)
