# One time step of the recurrence, C = finish(init + X @ M): the small-step product
# (rnnfast/_kernels/microkernel.h: on W_hh itself in AVX2 builds, natural.h; in panels of it
# elsewhere) for small steps; for large ones our packed GEMM (gemm.h, gemm_step), or SciPy's
# BLAS (blas_step). A backward step can also measure
# each row of init + X @ M (the gradient dL/dh_t, before act') on its way to finish: its sum of
# squares goes to squares[row] (squares NULL: no measuring, no cost).
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

from rnnfast._kernels.activation cimport (BACKWARD_RELU, BACKWARD_TANH, Epilogue,
                                          FORWARD_RELU, FORWARD_TANH, PRODUCT_ONLY, finish,
                                          leak_backward, leak_forward)
from rnnfast._kernels.blas cimport gemm


cdef extern from "microkernel.h" nogil:
    # A block row is two vectors of this many bytes (32 with AVX, else 16).
    const Py_ssize_t VECTOR_BYTES "RNNFAST_VECTOR_BYTES"
    # Whether the small steps read W_hh as it is (1: AVX2 builds) or packed in panels (0).
    const bint NATURAL_LAYOUT "RNNFAST_NATURAL"
    # C[:, c0:c1] = init[:, c0:c1] + (X @ W_hh.T forward, X @ W_hh backward)[:, c0:c1] for B
    # rows, from M: W_hh itself or a copy with rows ldm apart (NATURAL_LAYOUT), or its panels
    # (ldm unused); with reverse, W_hh's blocks in the opposite order (the same bits); see the
    # header.
    void step_product_f32 "rnnfast_step_product_f32"(
        bint forward, bint reverse, const float* X, Py_ssize_t B, Py_ssize_t K, const float* M,
        Py_ssize_t ldm, const float* init, float* C, Py_ssize_t N, Py_ssize_t c0,
        Py_ssize_t c1) noexcept
    void step_product_f64 "rnnfast_step_product_f64"(
        bint forward, bint reverse, const double* X, Py_ssize_t B, Py_ssize_t K,
        const double* M, Py_ssize_t ldm, const double* init, double* C, Py_ssize_t N,
        Py_ssize_t c0, Py_ssize_t c1) noexcept
    # M[j, i] = W[i, j] for W (n, n), M's rows ldm >= n apart and zero past column n.
    void transpose_f32 "rnnfast_transpose_f32"(const float* W, Py_ssize_t n, float* M,
                                               Py_ssize_t ldm) noexcept
    void transpose_f64 "rnnfast_transpose_f64"(const double* W, Py_ssize_t n, double* M,
                                               Py_ssize_t ldm) noexcept
    # C = alpha op(A) @ op(B) + beta C in plain loops, for tiny GEMMs (see the header).
    void gemm_loops_f32 "rnnfast_gemm_loops_f32"(
        bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, float alpha,
        const float* A, Py_ssize_t lda, const float* B, Py_ssize_t ldb, float beta, float* C,
        Py_ssize_t ldc) noexcept
    void gemm_loops_f64 "rnnfast_gemm_loops_f64"(
        bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, double alpha,
        const double* A, Py_ssize_t lda, const double* B, Py_ssize_t ldb, double beta,
        double* C, Py_ssize_t ldc) noexcept
    # sum(v[i]^2) for i < n, accumulated in double, vectorised, in an order fixed per build.
    double sum_squares_f32 "rnnfast_sum_squares_f32"(const float* v, Py_ssize_t n) noexcept
    double sum_squares_f64 "rnnfast_sum_squares_f64"(const double* v, Py_ssize_t n) noexcept


cdef extern from "gemm.h" nogil:
    # A GEMM panel is two vectors of this many bytes (64 with AVX-512, 32 with AVX, else 16).
    const Py_ssize_t GEMM_BYTES "RNNFAST_GEMM_BYTES"
    # Rows per GEMM tile (12 with AVX-512, else 6).
    const Py_ssize_t GEMM_ROWS "RNNFAST_GEMM_ROWS"
    # C[r, :width] = init[r, :width] + X[r, :K] @ panel for rows <= GEMM_ROWS rows, X packed by
    # gemm_pack (ldx 0) or its rows ldx apart (see gemm.h).
    void gemm_tile_f32 "rnnfast_gemm_tile_f32"(
        Py_ssize_t rows, const float* X, Py_ssize_t ldx, Py_ssize_t K, const float* panel,
        const float* init, float* C, Py_ssize_t N, Py_ssize_t width) noexcept
    void gemm_tile_f64 "rnnfast_gemm_tile_f64"(
        Py_ssize_t rows, const double* X, Py_ssize_t ldx, Py_ssize_t K, const double* panel,
        const double* init, double* C, Py_ssize_t N, Py_ssize_t width) noexcept
    # Xp[k * rows + r] = X[r * ldx + k]: a tile's rows of X, k-major.
    void gemm_pack_f32 "rnnfast_gemm_pack_f32"(Py_ssize_t rows, const float* X, Py_ssize_t ldx,
                                               Py_ssize_t K, float* Xp) noexcept
    void gemm_pack_f64 "rnnfast_gemm_pack_f64"(Py_ssize_t rows, const double* X,
                                               Py_ssize_t ldx, Py_ssize_t K, double* Xp) noexcept


