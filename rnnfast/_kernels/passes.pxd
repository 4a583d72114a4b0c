# What a whole forward or backward pass takes: every array as a pointer to its first element
# (C-contiguous, of the pass's dtype: float or double), every size, every switch. The compiled
# entry (rnnfast/_kernels/entry.pyx) fills one of these after checking and allocating, and
# calls a kernel build (recurrence.pyx or recurrence_avx2.pyx) through its KernelTable.
#
# Optional arrays are NULL when absent. The kernels trust every field.


ctypedef struct ForwardPass:
    Py_ssize_t T, B, D, H
    const void* x  # (T, B, D)
    const void* h0  # (B, H), never NULL (zeros when the caller had none)
    const void* W_xh  # (H, D)
    const void* W_hh  # (H, H)
    const void* b  # (H,), NULL: no bias
    void* out  # (T, B, H): receives the input projection first, then the states
    void* M  # scratch, the step matrix (H, ldm)
    Py_ssize_t ldm
    const Py_ssize_t* active  # (T,) rows still running at each step (a prefix of the batch)
    bint relu
    bint use_blas  # large steps (one thread)
    bint own_gemm  # large steps on our packed GEMM (gemm.h), not SciPy's BLAS
    int n_threads  # of the time loop
    int product_threads  # row ranges of the input projection on the team (1: one call)
    bint own_products  # the input projection by the step kernels rather than BLAS (see entry)
    bint alternate  # small steps go through W_hh one way, then the other (see small_step)
    bint align_steps  # small steps read a copy of W_hh on cache lines (see step_matrix)
    bint transposed_steps  # small steps on W_hh^T, as the backward's (see step_matrix)
    void* product_matrix  # scratch for W_xh^T in GEMM panels: the projection's ranges on our
                          # GEMM (K = D, N = H; room for D * (H + 64)); NULL: BLAS's
    const void* leak  # (H,), NULL: the plain RNN
    void* act  # act(a_t) of a leaky pass: (T, B, H) kept (act_step = B * H), or (B, H) scratch
    Py_ssize_t act_step
    const void* noise  # (T, B, H) added to a_t, or NULL
    const void* state_noise  # (T, B, H) added to h_t after the leak (leaky passes), or NULL


ctypedef struct BackwardPass:
    Py_ssize_t T, B, D, H
    const void* dout  # (T, B, H)
    const void* dh_n  # (B, H), never NULL (zeros for none)
    const void* x  # (T, B, D)
    const void* h0  # (B, H), never NULL (zeros when the forward had none)
    const void* W_xh  # (H, D)
    const void* W_hh  # (H, H)
    const void* out  # (T, B, H), the forward's states
    const void* act  # (T, B, H): act(a_t) of a leaky pass; out for the plain RNN
    void* da  # scratch (T, B, H): da_t, which the weight gradients read
    void* M  # scratch, the step matrix (H, ldm)
    Py_ssize_t ldm
    void* dx  # (T, B, D), NULL: not wanted
    void* dh0  # (B, H)
    void* dW_xh  # (H, D), NULL: no weight gradients here (not wanted, or computed afterwards)
    void* dW_hh  # (H, H), NULL exactly when dW_xh is
    void* db  # (H,), NULL: no bias, or not wanted
    const Py_ssize_t* active  # (T,)
    bint relu
    bint use_blas  # large steps (one thread)
    bint own_gemm  # large steps on our packed GEMM (gemm.h), not SciPy's BLAS
    int n_threads  # of the time loop
    int product_threads  # row ranges of dx and of the weight gradients on the team (1: one call)
    bint own_products  # dx by the step kernels rather than BLAS (see entry)
    bint alternate  # small steps go through W_hh one way, then the other (see small_step)
    bint align_steps  # small steps read a copy of W_hh on cache lines (see step_matrix)
    void* product_matrix  # scratch for W_xh in GEMM panels: dx's ranges on our GEMM (K = H,
                          # N = D; room for H * (D + 64)); NULL: BLAS's
    void* norms  # (T, B) ||dL/dh_t||, NULL: not measured
    double* squares  # float64 scratch for the norms (see backward_loop)
    const void* leak  # (H,), NULL: the plain RNN
    void* carry  # (B, H) scratch of a leaky pass


ctypedef struct MatmulPass:
    # C = op(A) @ op(B), row-major, op the transpose where asked: C (m, n), op(A) (m, k),
    # op(B) (k, n), each ld elements between rows as stored.
    Py_ssize_t m, n, k, lda, ldb, ldc
    bint trans_a, trans_b
    const void* A
    const void* B
    void* C
    bint split_columns  # ranges of C's columns (else of its rows) on the team
    int n_threads


ctypedef struct SoftmaxPass:
    # Softmax cross-entropy over the rows of logits (rows, V), row-major: for each row r whose
    # mask is set (every row with mask NULL), nll[r] = log sum_j exp(l_j - m) - (l_t - m)
    # (m the row's maximum, t = targets[r]) and dlogits[r] = (softmax(l) - onehot(t)) * scale;
    # 0 in both for the other rows. A row with NaN or an infinite maximum gets NaN in both.
    Py_ssize_t rows, V
    const void* logits
    const Py_ssize_t* targets  # in [0, V) where the mask is set (checked by the caller)
    const unsigned char* mask  # (rows,) 0 or 1, or NULL
    void* dlogits
    double* nll
    double scale  # 1 / (rows that count)
    int n_threads


ctypedef void (*ForwardKernel)(const ForwardPass*) noexcept nogil
ctypedef void (*BackwardKernel)(const BackwardPass*) noexcept nogil
ctypedef void (*MatmulKernel)(const MatmulPass*) noexcept nogil
ctypedef void (*SoftmaxKernel)(const SoftmaxPass*) noexcept nogil


ctypedef struct KernelTable:
    ForwardKernel forward_f32
    ForwardKernel forward_f64
    BackwardKernel backward_f32
    BackwardKernel backward_f64
    MatmulKernel matmul_f32
    MatmulKernel matmul_f64
    SoftmaxKernel softmax_f32
    SoftmaxKernel softmax_f64
    Py_ssize_t block_bytes  # the bytes of one micro-kernel column block in this build
    bint natural  # whether the small steps read W_hh as it is (no packing; natural.h)
