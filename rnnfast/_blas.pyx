"""Row-major GEMM on top of SciPy's Fortran (column-major) BLAS, callable without the GIL."""
from scipy.linalg.cython_blas cimport dgemm, sgemm


cdef void matmul_acc(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating* A,
                     const floating* B, floating* C) noexcept nogil:
    """C += A @ B, with A (m, k), B (k, n), C (m, n) all C-contiguous.

    A row-major matrix is its transpose in column-major order, so C^T = B^T A^T is one
    column-major GEMM with the operands swapped and no transposition flags.
    The caller guarantees m, n, k fit in a BLAS int (checked at the API edge).
    """
    cdef char no_trans = b"N"
    cdef int m_ = <int>m, n_ = <int>n, k_ = <int>k
    cdef floating one = 1.0
    if floating is float:
        # C = A @ B + C
        sgemm(&no_trans, &no_trans, &n_, &m_, &k_, &one, <float*>B, &n_, <float*>A, &k_,
              &one, C, &n_)
    else:
        # C = A @ B + C
        dgemm(&no_trans, &no_trans, &n_, &m_, &k_, &one, <double*>B, &n_, <double*>A, &k_,
              &one, C, &n_)
