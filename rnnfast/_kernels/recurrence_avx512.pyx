"""The recurrence kernels, compiled with AVX-512 (F, VL), AVX2 and FMA (x86-64 only; chosen at
run time).

See recurrence_impl.pxi for what they compute. The small steps are the AVX2 build's code; the
large steps' GEMM (gemm.h) gets the 32 vector registers: 12-row tiles of two 512-bit vectors.
"""

include "recurrence_impl.pxi"
