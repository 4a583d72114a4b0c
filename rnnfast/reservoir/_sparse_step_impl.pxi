# The sparse reservoir pass, included by _sparse_step.pyx (built for the baseline instruction
# set) and _sparse_step_avx2.pyx (built with AVX2 and FMA): one source, two compilations.
#
# One call runs the whole series, for t = 0..T-1 (h_{-1} = h0):
#     a_t = P_t + W h_{t-1},      h_t = (1 - alpha) h_{t-1} + alpha act(a_t)
# (h_t = act(a_t) without a leak), with W sparse and P_t = W_in u_t + b, the input projection,
# written into `out` where h_t then goes, chunk by chunk, each chunk of steps small enough
# that P stays in the cache until its steps read it (all of P first, as the dense kernels
# do, wrote it to memory and read it back: a tenth of a step's time at H = 100). The activation
# and the leak are the dense kernels' own epilogues (rnnfast/_kernels/activation.pxd), over the
# whole step at once.
#
# W is stored as a sliced ELLPACK matrix (SELL-C-sigma, Kreutzer et al. 2014; built by
# rnnfast/reservoir/sliced.py): its rows, sorted by their number of nonzeros (longest first), go
# in slices of SLICE_ROWS rows; a slice is stored column-major, entry k of each of its rows
# side by side, its rows padded to the longest with zeros in column H. One slice column is then
# SLICE_ROWS values and column indices next to each other: a vector multiply-add on h gathered
# at those indices, with no horizontal sum (sliced_kernel.h); sorting by length keeps the
# padding to a few percent. The gathered state has an extra entry h[H] = 0, which the padding
# reads: a padded entry adds 0 * 0 whatever the state holds (inf and NaN included).
#
# A step: the products W h_{t-1}, which the C functions write in the units' order, then the
# epilogue over the whole step, contiguous. One series (B = 1) keeps h_{t-1} as an (H + 1,)
# vector. Many (B > 1) keep it transposed, in blocks of `block` series (H + 1, block), so that
# one entry of W multiplies `block` contiguous numbers; W streams by once per block (sliced.py
# chooses the block). Both sum a row's products in the same order, and the input projection
# is the same loop for every row, so a series gets the same bits alone or in a batch (up to
# the sign of a zero).
#
# Nothing here allocates, validates or touches a Python object: rnnfast/reservoir/sliced.py
# built the matrix and the buffers and checked everything.
from cython cimport floating
from libc.stdint cimport int32_t, uint16_t, uint64_t
from libc.string cimport memcpy

from rnnfast._kernels.activation cimport (FORWARD_RELU, FORWARD_TANH, Epilogue, finish,
                                          leak_forward)

ctypedef fused column_t:
    uint16_t
    int32_t


