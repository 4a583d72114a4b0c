/* The register-blocked micro-kernel of a small recurrence step, for float and double.
 *
 * A block is up to 6 rows x 2 vectors of columns (with AVX, 16 floats or 8 doubles; with
 * 16-byte vectors, half that): up to twelve vector accumulators, which stay in registers while
 * the rows of M stream through once. GCC and
 * clang vector types pin that blocking down: left to the auto-vectoriser, the same loop written
 * in Cython kept its accumulators in registers for float but spilled them to the stack for
 * double (9 against 32 GFLOP/s). The build compiles this header twice, for the baseline
 * instruction set and for AVX2 + FMA (rnnfast/_kernels/recurrence_avx2.pyx), where each vector
 * multiply-add is one instruction. Other compilers get the plain loops below, same results
 * up to rounding.
 *
 * The kernels (6, 4, 2 rows, 1 row) compute C[r, :width] = init[r, :width] + X[r, :K] @ M[:K, :width], width <= one
 * block; M's rows hold at least a whole block of readable (zero-padded) columns. Rows of X have length K, rows of
 * init and C length N; init may be C.
 *
 * Beside them, rnnfast_sum_squares: sum(v[i]^2) in double, for the norms of the backward pass's
 * gradients, vectorised the same way (the compiler vectorises no float sum without -ffast-math).
 */
#ifndef RNNFAST_MICROKERNEL_H
#define RNNFAST_MICROKERNEL_H

#include <stddef.h>
#include <string.h>

/* The width of the vectors the build can use: a block row is two of them. */
#if defined(__AVX__)
#define RNNFAST_VECTOR_BYTES 32
#else
#define RNNFAST_VECTOR_BYTES 16
#endif

/* RNNFAST_PLAIN_C forces the portable loops (to check them against the vector code). */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(RNNFAST_PLAIN_C)
#define RNNFAST_VECTOR_TYPES 1
typedef float rnnfast_vf32 __attribute__((vector_size(RNNFAST_VECTOR_BYTES)));
typedef double rnnfast_vf64 __attribute__((vector_size(RNNFAST_VECTOR_BYTES)));
/* Half a vector of floats: as many lanes as an rnnfast_vf64, into which it converts (float
 * squares are summed in double). A vector of doubles wider than the hardware's would do the
 * conversion in one go, but GCC 12 moves such vectors through the stack lane by lane. */
typedef float rnnfast_vf32_half __attribute__((vector_size(RNNFAST_VECTOR_BYTES / 2)));
/* The vector sum of squares converts float vectors to double ones (GCC 9 and later, clang). */
#if defined(__clang__) || __GNUC__ >= 9
#define RNNFAST_VECTOR_SUM_SQUARES 1
#endif
#endif

#define RNNFAST_T float
#define RNNFAST_V rnnfast_vf32
#define RNNFAST_N rnnfast_vf32_half
#define RNNFAST_NAME(name) name##_f32
#include "microkernel_impl.h"
#undef RNNFAST_T
#undef RNNFAST_V
#undef RNNFAST_N
#undef RNNFAST_NAME

#define RNNFAST_T double
#define RNNFAST_V rnnfast_vf64
#define RNNFAST_N rnnfast_vf64
#define RNNFAST_NAME(name) name##_f64
#include "microkernel_impl.h"
#undef RNNFAST_T
#undef RNNFAST_V
#undef RNNFAST_N
#undef RNNFAST_NAME

/* The step's product on columns c0 .. c1 - 1, C = init + X @ Mop for all B rows, Mop = W_hh.T
 * forward and W_hh backward, from M as step_matrix leaves it: W_hh itself or a copy of it with
 * rows ldm apart in builds with RNNFAST_NATURAL (natural.h: AVX2 + FMA), else Mop packed in
 * panels (ldm unused; c0 a multiple of
 * RNNFAST_BLOCK, the panel kernels above). With reverse, natural.h's blocks go in the
 * opposite order (the same bits; see rnnfast_dot_rows); the panel kernels ignore it. */
#if defined(__AVX2__) && defined(__FMA__) && defined(RNNFAST_VECTOR_TYPES)
#define RNNFAST_NATURAL 1
#include "natural.h"
#define RNNFAST_STEP_PRODUCT(T, S)                                                          \
    static inline void rnnfast_step_product_##S(                                  \
            int forward, int reverse, const T* X, ptrdiff_t B, ptrdiff_t K, const T* M,    \
            ptrdiff_t ldm, const T* init, T* C, ptrdiff_t N, ptrdiff_t c0, ptrdiff_t c1) {  \
        if (forward) rnnfast_dot_rows_##S(X, B, K, M, ldm, init, C, N, c0, c1, reverse);   \
        else rnnfast_axpy_rows_##S(X, B, K, M, ldm, init, C, N, c0, c1, reverse);          \
    }
#else
#define RNNFAST_NATURAL 0
#define RNNFAST_STEP_PRODUCT(T, S)                                                          \
    static inline void rnnfast_step_product_##S(                                  \
            int forward, int reverse, const T* X, ptrdiff_t B, ptrdiff_t K, const T* M,    \
            ptrdiff_t ldm, const T* init, T* C, ptrdiff_t N, ptrdiff_t c0, ptrdiff_t c1) {  \
        (void)forward;                                                                     \
        (void)reverse;                                                                     \
        (void)ldm;                                                                         \
        rnnfast_panel_rows_##S(X, B, K, M, init, C, N, c0, c1);                            \
    }
#endif
RNNFAST_STEP_PRODUCT(float, f32)
RNNFAST_STEP_PRODUCT(double, f64)
#undef RNNFAST_STEP_PRODUCT

/* W_hh^T for the natural layout's forward steps on rows (natural.h); the panel builds never
 * call it, but the passes' code names it in every build. */
#if !RNNFAST_NATURAL
#define RNNFAST_TRANSPOSE(T, S)                                                             \
    static void rnnfast_transpose_##S(const T* W, ptrdiff_t n, T* M, ptrdiff_t ldm) {        \
        for (ptrdiff_t j = 0; j < n; j++)                                                   \
            for (ptrdiff_t i = 0; i < ldm; i++) M[j * ldm + i] = i < n ? W[i * n + j] : 0;  \
    }
RNNFAST_TRANSPOSE(float, f32)
RNNFAST_TRANSPOSE(double, f64)
#undef RNNFAST_TRANSPOSE
#endif

#endif