# The GEMM's K blocks: the tile's packed rows of X (GEMM_ROWS x kc, at most 12 KiB) stay in
# L1 while it runs along all the panels, the panels' kc rows (kc x N) stay in L2 (at most
# GEMM_SLICE_BYTES); GEMM_PACKED is the packed rows' room (12 x 256 elements).
cdef enum:
    GEMM_MAX_KC_BYTES = 1024
    GEMM_SLICE_BYTES = 1 << 19
    GEMM_PACKED = 3072
    # Rows are packed when they serve this many panels or more, or are longer than
    # GEMM_PACK_ROW_BYTES (rows 2 KiB apart fall into the same few L1 sets); else the tiles
    # read them as they are (packing 12 x 64 rows for 2 panels cost a fifth of the step).
    GEMM_PACK_PANELS = 8
    GEMM_PACK_ROW_BYTES = 1024


cdef inline Py_ssize_t gemm_columns(const floating* anything) noexcept nogil:
    """Columns per GEMM panel for this dtype (the argument only selects the dtype)."""
    return 2 * GEMM_BYTES // sizeof(floating)


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
    if kind == PRODUCT_ONLY:  # (never with squares or a leak)
        return
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


# GEMMs of at most this many multiply-adds (m * n * k) run in plain loops (gemm_loops), not
# BLAS: measured here, an OpenBLAS sgemm call of 1 x 8 x 8 took 143 ns, 1 x 64 x 64 183 ns,
# 16 x 64 x 64 1.2 us, against 20-40 ns for the loops at the smallest sizes; the loops keep
# tiny passes and cold calls off BLAS's code entirely.
cdef enum:
    LOOPS_MAX_MNK = 4096