cdef extern from "sliced_kernel.h" nogil:
    const Py_ssize_t SLICE_ROWS_ "RNNFAST_SLICE_ROWS"
    uint64_t read_words_c "rnnfast_read_words"(const uint64_t* words, Py_ssize_t n,
                                                Py_ssize_t repeats) noexcept
    double gather_sum_u16 "rnnfast_gather_sum_f64_u16"(const uint16_t* columns, Py_ssize_t n,
                                                       const double* h,
                                                       Py_ssize_t repeats) noexcept
    double gather_sum_i32 "rnnfast_gather_sum_f64_i32"(const int32_t* columns, Py_ssize_t n,
                                                       const double* h,
                                                       Py_ssize_t repeats) noexcept
    # sums[order[p]] = sorted row p of W times h (H + 1,), for every row of every slice.
    void slice_sums_f32_u16 "rnnfast_slice_sums_f32_u16"(
        const float* values, const uint16_t* columns, const Py_ssize_t* slice_start,
        const Py_ssize_t* order, Py_ssize_t n_slices, const float* h, float* sums) noexcept
    void slice_sums_f32_i32 "rnnfast_slice_sums_f32_i32"(
        const float* values, const int32_t* columns, const Py_ssize_t* slice_start,
        const Py_ssize_t* order, Py_ssize_t n_slices, const float* h, float* sums) noexcept
    void slice_sums_f64_u16 "rnnfast_slice_sums_f64_u16"(
        const double* values, const uint16_t* columns, const Py_ssize_t* slice_start,
        const Py_ssize_t* order, Py_ssize_t n_slices, const double* h, double* sums) noexcept
    void slice_sums_f64_i32 "rnnfast_slice_sums_f64_i32"(
        const double* values, const int32_t* columns, const Py_ssize_t* slice_start,
        const Py_ssize_t* order, Py_ssize_t n_slices, const double* h, double* sums) noexcept
    # sums[order[p] * B + b] = sorted row p of W times series b of h (H + 1, B), for p < H.
    void row_sums_f32_u16 "rnnfast_row_sums_f32_u16"(
        const float* values, const uint16_t* columns, const Py_ssize_t* slice_start,
        const Py_ssize_t* row_length, const Py_ssize_t* order, Py_ssize_t H, const float* h,
        Py_ssize_t B, float* sums) noexcept
    void row_sums_f32_i32 "rnnfast_row_sums_f32_i32"(
        const float* values, const int32_t* columns, const Py_ssize_t* slice_start,
        const Py_ssize_t* row_length, const Py_ssize_t* order, Py_ssize_t H, const float* h,
        Py_ssize_t B, float* sums) noexcept
    void row_sums_f64_u16 "rnnfast_row_sums_f64_u16"(
        const double* values, const uint16_t* columns, const Py_ssize_t* slice_start,
        const Py_ssize_t* row_length, const Py_ssize_t* order, Py_ssize_t H, const double* h,
        Py_ssize_t B, double* sums) noexcept
    void row_sums_f64_i32 "rnnfast_row_sums_f64_i32"(
        const double* values, const int32_t* columns, const Py_ssize_t* slice_start,
        const Py_ssize_t* row_length, const Py_ssize_t* order, Py_ssize_t H, const double* h,
        Py_ssize_t B, double* sums) noexcept


SLICE_ROWS = SLICE_ROWS_


cdef inline void products(const floating* values, const column_t* columns,
                          const Py_ssize_t* slice_start, const Py_ssize_t* row_length,
                          const Py_ssize_t* order, Py_ssize_t n_slices, Py_ssize_t H,
                          const floating* h, Py_ssize_t B, floating* sums) noexcept nogil:
    """sums = W h in the units' order: (H + 1,) for one series (B = 1; unit H receives the
    missing rows), else (H + 1, B) for B series side by side (row H untouched)."""
    if B == 1:
        if floating is float:
            if column_t is uint16_t:
                slice_sums_f32_u16(values, columns, slice_start, order, n_slices, h, sums)
            else:
                slice_sums_f32_i32(values, columns, slice_start, order, n_slices, h, sums)
        else:
            if column_t is uint16_t:
                slice_sums_f64_u16(values, columns, slice_start, order, n_slices, h, sums)
            else:
                slice_sums_f64_i32(values, columns, slice_start, order, n_slices, h, sums)
    else:
        if floating is float:
            if column_t is uint16_t:
                row_sums_f32_u16(values, columns, slice_start, row_length, order, H, h, B, sums)
            else:
                row_sums_f32_i32(values, columns, slice_start, row_length, order, H, h, B, sums)
        else:
            if column_t is uint16_t:
                row_sums_f64_u16(values, columns, slice_start, row_length, order, H, h, B, sums)
            else:
                row_sums_f64_i32(values, columns, slice_start, row_length, order, H, h, B, sums)


cdef inline void finish_step(floating* a, const floating* h_prev, const floating* alpha,
                             floating* h, Py_ssize_t n, Epilogue kind) noexcept nogil:
    """h = act(a), or with alpha (not NULL) h = (1 - alpha) h_prev + alpha act(a), over n
    contiguous numbers: the dense kernels' epilogues (a is overwritten with act(a))."""
    if alpha == NULL:
        finish(a, a, n, kind)
        memcpy(h, a, n * sizeof(floating))
    else:
        leak_forward(a, h_prev, alpha, NULL, h, n, kind)


