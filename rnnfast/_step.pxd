# One time step of the recurrence, C = finish(init + X @ M): the register-blocked micro-kernel
# (rnnfast/_microkernel.h) for small steps and the BLAS path for large ones.
from cython cimport floating
from libc.string cimport memcpy

from rnnfast._activation cimport Epilogue, finish
from rnnfast._blas cimport gemm


cdef extern from "_microkernel.h" nogil:
    # A block row is two vectors of this many bytes (32 with AVX, else 16).
    const Py_ssize_t VECTOR_BYTES "RNNFAST_VECTOR_BYTES"
    # C[r, :width] = init[r, :width] + X[r] @ M[:, :width] for 6, 4, 2 or 1 rows; see the header.
    void block_6_rows_f32 "rnnfast_block_6_rows_f32"(
        const float* X, Py_ssize_t K, const float* M, Py_ssize_t ldm, const float* init,
        float* C, Py_ssize_t N, Py_ssize_t width) noexcept
    void block_6_rows_f64 "rnnfast_block_6_rows_f64"(
        const double* X, Py_ssize_t K, const double* M, Py_ssize_t ldm, const double* init,
        double* C, Py_ssize_t N, Py_ssize_t width) noexcept
    void block_4_rows_f32 "rnnfast_block_4_rows_f32"(
        const float* X, Py_ssize_t K, const float* M, Py_ssize_t ldm, const float* init,
        float* C, Py_ssize_t N, Py_ssize_t width) noexcept
    void block_4_rows_f64 "rnnfast_block_4_rows_f64"(
        const double* X, Py_ssize_t K, const double* M, Py_ssize_t ldm, const double* init,
        double* C, Py_ssize_t N, Py_ssize_t width) noexcept
    void block_2_rows_f32 "rnnfast_block_2_rows_f32"(
        const float* X, Py_ssize_t K, const float* M, Py_ssize_t ldm, const float* init,
        float* C, Py_ssize_t N, Py_ssize_t width) noexcept
    void block_2_rows_f64 "rnnfast_block_2_rows_f64"(
        const double* X, Py_ssize_t K, const double* M, Py_ssize_t ldm, const double* init,
        double* C, Py_ssize_t N, Py_ssize_t width) noexcept
    void block_1_row_f32 "rnnfast_block_1_row_f32"(
        const float* X, Py_ssize_t K, const float* M, Py_ssize_t ldm, const float* init,
        float* C, Py_ssize_t width) noexcept
    void block_1_row_f64 "rnnfast_block_1_row_f64"(
        const double* X, Py_ssize_t K, const double* M, Py_ssize_t ldm, const double* init,
        double* C, Py_ssize_t width) noexcept


cdef inline Py_ssize_t block_columns(const floating* anything) noexcept nogil:
    """Columns per micro-kernel block for this dtype (the argument only selects the dtype)."""
    return 2 * VECTOR_BYTES // sizeof(floating)


cdef inline void small_step_block(const floating* X, const floating* M, const floating* init,
                                  const floating* h, floating* C, Py_ssize_t B, Py_ssize_t K,
                                  Py_ssize_t N, Py_ssize_t col0, Epilogue kind) noexcept nogil:
    """Columns col0 .. col0 + block of C = finish(init + X @ M, h), for every row.

    X (B, K), init/h/C (B, N); C may be init (the forward step works in place). M (K, N) is
    packed in panels (see pack_panels): the K x block panel of these columns is contiguous, so
    the kernel streams it from memory in order. Rows go six at a time, then four, two, one.
    Blocks are independent, so threads can share a step's blocks out.
    """
    cdef Py_ssize_t CB = block_columns(X)
    cdef Py_ssize_t width = N - col0 if N - col0 < CB else CB
    cdef const floating* panel = M + (col0 // CB) * K * CB
    # Rows go six at a time; the rest (0..5) four, two and one at a time.
    cdef Py_ssize_t b, B6 = B - B % 6
    cdef Py_ssize_t B4 = B6 + (B - B6) // 4 * 4
    cdef Py_ssize_t B2 = B4 + (B - B4) // 2 * 2
    for b in range(0, B6, 6):
        if floating is float:
            block_6_rows_f32(X + b * K, K, panel, CB, init + b * N + col0, C + b * N + col0,
                             N, width)
        else:
            block_6_rows_f64(X + b * K, K, panel, CB, init + b * N + col0, C + b * N + col0,
                             N, width)
    for b in range(B6, B4, 4):
        if floating is float:
            block_4_rows_f32(X + b * K, K, panel, CB, init + b * N + col0, C + b * N + col0,
                             N, width)
        else:
            block_4_rows_f64(X + b * K, K, panel, CB, init + b * N + col0, C + b * N + col0,
                             N, width)
    for b in range(B4, B2, 2):
        if floating is float:
            block_2_rows_f32(X + b * K, K, panel, CB, init + b * N + col0, C + b * N + col0,
                             N, width)
        else:
            block_2_rows_f64(X + b * K, K, panel, CB, init + b * N + col0, C + b * N + col0,
                             N, width)
    for b in range(B2, B):
        if floating is float:
            block_1_row_f32(X + b * K, K, panel, CB, init + b * N + col0, C + b * N + col0,
                            width)
        else:
            block_1_row_f64(X + b * K, K, panel, CB, init + b * N + col0, C + b * N + col0,
                            width)
    for b in range(B):
        finish(C + b * N + col0, h + b * N + col0, width, kind)


cdef inline void small_step(const floating* X, const floating* M, const floating* init,
                            const floating* h, floating* C, Py_ssize_t B, Py_ssize_t K,
                            Py_ssize_t N, Epilogue kind) noexcept nogil:
    """C = finish(init + X @ M, h), one column block after another (see small_step_block)."""
    cdef Py_ssize_t CB = block_columns(X), blk
    for blk in range((N + CB - 1) // CB):
        small_step_block(X, M, init, h, C, B, K, N, blk * CB, kind)


cdef inline void blas_step(const floating* X, const floating* M, Py_ssize_t ldm,
                           const floating* init, const floating* h, floating* C, Py_ssize_t B,
                           Py_ssize_t K, Py_ssize_t N, Epilogue kind) noexcept nogil:
    """The same step as small_step, for steps large enough that a tuned GEMM wins."""
    if C != init:
        memcpy(C, init, B * N * sizeof(floating))
    gemm(False, False, B, N, K, 1, X, K, M, ldm, 1, C, N)  # C = X @ M + C
    finish(C, h, B * N, kind)
