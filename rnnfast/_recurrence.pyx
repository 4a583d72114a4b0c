"""The recurrence kernels: every time step of a sequence in one call, without the GIL.

Forward, for t = 0..T-1 (h_{-1} = h0), in place in `h`, which arrives holding the input
projection P_t = x_t W_xh^T + b:
    h_t = act(P_t + h_{t-1} @ W_hh^T)
Backward, for t = T-1..0, into `da` (da_T @ W_hh is replaced by dh_n, the carried gradient):
    da_t = (dout_t + da_{t+1} @ W_hh) * act'(h_t)

Both steps are "C = epilogue(init + X @ M)" with M = W_hh^T forward and M = W_hh backward, so
one small-step micro-kernel and one BLAS path serve both directions. The input projection, the
weight gradients and dh0 are single large GEMMs done by the caller, outside the time loop.
Nothing here allocates, validates or touches a Python object: the caller checked everything.
"""
from cython cimport floating
from libc.math cimport tanh, tanhf
from libc.string cimport memcpy

from rnnfast._blas cimport matmul_acc

# Width of the column block the small-step kernel keeps in registers while it streams over M.
cdef enum:
    COL_BLOCK = 16


cdef inline floating epilogue(floating v, floating h, Epilogue kind) noexcept nogil:
    """The per-element finish of a step. `h` is the stored forward output (backward only)."""
    if kind == FORWARD_TANH:
        if floating is float:
            return tanhf(v)
        else:
            return tanh(v)
    if kind == FORWARD_RELU:
        # Written so that NaN propagates, as np.maximum(v, 0) does.
        return 0 if v <= 0 else v
    if kind == BACKWARD_TANH:
        return v * (1 - h * h)  # tanh'(a) = 1 - tanh(a)^2 = 1 - h^2
    return v * (h > 0)  # relu'(a) = [a > 0] = [h > 0]


cdef inline void small_step(const floating* X, const floating* M, const floating* init,
                            const floating* h, floating* C, Py_ssize_t B, Py_ssize_t K,
                            Py_ssize_t N, Epilogue kind) noexcept nogil:
    """C = epilogue(init + X @ M, h) for X (B, K), M (K, N), init/h/C (B, N); C may be init.

    Each (row, column block) pair accumulates in a fixed-size local array over all of K, so
    the compiler keeps it in vector registers and M's rows stream through them once per row.
    """
    cdef floating acc[COL_BLOCK]
    cdef Py_ssize_t b, j, i, col0, width
    cdef floating x_bj
    cdef const floating* M_j
    for b in range(B):
        col0 = 0
        while col0 < N:
            width = N - col0
            if width >= COL_BLOCK:
                # Full block: a constant trip count lets the compiler vectorise and unroll.
                for i in range(COL_BLOCK):
                    acc[i] = init[b * N + col0 + i]
                for j in range(K):
                    x_bj = X[b * K + j]
                    M_j = M + j * N + col0
                    for i in range(COL_BLOCK):
                        acc[i] += x_bj * M_j[i]
                for i in range(COL_BLOCK):
                    C[b * N + col0 + i] = epilogue(acc[i], h[b * N + col0 + i], kind)
                col0 += COL_BLOCK
            else:
                for i in range(width):
                    acc[i] = init[b * N + col0 + i]
                for j in range(K):
                    x_bj = X[b * K + j]
                    M_j = M + j * N + col0
                    for i in range(width):
                        acc[i] += x_bj * M_j[i]
                for i in range(width):
                    C[b * N + col0 + i] = epilogue(acc[i], h[b * N + col0 + i], kind)
                col0 = N


cdef inline void blas_step(const floating* X, const floating* M, const floating* init,
                           const floating* h, floating* C, Py_ssize_t B, Py_ssize_t K,
                           Py_ssize_t N, Epilogue kind) noexcept nogil:
    """The same step as small_step, for steps large enough that a tuned GEMM wins."""
    cdef Py_ssize_t i
    if C != init:
        memcpy(C, init, B * N * sizeof(floating))
    matmul_acc(B, N, K, X, M, C)  # C += X @ M
    for i in range(B * N):
        C[i] = epilogue(C[i], h[i], kind)


cdef void forward_loop(floating[:, :, ::1] h, const floating[:, ::1] h0,
                       const floating[:, ::1] W_hh_T, Epilogue activate,
                       bint use_blas) noexcept nogil:
    cdef Py_ssize_t T = h.shape[0], B = h.shape[1], H = h.shape[2], t
    cdef const floating* h_prev = &h0[0, 0]
    cdef floating* h_t
    for t in range(T):
        h_t = &h[t, 0, 0]
        # h_t = act(h_t + h_prev @ W_hh^T); the `h` argument of the epilogue is unused forward.
        if use_blas:
            blas_step(h_prev, &W_hh_T[0, 0], h_t, h_t, h_t, B, H, H, activate)
        else:
            small_step(h_prev, &W_hh_T[0, 0], h_t, h_t, h_t, B, H, H, activate)
        h_prev = h_t


cdef void backward_loop(floating[:, :, ::1] da, const floating[:, :, ::1] dout,
                        const floating[:, :, ::1] h, const floating[:, ::1] dh_n,
                        const floating[:, ::1] W_hh, Epilogue derivative,
                        bint use_blas) noexcept nogil:
    cdef Py_ssize_t T = da.shape[0], B = da.shape[1], H = da.shape[2], t, i
    cdef floating* da_t = &da[T - 1, 0, 0]
    cdef const floating* g_t = &dout[T - 1, 0, 0]
    cdef const floating* h_t = &h[T - 1, 0, 0]
    cdef const floating* carried = &dh_n[0, 0]
    # Last step: the gradient from beyond the sequence is dh_n itself, not a matmul.
    for i in range(B * H):
        da_t[i] = epilogue(g_t[i] + carried[i], h_t[i], derivative)
    for t in range(T - 2, -1, -1):
        # da_t = (dout_t + da_{t+1} @ W_hh) * act'(h_t)
        if use_blas:
            blas_step(&da[t + 1, 0, 0], &W_hh[0, 0], &dout[t, 0, 0], &h[t, 0, 0], &da[t, 0, 0],
                      B, H, H, derivative)
        else:
            small_step(&da[t + 1, 0, 0], &W_hh[0, 0], &dout[t, 0, 0], &h[t, 0, 0], &da[t, 0, 0],
                       B, H, H, derivative)


def forward_recurrence(floating[:, :, ::1] h, const floating[:, ::1] h0,
                       const floating[:, ::1] W_hh_T, bint relu, bint use_blas):
    """Run the forward time loop in place on `h` (T, B, H), which holds the input projection.

    Python entry point; the caller has validated shapes, dtypes and contiguity.
    """
    cdef Epilogue activate = FORWARD_RELU if relu else FORWARD_TANH
    with nogil:
        forward_loop(h, h0, W_hh_T, activate, use_blas)


def backward_recurrence(floating[:, :, ::1] da, const floating[:, :, ::1] dout,
                        const floating[:, :, ::1] h, const floating[:, ::1] dh_n,
                        const floating[:, ::1] W_hh, bint relu, bint use_blas):
    """Run the BPTT chain, writing da_t = dL/da_t for every step into `da` (T, B, H).

    Python entry point; the caller has validated shapes, dtypes and contiguity.
    """
    cdef Epilogue derivative = BACKWARD_RELU if relu else BACKWARD_TANH
    with nogil:
        backward_loop(da, dout, h, dh_n, W_hh, derivative, use_blas)
