/* The body of sliced_kernel.h, included once per element type RNNFAST_T (vector RNNFAST_V of
 * RNNFAST_LANES lanes) and column type RNNFAST_COLUMN (RNNFAST_COLUMN16: 16-bit). */

#define RNNFAST_SLICE_VECTORS_PER_COLUMN (RNNFAST_SLICE_ROWS / RNNFAST_LANES)

/* The column index of lane n (a constant) of the slice column at c. */
#if RNNFAST_COLUMN16
#define RNNFAST_LOAD_COLUMNS(c) \
    uint64_t word0_, word1_;    \
    memcpy(&word0_, (c), 8);    \
    memcpy(&word1_, (c) + 4, 8)
#define RNNFAST_INDEX(c, n) rnnfast_lane16((n) < 4 ? word0_ : word1_, (n) & 3)
#else
#define RNNFAST_LOAD_COLUMNS(c) (void)0
#define RNNFAST_INDEX(c, n) (c)[n]
#endif

#ifdef RNNFAST_SLICE_VECTORS

/* Lanes v * LANES .. (v + 1) * LANES - 1 of h gathered at the slice column's indices. */
#if RNNFAST_LANES == 2
#define RNNFAST_GATHER(h, c, v) \
    ((RNNFAST_V){(h)[RNNFAST_INDEX(c, 2 * (v))], (h)[RNNFAST_INDEX(c, 2 * (v) + 1)]})
#elif RNNFAST_LANES == 4
#define RNNFAST_GATHER(h, c, v)                                                           \
    ((RNNFAST_V){(h)[RNNFAST_INDEX(c, 4 * (v))], (h)[RNNFAST_INDEX(c, 4 * (v) + 1)],      \
                 (h)[RNNFAST_INDEX(c, 4 * (v) + 2)], (h)[RNNFAST_INDEX(c, 4 * (v) + 3)]})
#else
#define RNNFAST_GATHER(h, c, v)                                                         \
    ((RNNFAST_V){(h)[RNNFAST_INDEX(c, 0)], (h)[RNNFAST_INDEX(c, 1)],                    \
                 (h)[RNNFAST_INDEX(c, 2)], (h)[RNNFAST_INDEX(c, 3)],                    \
                 (h)[RNNFAST_INDEX(c, 4)], (h)[RNNFAST_INDEX(c, 5)],                    \
                 (h)[RNNFAST_INDEX(c, 6)], (h)[RNNFAST_INDEX(c, 7)]})
#endif

static inline RNNFAST_V RNNFAST_NAME(rnnfast_slice_load)(const RNNFAST_T* p) {
    RNNFAST_V v;
    memcpy(&v, p, sizeof v);  /* an unaligned vector load */
    return v;
}

/* acc[v] += values[lanes of v] * h[columns[lanes of v]] for one slice column. */
static inline void RNNFAST_NAME(rnnfast_add_slice_column)(
        RNNFAST_V* acc, const RNNFAST_T* values, const RNNFAST_COLUMN* c, const RNNFAST_T* h) {
    RNNFAST_LOAD_COLUMNS(c);
    for (int v = 0; v < RNNFAST_SLICE_VECTORS_PER_COLUMN; v++)
        acc[v] += RNNFAST_NAME(rnnfast_slice_load)(values + v * RNNFAST_LANES)
                  * RNNFAST_GATHER(h, c, v);
}

/* sums[order[p]] = sorted row p of W (row r of slice s, p = s * SLICE_ROWS + r) times h
 * (H + 1,), for every slice: the products in the units' order (sums has room for unit H, where
 * the last slice's missing rows go). */
