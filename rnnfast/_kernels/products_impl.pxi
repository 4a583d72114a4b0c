# A pass's products and the GEMMs around the passes, shared among the thread team (team.h) in
# ranges: included by recurrence_impl.pxi, which runs them from its passes and its tables.

# The pass's products with few weights (the input projection forward, dx backward) are shared
# among the team as row ranges, a few per thread of product_threads (1: in one go), on our GEMM
# over W_xh packed once (product_panels: each element the same in any range, so the pieces
# run alone are one call, with the same bits), or each range on BLAS (which repacks W_xh per
# call: then the bits depend on the piece count, never on who computes which piece). The
# weight gradients' operands are the whole pass: dW_hh and dW_xh are shared as one range of
# their rows per thread, of equal work (each range's GEMMs read all of h and x).
ctypedef struct ProductTasks:
    bint is_double
    const ForwardPass* forward
    const BackwardPass* backward
    void* da  # backward: the pass's da
    const void* panels  # W_xh in GEMM panels (product_panels), or NULL: BLAS's products
    Py_ssize_t extent, per_task  # rows in all, rows per piece


cdef inline void piece_rows(const ProductTasks* c, Py_ssize_t piece, Py_ssize_t* lo,
                            Py_ssize_t* hi) noexcept nogil:
    lo[0] = piece * c.per_task
    hi[0] = lo[0] + c.per_task if lo[0] + c.per_task < c.extent else c.extent


# Ranges per thread: a worker that loses its core inside a range leaves the caller waiting for
# that one range only, a quarter of its share (after another library's pool had just run, two
# ranges of the whole made some passes 14% slower on two threads than on one).
cdef enum:
    PIECES_PER_THREAD = 4


cdef void run_pieces(ProductTasks* c, Py_ssize_t extent, Py_ssize_t align, int n_threads,
                     Py_ssize_t work, bint backward, StepFamily family, team_task task,
                     team_step whole) noexcept nogil:
    """Rows 0 .. extent - 1 of a product in PIECES_PER_THREAD * n_threads ranges (multiples of
    align rows) on the team, or in one call of `whole` on one thread."""
    cdef Py_ssize_t pieces = PIECES_PER_THREAD * n_threads
    c.extent = extent
    c.per_task = extent
    if n_threads > 1:
        c.per_task = (extent + pieces - 1) // pieces
        c.per_task = (c.per_task + align - 1) // align * align
    if c.per_task >= extent:
        whole(c, 0)
        return
    team_run(n_threads, 1, (extent + c.per_task - 1) // c.per_task,
             step_kind(work, backward, c.is_double, family), task, whole, c)


