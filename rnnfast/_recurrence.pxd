# The time loops of the recurrence, forward and backward (BPTT), over the whole sequence.
from cython cimport floating


# What is applied to each element after a step's matmul. Forward steps apply the activation;
# backward steps multiply by the activation's derivative, computed from the stored output h.
cdef enum Epilogue:
    FORWARD_TANH = 0
    FORWARD_RELU = 1
    BACKWARD_TANH = 2
    BACKWARD_RELU = 3


cdef void forward_loop(floating[:, :, ::1] h, const floating[:, ::1] h0,
                       const floating[:, ::1] W_hh_T, Epilogue activate,
                       bint use_blas) noexcept nogil

cdef void backward_loop(floating[:, :, ::1] da, const floating[:, :, ::1] dout,
                        const floating[:, :, ::1] h, const floating[:, ::1] dh_n,
                        const floating[:, ::1] W_hh, Epilogue derivative,
                        bint use_blas) noexcept nogil