static RNNFAST_NOINLINE void RNNFAST_NAME(rnnfast_slice_sums)(
        const RNNFAST_T* values, const RNNFAST_COLUMN* columns, const ptrdiff_t* slice_start,
        const ptrdiff_t* order, ptrdiff_t n_slices, const RNNFAST_T* h, RNNFAST_T* sums) {
    for (ptrdiff_t s = 0; s < n_slices; s++) {
        const RNNFAST_T* vals = values + slice_start[s];
        const RNNFAST_COLUMN* cols = columns + slice_start[s];
        const ptrdiff_t length = (slice_start[s + 1] - slice_start[s]) / RNNFAST_SLICE_ROWS;
        RNNFAST_V even[RNNFAST_SLICE_VECTORS_PER_COLUMN] = {{0}};
        RNNFAST_V odd[RNNFAST_SLICE_VECTORS_PER_COLUMN] = {{0}};
        ptrdiff_t k = 0;
        for (; k + 1 < length; k += 2) {
            RNNFAST_NAME(rnnfast_add_slice_column)(even, vals + k * RNNFAST_SLICE_ROWS,
                                                   cols + k * RNNFAST_SLICE_ROWS, h);
            RNNFAST_NAME(rnnfast_add_slice_column)(odd, vals + (k + 1) * RNNFAST_SLICE_ROWS,
                                                   cols + (k + 1) * RNNFAST_SLICE_ROWS, h);
        }
        if (k < length)
            RNNFAST_NAME(rnnfast_add_slice_column)(even, vals + k * RNNFAST_SLICE_ROWS,
                                                   cols + k * RNNFAST_SLICE_ROWS, h);
        RNNFAST_T totals[RNNFAST_SLICE_ROWS];
        for (int v = 0; v < RNNFAST_SLICE_VECTORS_PER_COLUMN; v++) {
            const RNNFAST_V total = even[v] + odd[v];
            memcpy(totals + v * RNNFAST_LANES, &total, sizeof total);
        }
        for (int r = 0; r < RNNFAST_SLICE_ROWS; r++)
            sums[order[s * RNNFAST_SLICE_ROWS + r]] = totals[r];
    }
}

/* R vectors of series (R a constant at every call) of one row: its length entries are
 * values[k * SLICE_ROWS] and columns[k * SLICE_ROWS]; x = h + b0, rows of B numbers. */
static inline void RNNFAST_NAME(rnnfast_series_block)(
        const int R, const RNNFAST_T* values, const RNNFAST_COLUMN* columns, ptrdiff_t length,
        const RNNFAST_T* x, ptrdiff_t B, RNNFAST_T* sums) {
    RNNFAST_V even[4] = {{0}}, odd[4] = {{0}};
    ptrdiff_t k = 0;
    for (; k + 1 < length; k += 2) {
        const RNNFAST_V v0 = (RNNFAST_V){0} + values[k * RNNFAST_SLICE_ROWS];
        const RNNFAST_V v1 = (RNNFAST_V){0} + values[(k + 1) * RNNFAST_SLICE_ROWS];
        const RNNFAST_T* x0 = x + (ptrdiff_t)columns[k * RNNFAST_SLICE_ROWS] * B;
        const RNNFAST_T* x1 = x + (ptrdiff_t)columns[(k + 1) * RNNFAST_SLICE_ROWS] * B;
        for (int q = 0; q < R; q++)
            even[q] += v0 * RNNFAST_NAME(rnnfast_slice_load)(x0 + q * RNNFAST_LANES);
        for (int q = 0; q < R; q++)
            odd[q] += v1 * RNNFAST_NAME(rnnfast_slice_load)(x1 + q * RNNFAST_LANES);
    }
    if (k < length) {
        const RNNFAST_V v0 = (RNNFAST_V){0} + values[k * RNNFAST_SLICE_ROWS];
        const RNNFAST_T* x0 = x + (ptrdiff_t)columns[k * RNNFAST_SLICE_ROWS] * B;
        for (int q = 0; q < R; q++)
            even[q] += v0 * RNNFAST_NAME(rnnfast_slice_load)(x0 + q * RNNFAST_LANES);
    }
    for (int q = 0; q < R; q++) {
        const RNNFAST_V total = even[q] + odd[q];
        memcpy(sums + q * RNNFAST_LANES, &total, sizeof total);
    }
}

#define RNNFAST_VECTOR_BLOCKS 1
#endif /* RNNFAST_SLICE_VECTORS */

#ifndef RNNFAST_SLICE_VECTORS
/* The same sums in the same order, one lane at a time. */
static void RNNFAST_NAME(rnnfast_slice_sums)(
        const RNNFAST_T* values, const RNNFAST_COLUMN* columns, const ptrdiff_t* slice_start,
        const ptrdiff_t* order, ptrdiff_t n_slices, const RNNFAST_T* h, RNNFAST_T* sums) {
    for (ptrdiff_t s = 0; s < n_slices; s++) {
        const RNNFAST_T* vals = values + slice_start[s];
        const RNNFAST_COLUMN* cols = columns + slice_start[s];
        const ptrdiff_t length = (slice_start[s + 1] - slice_start[s]) / RNNFAST_SLICE_ROWS;
        for (int r = 0; r < RNNFAST_SLICE_ROWS; r++) {
            RNNFAST_T even = 0, odd = 0;
            ptrdiff_t k = 0;
            for (; k + 1 < length; k += 2) {
                even += vals[k * RNNFAST_SLICE_ROWS + r] * h[cols[k * RNNFAST_SLICE_ROWS + r]];
                odd += vals[(k + 1) * RNNFAST_SLICE_ROWS + r]
                       * h[cols[(k + 1) * RNNFAST_SLICE_ROWS + r]];
            }
            if (k < length)
                even += vals[k * RNNFAST_SLICE_ROWS + r] * h[cols[k * RNNFAST_SLICE_ROWS + r]];
            sums[order[s * RNNFAST_SLICE_ROWS + r]] = even + odd;
        }
    }
}
#endif

