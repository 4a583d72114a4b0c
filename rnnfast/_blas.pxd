# The BLAS wrapper: the only module that cimports scipy.linalg.cython_blas.
from cython cimport floating


cdef void matmul_acc(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating* A,
                     const floating* B, floating* C) noexcept nogil
