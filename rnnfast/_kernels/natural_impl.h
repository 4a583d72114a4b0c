/* The body of natural.h, included once per element type RNNFAST_T (see there): the step's two
 * matrix products on W_hh as the caller stores it, for AVX2 + FMA.
 *
 * Names and types of this inclusion: RNNFAST_T, RNNFAST_NAME(name); the vector type V and its
 * operations are defined per type just before each inclusion (RNNFAST_V, RNNFAST_L lanes,
 * RNNFAST_LOAD, RNNFAST_MASKLOAD, RNNFAST_MASKSTORE, RNNFAST_FMA, RNNFAST_ZERO, RNNFAST_SPLAT,
 * RNNFAST_MASK(n): the mask of the first n lanes, RNNFAST_REDUCE4(a0, a1, a2, a3, init, C): C[r]
 * = init[r] + the lanes of a_r added up, for r < 4).
 */

/* C[b, i] = init[b, i] + sum_j X[b, j] W[i, j] for RB rows b of X and RI rows i of W from i:
 * each (b, i) has one accumulator, the lanes of the products over j, added up at the end
 * (RNNFAST_REDUCE4: one tree, the same for every grouping of the rows). */
static RNNFAST_INLINE void RNNFAST_NAME(rnnfast_dot_block)(
        const int RB, const int RI, const RNNFAST_T* X, ptrdiff_t K, const RNNFAST_T* W,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t i) {
    RNNFAST_V acc[3][8];
    for (int b = 0; b < RB; b++)
        for (int r = 0; r < RI; r++) acc[b][r] = RNNFAST_ZERO();
    const RNNFAST_T* w = W + i * K;
    ptrdiff_t j = 0;
    const ptrdiff_t full = K - K % RNNFAST_L;
    for (; j < full; j += RNNFAST_L) {
        RNNFAST_V x[3];
        for (int b = 0; b < RB; b++) x[b] = RNNFAST_LOAD(X + b * K + j);
        for (int r = 0; r < RI; r++) {
            RNNFAST_V m = RNNFAST_LOAD(w + r * K + j);
            if (RB > 1) RNNFAST_IN_REGISTER(m);
            for (int b = 0; b < RB; b++) acc[b][r] = RNNFAST_FMA(m, x[b], acc[b][r]);
        }
    }
    if (j < K) {  /* the last K % L columns, the other lanes zeros (masked loads read nothing) */
        const RNNFAST_MASK_T mask = RNNFAST_MASK(K - j);
        RNNFAST_V x[3];
        for (int b = 0; b < RB; b++) x[b] = RNNFAST_MASKLOAD(X + b * K + j, mask);
        for (int r = 0; r < RI; r++) {
            RNNFAST_V m = RNNFAST_MASKLOAD(w + r * K + j, mask);
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
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t i0, ptrdiff_t i1,
        int reverse) {
    if (!reverse) {
        ptrdiff_t i = i0;
        for (; i + RI <= i1; i += RI)
            RNNFAST_NAME(rnnfast_dot_block)(RB, RI, X, K, W, init, C, N, i);
        if (RI > 4)
            for (; i + 4 <= i1; i += 4)
                RNNFAST_NAME(rnnfast_dot_block)(RB, 4, X, K, W, init, C, N, i);
        for (; i < i1; i++)
            RNNFAST_NAME(rnnfast_dot_block)(RB, 1, X, K, W, init, C, N, i);
        return;
    }
    const ptrdiff_t blocks = (i1 - i0) / RI;
    const ptrdiff_t four = RI > 4 && i1 - i0 - blocks * RI >= 4 ? i0 + blocks * RI : -1;
    const ptrdiff_t singles = i0 + blocks * RI + (four >= 0 ? 4 : 0);
    for (ptrdiff_t i = i1 - 1; i >= singles; i--)
        RNNFAST_NAME(rnnfast_dot_block)(RB, 1, X, K, W, init, C, N, i);
    if (four >= 0) RNNFAST_NAME(rnnfast_dot_block)(RB, 4, X, K, W, init, C, N, four);
    for (ptrdiff_t q = blocks - 1; q >= 0; q--)
        RNNFAST_NAME(rnnfast_dot_block)(RB, RI, X, K, W, init, C, N, i0 + q * RI);
}

/* The forward step's product: C[b, i] = init[b, i] + sum_j X[b, j] W[i, j] for b < B and
 * i0 <= i < i1, W (N, K) row-major (X @ W.T). Rows of X go three at a time (four rows of W
 * each), then two (four rows of W), one (eight); the rows of W left over, one at a time. With
 * reverse the rows of W go from the last block to the first (the same blocks, so the same
 * bits): a pass whose W is larger than L2 alternates (switches.pxi, alternate_steps), so that
 * each step starts on the rows of W the one before read last, still in L2. */
static void RNNFAST_NAME(rnnfast_dot_rows)(
        const RNNFAST_T* X, ptrdiff_t B, ptrdiff_t K, const RNNFAST_T* W,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t i0, ptrdiff_t i1,
        int reverse) {
    ptrdiff_t b = 0;
    for (; b + 3 <= B; b += 3)
        RNNFAST_NAME(rnnfast_dot_group)(3, 4, X + b * K, K, W, init + b * N, C + b * N, N, i0,
                                        i1, reverse);
    if (B - b == 2)
        RNNFAST_NAME(rnnfast_dot_group)(2, 4, X + b * K, K, W, init + b * N, C + b * N, N, i0,
                                        i1, reverse);
    else if (B - b == 1)
        RNNFAST_NAME(rnnfast_dot_group)(1, 8, X + b * K, K, W, init + b * N, C + b * N, N, i0,
                                        i1, reverse);
}

/* C[b, c] = init[b, c] + sum_j X[b, j] W[j, c] for RB rows b and CV vectors of columns from c
 * (the last one partial, masked, when partial): each (b, c) one accumulator, summed over j in
 * order, so any grouping of rows and columns gives the same bits. */
static RNNFAST_INLINE void RNNFAST_NAME(rnnfast_axpy_block)(
        const int RB, const int CV, const int partial, const RNNFAST_T* X, ptrdiff_t K,
        const RNNFAST_T* W, const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t c,
        ptrdiff_t last) {
    RNNFAST_V acc[6][12];
    for (int b = 0; b < RB; b++)
        for (int v = 0; v < CV; v++) acc[b][v] = RNNFAST_ZERO();
    const RNNFAST_MASK_T mask = RNNFAST_MASK(partial ? last : RNNFAST_L);
    for (ptrdiff_t j = 0; j < K; j++) {
        const RNNFAST_T* w = W + j * N + c;
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

/* Columns c0 .. c1 - 1 of RB rows: CV vectors at a time, then 8, 4, 2 and 1 (fewer
 * accumulators), the last vector masked if partial; with reverse, the same blocks from the
 * last to the first. */
static RNNFAST_INLINE void RNNFAST_NAME(rnnfast_axpy_group)(
        const int RB, const int CV, const RNNFAST_T* X, ptrdiff_t K, const RNNFAST_T* W,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t c0, ptrdiff_t c1,
        int reverse) {
    if (!reverse) {
        ptrdiff_t c = c0;
        for (; c1 - c >= CV * RNNFAST_L; c += CV * RNNFAST_L)
            RNNFAST_NAME(rnnfast_axpy_block)(RB, CV, 0, X, K, W, init, C, N, c, 0);
        if (CV > 8 && c1 - c >= 8 * RNNFAST_L) {
            RNNFAST_NAME(rnnfast_axpy_block)(RB, 8, 0, X, K, W, init, C, N, c, 0);
            c += 8 * RNNFAST_L;
        }
        if (CV > 4 && c1 - c >= 4 * RNNFAST_L) {
            RNNFAST_NAME(rnnfast_axpy_block)(RB, 4, 0, X, K, W, init, C, N, c, 0);
            c += 4 * RNNFAST_L;
        }
        if (CV > 2 && c1 - c >= 2 * RNNFAST_L) {
            RNNFAST_NAME(rnnfast_axpy_block)(RB, 2, 0, X, K, W, init, C, N, c, 0);
            c += 2 * RNNFAST_L;
        }
        if (CV > 1 && c1 - c >= RNNFAST_L) {
            RNNFAST_NAME(rnnfast_axpy_block)(RB, 1, 0, X, K, W, init, C, N, c, 0);
            c += RNNFAST_L;
        }
        if (c < c1)
            RNNFAST_NAME(rnnfast_axpy_block)(RB, 1, 1, X, K, W, init, C, N, c, c1 - c);
        return;
    }
    const ptrdiff_t blocks = (c1 - c0) / (CV * RNNFAST_L);
    /* the narrower blocks after the full ones: start column of 8, 4, 2, 1 vectors (-1: none) */
    ptrdiff_t at[4], c = c0 + blocks * CV * RNNFAST_L;
    const int widths[4] = {8, 4, 2, 1};
    for (int w = 0; w < 4; w++) {
        at[w] = -1;
        if (CV > widths[w] && c1 - c >= widths[w] * RNNFAST_L) {
            at[w] = c;
            c += widths[w] * RNNFAST_L;
        }
    }
    const ptrdiff_t partial = c < c1 ? c : -1;
    if (partial >= 0)
        RNNFAST_NAME(rnnfast_axpy_block)(RB, 1, 1, X, K, W, init, C, N, partial, c1 - partial);
    if (at[3] >= 0) RNNFAST_NAME(rnnfast_axpy_block)(RB, 1, 0, X, K, W, init, C, N, at[3], 0);
    if (at[2] >= 0) RNNFAST_NAME(rnnfast_axpy_block)(RB, 2, 0, X, K, W, init, C, N, at[2], 0);
    if (at[1] >= 0) RNNFAST_NAME(rnnfast_axpy_block)(RB, 4, 0, X, K, W, init, C, N, at[1], 0);
    if (at[0] >= 0) RNNFAST_NAME(rnnfast_axpy_block)(RB, 8, 0, X, K, W, init, C, N, at[0], 0);
    for (ptrdiff_t q = blocks - 1; q >= 0; q--)
        RNNFAST_NAME(rnnfast_axpy_block)(RB, CV, 0, X, K, W, init, C, N,
                                         c0 + q * CV * RNNFAST_L, 0);
}

/* The backward step's product: C[b, c] = init[b, c] + sum_j X[b, j] W[j, c] for b < B and
 * c0 <= c < c1, W (K, N) row-major (X @ W). Rows of X go six at a time (two vectors of columns
 * each), then three (four), two (six), one (twelve): twelve accumulators, each row of W
 * loaded once for the rows of the group. reverse as for rnnfast_dot_rows: column blocks from
 * the last to the first. */
static void RNNFAST_NAME(rnnfast_axpy_rows)(
        const RNNFAST_T* X, ptrdiff_t B, ptrdiff_t K, const RNNFAST_T* W,
        const RNNFAST_T* init, RNNFAST_T* C, ptrdiff_t N, ptrdiff_t c0, ptrdiff_t c1,
        int reverse) {
    ptrdiff_t b = 0;
    for (; b + 6 <= B; b += 6)
        RNNFAST_NAME(rnnfast_axpy_group)(6, 2, X + b * K, K, W, init + b * N, C + b * N, N, c0, c1,
                                         reverse);
    if (B - b >= 3) {
        RNNFAST_NAME(rnnfast_axpy_group)(3, 4, X + b * K, K, W, init + b * N, C + b * N, N, c0, c1,
                                         reverse);
        b += 3;
    }
    if (B - b == 2)
        RNNFAST_NAME(rnnfast_axpy_group)(2, 6, X + b * K, K, W, init + b * N, C + b * N, N, c0, c1,
                                         reverse);
    else if (B - b == 1)
        RNNFAST_NAME(rnnfast_axpy_group)(1, 12, X + b * K, K, W, init + b * N, C + b * N, N, c0, c1,
                                         reverse);
}
