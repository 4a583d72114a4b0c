/* The small steps' matrix products on W_hh as the caller stores it (row-major, "natural"), for
 * builds with AVX2 and FMA: nothing to transpose or pack before a pass.
 *
 *   forward:  C = init + X @ W.T   a dot product per output: row b of X with row i of W
 *   backward: C = init + X @ W     rows of W scaled by X[b, j] and added up (axpy)
 *
 * Both read W in its own layout, so a pass starts with its first step (packing W_hh in panels
 * cost as much as 4-9 steps a call). Each output has one accumulator whatever block it is in,
 * so results do not depend on how the rows and columns are shared out (between threads, say).
 * The last K % L (dot) or N % L (axpy) elements are read with masked loads, which touch no
 * memory beyond them. The dot products (natural_dot_impl.h) use 256-bit vectors in every build;
 * the axpy (natural_axpy_impl.h) 512-bit ones where the build has AVX-512 and they pay (see
 * rnnfast_axpy_rows below), with the same bits.
 * Included by microkernel.h, which defines RNNFAST_NATURAL when it is.
 */
#ifndef RNNFAST_NATURAL_H
#define RNNFAST_NATURAL_H

#include <immintrin.h>
#include <stddef.h>

/* The blocks are inlined into each call with constant sizes: their accumulators must become
 * registers, which takes full unrolling (GCC would not always inline them by itself). */
#define RNNFAST_INLINE inline __attribute__((always_inline))

/* A vector of W that serves several rows of X is loaded once, into a register: without this
 * GCC 12 folded the load into each row's FMA (a memory operand), loading W twice for two rows,
 * and a step of two rows took as long as one of three. The empty asm changes nothing but
 * makes the compiler hold the value in a register (any of the 32 where AVX-512 has them). */
#if defined(__AVX512F__)
#define RNNFAST_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define RNNFAST_IN_REGISTER(v) __asm__("" : "+x"(v))
#endif