cdef void projection_rows(const ForwardPass* p, floating* out, const floating* panels,
                          Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows r0 .. r1 - 1 (of T * B) of P = X W_xh^T + b (+ the noise on a_t) into out; on our
    GEMM with W_xh^T in panels (product_panels; each element the same whatever the rows)."""
    cdef Py_ssize_t D = p.D, H = p.H, row, i, rows = r1 - r0
    cdef const floating* b = <const floating*>p.b
    cdef const floating* noise = <const floating*>p.noise
    cdef const floating* x = <const floating*>p.x + r0 * D
    out = out + r0 * H
    if panels != NULL or (NATURAL_LAYOUT and p.own_products):  # P = b (+ noise) + X @ W_xh.T
        for row in range(rows):
            if b != NULL:
                memcpy(out + row * H, b, H * sizeof(floating))
            else:
                memset(out + row * H, 0, H * sizeof(floating))
        if noise != NULL:  # the noise on a_t folds into the input projection
            for i in range(rows * H):
                out[i] += noise[r0 * H + i]
        if panels != NULL:
            gemm_step(x, panels, out, out, out, rows, D, H, 0, H, PRODUCT_ONLY, NULL, NULL, NULL,
                      NULL)
        else:
            step_product(True, x, rows, D, <const floating*>p.W_xh, D, out, out, H, 0, H,
                         False)
    else:
        any_gemm(False, True, rows, H, D, 1, x, D, <const floating*>p.W_xh, D, 0, out,
                 H)  # P = X @ W_xh.T
        if b != NULL:
            for row in range(rows):
                for i in range(H):
                    out[row * H + i] += b[i]
        if noise != NULL:
            for i in range(rows * H):
                out[i] += noise[r0 * H + i]


cdef void projection_task(void* context, Py_ssize_t step, Py_ssize_t piece) noexcept nogil:
    cdef const ProductTasks* c = <const ProductTasks*>context
    cdef Py_ssize_t lo, hi
    piece_rows(c, piece, &lo, &hi)
    if c.is_double:
        projection_rows(c.forward, <double*>c.forward.out, <const double*>c.panels, lo, hi)
    else:
        projection_rows(c.forward, <float*>c.forward.out, <const float*>c.panels, lo, hi)


cdef void projection_pieces(void* context, Py_ssize_t step) noexcept nogil:
    """Every piece on this thread: on our GEMM in one call (the same bits as the pieces)."""
    cdef const ProductTasks* c = <const ProductTasks*>context
    cdef Py_ssize_t piece
    if c.panels != NULL and c.is_double:
        projection_rows(c.forward, <double*>c.forward.out, <const double*>c.panels, 0, c.extent)
    elif c.panels != NULL:
        projection_rows(c.forward, <float*>c.forward.out, <const float*>c.panels, 0, c.extent)
    else:
        for piece in range((c.extent + c.per_task - 1) // c.per_task):
            projection_task(context, step, piece)


cdef void dx_rows(const BackwardPass* p, const floating* da, const floating* panels,
                  Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows r0 .. r1 - 1 (of T * B) of dx = da @ W_xh; on our GEMM with W_xh in panels."""
    cdef Py_ssize_t D = p.D, H = p.H
    cdef floating* dx = <floating*>p.dx + r0 * D
    if panels != NULL:  # dx = 0 + da @ W_xh
        memset(dx, 0, (r1 - r0) * D * sizeof(floating))
        gemm_step(da + r0 * H, panels, dx, dx, dx, r1 - r0, H, D, 0, D, PRODUCT_ONLY, NULL, NULL,
                  NULL, NULL)
    elif NATURAL_LAYOUT and p.own_products:  # dx = 0 + da @ W_xh
        memset(dx, 0, (r1 - r0) * D * sizeof(floating))
        step_product(False, da + r0 * H, r1 - r0, H, <const floating*>p.W_xh, D, dx, dx, D, 0,
                     D, False)
    else:
        any_gemm(False, False, r1 - r0, D, H, 1, da + r0 * H, H, <const floating*>p.W_xh, D, 0,
                 dx, D)


cdef inline void weights_gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n,
                              Py_ssize_t k, floating alpha, const floating* A, Py_ssize_t lda,
                              const floating* B, Py_ssize_t ldb, floating beta, floating* C,
                              Py_ssize_t ldc) noexcept nogil:
    """The weight gradients' GEMMs: float32 on NumPy's OpenBLAS where the kernels found it (the
    GEMM a one-thread pass makes after the pass, through NumPy), else any_gemm."""
    if floating is float and m * n * k > LOOPS_MAX_MNK:
        weight_gemm_f32(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
    else:
        any_gemm(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)


cdef void weight_grads_rows(const BackwardPass* p, const floating* da, Py_ssize_t r0,
                            Py_ssize_t r1) noexcept nogil:
    """Rows r0 .. r1 - 1 of [dW_hh; dW_xh] (2H rows, dW_xh's from H): dW_hh = sum_t da_t^T
    h_{t-1} and dW_xh = da^T @ x, GEMMs over all T * B rows of those rows' columns of da."""
    cdef Py_ssize_t T = p.T, B = p.B, D = p.D, H = p.H
    cdef Py_ssize_t a = r0 if r0 < H else H, z = r1 if r1 < H else H
    cdef floating* dW_hh = <floating*>p.dW_hh + a * H
    cdef const floating* h0 = <const floating*>p.h0
    if z > a:
        # dW_hh: step 0 pairs with h0, steps 1..T-1 with out[0..T-2].
        if h0 + B * H == <const floating*>p.out:  # h0 right before out
            weights_gemm(True, False, z - a, H, T * B, 1, da + a, H, h0, H, 0, dW_hh,
                     H)  # dW_hh = da.T @ [h0; out[:-1]]
        else:
            weights_gemm(True, False, z - a, H, B, 1, da + a, H, h0, H, 0, dW_hh,
                     H)  # dW_hh = da[0].T @ h0
            if T > 1:
                weights_gemm(True, False, z - a, H, (T - 1) * B, 1, da + B * H + a, H,
                         <const floating*>p.out, H, 1, dW_hh, H)  # dW_hh += da[1:].T @ out[:-1]
    a = (r0 if r0 > H else H) - H
    z = (r1 if r1 > H else H) - H
    if z > a:  # dW_xh = da.T @ x
        weights_gemm(True, False, z - a, D, T * B, 1, da + a, H, <const floating*>p.x, D, 0,
                 <floating*>p.dW_xh + a * D, D)


cdef inline Py_ssize_t weight_grads_bound(const BackwardPass* p, Py_ssize_t piece,
                                          Py_ssize_t pieces) noexcept nogil:
    """Where piece `piece` of `pieces` of [dW_hh; dW_xh] starts: pieces of equal work (a row
    of dW_hh costs H, one of dW_xh D), rows a multiple of 8 apart."""
    cdef Py_ssize_t H = p.H, D = p.D, row
    cdef double work = <double>piece * H * (H + D) / pieces
    if piece >= pieces:
        return 2 * H
    if work <= <double>H * H:
        row = <Py_ssize_t>(work / H)
    else:
        row = H + <Py_ssize_t>((work - <double>H * H) / D)
    row = (row + 4) // 8 * 8
    return row if row < 2 * H else 2 * H


cdef void weight_grads_task(void* context, Py_ssize_t step, Py_ssize_t piece) noexcept nogil:
    cdef const ProductTasks* c = <const ProductTasks*>context
    cdef Py_ssize_t r0 = weight_grads_bound(c.backward, piece, c.extent)
    cdef Py_ssize_t r1 = weight_grads_bound(c.backward, piece + 1, c.extent)
    if c.is_double:
        weight_grads_rows(c.backward, <const double*>c.da, r0, r1)
    else:
        weight_grads_rows(c.backward, <const float*>c.da, r0, r1)


cdef void weight_grads_pieces(void* context, Py_ssize_t step) noexcept nogil:
    cdef const ProductTasks* c = <const ProductTasks*>context
    cdef Py_ssize_t piece
    for piece in range(c.extent):
        weight_grads_task(context, step, piece)


cdef void bias_grad(const BackwardPass* p, const floating* da) noexcept nogil:
    """db = da.sum(axis=(0, 1)), row after row: a fixed order, so repeatable."""
    cdef Py_ssize_t H = p.H, row, i
    cdef floating* db = <floating*>p.db
    memset(db, 0, H * sizeof(floating))
    for row in range(p.T * p.B):
        for i in range(H):
            db[i] += da[row * H + i]


cdef void dx_task(void* context, Py_ssize_t step, Py_ssize_t piece) noexcept nogil:
    cdef const ProductTasks* c = <const ProductTasks*>context
    cdef Py_ssize_t lo, hi
    piece_rows(c, piece, &lo, &hi)
    if c.is_double:
        dx_rows(c.backward, <const double*>c.da, <const double*>c.panels, lo, hi)
    else:
        dx_rows(c.backward, <const float*>c.da, <const float*>c.panels, lo, hi)


cdef void dx_pieces(void* context, Py_ssize_t step) noexcept nogil:
    """Every piece on this thread: on our GEMM in one call (the same bits as the pieces)."""
    cdef const ProductTasks* c = <const ProductTasks*>context
    cdef Py_ssize_t piece
    if c.panels != NULL and c.is_double:
        dx_rows(c.backward, <const double*>c.da, <const double*>c.panels, 0, c.extent)
    elif c.panels != NULL:
        dx_rows(c.backward, <const float*>c.da, <const float*>c.panels, 0, c.extent)
    else:
        for piece in range((c.extent + c.per_task - 1) // c.per_task):
            dx_task(context, step, piece)


# A GEMM of the layers above (rnnfast._kernels.backend.matmul: Linear(n_threads=...)) shared
# among the team the same way: ranges of C's rows (each range's rows of A with all of B: for
# a B of few weights), or of its columns (all of A with the range's columns of B: for an A as
# large as a whole pass; one range per thread, as each repacks A).
ctypedef struct MatmulTasks:
    bint is_double
    const MatmulPass* p
    Py_ssize_t extent, per_task


cdef void matmul_range(const MatmulPass* p, floating* C, Py_ssize_t lo,
                       Py_ssize_t hi) noexcept nogil:
    cdef const floating* A = <const floating*>p.A
    cdef const floating* B = <const floating*>p.B
    if p.split_columns:
        any_gemm(p.trans_a, p.trans_b, p.m, hi - lo, p.k, 1, A, p.lda,
                 B + (lo * p.ldb if p.trans_b else lo), p.ldb, 0, C + lo, p.ldc)
    else:
        any_gemm(p.trans_a, p.trans_b, hi - lo, p.n, p.k, 1, A + (lo if p.trans_a else lo * p.lda),
                 p.lda, B, p.ldb, 0, C + lo * p.ldc, p.ldc)


cdef void matmul_task(void* context, Py_ssize_t step, Py_ssize_t piece) noexcept nogil:
    cdef const MatmulTasks* c = <const MatmulTasks*>context
    cdef Py_ssize_t lo = piece * c.per_task
    cdef Py_ssize_t hi = lo + c.per_task if lo + c.per_task < c.extent else c.extent
    if c.is_double:
        matmul_range(c.p, <double*>c.p.C, lo, hi)
    else:
        matmul_range(c.p, <float*>c.p.C, lo, hi)


cdef void matmul_pieces(void* context, Py_ssize_t step) noexcept nogil:
    cdef const MatmulTasks* c = <const MatmulTasks*>context
    cdef Py_ssize_t piece
    for piece in range((c.extent + c.per_task - 1) // c.per_task):
        matmul_task(context, step, piece)


cdef void matmul_pass(const MatmulPass* p, bint is_double) noexcept nogil:
    """C = op(A) @ op(B) as MatmulPass describes it, in ranges on n_threads of the team (in
    one call on one thread)."""
    cdef MatmulTasks c
    cdef Py_ssize_t pieces = p.n_threads * (1 if p.split_columns else PIECES_PER_THREAD)
    c.is_double, c.p = is_double, p
    c.extent = p.n if p.split_columns else p.m
    c.per_task = c.extent
    if p.n_threads > 1:
        c.per_task = (c.extent + pieces - 1) // pieces
        c.per_task = (c.per_task + 15) // 16 * 16
    if c.per_task >= c.extent:
        matmul_pieces(&c, 0)
        return
    team_run(p.n_threads, 1, (c.extent + c.per_task - 1) // c.per_task,
             step_kind(p.m * p.n * p.k, p.split_columns, is_double, LAYER_PRODUCTS),
             matmul_task, matmul_pieces, &c)
