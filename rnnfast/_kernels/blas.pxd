# The BLAS wrapper: the only module that cimports scipy.linalg.cython_blas.
from cython cimport floating


cdef void gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               floating alpha, const floating* A, Py_ssize_t lda, const floating* B,
               Py_ssize_t ldb, floating beta, floating* C, Py_ssize_t ldc) noexcept nogil


cdef void weight_gemm_f32(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                          float alpha, const float* A, Py_ssize_t lda, const float* B,
                          Py_ssize_t ldb, float beta, float* C, Py_ssize_t ldc) noexcept nogil
