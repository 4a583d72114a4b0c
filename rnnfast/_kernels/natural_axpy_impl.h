/* The backward step's product of natural.h, included once per element type and vector width
 * (see there): C = init + X @ W for W_hh as the caller stores it. Each output (b, c) has one
 * accumulator summed over j in order, so the vector width, the blocking of the columns and
 * their order change no bit of it: the AVX-512 build includes this with 512-bit vectors.
 *
 * Names of this inclusion: RNNFAST_T, RNNFAST_NAME(name), and the vector type and operations
 * RNNFAST_V, RNNFAST_L lanes, RNNFAST_LOAD, RNNFAST_STORE, RNNFAST_MASKLOAD, RNNFAST_MASKSTORE,
 * RNNFAST_FMA, RNNFAST_ZERO, RNNFAST_SPLAT, RNNFAST_MASK_T and RNNFAST_MASK(n) (the first n
 * lanes).
 */

/* C[b, c] = init[b, c] + sum_j X[b, j] W[j, c] for RB rows b and CV vectors of columns from c
 * (the last one partial, masked, when partial): each (b, c) one accumulator, summed over j in
 * order, so any grouping of rows and columns gives the same bits. */
static RNNFAST_INLINE void RNNFAST_NAME(rnnfast_axpy_block)(
        const int RB, const int CV, const int partial, const RNNFAST_T* X, ptrdiff_t K,
        const RNNFAST_T* W, ptrdiff_t ldw, const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N,
        ptrdiff_t c, ptrdiff_t last) {
    RNNFAST_V acc[6][12];
    for (int b = 0; b < RB; b++)
        for (int v = 0; v < CV; v++) acc[b][v] = RNNFAST_ZERO();
    const RNNFAST_MASK_T mask = RNNFAST_MASK(partial ? last : RNNFAST_L);
    for (ptrdiff_t j = 0; j < K; j++) {
        const RNNFAST_T* w = W + j * ldw + c;
        if (CV <= 2) {  /* many rows: the row of W in registers, each X[b, j] in turn */
            RNNFAST_V m[2];
            for (int v = 0; v < CV; v++) {
                m[v] = partial && v == CV - 1 ? RNNFAST_MASKLOAD(w + v * RNNFAST_L, mask)
                                              : RNNFAST_LOAD(w + v * RNNFAST_L);
                if (RB > 1) RNNFAST_IN_REGISTER(m[v]);
            }
            for (int b = 0; b < RB; b++) {
                const RNNFAST_V x = RNNFAST_SPLAT(X[b * K + j]);
                for (int v = 0; v < CV; v++) acc[b][v] = RNNFAST_FMA(x, m[v], acc[b][v]);
            }
        } else {  /* few rows: their X[b, j] in registers, the row of W a vector at a time */
            RNNFAST_V x[3];
            for (int b = 0; b < RB; b++) x[b] = RNNFAST_SPLAT(X[b * K + j]);
            for (int v = 0; v < CV; v++) {
                RNNFAST_V m = partial && v == CV - 1 ? RNNFAST_MASKLOAD(w + v * RNNFAST_L, mask)
                                                     : RNNFAST_LOAD(w + v * RNNFAST_L);
                if (RB > 1) RNNFAST_IN_REGISTER(m);
                for (int b = 0; b < RB; b++) acc[b][v] = RNNFAST_FMA(x[b], m, acc[b][v]);
            }
        }
    }
    for (int b = 0; b < RB; b++)
        for (int v = 0; v < CV; v++) {
            const ptrdiff_t at = b * N + c + v * RNNFAST_L;
            if (partial && v == CV - 1)
                RNNFAST_MASKSTORE(C + at, mask, RNNFAST_MASKLOAD(init + at, mask) + acc[b][v]);
            else
                RNNFAST_STORE(C + at, RNNFAST_LOAD(init + at) + acc[b][v]);
        }
}

/* A block of cv vectors (1 <= cv <= CV, known at run time) on its instantiation with constant
 * sizes, whose accumulators are registers. */
