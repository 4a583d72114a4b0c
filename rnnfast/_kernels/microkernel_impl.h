/* The body of microkernel.h, included once per element type RNNFAST_T (vector RNNFAST_V;
 * RNNFAST_N, the vector of RNNFAST_T that converts to a vector of doubles, for sums of squares). */

#define RNNFAST_LANES (RNNFAST_VECTOR_BYTES / sizeof(RNNFAST_T))  /* elements per vector */
#define RNNFAST_BLOCK (2 * RNNFAST_LANES)                         /* columns per block */

#ifdef RNNFAST_VECTOR_TYPES

static inline RNNFAST_V RNNFAST_NAME(rnnfast_load)(const RNNFAST_T* p) {
    RNNFAST_V v;
    memcpy(&v, p, sizeof v);  /* an unaligned vector load */
    return v;
}

static inline RNNFAST_V RNNFAST_NAME(rnnfast_splat)(RNNFAST_T x) {
    RNNFAST_V v = {0};
    return v + x;  /* the scalar is broadcast to every lane */
}

/* Moves a block row between memory and two vectors, through a buffer so that only the first
 * width columns of memory are touched. */
static inline void RNNFAST_NAME(rnnfast_load_row)(const RNNFAST_T* p, ptrdiff_t width,
                                                  RNNFAST_V* lo, RNNFAST_V* hi) {
    RNNFAST_T buffer[RNNFAST_BLOCK] = {0};
    memcpy(buffer, p, (size_t)width * sizeof(RNNFAST_T));
    memcpy(lo, buffer, sizeof *lo);
    memcpy(hi, buffer + RNNFAST_LANES, sizeof *hi);
}

static inline void RNNFAST_NAME(rnnfast_store_row)(RNNFAST_T* p, ptrdiff_t width, RNNFAST_V lo,
                                                   RNNFAST_V hi) {
    RNNFAST_T buffer[RNNFAST_BLOCK];
    memcpy(buffer, &lo, sizeof lo);
    memcpy(buffer + RNNFAST_LANES, &hi, sizeof hi);
    memcpy(p, buffer, (size_t)width * sizeof(RNNFAST_T));
}

/* R rows (R <= 6, a constant at every call, so the loops over r unroll and the accumulators
 * live in registers): each M row loaded serves all R rows. Six rows give twelve accumulators,
 * enough independent multiply-adds to cover their latency on two FMA units (the shape of the
 * classic 6 x 16 AVX2 SGEMM kernel). */
static inline void RNNFAST_NAME(rnnfast_block_rows)(
        const int R, const RNNFAST_T* X, ptrdiff_t K, const RNNFAST_T* M, ptrdiff_t ldm,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t width) {
    RNNFAST_V lo[6], hi[6];
    for (int r = 0; r < R; r++) RNNFAST_NAME(rnnfast_load_row)(init + r * N, width, &lo[r], &hi[r]);
    for (ptrdiff_t j = 0; j < K; j++) {
        const RNNFAST_V m_lo = RNNFAST_NAME(rnnfast_load)(M + j * ldm);
        const RNNFAST_V m_hi = RNNFAST_NAME(rnnfast_load)(M + j * ldm + RNNFAST_LANES);
        for (int r = 0; r < R; r++) {
            const RNNFAST_V x = RNNFAST_NAME(rnnfast_splat)(X[r * K + j]);
            lo[r] += x * m_lo;
            hi[r] += x * m_hi;
        }
    }
    for (int r = 0; r < R; r++) RNNFAST_NAME(rnnfast_store_row)(C + r * N, width, lo[r], hi[r]);
}

/* Two rows: each M row serves both; two partial sums (over j mod 2) per row keep eight
 * independent chains in flight, added in a fixed order at the end. */