cdef inline void any_gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                          floating alpha, const floating* A, Py_ssize_t lda, const floating* B,
                          Py_ssize_t ldb, floating beta, floating* C,
                          Py_ssize_t ldc) noexcept nogil:
    """blas.pxd's gemm, or the same product in plain loops when it is tiny (LOOPS_MAX_MNK)."""
    if m * n * k > LOOPS_MAX_MNK:
        gemm(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
    elif floating is float:
        gemm_loops_f32(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
    else:
        gemm_loops_f64(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)


cdef inline void step_product(bint forward, const floating* X, Py_ssize_t B, Py_ssize_t K,
                              const floating* M, Py_ssize_t ldm, const floating* init,
                              floating* C, Py_ssize_t N, Py_ssize_t c0, Py_ssize_t c1,
                              bint reverse) noexcept nogil:
    """C[:, c0:c1] = init + (X @ W_hh.T if forward else X @ W_hh)[:, c0:c1] (see the header),
    M's rows ldm apart where they are W_hh's; with reverse, W_hh's blocks in the opposite
    order (the same bits)."""
    if floating is float:
        step_product_f32(forward, reverse, X, B, K, M, ldm, init, C, N, c0, c1)
    else:
        step_product_f64(forward, reverse, X, B, K, M, ldm, init, C, N, c0, c1)


cdef inline void finish_blocks(floating* C, const floating* h, Py_ssize_t B, Py_ssize_t N,
                               Py_ssize_t c0, Py_ssize_t c1, Epilogue kind, double* squares,
                               const floating* alpha, const floating* extra,
                               floating* carry) noexcept nogil:
    """finish_rows on each column block of c0 .. c1 - 1 in turn, for every row: the squares of
    a row summed block by block in their order (0 + block 0 + block 1 + ...: the first block of
    the row stores, the others add), the same sums as the threaded loops make."""
    cdef Py_ssize_t CB = block_columns(C), col0 = c0, width
    while col0 < c1:
        width = c1 - col0 if c1 - col0 < CB else CB
        finish_rows(C + col0, h + col0, B, width, N, kind, squares, col0 > 0,
                    shifted(alpha, col0), shifted(extra, col0),
                    NULL if carry == NULL else carry + col0)
        col0 += CB


cdef inline void small_step(const floating* X, const floating* M, Py_ssize_t ldm,
                            bint transposed, const floating* init, const floating* h,
                            floating* C, Py_ssize_t B, Py_ssize_t K, Py_ssize_t N,
                            Epilogue kind, double* squares, const floating* alpha,
                            const floating* extra, floating* carry,
                            bint reverse) noexcept nogil:
    """C = finish(init + X @ M, h) (M as step_product takes it; with transposed, a forward
    step's M is W_hh^T, taken as the backward's M is): the product over all columns,
    then the epilogue a column block after another (see finish_blocks); with squares,
    squares[row] = the row's sum of squares; with alpha, the leak. The threaded loops give the
    same bits, block by block. The time loops give reverse on every other step: W_hh's blocks
    then go the other way, so a step starts where the one before ended, on the part of W_hh
    still in cache."""
    step_product((kind == FORWARD_TANH or kind == FORWARD_RELU) and not transposed, X, B, K, M,
                 ldm, init, C, N, 0, N, reverse)
    finish_blocks(C, h, B, N, 0, N, kind, squares, alpha, extra, carry)


cdef inline void gemm_step(const floating* X, const floating* M, const floating* init,
                           const floating* h, floating* C, Py_ssize_t B, Py_ssize_t K,
                           Py_ssize_t N, Py_ssize_t c0, Py_ssize_t c1, Epilogue kind,
                           double* squares, const floating* alpha, const floating* extra,
                           floating* carry) noexcept nogil:
    """Columns c0 .. c1 - 1 of the same step as small_step (c0 a multiple of gemm_columns, c1
    one too or N), on M packed in GEMM panels (pack_panels, gemm_columns wide), blocked as
    BLIS blocks a GEMM: K in blocks of kc; in each, the rows in the fewest tiles of at most
    GEMM_ROWS, of equal height to a row (13 rows: 7 + 6, which ran 1.10x faster than 12 + 1
    at 30,13,256,256 float32; 16 or 64 rows alike either way), packed (gemm_pack, where it
    pays) and run along the range's panels' kc rows; partial sums go through C. In the last K
    block, each group of rows is finished (finish_rows on the range: one call; squares, only
    for the whole width, sums each row whole) right after its products, while it is in cache.

    Every element is init + its products in k order, whatever the range and the blocking
    (partial sums are stored and reloaded exactly), so threads that share a step's column
    ranges out get the bits of one thread running the whole step."""
    cdef Py_ssize_t NR = gemm_columns(X), col0, b0, k0 = 0, kc, rows, width, at, tile
    cdef Py_ssize_t tiles = (B + GEMM_ROWS - 1) // GEMM_ROWS
    cdef Py_ssize_t kc_max = GEMM_MAX_KC_BYTES // sizeof(floating)
    cdef floating packed[GEMM_PACKED]
    cdef bint last
    cdef bint pack = ((c1 - c0 + NR - 1) // NR >= GEMM_PACK_PANELS
                      or K * sizeof(floating) > GEMM_PACK_ROW_BYTES)
    cdef const floating* rows_x
    cdef Py_ssize_t ldx = 0 if pack else K
    if kc_max * N * sizeof(floating) > GEMM_SLICE_BYTES:
        kc_max = GEMM_SLICE_BYTES // (N * sizeof(floating))
        kc_max = 16 if kc_max < 16 else kc_max
    while k0 < K:
        kc = K - k0 if K - k0 < kc_max else kc_max
        last = k0 + kc == K
        b0, tile = 0, 0
        while b0 < B:
            rows = B // tiles + (1 if tile < B % tiles else 0)
            rows_x = &packed[0] if pack else X + b0 * K + k0
            if pack:
                if floating is float:
                    gemm_pack_f32(rows, X + b0 * K + k0, K, kc, packed)
                else:
                    gemm_pack_f64(rows, X + b0 * K + k0, K, kc, packed)
            col0 = c0
            while col0 < c1:
                width = c1 - col0 if c1 - col0 < NR else NR
                at = b0 * N + col0
                # panel col0 / NR (K rows of NR), from its row k0
                if floating is float:
                    gemm_tile_f32(rows, rows_x, ldx, kc, M + col0 * K + k0 * NR,
                                  init + at if k0 == 0 else C + at, C + at, N, width)
                else:
                    gemm_tile_f64(rows, rows_x, ldx, kc, M + col0 * K + k0 * NR,
                                  init + at if k0 == 0 else C + at, C + at, N, width)
                col0 += NR
            if last:  # these rows are done: finished while they are in L1 (L2 for N > 256)
                at = b0 * N + c0
                finish_rows(C + at, h + at, rows, c1 - c0, N, kind,
                            NULL if squares == NULL else squares + b0, False,
                            shifted(alpha, c0), shifted(extra, at),
                            NULL if carry == NULL else carry + at)
            b0, tile = b0 + rows, tile + 1
        k0 += kc


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


cdef inline void large_step(bint own_gemm, const floating* X, const floating* M, Py_ssize_t ldm,
                            const floating* init, const floating* h, floating* C, Py_ssize_t B,
                            Py_ssize_t K, Py_ssize_t N, Epilogue kind, double* squares,
                            const floating* alpha, const floating* extra,
                            floating* carry) noexcept nogil:
    """A large step: gemm_step on M in GEMM panels (own_gemm), else blas_step on M padded."""
    if own_gemm:
        gemm_step(X, M, init, h, C, B, K, N, 0, N, kind, squares, alpha, extra, carry)
    else:
        blas_step(X, M, ldm, init, h, C, B, K, N, kind, squares, alpha, extra, carry)
