/* The forward step's product of natural.h, included once per element type RNNFAST_T (see
 * there): C = init + X @ W.T for W_hh as the caller stores it, for AVX2 + FMA (256-bit vectors
 * in every build: each output's lanes are added up by one tree, whose shape the vector width
 * sets; the backward's product is natural_axpy_impl.h).
 *
 * Names and types of this inclusion: RNNFAST_T, RNNFAST_NAME(name); the vector type V and its
 * operations are defined per type just before each inclusion (RNNFAST_V, RNNFAST_L lanes,
 * RNNFAST_LOAD, RNNFAST_MASKLOAD, RNNFAST_MASKSTORE, RNNFAST_FMA, RNNFAST_ZERO, RNNFAST_SPLAT,
 * RNNFAST_MASK(n): the mask of the first n lanes, RNNFAST_REDUCE4(a0, a1, a2, a3, init, C): C[r]
 * = init[r] + the lanes of a_r added up, for r < 4).
 */

/* C[b, i] = init[b, i] + sum_j X[b, j] W[i, j] for RB rows b of X and RI rows i of W from i
 * (rows ldw apart):
 * each (b, i) has one accumulator, the lanes of the products over j, added up at the end
 * (RNNFAST_REDUCE4: one tree, the same for every grouping of the rows). */
static RNNFAST_INLINE void RNNFAST_NAME(rnnfast_dot_block)(
        const int RB, const int RI, const RNNFAST_T* X, ptrdiff_t K, const RNNFAST_T* W,
        ptrdiff_t ldw, const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t i) {
    RNNFAST_V acc[3][8];
    for (int b = 0; b < RB; b++)
        for (int r = 0; r < RI; r++) acc[b][r] = RNNFAST_ZERO();
    const RNNFAST_T* w = W + i * ldw;
    ptrdiff_t j = 0;
    const ptrdiff_t full = K - K % RNNFAST_L;
    for (; j < full; j += RNNFAST_L) {
        RNNFAST_V x[3];
        for (int b = 0; b < RB; b++) x[b] = RNNFAST_LOAD(X + b * K + j);
        for (int r = 0; r < RI; r++) {
            RNNFAST_V m = RNNFAST_LOAD(w + r * ldw + j);
            if (RB > 1) RNNFAST_IN_REGISTER(m);
            for (int b = 0; b < RB; b++) acc[b][r] = RNNFAST_FMA(m, x[b], acc[b][r]);
        }
    }
    if (j < K) {  /* the last K % L columns, the other lanes zeros (masked loads read nothing) */
        const RNNFAST_MASK_T mask = RNNFAST_MASK(K - j);
        RNNFAST_V x[3];
        for (int b = 0; b < RB; b++) x[b] = RNNFAST_MASKLOAD(X + b * K + j, mask);
        for (int r = 0; r < RI; r++) {
            RNNFAST_V m = RNNFAST_MASKLOAD(w + r * ldw + j, mask);
            if (RB > 1) RNNFAST_IN_REGISTER(m);
            for (int b = 0; b < RB; b++) acc[b][r] = RNNFAST_FMA(m, x[b], acc[b][r]);
        }
    }
    const RNNFAST_V zero = RNNFAST_ZERO();
    for (int b = 0; b < RB; b++) {
        const RNNFAST_T* in = init + b * N + i;
        RNNFAST_T* out = C + b * N + i;
        for (int r = 0; r < RI; r += 4) {
            if (RI - r >= 4) {
                RNNFAST_REDUCE4(acc[b][r], acc[b][r + 1], acc[b][r + 2], acc[b][r + 3], in + r,
                                out + r);
            } else {  /* one row: the same tree, with zero vectors beside it */
                RNNFAST_T lanes[4], start[4] = {in[r], 0, 0, 0};
                RNNFAST_REDUCE4(acc[b][r], zero, zero, zero, start, lanes);
                out[r] = lanes[0];
            }
        }
    }
}

/* Rows i0 .. i1 - 1 of W for RB rows of X: blocks of RI rows of W, then (RI > 4) one of four,
 * then single rows; with reverse, the same blocks from the last to the first. */
static RNNFAST_INLINE void RNNFAST_NAME(rnnfast_dot_group)(
        const int RB, const int RI, const RNNFAST_T* X, ptrdiff_t K, const RNNFAST_T* W,
        ptrdiff_t ldw, const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t i0,
        ptrdiff_t i1, int reverse) {
    if (!reverse) {
        ptrdiff_t i = i0;
        for (; i + RI <= i1; i += RI)
            RNNFAST_NAME(rnnfast_dot_block)(RB, RI, X, K, W, ldw, init, C, N, i);
        if (RI > 4)
            for (; i + 4 <= i1; i += 4)
                RNNFAST_NAME(rnnfast_dot_block)(RB, 4, X, K, W, ldw, init, C, N, i);
        for (; i < i1; i++)
            RNNFAST_NAME(rnnfast_dot_block)(RB, 1, X, K, W, ldw, init, C, N, i);
        return;
    }
    const ptrdiff_t blocks = (i1 - i0) / RI;
    const ptrdiff_t four = RI > 4 && i1 - i0 - blocks * RI >= 4 ? i0 + blocks * RI : -1;
    const ptrdiff_t singles = i0 + blocks * RI + (four >= 0 ? 4 : 0);
    for (ptrdiff_t i = i1 - 1; i >= singles; i--)
        RNNFAST_NAME(rnnfast_dot_block)(RB, 1, X, K, W, ldw, init, C, N, i);
    if (four >= 0) RNNFAST_NAME(rnnfast_dot_block)(RB, 4, X, K, W, ldw, init, C, N, four);
    for (ptrdiff_t q = blocks - 1; q >= 0; q--)
        RNNFAST_NAME(rnnfast_dot_block)(RB, RI, X, K, W, ldw, init, C, N, i0 + q * RI);
}

/* The forward step's product: C[b, i] = init[b, i] + sum_j X[b, j] W[i, j] for b < B and
 * i0 <= i < i1, W (N, K) row-major with rows ldw >= K apart (X @ W.T). Rows of X go three at
 * a time (four rows of W each), then two (four rows of W), one (eight); the rows of W left
 * over, one at a time. With
 * reverse the rows of W go from the last block to the first (the same blocks, so the same
 * bits): a pass whose W is larger than L2 alternates (switches.pxi, alternate_steps), so that
 * each step starts on the rows of W the one before read last, still in L2. */
static void RNNFAST_NAME(rnnfast_dot_rows)(
        const RNNFAST_T* X, ptrdiff_t B, ptrdiff_t K, const RNNFAST_T* W, ptrdiff_t ldw,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t i0, ptrdiff_t i1,
        int reverse) {
    ptrdiff_t b = 0;
    for (; b + 3 <= B; b += 3)
        RNNFAST_NAME(rnnfast_dot_group)(3, 4, X + b * K, K, W, ldw, init + b * N, C + b * N, N, i0,
                                        i1, reverse);
    if (B - b == 2)
        RNNFAST_NAME(rnnfast_dot_group)(2, 4, X + b * K, K, W, ldw, init + b * N, C + b * N, N, i0,
                                        i1, reverse);
    else if (B - b == 1)
        RNNFAST_NAME(rnnfast_dot_group)(1, 8, X + b * K, K, W, ldw, init + b * N, C + b * N, N, i0,
                                        i1, reverse);
}
