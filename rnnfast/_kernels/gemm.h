/* The large steps' GEMM: a register tile of rows of X against one panel of the step matrix.
 *
 * A large step is C = finish(init + X @ Mop) with X (B, K) and Mop (K, N) = W_hh.T forward,
 * W_hh backward. Mop is packed once per pass in panels of NR = 2 vectors of columns (panel p:
 * columns p * NR .. p * NR + NR - 1 of every row, row after row, zero-padded: K x NR contiguous),
 * so a step reads each panel as one stream while the rows of the batch go by (W_hh-stationary);
 * BLAS packs W_hh again at every call. The step (rnnfast/_kernels/step.pxd, gemm_step) is
 * blocked as BLIS blocks a GEMM: K in blocks whose panel rows stay in L2; in each, the rows
 * RNNFAST_GEMM_ROWS at a time (packed k-major for L1 where that pays) along every panel; in the
 * last K block each group of rows is finished (activation, act', the leak) right after its
 * products, while it is in cache.
 *
 * The tile: R rows x two vectors of columns (R <= RNNFAST_GEMM_ROWS), 2 R accumulators that stay
 * in registers while the panel streams through once; each panel row loaded serves the R rows,
 * each X element is broadcast once. With 16 vector registers (SSE2, AVX2) R = 6: twelve
 * accumulators, two panel vectors and a broadcast (the classic 6 x 16 AVX2 SGEMM tile); with
 * the 32 of AVX-512, R = 12. GCC and clang vector types pin the blocking down; other compilers
 * get plain loops (same results up to rounding).
 */
#ifndef RNNFAST_GEMM_H
#define RNNFAST_GEMM_H

#include <stddef.h>
#include <string.h>
#if defined(__AVX__)
#include <immintrin.h>
/* _mm256_set1_ps / _pd (and the AVX-512 ones) by the names of the element types */
#define _mm256_set1_f32 _mm256_set1_ps
#define _mm256_set1_f64 _mm256_set1_pd
#define _mm512_set1_f32 _mm512_set1_ps
#define _mm512_set1_f64 _mm512_set1_pd
#endif

#if defined(__AVX512F__)
#define RNNFAST_GEMM_BYTES 64
#define RNNFAST_GEMM_ROWS 12
#elif defined(__AVX__)
#define RNNFAST_GEMM_BYTES 32
#define RNNFAST_GEMM_ROWS 6
#else
#define RNNFAST_GEMM_BYTES 16
#define RNNFAST_GEMM_ROWS 6
#endif

#if (defined(__GNUC__) || defined(__clang__)) && !defined(RNNFAST_PLAIN_C)
#define RNNFAST_GEMM_VECTORS 1
typedef float rnnfast_gf32 __attribute__((vector_size(RNNFAST_GEMM_BYTES)));
typedef double rnnfast_gf64 __attribute__((vector_size(RNNFAST_GEMM_BYTES)));
/* The tile's loops must unroll over its constant R for the accumulators to be registers. */
#define RNNFAST_GEMM_INLINE inline __attribute__((always_inline))
#else
#define RNNFAST_GEMM_INLINE inline
#endif

#define RNNFAST_T float
#define RNNFAST_V rnnfast_gf32
#define RNNFAST_NAME(name) name##_f32
#include "gemm_impl.h"
#undef RNNFAST_T
#undef RNNFAST_V
#undef RNNFAST_NAME

#define RNNFAST_T double
#define RNNFAST_V rnnfast_gf64
#define RNNFAST_NAME(name) name##_f64
#include "gemm_impl.h"
#undef RNNFAST_T
#undef RNNFAST_V
#undef RNNFAST_NAME

#endif
