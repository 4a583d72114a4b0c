"""The recurrence kernels, compiled for the baseline instruction set of the platform.

See recurrence_impl.pxi for what they compute; rnnfast/_kernels/backend.py chooses between this
module and recurrence_avx2 by what the processor supports.
"""

include "recurrence_impl.pxi"


cdef extern from *:
    """
    static int rnnfast_cpu_has_avx2_fma(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        /* libgcc also checks that the operating system saves the AVX registers. */
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    #else
        return 0;
    #endif
    }

    static int rnnfast_cpu_has_avx512(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return rnnfast_cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f")
            && __builtin_cpu_supports("avx512vl");
    #else
        return 0;
    #endif
    }
    """
    int rnnfast_cpu_has_avx2_fma() noexcept nogil
    int rnnfast_cpu_has_avx512() noexcept nogil


def cpu_has_avx2_fma():
    """Whether this processor (and operating system) can run the AVX2 + FMA kernels."""
    return bool(rnnfast_cpu_has_avx2_fma())


def cpu_has_avx512():
    """Whether this processor (and operating system) can run the AVX-512 kernels (F and VL)."""
    return bool(rnnfast_cpu_has_avx512())