cdef void step_one_series(const floating* values, const column_t* columns,
                          const Py_ssize_t* slice_start, const Py_ssize_t* order,
                          Py_ssize_t n_slices, Py_ssize_t H, floating* h, floating* out_t,
                          const floating* alpha, floating* sums, floating* a,
                          Epilogue kind) noexcept nogil:
    """One step of one series: out_t (H,) holds P_t and receives h_t; h (H + 1,) holds h_{t-1}
    (h[H] = 0) and receives h_t. alpha (H,): the leak, or NULL; sums (H + 1,), a (H,):
    scratch."""
    cdef Py_ssize_t i
    products(values, columns, slice_start, NULL, order, n_slices, H, h, 1, sums)
    for i in range(H):
        a[i] = out_t[i] + sums[i]
    finish_step(a, h, alpha, out_t, H, kind)
    memcpy(h, out_t, H * sizeof(floating))


cdef void step_many_series(const floating* values, const column_t* columns,
                           const Py_ssize_t* slice_start, const Py_ssize_t* order,
                           const Py_ssize_t* row_length, Py_ssize_t n_slices, Py_ssize_t H,
                           Py_ssize_t B, Py_ssize_t block, const floating* h_prev,
                           floating* h_next, floating* out_t, const floating* alpha,
                           floating* sums, floating* a, Epilogue kind) noexcept nogil:
    """One step of B > 1 series in blocks of `block`: out_t (B, H) holds P_t and receives h_t;
    h_prev holds h_{t-1} as (n_blocks, H + 1, block), each block transposed with a zero row H
    (and zeros for the series past B), and h_next receives h_t the same way. alpha
    (H, block): each unit's leak repeated, or NULL; sums and a: scratch like h_prev."""
    cdef Py_ssize_t n_blocks = (B + block - 1) // block, stride = (H + 1) * block
    cdef Py_ssize_t q, u, w, b, width
    for q in range(n_blocks):
        products(values, columns, slice_start, row_length, order, n_slices, H,
                 h_prev + q * stride, block, sums + q * stride)
    for q in range(n_blocks):
        width = B - q * block if B - q * block < block else block
        for w in range(width):  # a_t = P_t + W h_{t-1}, transposed into the block's layout
            b = q * block + w
            for u in range(H):
                a[q * stride + u * block + w] = out_t[b * H + u] + sums[q * stride + u * block + w]
        finish_step(a + q * stride, h_prev + q * stride, alpha, h_next + q * stride, H * block,
                    kind)
        for w in range(width):
            b = q * block + w
            for u in range(H):
                out_t[b * H + u] = h_next[q * stride + u * block + w]


cdef void project(const floating[:, :, ::1] x, const floating[:, ::1] W_in_T,
                  const floating* bias, floating[:, :, ::1] out, Py_ssize_t t0,
                  Py_ssize_t steps) noexcept nogil:
    """out[t0:t0 + steps] = bias + x[t0:t0 + steps] @ W_in^T, summed over the inputs in order
    (W_in_T: W_in transposed, (D, H)), the same way for every row: a BLAS GEMM rounds the
    last rows of its blocks differently by the number of rows, so one series would not get the
    same bits alone and in a batch. Inputs are few (D is 1 to 3 in the classic tasks): this is
    D vectorised multiply-adds per state number, next to the step's d * H."""
    cdef Py_ssize_t B = x.shape[1], D = x.shape[2], H = W_in_T.shape[1], i, j, d
    cdef floating* row
    cdef const floating* inputs
    cdef const floating* weights
    cdef floating value
    for i in range(steps * B):
        row = &out[t0, 0, 0] + i * H
        inputs = &x[t0, 0, 0] + i * D
        for j in range(H):
            row[j] = 0 if bias == NULL else bias[j]
        for d in range(D):
            value = inputs[d]
            weights = &W_in_T[d, 0]
            for j in range(H):
                row[j] = row[j] + value * weights[j]


