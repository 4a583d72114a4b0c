/* The products of the sparse reservoir step: W h for a matrix in the sliced layout of
 * _sparse_step_impl.pxi, for float and double values and 16- or 32-bit column indices.
 *
 * rnnfast_slice_sums: one series. A slice column (SLICE_ROWS = 8 values and column indices side
 * by side) is one vector multiply-add per 8 / lanes vectors, on h gathered lane by lane; two
 * sets of accumulators (slice columns k even and odd) keep independent chains in flight. With
 * 16-bit indices, four are loaded as one 64-bit word: the step is bound by its loads (one
 * gather of h per nonzero, about 2.7 loads per cycle on Zen 4), and this saves three in four
 * index loads.
 *
 * rnnfast_row_sums: B > 1 series, the state transposed (H + 1, B): each entry of a row
 * multiplies B contiguous numbers, in blocks of 4, 2 and 1 vectors, then one series at a time;
 * the same even/odd sums in the same order as rnnfast_slice_sums.
 *
 * GCC and clang vector types pin the accumulators to registers (written as plain Cython
 * loops, the same code kept them on the stack: 1 ns per nonzero instead of 0.25); other
 * compilers get plain loops, with the same sums in the same order. Built twice, for the
 * baseline instruction set and for AVX2 + FMA (rnnfast/reservoir/_sparse_step_avx2.pyx).
 */
#ifndef RNNFAST_SLICED_KERNEL_H
#define RNNFAST_SLICED_KERNEL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define RNNFAST_SLICE_ROWS 8

#if defined(__AVX__)
#define RNNFAST_SLICE_VECTOR_BYTES 32
#else
#define RNNFAST_SLICE_VECTOR_BYTES 16
#endif

#if (defined(__GNUC__) || defined(__clang__)) && !defined(RNNFAST_PLAIN_C)
#define RNNFAST_SLICE_VECTORS 1
typedef float rnnfast_sv32 __attribute__((vector_size(RNNFAST_SLICE_VECTOR_BYTES)));
typedef double rnnfast_sv64 __attribute__((vector_size(RNNFAST_SLICE_VECTOR_BYTES)));
#define RNNFAST_NOINLINE __attribute__((noinline))
#else
#define RNNFAST_NOINLINE
#endif

/* Lane r (0..3) of four 16-bit column indices loaded as one 64-bit word: the first index is
 * the word's lowest 16 bits on a little-endian machine, its highest on a big-endian one. */
static inline uint16_t rnnfast_lane16(uint64_t word, int r) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (uint16_t)(word >> (16 * (3 - r)));
#else
    return (uint16_t)(word >> (16 * r));
#endif
}

/* The benchmark's yardstick of bandwidth (bench/test_bench_reservoir.py): the OR of n 64-bit
 * words, read `repeats` times, with four independent vector accumulators, so that only the
 * loads bound it (one vector OR per load). Compiled with the step, at its vector width. */
static RNNFAST_NOINLINE uint64_t rnnfast_read_words(const uint64_t* words, ptrdiff_t n,
                                                    ptrdiff_t repeats) {
    uint64_t result = 0;
    ptrdiff_t i = 0;
#ifdef RNNFAST_SLICE_VECTORS
    typedef uint64_t vu64 __attribute__((vector_size(RNNFAST_SLICE_VECTOR_BYTES)));
    const ptrdiff_t lanes = RNNFAST_SLICE_VECTOR_BYTES / 8, block = 4 * lanes;
    vu64 a = {0}, b = {0}, c = {0}, d = {0}, x;
    for (ptrdiff_t r = 0; r < repeats; r++) {
        for (i = 0; i + block <= n; i += block) {
            memcpy(&x, words + i, sizeof x); a |= x;
            memcpy(&x, words + i + lanes, sizeof x); b |= x;
            memcpy(&x, words + i + 2 * lanes, sizeof x); c |= x;
            memcpy(&x, words + i + 3 * lanes, sizeof x); d |= x;
        }
    }
    a |= b | c | d;
    for (ptrdiff_t lane = 0; lane < lanes; lane++) result |= a[lane];
#endif
    for (; i < n; i++) result |= words[i];
    return result;
}

#define RNNFAST_T float
#define RNNFAST_V rnnfast_sv32
#define RNNFAST_LANES (RNNFAST_SLICE_VECTOR_BYTES / 4)
#define RNNFAST_COLUMN uint16_t
#define RNNFAST_COLUMN16 1
#define RNNFAST_NAME(name) name##_f32_u16
#include "sliced_kernel_impl.h"
#undef RNNFAST_COLUMN
#undef RNNFAST_COLUMN16
#undef RNNFAST_NAME
#define RNNFAST_COLUMN int32_t
#define RNNFAST_COLUMN16 0
#define RNNFAST_NAME(name) name##_f32_i32
#include "sliced_kernel_impl.h"
#undef RNNFAST_T
#undef RNNFAST_V
#undef RNNFAST_LANES
#undef RNNFAST_COLUMN
#undef RNNFAST_COLUMN16
#undef RNNFAST_NAME

#define RNNFAST_T double
#define RNNFAST_V rnnfast_sv64
#define RNNFAST_LANES (RNNFAST_SLICE_VECTOR_BYTES / 8)
#define RNNFAST_COLUMN uint16_t
#define RNNFAST_COLUMN16 1
#define RNNFAST_NAME(name) name##_f64_u16
#include "sliced_kernel_impl.h"
#undef RNNFAST_COLUMN
#undef RNNFAST_COLUMN16
#undef RNNFAST_NAME
#define RNNFAST_COLUMN int32_t
#define RNNFAST_COLUMN16 0
#define RNNFAST_NAME(name) name##_f64_i32
#include "sliced_kernel_impl.h"
#undef RNNFAST_T
#undef RNNFAST_V
#undef RNNFAST_LANES
#undef RNNFAST_COLUMN
#undef RNNFAST_COLUMN16
#undef RNNFAST_NAME

#endif