static inline void RNNFAST_NAME(rnnfast_block_2_rows)(
        const RNNFAST_T* X, ptrdiff_t K, const RNNFAST_T* M, ptrdiff_t ldm,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t width) {
    RNNFAST_V a0l = {0}, a0h = {0}, a1l = {0}, a1h = {0};  /* row 0, j even / odd */
    RNNFAST_V b0l = {0}, b0h = {0}, b1l = {0}, b1h = {0};  /* row 1, j even / odd */
    ptrdiff_t j = 0;
    for (; j + 2 <= K; j += 2) {
        const RNNFAST_T* m = M + j * ldm;
        const RNNFAST_V m0l = RNNFAST_NAME(rnnfast_load)(m);
        const RNNFAST_V m0h = RNNFAST_NAME(rnnfast_load)(m + RNNFAST_LANES);
        const RNNFAST_V m1l = RNNFAST_NAME(rnnfast_load)(m + ldm);
        const RNNFAST_V m1h = RNNFAST_NAME(rnnfast_load)(m + ldm + RNNFAST_LANES);
        RNNFAST_V x = RNNFAST_NAME(rnnfast_splat)(X[j]);
        a0l += x * m0l; a0h += x * m0h;
        x = RNNFAST_NAME(rnnfast_splat)(X[j + 1]);
        a1l += x * m1l; a1h += x * m1h;
        x = RNNFAST_NAME(rnnfast_splat)(X[K + j]);
        b0l += x * m0l; b0h += x * m0h;
        x = RNNFAST_NAME(rnnfast_splat)(X[K + j + 1]);
        b1l += x * m1l; b1h += x * m1h;
    }
    if (j < K) {
        const RNNFAST_V ml = RNNFAST_NAME(rnnfast_load)(M + j * ldm);
        const RNNFAST_V mh = RNNFAST_NAME(rnnfast_load)(M + j * ldm + RNNFAST_LANES);
        RNNFAST_V x = RNNFAST_NAME(rnnfast_splat)(X[j]);
        a0l += x * ml; a0h += x * mh;
        x = RNNFAST_NAME(rnnfast_splat)(X[K + j]);
        b0l += x * ml; b0h += x * mh;
    }
    RNNFAST_V c_lo, c_hi;
    RNNFAST_NAME(rnnfast_load_row)(init, width, &c_lo, &c_hi);
    RNNFAST_NAME(rnnfast_store_row)(C, width, c_lo + (a0l + a1l), c_hi + (a0h + a1h));
    RNNFAST_NAME(rnnfast_load_row)(init + N, width, &c_lo, &c_hi);
    RNNFAST_NAME(rnnfast_store_row)(C + N, width, c_lo + (b0l + b1l), c_hi + (b0h + b1h));
}

/* One row: no reuse of M, so instead four partial sums (over j mod 4) keep eight independent
 * chains of multiply-adds in flight; they are added in a fixed order at the end. */
static inline void RNNFAST_NAME(rnnfast_block_1_row)(
        const RNNFAST_T* X, ptrdiff_t K, const RNNFAST_T* M, ptrdiff_t ldm,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t width) {
    RNNFAST_V s0l = {0}, s0h = {0}, s1l = {0}, s1h = {0};
    RNNFAST_V s2l = {0}, s2h = {0}, s3l = {0}, s3h = {0};
    ptrdiff_t j = 0;
    for (; j + 4 <= K; j += 4) {
        const RNNFAST_T* m = M + j * ldm;
        RNNFAST_V x = RNNFAST_NAME(rnnfast_splat)(X[j]);
        s0l += x * RNNFAST_NAME(rnnfast_load)(m);
        s0h += x * RNNFAST_NAME(rnnfast_load)(m + RNNFAST_LANES);
        x = RNNFAST_NAME(rnnfast_splat)(X[j + 1]);
        s1l += x * RNNFAST_NAME(rnnfast_load)(m + ldm);
        s1h += x * RNNFAST_NAME(rnnfast_load)(m + ldm + RNNFAST_LANES);
        x = RNNFAST_NAME(rnnfast_splat)(X[j + 2]);
        s2l += x * RNNFAST_NAME(rnnfast_load)(m + 2 * ldm);
        s2h += x * RNNFAST_NAME(rnnfast_load)(m + 2 * ldm + RNNFAST_LANES);
        x = RNNFAST_NAME(rnnfast_splat)(X[j + 3]);
        s3l += x * RNNFAST_NAME(rnnfast_load)(m + 3 * ldm);
        s3h += x * RNNFAST_NAME(rnnfast_load)(m + 3 * ldm + RNNFAST_LANES);
    }
    for (; j < K; j++) {
        const RNNFAST_V x = RNNFAST_NAME(rnnfast_splat)(X[j]);
        s0l += x * RNNFAST_NAME(rnnfast_load)(M + j * ldm);
        s0h += x * RNNFAST_NAME(rnnfast_load)(M + j * ldm + RNNFAST_LANES);
    }
    RNNFAST_V c_lo, c_hi;
    RNNFAST_NAME(rnnfast_load_row)(init, width, &c_lo, &c_hi);
    c_lo += (s0l + s1l) + (s2l + s3l);
    c_hi += (s0h + s1h) + (s2h + s3h);
    RNNFAST_NAME(rnnfast_store_row)(C, width, c_lo, c_hi);
}

