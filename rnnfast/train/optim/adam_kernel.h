/* Adam's update of one parameter, one pass over flat arrays (rnnfast/train/optim/_adam.pyx).
 *
 * Each element's arithmetic is the NumPy update's (rules.py, adam_update_numpy), operation for
 * operation in the parameter's type, the constants rounded to it by the caller: plain IEEE
 * additions, multiplications, divisions and square roots, which the build compiles without
 * fused multiply-adds (-ffp-contract=off) and without errno (so sqrt vectorises), so both give
 * the same bits. The four variants (weight decay or not, the two forms of the first moment)
 * are separate loops, each one the compiler vectorises; on x86-64 each is also compiled for
 * AVX2 and picked at load time (the square roots and divisions run twice as wide: measured
 * here 106 against 204 us for 135,000 floats).
 */
#ifndef RNNFAST_ADAM_KERNEL_H
#define RNNFAST_ADAM_KERNEL_H

#include <math.h>
#include <stddef.h>

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define RNNFAST_WIDER __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef RNNFAST_WIDER
#define RNNFAST_WIDER
#endif

/* d = grad (+ decay * param); m = exp_avg + w (d - exp_avg) (small: 1 - beta1 < 0.5) or
 * d - (d - exp_avg) keep; v = exp_avg_sq b2 + (fresh d) d; param -= m / (sqrt(v) / bc2 + e)
 * size. */
#define RNNFAST_ADAM_LOOP(T, SQRT, DECAYED, SMALL)                                            \
    for (ptrdiff_t i = 0; i < n; i++) {                                                        \
        const T d = DECAYED ? grad[i] + decay * param[i] : grad[i];                            \
        const T m = SMALL ? exp_avg[i] + w * (d - exp_avg[i]) : d - (d - exp_avg[i]) * keep;   \
        const T v = exp_avg_sq[i] * b2 + (fresh * d) * d;                                      \
        exp_avg[i] = m;                                                                        \
        exp_avg_sq[i] = v;                                                                     \
        param[i] = param[i] - m / (SQRT(v) / bc2 + e) * size;                                  \
    }

#define RNNFAST_ADAM(T, S, SQRT)                                                               \
    RNNFAST_WIDER static void rnnfast_adam_##S(                                                \
            ptrdiff_t n, T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T w, T keep,      \
            T b2, T fresh, T decay, T bc2, T e, T size, int decayed, int small) {              \
        if (decayed && small) { RNNFAST_ADAM_LOOP(T, SQRT, 1, 1) }                             \
        else if (decayed) { RNNFAST_ADAM_LOOP(T, SQRT, 1, 0) }                                 \
        else if (small) { RNNFAST_ADAM_LOOP(T, SQRT, 0, 1) }                                   \
        else { RNNFAST_ADAM_LOOP(T, SQRT, 0, 0) }                                              \
    }

RNNFAST_ADAM(float, f32, sqrtf)
RNNFAST_ADAM(double, f64, sqrt)

#undef RNNFAST_ADAM
#undef RNNFAST_ADAM_LOOP

#endif