/* One series of one row (see rnnfast_series_block). */
static inline RNNFAST_T RNNFAST_NAME(rnnfast_series_one)(
        const RNNFAST_T* values, const RNNFAST_COLUMN* columns, ptrdiff_t length,
        const RNNFAST_T* x, ptrdiff_t B) {
    RNNFAST_T even = 0, odd = 0;
    ptrdiff_t k = 0;
    for (; k + 1 < length; k += 2) {
        even += values[k * RNNFAST_SLICE_ROWS] * x[(ptrdiff_t)columns[k * RNNFAST_SLICE_ROWS] * B];
        odd += values[(k + 1) * RNNFAST_SLICE_ROWS]
               * x[(ptrdiff_t)columns[(k + 1) * RNNFAST_SLICE_ROWS] * B];
    }
    if (k < length)
        even += values[k * RNNFAST_SLICE_ROWS] * x[(ptrdiff_t)columns[k * RNNFAST_SLICE_ROWS] * B];
    return even + odd;
}

/* sums[order[p] * B + b] = sorted row p of W times series b of h (H + 1, B), for p < H: the
 * products in the units' order. */
static RNNFAST_NOINLINE void RNNFAST_NAME(rnnfast_row_sums)(
        const RNNFAST_T* values, const RNNFAST_COLUMN* columns, const ptrdiff_t* slice_start,
        const ptrdiff_t* row_length, const ptrdiff_t* order, ptrdiff_t H, const RNNFAST_T* h,
        ptrdiff_t B, RNNFAST_T* sums) {
    for (ptrdiff_t p = 0; p < H; p++) {
        const ptrdiff_t first = slice_start[p / RNNFAST_SLICE_ROWS] + p % RNNFAST_SLICE_ROWS;
        const RNNFAST_T* vals = values + first;
        const RNNFAST_COLUMN* cols = columns + first;
        const ptrdiff_t length = row_length[p];
        RNNFAST_T* row = sums + order[p] * B;
        ptrdiff_t b = 0;
#ifdef RNNFAST_VECTOR_BLOCKS
        for (; b + 4 * RNNFAST_LANES <= B; b += 4 * RNNFAST_LANES)
            RNNFAST_NAME(rnnfast_series_block)(4, vals, cols, length, h + b, B, row + b);
        if (b + 2 * RNNFAST_LANES <= B) {
            RNNFAST_NAME(rnnfast_series_block)(2, vals, cols, length, h + b, B, row + b);
            b += 2 * RNNFAST_LANES;
        }
        if (b + RNNFAST_LANES <= B) {
            RNNFAST_NAME(rnnfast_series_block)(1, vals, cols, length, h + b, B, row + b);
            b += RNNFAST_LANES;
        }
#endif
        for (; b < B; b++)
            row[b] = RNNFAST_NAME(rnnfast_series_one)(vals, cols, length, h + b, B);
    }
}

/* The benchmark's yardstick of the gathers (bench/test_bench_reservoir.py --bounds): the sum
 * of h[columns[k]] over the sliced matrix's n entries, `repeats` times: the loads of a step's
 * products without their arithmetic, eight independent sums. */
static RNNFAST_NOINLINE RNNFAST_T RNNFAST_NAME(rnnfast_gather_sum)(
        const RNNFAST_COLUMN* columns, ptrdiff_t n, const RNNFAST_T* h, ptrdiff_t repeats) {
    RNNFAST_T sums[RNNFAST_SLICE_ROWS] = {0};
    for (ptrdiff_t r = 0; r < repeats; r++)
        for (ptrdiff_t k = 0; k + RNNFAST_SLICE_ROWS <= n; k += RNNFAST_SLICE_ROWS) {
            const RNNFAST_COLUMN* c = columns + k;
            RNNFAST_LOAD_COLUMNS(c);
            for (int lane = 0; lane < RNNFAST_SLICE_ROWS; lane++)
                sums[lane] += h[RNNFAST_INDEX(c, lane)];
        }
    RNNFAST_T total = 0;
    for (int lane = 0; lane < RNNFAST_SLICE_ROWS; lane++) total += sums[lane];
    return total;
}

#undef RNNFAST_SLICE_VECTORS_PER_COLUMN
#undef RNNFAST_LOAD_COLUMNS
#undef RNNFAST_INDEX
#undef RNNFAST_GATHER
#undef RNNFAST_VECTOR_BLOCKS