#else  /* no vector types: the same arithmetic, one element at a time */

static inline void RNNFAST_NAME(rnnfast_block_rows)(
        const int R, const RNNFAST_T* X, ptrdiff_t K, const RNNFAST_T* M, ptrdiff_t ldm,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t width) {
    for (int r = 0; r < R; r++) {
        for (ptrdiff_t c = 0; c < width; c++) {
            RNNFAST_T sum = init[r * N + c];
            for (ptrdiff_t j = 0; j < K; j++) sum += X[r * K + j] * M[j * ldm + c];
            C[r * N + c] = sum;
        }
    }
}

static inline void RNNFAST_NAME(rnnfast_block_2_rows)(
        const RNNFAST_T* X, ptrdiff_t K, const RNNFAST_T* M, ptrdiff_t ldm,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t width) {
    RNNFAST_NAME(rnnfast_block_rows)(2, X, K, M, ldm, init, C, N, width);
}

static inline void RNNFAST_NAME(rnnfast_block_1_row)(
        const RNNFAST_T* X, ptrdiff_t K, const RNNFAST_T* M, ptrdiff_t ldm,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t width) {
    for (ptrdiff_t c = 0; c < width; c++) {
        RNNFAST_T sum = 0;
        for (ptrdiff_t j = 0; j < K; j++) sum += X[j] * M[j * ldm + c];
        C[c] = init[c] + sum;
    }
}

#endif

static inline void RNNFAST_NAME(rnnfast_block_6_rows)(
        const RNNFAST_T* X, ptrdiff_t K, const RNNFAST_T* M, ptrdiff_t ldm,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t width) {
    RNNFAST_NAME(rnnfast_block_rows)(6, X, K, M, ldm, init, C, N, width);
}

static inline void RNNFAST_NAME(rnnfast_block_4_rows)(
        const RNNFAST_T* X, ptrdiff_t K, const RNNFAST_T* M, ptrdiff_t ldm,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t width) {
    RNNFAST_NAME(rnnfast_block_rows)(4, X, K, M, ldm, init, C, N, width);
}

/* C[:, c0:c1] = init + X @ M[:, c0:c1] for all B rows, M (K, N) packed in panels (one per
 * column block of RNNFAST_BLOCK, K x block, zero-padded): a block after another, its rows six
 * at a time, then four, two, one. c0 is a multiple of the block. */
static inline void RNNFAST_NAME(rnnfast_panel_rows)(
        const RNNFAST_T* X, ptrdiff_t B, ptrdiff_t K, const RNNFAST_T* M,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t c0, ptrdiff_t c1) {
    const ptrdiff_t CB = RNNFAST_BLOCK;
    const ptrdiff_t B6 = B - B % 6, B4 = B6 + (B - B6) / 4 * 4, B2 = B4 + (B - B4) / 2 * 2;
    for (ptrdiff_t col0 = c0; col0 < c1; col0 += CB) {
        const ptrdiff_t width = c1 - col0 < CB ? c1 - col0 : CB;
        const RNNFAST_T* panel = M + (col0 / CB) * K * CB;
        ptrdiff_t b = 0;
        for (; b < B6; b += 6)
            RNNFAST_NAME(rnnfast_block_6_rows)(X + b * K, K, panel, CB, init + b * N + col0,
                                               C + b * N + col0, N, width);
        for (; b < B4; b += 4)
            RNNFAST_NAME(rnnfast_block_4_rows)(X + b * K, K, panel, CB, init + b * N + col0,
                                               C + b * N + col0, N, width);
        for (; b < B2; b += 2)
            RNNFAST_NAME(rnnfast_block_2_rows)(X + b * K, K, panel, CB, init + b * N + col0,
                                               C + b * N + col0, N, width);
        for (; b < B; b++)
            RNNFAST_NAME(rnnfast_block_1_row)(X + b * K, K, panel, CB, init + b * N + col0,
                                              C + b * N + col0, width);
    }
}

