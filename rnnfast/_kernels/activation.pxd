# Activations and their derivatives, as inline functions that the C compiler vectorises.
#
# libm's tanh/tanhf are scalar calls of 20-30 ns each: at small hidden sizes they cost more than
# the matrix-vector product of a step. These are branch-free (both sides of every choice are
# computed and one is selected), so a loop over them becomes SIMD code.
#
# How (the compiler needs -fno-trapping-math to evaluate both sides of a select in SIMD):
#   Both follow Cephes' tanh: for |x| < 0.625 an odd polynomial (float32) or rational function
#   (float64) in x; above, 1 - 2 / (exp(2|x|) + 1), with exp(2|x|) = 2^n exp(r) from a
#   polynomial (float32) or Pade approximation (float64) of exp(r) and an exact power of two.
#   Measured: at most 1.3 ulp (float32) and 2 ulp (float64) from tanh; the tests hold the bounds.
# NaN propagates; +-inf give +-1; -0.0 stays -0.0.
from libc.math cimport copysign, copysignf, fabs, fabsf
from libc.stdint cimport uint32_t, uint64_t
cimport cython
from cython cimport floating


cdef union Float32Bits:
    float value
    uint32_t bits


cdef union Float64Bits:
    double value
    uint64_t bits


@cython.cdivision(True)  # the divisors are never 0; no Python check inside a SIMD loop
cdef inline float tanh32(float x) noexcept nogil:
    # Constants are typed float so the arithmetic stays in float32 (a bare literal is a double).
    cdef float ax = fabsf(x)
    # |x| < 0.625: tanh(x) = x + x^3 P(x^2) (Cephes tanhf).
    cdef float z = x * x
    cdef float c0 = -5.70498872745e-3, c1 = 2.06390887954e-2, c2 = -5.37397155531e-2
    cdef float c3 = 1.33314422036e-1, c4 = -3.33332819422e-1
    cdef float small = ((((c0 * z + c1) * z + c2) * z + c3) * z + c4) * z * ax + ax
    # |x| >= 0.625: tanh(|x|) = 1 - 2 / (exp(2|x|) + 1). tanh rounds to 1 in float32 from
    # |x| = 9.01, so 2|x| is clamped at 20 (keeping NaN) and exp needs no overflow handling.
    cdef float y = 2 * ax
    cdef float y_max = 20
    y = y_max if y > y_max else y
    # exp(y) = 2^n exp(r), n = round(y / ln 2): adding 1.5 * 2^23 rounds to an integer and leaves
    # n in the low bits of the representation; r = y - n ln 2 in two parts (Cody and Waite).
    cdef float log2e = 1.44269504088896341, magic = 12582912.0
    cdef float ln2_hi = 0.693359375, ln2_lo = -2.12194440e-4
    cdef Float32Bits shifted, scale
    shifted.value = y * log2e + magic
    cdef float n = shifted.value - magic
    cdef float r = (y - n * ln2_hi) - n * ln2_lo
    cdef float e0 = 1.9875691500e-4, e1 = 1.3981999507e-3, e2 = 8.3334519073e-3
    cdef float e3 = 4.1665795894e-2, e4 = 1.6666665459e-1, e5 = 5.0000001201e-1
    cdef float exp_r = (((((e0 * r + e1) * r + e2) * r + e3) * r + e4) * r + e5) * (r * r) + r + 1
    scale.bits = (shifted.bits + 127) << 23  # the float 2^n
    cdef float one = 1, two = 2, limit = 0.625
    cdef float large = one - two / (exp_r * scale.value + one)
    # tanh is odd: the sign of x (also of -0.0) goes on tanh(|x|).
    return copysignf(small if ax < limit else large, x)


@cython.cdivision(True)
cdef inline double tanh64(double x) noexcept nogil:
    cdef double ax = fabs(x)
    # |x| < 0.625: tanh(x) = x + x z P(z) / Q(z), z = x^2 (Cephes).
    cdef double z = x * x
    cdef double p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z \
        - 1.61468768441708447952e3
    cdef double q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z \
        + 4.84406305325125486048e3
    cdef double small = ax + ax * z * p / q
    # |x| >= 0.625: tanh(|x|) = 1 - 2 / (exp(2|x|) + 1). tanh(x) rounds to 1 from |x| = 19.1,
    # so 2|x| is clamped at 40 (keeping NaN) and exp needs no overflow handling.
    cdef double y = 2 * ax
    y = 40.0 if y > 40.0 else y
    # exp(y) = 2^n exp(r), n = round(y / ln 2), |r| <= ln(2) / 2. Adding 1.5 * 2^52 rounds to
    # an integer and leaves n in the low bits of the result's representation.
    cdef Float64Bits shifted, scale
    shifted.value = y * 1.4426950408889634074 + 6755399441055744.0
    cdef double n = shifted.value - 6755399441055744.0
    cdef double r = (y - n * 6.93145751953125e-1) - n * 1.42860682030941723212e-6
    cdef double r2 = r * r
    cdef double px = r * ((1.26177193074810590878e-4 * r2 + 3.02994407707441961300e-2) * r2
                          + 9.99999999999999999910e-1)
    cdef double qx = ((3.00198505138664455042e-6 * r2 + 2.52448340349684104192e-3) * r2
                      + 2.27265548208155028766e-1) * r2 + 2.00000000000000000009e0
    cdef double exp_r = 1 + 2 * px / (qx - px)
    scale.bits = (shifted.bits + 1023) << 52  # the double 2^n
    cdef double large = 1 - 2 / (exp_r * scale.value + 1)
    return copysign(small if ax < 0.625 else large, x)