static const int rnnfast_mask32[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
static const long long rnnfast_mask64[8] = {-1, -1, -1, -1, 0, 0, 0, 0};

/* float: 8 lanes. */
static inline void rnnfast_reduce4_f32(__m256 a0, __m256 a1, __m256 a2, __m256 a3,
                                       const float* init, float* C) {
    const __m256 u = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    const __m128 sums = _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
    _mm_storeu_ps(C, _mm_add_ps(_mm_loadu_ps(init), sums));
}

#define RNNFAST_T float
#define RNNFAST_V __m256
#define RNNFAST_L 8
#define RNNFAST_MASK_T __m256i
#define RNNFAST_MASK(n) _mm256_loadu_si256((const __m256i*)(rnnfast_mask32 + 8 - (n)))
#define RNNFAST_LOAD(p) _mm256_loadu_ps(p)
#define RNNFAST_STORE(p, v) _mm256_storeu_ps(p, v)
#define RNNFAST_MASKLOAD(p, m) _mm256_maskload_ps(p, m)
#define RNNFAST_MASKSTORE(p, m, v) _mm256_maskstore_ps(p, m, v)
#define RNNFAST_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define RNNFAST_ZERO() _mm256_setzero_ps()
#define RNNFAST_SPLAT(x) _mm256_set1_ps(x)
#define RNNFAST_REDUCE4 rnnfast_reduce4_f32
#define RNNFAST_NAME(name) name##_f32
#include "natural_dot_impl.h"
#if defined(__AVX512F__)
#undef RNNFAST_NAME
#define RNNFAST_NAME(name) name##_f32_ymm
#endif
#include "natural_axpy_impl.h"
#include "natural_undef.h"

/* double: 4 lanes. */
static inline void rnnfast_reduce4_f64(__m256d a0, __m256d a1, __m256d a2, __m256d a3,
                                       const double* init, double* C) {
    const __m256d t0 = _mm256_hadd_pd(a0, a1), t1 = _mm256_hadd_pd(a2, a3);
    const __m256d sums = _mm256_add_pd(_mm256_permute2f128_pd(t0, t1, 0x20),
                                       _mm256_permute2f128_pd(t0, t1, 0x31));
    _mm256_storeu_pd(C, _mm256_add_pd(_mm256_loadu_pd(init), sums));
}

#define RNNFAST_T double
#define RNNFAST_V __m256d
#define RNNFAST_L 4
#define RNNFAST_MASK_T __m256i
#define RNNFAST_MASK(n) _mm256_loadu_si256((const __m256i*)(rnnfast_mask64 + 4 - (n)))
#define RNNFAST_LOAD(p) _mm256_loadu_pd(p)
#define RNNFAST_STORE(p, v) _mm256_storeu_pd(p, v)
#define RNNFAST_MASKLOAD(p, m) _mm256_maskload_pd(p, m)
#define RNNFAST_MASKSTORE(p, m, v) _mm256_maskstore_pd(p, m, v)
#define RNNFAST_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define RNNFAST_ZERO() _mm256_setzero_pd()
#define RNNFAST_SPLAT(x) _mm256_set1_pd(x)
#define RNNFAST_REDUCE4 rnnfast_reduce4_f64
#define RNNFAST_NAME(name) name##_f64
#include "natural_dot_impl.h"
#if defined(__AVX512F__)
#undef RNNFAST_NAME
#define RNNFAST_NAME(name) name##_f64_ymm
#endif
#include "natural_axpy_impl.h"
#include "natural_undef.h"

/* M[j, i] = W[i, j] for a square W (n, n), rows of M ldm >= n apart, zero from column n on:
 * W_hh^T for a forward pass whose small steps then run as the backward's (rows of M scaled
 * and added up, rnnfast_axpy_rows), without the dot products' sums across lanes. Tiles of
 * 8 x 8 floats or 4 x 4 doubles in registers, a band of rows of M after another. */
static inline void rnnfast_transpose8_f32(const float* A, ptrdiff_t lda, float* T,
                                          ptrdiff_t ldt) {
    __m256 r[8], u[8], s[8];
    for (int k = 0; k < 8; k++) r[k] = _mm256_loadu_ps(A + k * lda);
    for (int k = 0; k < 8; k += 2) {
        u[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        u[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {
        s[k] = _mm256_shuffle_ps(u[k], u[k + 2], 0x44);
        s[k + 1] = _mm256_shuffle_ps(u[k], u[k + 2], 0xEE);
        s[k + 2] = _mm256_shuffle_ps(u[k + 1], u[k + 3], 0x44);
        s[k + 3] = _mm256_shuffle_ps(u[k + 1], u[k + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        _mm256_storeu_ps(T + k * ldt, _mm256_permute2f128_ps(s[k], s[k + 4], 0x20));
        _mm256_storeu_ps(T + (k + 4) * ldt, _mm256_permute2f128_ps(s[k], s[k + 4], 0x31));
    }
}

static inline void rnnfast_transpose4_f64(const double* A, ptrdiff_t lda, double* T,
                                          ptrdiff_t ldt) {
    const __m256d r0 = _mm256_loadu_pd(A), r1 = _mm256_loadu_pd(A + lda);
    const __m256d r2 = _mm256_loadu_pd(A + 2 * lda), r3 = _mm256_loadu_pd(A + 3 * lda);
    const __m256d u0 = _mm256_unpacklo_pd(r0, r1), u1 = _mm256_unpackhi_pd(r0, r1);
    const __m256d u2 = _mm256_unpacklo_pd(r2, r3), u3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(T, _mm256_permute2f128_pd(u0, u2, 0x20));
    _mm256_storeu_pd(T + ldt, _mm256_permute2f128_pd(u1, u3, 0x20));
    _mm256_storeu_pd(T + 2 * ldt, _mm256_permute2f128_pd(u0, u2, 0x31));
    _mm256_storeu_pd(T + 3 * ldt, _mm256_permute2f128_pd(u1, u3, 0x31));
}

#define RNNFAST_TRANSPOSE(T, S, TILE)                                                       \
    static void rnnfast_transpose_##S(const T* W, ptrdiff_t n, T* M, ptrdiff_t ldm) {        \
        const ptrdiff_t whole = n - n % TILE;                                               \
        ptrdiff_t i, j;                                                                     \
        for (j = 0; j < whole; j += TILE) {                                                 \
            for (i = 0; i < whole; i += TILE)                                               \
                rnnfast_transpose##TILE##_##S(W + i * n + j, n, M + j * ldm + i, ldm);      \
            for (; i < n; i++)                                                              \
                for (int r = 0; r < TILE; r++) M[(j + r) * ldm + i] = W[i * n + j + r];     \
        }                                                                                   \
        for (; j < n; j++)                                                                  \
            for (i = 0; i < n; i++) M[j * ldm + i] = W[i * n + j];                          \
        for (j = 0; j < n; j++)                                                             \
            for (i = n; i < ldm; i++) M[j * ldm + i] = 0;                                   \
    }
RNNFAST_TRANSPOSE(float, f32, 8)
RNNFAST_TRANSPOSE(double, f64, 4)
#undef RNNFAST_TRANSPOSE

#if defined(__AVX512F__)
/* The backward's product on 512-bit vectors: each output one lane, summed over j in order as
 * on 256-bit ones, so the same bits at half the instructions. */
#define RNNFAST_V __m512
#define RNNFAST_L 16
#define RNNFAST_MASK_T __mmask16
#define RNNFAST_MASK(n) ((__mmask16)((1u << (n)) - 1u))
#define RNNFAST_LOAD(p) _mm512_loadu_ps(p)
#define RNNFAST_STORE(p, v) _mm512_storeu_ps(p, v)
#define RNNFAST_MASKLOAD(p, m) _mm512_maskz_loadu_ps(m, p)
#define RNNFAST_MASKSTORE(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define RNNFAST_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define RNNFAST_ZERO() _mm512_setzero_ps()
#define RNNFAST_SPLAT(x) _mm512_set1_ps(x)
#define RNNFAST_T float
#define RNNFAST_NAME(name) name##_f32_zmm
#include "natural_axpy_impl.h"
#include "natural_undef.h"

#define RNNFAST_V __m512d
#define RNNFAST_L 8
#define RNNFAST_MASK_T __mmask8
#define RNNFAST_MASK(n) ((__mmask8)((1u << (n)) - 1u))
#define RNNFAST_LOAD(p) _mm512_loadu_pd(p)
#define RNNFAST_STORE(p, v) _mm512_storeu_pd(p, v)
#define RNNFAST_MASKLOAD(p, m) _mm512_maskz_loadu_pd(m, p)
#define RNNFAST_MASKSTORE(p, m, v) _mm512_mask_storeu_pd(p, m, v)
#define RNNFAST_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define RNNFAST_ZERO() _mm512_setzero_pd()
#define RNNFAST_SPLAT(x) _mm512_set1_pd(x)
#define RNNFAST_T double
#define RNNFAST_NAME(name) name##_f64_zmm
#include "natural_axpy_impl.h"
#include "natural_undef.h"

/* The backward's product (the same bits either way): on 512-bit vectors from one vector's
 * width of columns, and for a W of at most RNNFAST_ZMM_AXPY_MAX_BYTES. Measured on a Xeon with
 * 2 MiB of L2 (one row of X, W 16 bytes into a cache line): 1.1-1.3x faster than 256-bit rows
 * at H = 32-512 float32, but 0.86-0.89x at H = 1024-1536 (W from L3), and narrower than one
 * vector a masked half vector cost more than a whole 256-bit one. */
#define RNNFAST_ZMM_AXPY_MAX_BYTES ((ptrdiff_t)2 << 20)
#define RNNFAST_AXPY_ROWS(T, S, L)                                                          \
    static void rnnfast_axpy_rows_##S(                                                      \
            const T* X, ptrdiff_t B, ptrdiff_t K, const T* W, ptrdiff_t ldw, const T* init,   \
            T* C, ptrdiff_t N, ptrdiff_t c0, ptrdiff_t c1, int reverse) {                    \
        if (c1 - c0 >= L && K * ldw * (ptrdiff_t)sizeof(T) <= RNNFAST_ZMM_AXPY_MAX_BYTES)     \
            rnnfast_axpy_rows_##S##_zmm(X, B, K, W, ldw, init, C, N, c0, c1, reverse);        \
        else                                                                                \
            rnnfast_axpy_rows_##S##_ymm(X, B, K, W, ldw, init, C, N, c0, c1, reverse);        \
    }
RNNFAST_AXPY_ROWS(float, f32, 16)
RNNFAST_AXPY_ROWS(double, f64, 8)
#undef RNNFAST_AXPY_ROWS
#endif

#endif