def forward_pass(const floating[:, :, ::1] x, const floating[:, ::1] W_in_T,
                 const floating[::1] bias, const floating[:, ::1] h0, floating[:, :, ::1] out,
                 const floating[::1] values, const column_t[::1] columns,
                 const Py_ssize_t[::1] slice_start, const Py_ssize_t[::1] order,
                 const Py_ssize_t[::1] row_length, const floating[::1] alpha,
                 floating[:, ::1] state, floating[:, ::1] scratch, Py_ssize_t block,
                 Py_ssize_t chunk, bint relu):
    """The whole pass (see the top of this file) over x (T, B, D), into out (T, B, H), from
    h0 (B, H), with W_in_T (D, H) (W_in transposed) and bias (H,) (empty: none). The sliced matrix: values and
    columns (padded, slice by slice), slice_start (n_slices + 1,), order (n_slices *
    SLICE_ROWS,: sorted row -> unit, H for the last slice's missing rows), row_length (the
    same,: nonzeros of each sorted row). alpha: the leak of each unit repeated `block` times
    ((H * block,); for B = 1, block is 1), or empty for none; state and scratch: (2,
    n_blocks * (H + 1) * block), zeros (B > 1: the series past B stay zero); chunk: steps
    per input projection."""
    cdef Py_ssize_t T = out.shape[0], B = out.shape[1], H = out.shape[2]
    cdef Py_ssize_t n_slices = slice_start.shape[0] - 1, t, b, i, current = 0
    cdef Py_ssize_t stride = (H + 1) * block
    cdef Epilogue kind = FORWARD_RELU if relu else FORWARD_TANH
    cdef const floating* leak = NULL if alpha.shape[0] == 0 else &alpha[0]
    cdef const floating* b_in = NULL if bias.shape[0] == 0 else &bias[0]
    # A W without nonzeros has empty slices, which the products never read.
    cdef const floating* w = NULL if values.shape[0] == 0 else &values[0]
    cdef const column_t* w_columns = NULL if columns.shape[0] == 0 else &columns[0]
    with nogil:
        for b in range(B):  # h0 transposed into its block
            for i in range(H):
                state[0, (b // block) * stride + i * block + b % block] = h0[b, i]
        for t in range(T):
            if t % chunk == 0:
                project(x, W_in_T, b_in, out, t, chunk if T - t > chunk else T - t)
            if B == 1:
                step_one_series(w, w_columns, &slice_start[0], &order[0], n_slices,
                                H, &state[0, 0], &out[t, 0, 0], leak, &scratch[0, 0],
                                &scratch[1, 0], kind)
            else:
                step_many_series(w, w_columns, &slice_start[0], &order[0],
                                 &row_length[0], n_slices, H, B, block, &state[current, 0],
                                 &state[1 - current, 0], &out[t, 0, 0], leak, &scratch[0, 0],
                                 &scratch[1, 0], kind)
                current = 1 - current


def read_words(const uint64_t[::1] words, Py_ssize_t repeats):
    """The OR of every word of `words`, read `repeats` times: how fast this build streams
    memory from the cache level the buffer lives in (the benchmark's bandwidth yardstick)."""
    cdef uint64_t result
    with nogil:
        result = read_words_c(&words[0], words.shape[0], repeats)
    return result


def gather_sum(const column_t[::1] columns, const double[::1] h, Py_ssize_t repeats):
    """The sum of h[columns[k]] over every k, `repeats` times: the gathers of a step's products
    on its own (the benchmark's yardstick; every column index must be below len(h))."""
    cdef double result
    with nogil:
        if column_t is uint16_t:
            result = gather_sum_u16(&columns[0], columns.shape[0], &h[0], repeats)
        else:
            result = gather_sum_i32(&columns[0], columns.shape[0], &h[0], repeats)
    return result
