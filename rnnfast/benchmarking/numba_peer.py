"""The numba peer: the batched-NumPy algorithm under ``@numba.njit``, as a capable user writes it.

Forward: the input projection of all steps as one ``np.dot``, then per step
``np.dot(h, W_hh.T, recurrent)`` (BLAS) and a loop for the bias and tanh. Backward: per step a
loop for da_t = (g_t + dh) * (1 - h_t^2) and ``np.dot(da_t, W_hh, dh)``; then the weight and
input gradients as single ``np.dot`` calls over all T*B rows. No Python runs per step.

numba compiles each dtype's functions on their first call (about a second each); ``make``
does that before the timing starts. Imported only when the numba peer is used.
"""
import numba
import numpy as np

__all__ = ["forward", "backward", "make"]


@numba.njit(cache=False)
def forward(x, h0, W_xh, W_hh, b):
    """Hidden states (T, B, H) of h_t = tanh(W_xh x_t + W_hh h_{t-1} + b)."""
    T, B, D = x.shape
    H = W_hh.shape[0]
    out = np.dot(x.reshape(T * B, D), W_xh.T).reshape(T, B, H)  # W_xh x_t for every t
    recurrent = np.empty((B, H), dtype=x.dtype)
    h = h0
    for t in range(T):
        np.dot(h, W_hh.T, recurrent)  # W_hh h_{t-1}
        for r in range(B):
            for i in range(H):
                out[t, r, i] = np.tanh(out[t, r, i] + b[i] + recurrent[r, i])
        h = out[t]
    return out


@numba.njit(cache=False)
def backward(G, x, h0, W_xh, W_hh, out):
    """Gradients (dx, dh0, dW_xh, dW_hh, db) of sum(out * G) by BPTT."""
    T, B, D = x.shape
    H = W_hh.shape[0]
    da = np.empty((T, B, H), dtype=x.dtype)
    dh = np.zeros((B, H), dtype=x.dtype)  # W_hh^T da_{t+1}; zero past the last step
    for t in range(T - 1, -1, -1):
        for r in range(B):
            for i in range(H):
                h = out[t, r, i]
                da[t, r, i] = (G[t, r, i] + dh[r, i]) * (1 - h * h)  # dh_t * tanh'(a_t)
        np.dot(da[t], W_hh, dh)  # W_hh^T da_t, carried to step t-1 (dh0 after step 0)
    rows = da.reshape(T * B, H)
    dW_xh = np.dot(rows.T, x.reshape(T * B, D))  # sum_t da_t x_t^T
    dW_hh = np.dot(da[0].T, h0)  # sum_t da_t h_{t-1}^T: step 0 with h0, then out[t - 1]
    if T > 1:
        dW_hh += np.dot(rows[B:].T, out[:T - 1].reshape((T - 1) * B, H))
    db = rows.sum(axis=0)
    dx = np.dot(rows, W_xh).reshape(T, B, D)  # W_xh^T da_t for every t
    return dx, dh, dW_xh, dW_hh, db


def make(problem, with_backward, n_threads):
    """A runner of the numba peer on ``problem`` (its threads are BLAS's, set by the caller),
    compiled for the problem's dtype before it is returned."""
    p = problem

    def run():
        out = forward(p.x, p.h0, p.W_xh, p.W_hh, p.b)
        if not with_backward:
            return out, None
        return out, backward(p.G, p.x, p.h0, p.W_xh, p.W_hh, out)

    run()  # compiles
    return run
