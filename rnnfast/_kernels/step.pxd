# One time step of the recurrence, C = finish(init + X @ M): the register-blocked micro-kernel
# (rnnfast/_kernels/microkernel.h) for small steps and the BLAS path for large ones. A backward step can
# also measure each row of init + X @ M (the gradient dL/dh_t, before act') on its way to finish:
# its sum of squares goes to squares[row] (squares NULL: no measuring, no cost).
#
# A leaky step (alpha not NULL: the leak of each of the N columns) then adds the leak
# (activation.pxd, leak_forward and leak_backward), which writes `carry` (B, N):
#   forward:  C = act(a_t) is kept, h = h_{t-1}, carry = h_t = (1 - alpha) h + alpha C (+ extra,
#             the state noise, when not NULL), in one pass with the activation;
#   backward: C = dL/dh_t becomes da_t, h = act(a_t), carry = extra + (1 - alpha) dL/dh_t (extra
#             = dout_{t-1}, or NULL for none): the next step's init.
# alpha NULL: the plain step, extra and carry unused.
from cython cimport floating
from libc.string cimport memcpy

from rnnfast._kernels.activation cimport (BACKWARD_RELU, BACKWARD_TANH, Epilogue, finish,
                                          leak_backward, leak_forward)
from rnnfast._kernels.blas cimport gemm


cdef extern from "microkernel.h" nogil:
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
    # sum(v[i]^2) for i < n, accumulated in double, vectorised, in an order fixed per build.
    double sum_squares_f32 "rnnfast_sum_squares_f32"(const float* v, Py_ssize_t n) noexcept
    double sum_squares_f64 "rnnfast_sum_squares_f64"(const double* v, Py_ssize_t n) noexcept


cdef inline Py_ssize_t block_columns(const floating* anything) noexcept nogil:
    """Columns per micro-kernel block for this dtype (the argument only selects the dtype)."""
    return 2 * VECTOR_BYTES // sizeof(floating)


cdef inline double sum_squares(const floating* v, Py_ssize_t n) noexcept nogil:
    """sum(v[i]^2) for i < n, in double whatever the dtype (see finish_rows)."""
    if floating is float:
        return sum_squares_f32(v, n)
    else:
        return sum_squares_f64(v, n)


cdef inline const floating* shifted(const floating* p, Py_ssize_t n) noexcept nogil:
    """p + n, or NULL for NULL: an optional argument of a step, moved to a row or column."""
    if p == NULL:
        return NULL
    return p + n


cdef inline void finish_rows(floating* C, const floating* h, Py_ssize_t rows, Py_ssize_t width,
                             Py_ssize_t ld, Epilogue kind, double* squares, bint add,
                             const floating* alpha, const floating* extra,
                             floating* carry) noexcept nogil:
    """finish the first `width` elements of `rows` rows of C (and h), `ld` apart. With squares
    (not NULL), first measures each row's sum of squares, while the row is in L1, and stores it
    in squares[row] (or, with add, adds it there: 0 + s is s, so adding to a zero and storing
    give the same bits). With alpha (the leak of these `width` columns), then the leak (see
    the top of this file): extra (may be NULL) and carry are rows `ld` apart like C.

    The squares are summed in double also for float32: the square of a float is exact in
    double and can neither overflow nor underflow there, so the norm of any finite float32
    gradient comes out right. Summed in float, the squares overflow to inf from |dh| ~ 1.8e19
    and lose digits below |dh| ~ 1.1e-19 (0 below ~4e-23): exploding and vanishing gradients,
    which is what the norms are read for. Summing in float was not faster here (measured: the
    conversions hide behind the step's matmul).
    """
    cdef Py_ssize_t r
    cdef double row_squares
    cdef bint backward = kind == BACKWARD_TANH or kind == BACKWARD_RELU
    if alpha == NULL and squares == NULL and width == ld:
        finish(C, h, rows * width, kind)  # one contiguous stretch
        return
    for r in range(rows):
        if squares != NULL:
            row_squares = sum_squares(C + r * ld, width)
            squares[r] = squares[r] + row_squares if add else row_squares
        if alpha == NULL:
            finish(C + r * ld, h + r * ld, width, kind)
        elif backward:
            leak_backward(C + r * ld, h + r * ld, alpha, shifted(extra, r * ld), carry + r * ld,
                          width, kind)
        else:
            leak_forward(C + r * ld, h + r * ld, alpha, shifted(extra, r * ld), carry + r * ld,
                         width, kind)


cdef inline void small_step_block(const floating* X, const floating* M, const floating* init,
                                  const floating* h, floating* C, Py_ssize_t B, Py_ssize_t K,
                                  Py_ssize_t N, Py_ssize_t col0, Epilogue kind,
                                  double* squares, bint add, const floating* alpha,
                                  const floating* extra, floating* carry) noexcept nogil:
    """Columns col0 .. col0 + block of C = finish(init + X @ M, h), for every row; with squares,
    each row's sum of squares over these columns (before finish) is stored in squares[row], or
    added to it (see finish_rows); with alpha, the leak of these columns (alpha, extra and
    carry as for the whole step, see the top of this file).

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
    finish_rows(C + col0, h + col0, B, width, N, kind, squares, add, shifted(alpha, col0),
                shifted(extra, col0), NULL if carry == NULL else carry + col0)


cdef inline void small_step(const floating* X, const floating* M, const floating* init,
                            const floating* h, floating* C, Py_ssize_t B, Py_ssize_t K,
                            Py_ssize_t N, Epilogue kind, double* squares, const floating* alpha,
                            const floating* extra, floating* carry) noexcept nogil:
    """C = finish(init + X @ M, h), one column block after another (see small_step_block); with
    squares, squares[row] = the row's sum of squares, summed block by block in their order
    (0 + block 0 + block 1 + ...: the first block stores, the others add); with alpha, the
    leak."""
    cdef Py_ssize_t CB = block_columns(X), blk
    for blk in range((N + CB - 1) // CB):
        small_step_block(X, M, init, h, C, B, K, N, blk * CB, kind, squares, blk > 0, alpha,
                         extra, carry)


cdef inline void blas_step(const floating* X, const floating* M, Py_ssize_t ldm,
                           const floating* init, const floating* h, floating* C, Py_ssize_t B,
                           Py_ssize_t K, Py_ssize_t N, Epilogue kind, double* squares,
                           const floating* alpha, const floating* extra,
                           floating* carry) noexcept nogil:
    """The same step as small_step, for steps large enough that a tuned GEMM wins; squares and
    the leak as there, each row summed whole."""
    if C != init:
        memcpy(C, init, B * N * sizeof(floating))
    gemm(False, False, B, N, K, 1, X, K, M, ldm, 1, C, N)  # C = X @ M + C
    finish_rows(C, h, B, N, N, kind, squares, False, alpha, extra, carry)
