"""The compiled kernels (Cython and C) and the backend that allocates around them.

Bottom layer of the package: the time loops of the forward pass and of backprop through time
(recurrence_impl.pxi, built twice: recurrence for the baseline instruction set and
recurrence_avx2 for AVX2 + FMA), one time step (step.pxd), the register-blocked micro-kernel
(microkernel.h), the vectorised activation (activation.pxd) and the BLAS wrapper (blas.pyx).
backend.py allocates the outputs and scratch and chooses the step path; rnnfast.functional
validates before anything reaches it.
"""
