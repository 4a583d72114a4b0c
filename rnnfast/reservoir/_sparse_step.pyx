"""The sparse reservoir pass, compiled for the baseline instruction set of the platform.

See _sparse_step_impl.pxi for what it computes; rnnfast/reservoir/sliced.py chooses between
this module and _sparse_step_avx2 as rnnfast/_kernels/backend.py chooses the dense kernels'
build.
"""

include "_sparse_step_impl.pxi"