cdef inline floating fast_tanh(floating x) noexcept nogil:
    if floating is float:
        return tanh32(x)
    else:
        return tanh64(x)


# What is applied to each element after a step's matmul. Forward steps apply the activation;
# backward steps multiply by the activation's derivative, computed from the stored act(a_t) (h_t
# itself in the plain RNN). Leaky steps add the leak after it (leak_forward, leak_backward).
# PRODUCT_ONLY: nothing (a plain product on the step's GEMM, such as the input projection).
cdef enum Epilogue:
    FORWARD_TANH = 0
    FORWARD_RELU = 1
    BACKWARD_TANH = 2
    BACKWARD_RELU = 3
    PRODUCT_ONLY = 4


cdef inline void finish(floating* C, const floating* h, Py_ssize_t n,
                        Epilogue kind) noexcept nogil:
    """C[i] = epilogue(C[i], h[i]) for i < n; one simple loop per kind, so each vectorises."""
    cdef Py_ssize_t i
    # Typed constants keep float32 arithmetic in float32 (a bare literal may become a double).
    cdef floating zero = 0, one = 1
    if kind == FORWARD_TANH:
        for i in range(n):
            C[i] = fast_tanh(C[i])
    elif kind == FORWARD_RELU:
        for i in range(n):
            C[i] = zero if C[i] <= zero else C[i]  # NaN propagates, as in np.maximum(a, 0)
    elif kind == BACKWARD_TANH:
        for i in range(n):
            C[i] = C[i] * (one - h[i] * h[i])  # tanh'(a) = 1 - h^2
    else:
        for i in range(n):
            C[i] = C[i] * (one if h[i] > zero else zero)  # relu'(a) = [h > 0], as NumPy multiplies


# The leak, h_t = (1 - alpha) h_{t-1} + alpha act(a_t) (+ state noise), alpha per unit: the
# epilogues of leaky steps, each one loop (per kind) over a row of the step's result C.
cdef inline void leak_forward(floating* C, const floating* h_prev, const floating* alpha,
                              const floating* noise, floating* h, Py_ssize_t n,
                              Epilogue kind) noexcept nogil:
    """C holds a_t: C[i] = f = act(C[i]) (kept for the backward pass), and the new state
    h[i] = (1 - alpha[i]) h_prev[i] + alpha[i] f (+ noise[i], unless noise is NULL)."""
    cdef Py_ssize_t i
    cdef floating zero = 0, one = 1, f
    if kind == FORWARD_TANH and noise == NULL:
        for i in range(n):
            f = fast_tanh(C[i])
            C[i] = f
            h[i] = (one - alpha[i]) * h_prev[i] + alpha[i] * f
    elif kind == FORWARD_TANH:
        for i in range(n):
            f = fast_tanh(C[i])
            C[i] = f
            h[i] = (one - alpha[i]) * h_prev[i] + alpha[i] * f + noise[i]
    elif noise == NULL:
        for i in range(n):
            f = zero if C[i] <= zero else C[i]  # NaN propagates, as in np.maximum(a, 0)
            C[i] = f
            h[i] = (one - alpha[i]) * h_prev[i] + alpha[i] * f
    else:
        for i in range(n):
            f = zero if C[i] <= zero else C[i]
            C[i] = f
            h[i] = (one - alpha[i]) * h_prev[i] + alpha[i] * f + noise[i]


cdef inline void leak_backward(floating* C, const floating* f, const floating* alpha,
                               const floating* g_prev, floating* carry, Py_ssize_t n,
                               Epilogue kind) noexcept nogil:
    """C holds dh_t = dL/dh_t; f = act(a_t). Then
        carry[i] = g_prev[i] + (1 - alpha[i]) dh_t[i]   (g_prev NULL: 0)
    the part of dL/dh_{t-1} that skips W_hh (g_prev = dout_{t-1}), and
        C[i] = alpha[i] dh_t[i] act'(a_t)[i]   = da_t,
    act' from f (tanh' = 1 - f^2, relu' = [f > 0]). carry may be the init the step just read."""
    cdef Py_ssize_t i
    cdef floating zero = 0, one = 1, dh
    if kind == BACKWARD_TANH and g_prev == NULL:
        for i in range(n):
            dh = C[i]
            carry[i] = (one - alpha[i]) * dh
            C[i] = alpha[i] * dh * (one - f[i] * f[i])
    elif kind == BACKWARD_TANH:
        for i in range(n):
            dh = C[i]
            carry[i] = g_prev[i] + (one - alpha[i]) * dh
            C[i] = alpha[i] * dh * (one - f[i] * f[i])
    elif g_prev == NULL:
        for i in range(n):
            dh = C[i]
            carry[i] = (one - alpha[i]) * dh
            C[i] = alpha[i] * dh * (one if f[i] > zero else zero)
    else:
        for i in range(n):
            dh = C[i]
            carry[i] = g_prev[i] + (one - alpha[i]) * dh
            C[i] = alpha[i] * dh * (one if f[i] > zero else zero)