#ifdef RNNFAST_VECTOR_TYPES
/* C[l, j] = beta C[l, j] + sum_p alpha A[p, l] B[p, j] for the RNNFAST_LANES rows l of C (ldc
 * apart) and n columns j, A's rows lda apart: for each group of up to four columns, one vector
 * accumulator per column over the lanes l, each (l, j) summed over p in order, exactly as the
 * scalar loops of rnnfast_gemm_loops sum it. */
static inline void RNNFAST_NAME(rnnfast_at_b_rows)(
        ptrdiff_t n, ptrdiff_t k, RNNFAST_T alpha, const RNNFAST_T* A, ptrdiff_t lda,
        const RNNFAST_T* B, ptrdiff_t ldb, RNNFAST_T beta, RNNFAST_T* C, ptrdiff_t ldc) {
    const ptrdiff_t L = (ptrdiff_t)RNNFAST_LANES;
    for (ptrdiff_t j0 = 0; j0 < n; j0 += 4) {
        const int w = n - j0 < 4 ? (int)(n - j0) : 4;
        RNNFAST_V acc[4];
        for (int q = 0; q < 4; q++)
            for (ptrdiff_t l = 0; l < L; l++)
                acc[q][l] = q < w && beta != 0 ? beta * C[l * ldc + j0 + q] : 0;
        if (w == 4) {
            for (ptrdiff_t p = 0; p < k; p++) {
                const RNNFAST_V a = alpha * RNNFAST_NAME(rnnfast_load)(A + p * lda);
                const RNNFAST_T* b = B + p * ldb + j0;
                acc[0] += a * b[0];
                acc[1] += a * b[1];
                acc[2] += a * b[2];
                acc[3] += a * b[3];
            }
        } else {
            for (ptrdiff_t p = 0; p < k; p++) {
                const RNNFAST_V a = alpha * RNNFAST_NAME(rnnfast_load)(A + p * lda);
                const RNNFAST_T* b = B + p * ldb + j0;
                for (int q = 0; q < w; q++) acc[q] += a * b[q];
            }
        }
        for (int q = 0; q < w; q++)
            for (ptrdiff_t l = 0; l < L; l++) C[l * ldc + j0 + q] = acc[q][l];
    }
}
#endif

/* C = alpha op(A) @ op(B) + beta C, row-major as rnnfast/_kernels/blas.pyx's gemm takes it
 * (op(A) m x k, op(B) k x n; beta 0: C is not read), in plain loops, for GEMMs so small that
 * BLAS's per-call costs (60-140 ns here, more on a cold call) exceed the work. The inner loops
 * run along rows (contiguous, vectorised): a row of C at a time, axpy over the rows of op(B),
 * or dot products with op(B)'s rows when B is transposed. Each output is summed over k in
 * order, whatever the loop order: repeatable. */
static inline void RNNFAST_NAME(rnnfast_gemm_loops)(
        int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, RNNFAST_T alpha,
        const RNNFAST_T* A, ptrdiff_t lda, const RNNFAST_T* B, ptrdiff_t ldb, RNNFAST_T beta,
        RNNFAST_T* C, ptrdiff_t ldc) {
    if (trans_a && !trans_b) {  /* the weight gradients' A^T B */
        ptrdiff_t i0 = 0;
#ifdef RNNFAST_VECTOR_TYPES
        /* RNNFAST_LANES rows of C at a time, a vector over i (a row of A, contiguous), and
         * up to four columns: four sums side by side, each over k in order as below. */
        for (; i0 + (ptrdiff_t)RNNFAST_LANES <= m; i0 += RNNFAST_LANES)
            RNNFAST_NAME(rnnfast_at_b_rows)(n, k, alpha, A + i0, lda, B, ldb, beta, C + i0 * ldc,
                                            ldc);
#endif
        /* the rows left: k outermost, so that their sums, each still over k in order, advance
         * side by side instead of one k-long chain of dependent adds at a time */
        for (ptrdiff_t i = i0; i < m; i++) {
            RNNFAST_T* c = C + i * ldc;
            if (beta == 0)
                for (ptrdiff_t j = 0; j < n; j++) c[j] = 0;
            else if (beta != 1)
                for (ptrdiff_t j = 0; j < n; j++) c[j] *= beta;
        }
        for (ptrdiff_t p = 0; p < k; p++) {
            const RNNFAST_T* b = B + p * ldb;
            for (ptrdiff_t i = i0; i < m; i++) {  /* c += alpha op(A)[i, p] B[p, :] */
                const RNNFAST_T a = alpha * A[p * lda + i];
                RNNFAST_T* c = C + i * ldc;
                for (ptrdiff_t j = 0; j < n; j++) c[j] += a * b[j];
            }
        }
        return;
    }
    for (ptrdiff_t i = 0; i < m; i++) {
        RNNFAST_T* c = C + i * ldc;
        if (trans_b) {  /* c[j] = beta c[j] + alpha sum_p op(A)[i, p] B[j, p] */
            const RNNFAST_T* a = trans_a ? A + i : A + i * lda;
            const ptrdiff_t a_step = trans_a ? lda : 1;
            for (ptrdiff_t j = 0; j < n; j++) {
                const RNNFAST_T* b = B + j * ldb;
                RNNFAST_T sum = 0;
                for (ptrdiff_t p = 0; p < k; p++) sum += a[p * a_step] * b[p];
                c[j] = (beta == 0 ? 0 : beta * c[j]) + alpha * sum;
            }
            continue;
        }
        if (beta == 0)
            for (ptrdiff_t j = 0; j < n; j++) c[j] = 0;
        else if (beta != 1)
            for (ptrdiff_t j = 0; j < n; j++) c[j] *= beta;
        for (ptrdiff_t p = 0; p < k; p++) {  /* c += alpha op(A)[i, p] B[p, :] */
            const RNNFAST_T a = alpha * (trans_a ? A[p * lda + i] : A[i * lda + p]);
            const RNNFAST_T* b = B + p * ldb;
            for (ptrdiff_t j = 0; j < n; j++) c[j] += a * b[j];
        }
    }
}

