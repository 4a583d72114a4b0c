"""Row-major GEMM on top of SciPy's Fortran (column-major) BLAS, callable without the GIL; and
the float32 weight gradients' GEMM, on NumPy's OpenBLAS where the kernels are told where it is."""
from libc.stdint cimport int64_t
from scipy.linalg.cython_blas cimport dgemm, sgemm

# sgemm of an OpenBLAS with 64-bit integers (NumPy's wheels: scipy_sgemm_64_), Fortran order.
ctypedef void (*sgemm_64_t)(const char*, const char*, const int64_t*, const int64_t*,
                            const int64_t*, const float*, const float*, const int64_t*,
                            const float*, const int64_t*, const float*, float*,
                            const int64_t*) noexcept nogil
cdef sgemm_64_t weights_sgemm = NULL


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


def use_weights_sgemm(size_t address):
    """Run weight_gemm_f32 on the 64-bit-integer Fortran sgemm at ``address`` (NumPy's
    OpenBLAS, whose transposed GEMMs ran 1.16-1.47x SciPy's here), or on SciPy's with 0."""
    global weights_sgemm
    weights_sgemm = <sgemm_64_t>address


def weights_sgemm_address():
    """The address use_weights_sgemm set (0: SciPy's sgemm)."""
    return <size_t>weights_sgemm


cdef void weight_gemm_f32(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                          float alpha, const float* A, Py_ssize_t lda, const float* B,
                          Py_ssize_t ldb, float beta, float* C, Py_ssize_t ldc) noexcept nogil:
    """gemm for float32, on the sgemm use_weights_sgemm chose."""
    cdef char ta = b"T" if trans_a else b"N"
    cdef char tb = b"T" if trans_b else b"N"
    cdef int64_t m_ = m, n_ = n, k_ = k, lda_ = lda, ldb_ = ldb, ldc_ = ldc
    if weights_sgemm == NULL:
        gemm(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
    else:  # C^T = op(B)^T op(A)^T in column-major order, as in gemm
        weights_sgemm(&tb, &ta, &n_, &m_, &k_, &alpha, B, &ldb_, A, &lda_, &beta, C, &ldc_)
