/* The body of gemm.h, included once per element type RNNFAST_T (vector RNNFAST_V). */

#define RNNFAST_GL (RNNFAST_GEMM_BYTES / (ptrdiff_t)sizeof(RNNFAST_T))  /* lanes per vector */

#ifdef RNNFAST_GEMM_VECTORS

static inline RNNFAST_V RNNFAST_NAME(rnnfast_gemm_load)(const RNNFAST_T* p) {
    RNNFAST_V v;
    memcpy(&v, p, sizeof v);  /* an unaligned vector load */
    return v;
}

/* x in every lane: vbroadcastss/sd where the build has it (AVX-512 folds it into the FMA). */
static inline RNNFAST_V RNNFAST_NAME(rnnfast_gemm_splat)(RNNFAST_T x) {
#if defined(__AVX512F__)
    return (RNNFAST_V)RNNFAST_NAME(_mm512_set1)(x);
#elif defined(__AVX__)
    return (RNNFAST_V)RNNFAST_NAME(_mm256_set1)(x);
#else
    RNNFAST_V v = {0};
    return x - v;  /* x - 0 is x, -0.0 included */
#endif
}

/* C[r, :width] = init[r, :width] + X[r, :K] @ panel[:K, :width] for R rows (a constant at each
 * call), X packed k-major (packed: X[r, k] at Xp[k * R + r], rnnfast_gemm_pack) or as it is
 * (X[r, k] at Xp[r * ldx + k]), rows of init and C N apart; the panel K x 2 vectors, contiguous. init may be C. A partial tile (width < 2 vectors,
 * the last panel) goes through a buffer, so that only the first width columns of init and C are
 * touched. */
static RNNFAST_GEMM_INLINE void RNNFAST_NAME(rnnfast_gemm_rows)(
        const int R, const int packed, const RNNFAST_T* Xp, ptrdiff_t ldx, ptrdiff_t K,
        const RNNFAST_T* panel, const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N,
        ptrdiff_t width) {
    const ptrdiff_t row_step = packed ? 1 : ldx, k_step = packed ? R : 1;
    RNNFAST_V lo[RNNFAST_GEMM_ROWS], hi[RNNFAST_GEMM_ROWS];
    const int full = width == 2 * RNNFAST_GL;
    for (int r = 0; r < R; r++) {
        RNNFAST_T buffer[2 * RNNFAST_GL] = {0};
        const RNNFAST_T* row = init + r * N;
        if (!full) {
            memcpy(buffer, row, (size_t)width * sizeof(RNNFAST_T));
            row = buffer;
        }
        lo[r] = RNNFAST_NAME(rnnfast_gemm_load)(row);
        hi[r] = RNNFAST_NAME(rnnfast_gemm_load)(row + RNNFAST_GL);
    }
    const RNNFAST_T* m = panel;
    const RNNFAST_T* x_k = Xp;
    for (ptrdiff_t k = 0; k < K; k++, m += 2 * RNNFAST_GL, x_k += k_step) {
        const RNNFAST_V m_lo = RNNFAST_NAME(rnnfast_gemm_load)(m);
        const RNNFAST_V m_hi = RNNFAST_NAME(rnnfast_gemm_load)(m + RNNFAST_GL);
        for (int r = 0; r < R; r++) {
            const RNNFAST_V x = RNNFAST_NAME(rnnfast_gemm_splat)(x_k[r * row_step]);
            lo[r] += x * m_lo;
            hi[r] += x * m_hi;
        }
    }
    for (int r = 0; r < R; r++) {
        if (full) {
            memcpy(C + r * N, &lo[r], sizeof lo[r]);
            memcpy(C + r * N + RNNFAST_GL, &hi[r], sizeof hi[r]);
        } else {
            RNNFAST_T buffer[2 * RNNFAST_GL];
            memcpy(buffer, &lo[r], sizeof lo[r]);
            memcpy(buffer + RNNFAST_GL, &hi[r], sizeof hi[r]);
            memcpy(C + r * N, buffer, (size_t)width * sizeof(RNNFAST_T));
        }
    }
}

#else  /* no vector types: the same sums, one element at a time */

static inline void RNNFAST_NAME(rnnfast_gemm_rows)(
        const int R, const int packed, const RNNFAST_T* Xp, ptrdiff_t ldx, ptrdiff_t K,
        const RNNFAST_T* panel, const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N,
        ptrdiff_t width) {
    const ptrdiff_t row_step = packed ? 1 : ldx, k_step = packed ? R : 1;
    for (int r = 0; r < R; r++)
        for (ptrdiff_t c = 0; c < width; c++) {
            RNNFAST_T sum = init[r * N + c];
            for (ptrdiff_t k = 0; k < K; k++)
                sum += Xp[k * k_step + r * row_step] * panel[k * 2 * RNNFAST_GL + c];
            C[r * N + c] = sum;
        }
}

#endif

/* Xp[k * rows + r] = X[r * ldx + k] for r < rows, k < K: a tile's rows of X k-major, so that the
 * tile reads them as one stream from L1. */
static inline void RNNFAST_NAME(rnnfast_gemm_pack)(ptrdiff_t rows, const RNNFAST_T* X,
                                                   ptrdiff_t ldx, ptrdiff_t K, RNNFAST_T* Xp) {
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t k = 0; k < K; k++) Xp[k * rows + r] = X[r * ldx + k];
}

/* One tile of rows <= RNNFAST_GEMM_ROWS rows (see rnnfast_gemm_rows): X packed by
 * rnnfast_gemm_pack (ldx 0), or as it is, rows ldx apart. Each row count, packed or not, is its
 * own unrolled copy of the kernel. */
static void RNNFAST_NAME(rnnfast_gemm_tile)(
        ptrdiff_t rows, const RNNFAST_T* X, ptrdiff_t ldx, ptrdiff_t K, const RNNFAST_T* panel,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t width) {
#define RNNFAST_GEMM_CASE(R)                                                                 \
    case R:                                                                                  \
        if (ldx == 0)                                                                        \
            RNNFAST_NAME(rnnfast_gemm_rows)(R, 1, X, 0, K, panel, init, C, N, width);        \
        else                                                                                 \
            RNNFAST_NAME(rnnfast_gemm_rows)(R, 0, X, ldx, K, panel, init, C, N, width);      \
        break;
    switch (rows) {
        RNNFAST_GEMM_CASE(1) RNNFAST_GEMM_CASE(2) RNNFAST_GEMM_CASE(3)
        RNNFAST_GEMM_CASE(4) RNNFAST_GEMM_CASE(5) RNNFAST_GEMM_CASE(6)
#if RNNFAST_GEMM_ROWS > 6
        RNNFAST_GEMM_CASE(7) RNNFAST_GEMM_CASE(8) RNNFAST_GEMM_CASE(9)
        RNNFAST_GEMM_CASE(10) RNNFAST_GEMM_CASE(11) RNNFAST_GEMM_CASE(12)
#endif
        default: break;
    }
#undef RNNFAST_GEMM_CASE
}

#undef RNNFAST_GL
