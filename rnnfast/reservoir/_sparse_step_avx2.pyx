"""The sparse reservoir pass, compiled with AVX2 and FMA (x86-64 only; chosen at run time).

See _sparse_step_impl.pxi for what it computes.
"""

include "_sparse_step_impl.pxi"