/* sum(v[i]^2) for i < n, accumulated in double (the squares of floats are exact in double and
 * can neither overflow nor underflow there). Two vectors of doubles accumulate, each taking
 * an RNNFAST_N at a time (half a vector of floats, a whole vector of doubles), the tail
 * zero-padded; their lanes are added in a fixed order at the end, so the result depends only
 * on v, n and the build. */
#if defined(RNNFAST_VECTOR_TYPES) && defined(RNNFAST_VECTOR_SUM_SQUARES)

#define RNNFAST_DLANES (RNNFAST_VECTOR_BYTES / sizeof(double))  /* lanes of rnnfast_vf64 */

static inline rnnfast_vf64 RNNFAST_NAME(rnnfast_load_as_double)(const RNNFAST_T* p) {
    RNNFAST_N narrow;
    memcpy(&narrow, p, sizeof narrow);  /* RNNFAST_DLANES elements, unaligned */
    return __builtin_convertvector(narrow, rnnfast_vf64);
}

static inline double RNNFAST_NAME(rnnfast_sum_squares)(const RNNFAST_T* v, ptrdiff_t n) {
    rnnfast_vf64 s0 = {0}, s1 = {0};
    ptrdiff_t i = 0;
    for (; i + 2 * (ptrdiff_t)RNNFAST_DLANES <= n; i += 2 * RNNFAST_DLANES) {
        const rnnfast_vf64 a = RNNFAST_NAME(rnnfast_load_as_double)(v + i);
        const rnnfast_vf64 b = RNNFAST_NAME(rnnfast_load_as_double)(v + i + RNNFAST_DLANES);
        s0 += a * a;
        s1 += b * b;
    }
    if (i < n) {
        RNNFAST_T tail[2 * RNNFAST_DLANES] = {0};
        memcpy(tail, v + i, (size_t)(n - i) * sizeof(RNNFAST_T));
        const rnnfast_vf64 a = RNNFAST_NAME(rnnfast_load_as_double)(tail);
        const rnnfast_vf64 b = RNNFAST_NAME(rnnfast_load_as_double)(tail + RNNFAST_DLANES);
        s0 += a * a;
        s1 += b * b;
    }
    const rnnfast_vf64 s = s0 + s1;
    double lanes[RNNFAST_DLANES];
    memcpy(lanes, &s, sizeof lanes);
    double total = 0;
    for (size_t l = 0; l < RNNFAST_DLANES; l++) total += lanes[l];
    return total;
}

#undef RNNFAST_DLANES

#else

static inline double RNNFAST_NAME(rnnfast_sum_squares)(const RNNFAST_T* v, ptrdiff_t n) {
    double total = 0;
    for (ptrdiff_t i = 0; i < n; i++) total += (double)v[i] * (double)v[i];
    return total;
}

#endif

#undef RNNFAST_LANES
#undef RNNFAST_BLOCK
