"""The recurrence kernels, compiled with AVX2 and FMA (x86-64 only; chosen at run time).

See recurrence_impl.pxi for what they compute.
"""

include "recurrence_impl.pxi"
