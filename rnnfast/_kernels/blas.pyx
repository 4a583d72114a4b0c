"""Row-major GEMM on top of SciPy's Fortran (column-major) BLAS, callable without the GIL."""
from scipy.linalg.cython_blas cimport dgemm, sgemm


cdef void gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               floating alpha, const floating* A, Py_ssize_t lda, const floating* B,
               Py_ssize_t ldb, floating beta, floating* C, Py_ssize_t ldc) noexcept nogil:
    """C = alpha op(A) @ op(B) + beta C, all row-major; op(A) is (m, k), op(B) (k, n), C (m, n).

    op(X) is X.T when trans_x, else X; lda, ldb, ldc are the row lengths of A, B, C as stored.
    A row-major matrix is its transpose in column-major order, so C^T = op(B)^T op(A)^T is one
    column-major GEMM with the operands swapped. The caller guarantees that every size fits in
    a BLAS int (checked at the API edge).
    """
    cdef char ta = b"T" if trans_a else b"N"
    cdef char tb = b"T" if trans_b else b"N"
    cdef int m_ = <int>m, n_ = <int>n, k_ = <int>k
    cdef int lda_ = <int>lda, ldb_ = <int>ldb, ldc_ = <int>ldc
    if floating is float:
        # C = alpha * op(A) @ op(B) + beta * C
        sgemm(&tb, &ta, &n_, &m_, &k_, &alpha, <float*>B, &ldb_, <float*>A, &lda_, &beta, C,
              &ldc_)
    else:
        # C = alpha * op(A) @ op(B) + beta * C
        dgemm(&tb, &ta, &n_, &m_, &k_, &alpha, <double*>B, &ldb_, <double*>A, &lda_, &beta, C,
              &ldc_)