static RNNFAST_INLINE void RNNFAST_NAME(rnnfast_axpy_block_of)(
        const int RB, const int CV, int cv, int partial, const RNNFAST_T* X, ptrdiff_t K,
        const RNNFAST_T* W, ptrdiff_t ldw, const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N,
        ptrdiff_t c, ptrdiff_t last) {
#define RNNFAST_AXPY_CASE(n)                                                                  \
    case n:                                                                                   \
        if (n <= CV) {                                                                        \
            if (partial)                                                                      \
                RNNFAST_NAME(rnnfast_axpy_block)(RB, n, 1, X, K, W, ldw, init, C, N, c, last); \
            else                                                                              \
                RNNFAST_NAME(rnnfast_axpy_block)(RB, n, 0, X, K, W, ldw, init, C, N, c, last); \
        }                                                                                     \
        break;
    switch (cv) {
        RNNFAST_AXPY_CASE(1) RNNFAST_AXPY_CASE(2) RNNFAST_AXPY_CASE(3) RNNFAST_AXPY_CASE(4)
        RNNFAST_AXPY_CASE(5) RNNFAST_AXPY_CASE(6) RNNFAST_AXPY_CASE(7) RNNFAST_AXPY_CASE(8)
        RNNFAST_AXPY_CASE(9) RNNFAST_AXPY_CASE(10) RNNFAST_AXPY_CASE(11) RNNFAST_AXPY_CASE(12)
        default: break;
    }
#undef RNNFAST_AXPY_CASE
}

/* Columns c0 .. c1 - 1 of RB rows in as few blocks of at most CV vectors as there can be, of
 * as even widths as there can be (a block of few vectors waits on its multiply-adds' latency
 * at every j: a last block of one vector beside full ones cost as much as a full one), the
 * last vector masked if partial; with reverse, the same blocks from the last to the first. */
static RNNFAST_INLINE void RNNFAST_NAME(rnnfast_axpy_group)(
        const int RB, const int CV, const RNNFAST_T* X, ptrdiff_t K, const RNNFAST_T* W,
        ptrdiff_t ldw, const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t c0,
        ptrdiff_t c1, int reverse) {
    if (c1 <= c0) return;
    const ptrdiff_t vectors = (c1 - c0 + RNNFAST_L - 1) / RNNFAST_L;
    const ptrdiff_t last = c1 - c0 - (vectors - 1) * RNNFAST_L;  /* lanes of the last vector */
    const ptrdiff_t blocks = (vectors + CV - 1) / CV;
    /* the first `wider` blocks have base + 1 vectors, the others base */
    const ptrdiff_t base = vectors / blocks, wider = vectors % blocks;
    for (ptrdiff_t q = 0; q < blocks; q++) {
        const ptrdiff_t block = reverse ? blocks - 1 - q : q;
        const ptrdiff_t first = block * base + (block < wider ? block : wider);
        const int partial = block == blocks - 1 && last < RNNFAST_L;
        RNNFAST_NAME(rnnfast_axpy_block_of)(RB, CV, (int)(base + (block < wider)), partial, X,
                                            K, W, ldw, init, C, N, c0 + first * RNNFAST_L, last);
    }
}

/* The backward step's product: C[b, c] = init[b, c] + sum_j X[b, j] W[j, c] for b < B and
 * c0 <= c < c1, W (K, N) row-major with rows ldw >= N apart (X @ W). Rows of X go six at a
 * time (blocks of up to two vectors of columns), then three (four), two (six), one (twelve):
 * up to twelve accumulators, each row of W loaded once for the rows of the group. reverse as
 * for rnnfast_dot_rows: column blocks from the last to the first. */
static void RNNFAST_NAME(rnnfast_axpy_rows)(
        const RNNFAST_T* X, ptrdiff_t B, ptrdiff_t K, const RNNFAST_T* W, ptrdiff_t ldw,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t c0, ptrdiff_t c1,
        int reverse) {
    ptrdiff_t b = 0;
    for (; b + 6 <= B; b += 6)
        RNNFAST_NAME(rnnfast_axpy_group)(6, 2, X + b * K, K, W, ldw, init + b * N, C + b * N,
                                         N, c0, c1, reverse);
    if (B - b >= 3) {
        RNNFAST_NAME(rnnfast_axpy_group)(3, 4, X + b * K, K, W, ldw, init + b * N, C + b * N,
                                         N, c0, c1, reverse);
        b += 3;
    }
    if (B - b == 2)
        RNNFAST_NAME(rnnfast_axpy_group)(2, 6, X + b * K, K, W, ldw, init + b * N, C + b * N,
                                         N, c0, c1, reverse);
    else if (B - b == 1)
        RNNFAST_NAME(rnnfast_axpy_group)(1, 12, X + b * K, K, W, ldw, init + b * N, C + b * N,
                                         N, c0, c1, reverse);
}
