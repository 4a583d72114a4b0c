# Softmax cross-entropy over the rows of a (rows, V) array of logits (the loss of a token model,
# rnnfast.nn.softmax_cross_entropy), in ranges of rows on the thread team (team.h): included
# by recurrence_impl.pxi. Each row is read once from memory and then stays in L1: its maximum,
# exp(l - max) into the gradient's row, their sum, then the row scaled. NumPy's version makes
# six passes over the whole array, each through memory.
from libc.math cimport NAN, log

from rnnfast._kernels.activation cimport Float32Bits, Float64Bits


cdef enum:
    # Reductions run in this many independent lanes: the compiler vectorises a sum or a
    # maximum only where reordering it is allowed, and these lanes are the order (fixed, so
    # the result does not depend on who computes a row).
    LANES = 16
    # Below this many elements the softmax stays on the caller: waking the team costs more.
    SOFTMAX_TEAM_MIN_ELEMENTS = 65536


cdef inline float exp32_nonpositive(float x) noexcept nogil:
    """exp(x) for x <= 0, branch-free (a loop over it is SIMD code): 2^n exp(r) as in tanh32
    (activation.pxd; Cephes' expf, about 1 ulp). 0 below -87, where exp(x) < 1.7e-38 (NumPy
    gives the subnormal); NaN stays NaN."""
    cdef float low = -87.0
    cdef float y = low if x < low else x
    cdef float log2e = 1.44269504088896341, magic = 12582912.0
    cdef float ln2_hi = 0.693359375, ln2_lo = -2.12194440e-4
    cdef Float32Bits shifted, scale
    shifted.value = y * log2e + magic
    cdef float n = shifted.value - magic
    cdef float r = (y - n * ln2_hi) - n * ln2_lo
    cdef float e0 = 1.9875691500e-4, e1 = 1.3981999507e-3, e2 = 8.3334519073e-3
    cdef float e3 = 4.1665795894e-2, e4 = 1.6666665459e-1, e5 = 5.0000001201e-1
    cdef float exp_r = (((((e0 * r + e1) * r + e2) * r + e3) * r + e4) * r + e5) * (r * r) + r + 1
    scale.bits = (shifted.bits + 127) << 23  # the float 2^n
    cdef float zero = 0
    cdef float value = zero if x < low else exp_r * scale.value
    return x if x != x else value


cdef inline double exp64_nonpositive(double x) noexcept nogil:
    """exp(x) for x <= 0, branch-free: 2^n exp(r) with Cephes' Pade form of exp(r) as in tanh64
    (about 1 ulp). 0 below -708 (exp(x) < 3.3e-308); NaN stays NaN."""
    cdef double y = -708.0 if x < -708.0 else x
    cdef Float64Bits shifted, scale
    shifted.value = y * 1.4426950408889634074 + 6755399441055744.0
    cdef double n = shifted.value - 6755399441055744.0
    cdef double r = (y - n * 6.93145751953125e-1) - n * 1.42860682030941723212e-6
    cdef double r2 = r * r
    cdef double px = r * ((1.26177193074810590878e-4 * r2 + 3.02994407707441961300e-2) * r2
                          + 9.99999999999999999910e-1)
    cdef double qx = ((3.00198505138664455042e-6 * r2 + 2.52448340349684104192e-3) * r2
                      + 2.27265548208155028766e-1) * r2 + 2.00000000000000000009e0
    cdef double exp_r = 1 + 2 * px / (qx - px)
    scale.bits = (shifted.bits + 1023) << 52  # the double 2^n
    cdef double value = 0.0 if x < -708.0 else exp_r * scale.value
    return x if x != x else value


cdef inline floating exp_nonpositive(floating x) noexcept nogil:
    if floating is float:
        return exp32_nonpositive(x)
    else:
        return exp64_nonpositive(x)


cdef void softmax_row(const floating* l, floating* g, Py_ssize_t V, Py_ssize_t t, double scale,
                      double* nll) noexcept nogil:
    """One row: g = (softmax(l) - onehot(t)) * scale and *nll = -log softmax(l)[t]."""
    cdef floating lanes[LANES]
    cdef floating m, s, v, factor
    cdef Py_ssize_t j, k, block, whole = V - V % LANES
    # The maximum (a NaN is left to the sum below, which it makes NaN).
    for k in range(LANES):
        lanes[k] = l[0]
    for block in range(whole // LANES):
        for k in range(LANES):
            v = l[block * LANES + k]
            lanes[k] = v if v > lanes[k] else lanes[k]
    m = l[0]
    for k in range(LANES):
        m = lanes[k] if lanes[k] > m else m
    for j in range(whole, V):
        m = l[j] if l[j] > m else m
    for j in range(V):
        g[j] = exp_nonpositive(l[j] - m)
    for k in range(LANES):
        lanes[k] = 0
    for block in range(whole // LANES):
        for k in range(LANES):
            lanes[k] += g[block * LANES + k]
    s = 0
    for k in range(LANES):
        s += lanes[k]
    for j in range(whole, V):
        s += g[j]
    if not (m - m == 0 and s - s == 0):  # NaN in the row, or an infinite maximum: as NumPy
        for j in range(V):
            g[j] = NAN
        nll[0] = NAN
        return
    factor = <floating>(scale / s)
    for j in range(V):
        g[j] *= factor
    g[t] -= <floating>scale
    nll[0] = log(<double>s) - (<double>l[t] - <double>m)  # s >= 1: the maximum gives exp(0)


ctypedef struct SoftmaxTasks:
    bint is_double
    const SoftmaxPass* p
    Py_ssize_t per_task  # rows per range


cdef void softmax_rows(const SoftmaxPass* p, const floating* logits, floating* dlogits,
                       Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    cdef Py_ssize_t V = p.V, r
    for r in range(r0, r1):
        if p.mask != NULL and not p.mask[r]:
            memset(dlogits + r * V, 0, V * sizeof(floating))
            p.nll[r] = 0
        else:
            softmax_row(logits + r * V, dlogits + r * V, V, p.targets[r], p.scale, p.nll + r)


cdef void softmax_task(void* context, Py_ssize_t step, Py_ssize_t piece) noexcept nogil:
    cdef const SoftmaxTasks* c = <const SoftmaxTasks*>context
    cdef Py_ssize_t r0 = piece * c.per_task
    cdef Py_ssize_t r1 = r0 + c.per_task if r0 + c.per_task < c.p.rows else c.p.rows
    if c.is_double:
        softmax_rows(c.p, <const double*>c.p.logits, <double*>c.p.dlogits, r0, r1)
    else:
        softmax_rows(c.p, <const float*>c.p.logits, <float*>c.p.dlogits, r0, r1)


cdef void softmax_pieces(void* context, Py_ssize_t step) noexcept nogil:
    cdef const SoftmaxTasks* c = <const SoftmaxTasks*>context
    cdef Py_ssize_t piece
    for piece in range((c.p.rows + c.per_task - 1) // c.per_task):
        softmax_task(context, step, piece)


cdef void softmax_pass(const SoftmaxPass* p, bint is_double) noexcept nogil:
    """The softmax cross-entropy SoftmaxPass describes, in row ranges on n_threads of the team
    (alone below SOFTMAX_TEAM_MIN_ELEMENTS): each row computed the same way by whoever runs it."""
    cdef SoftmaxTasks c
    cdef Py_ssize_t pieces = PIECES_PER_THREAD * p.n_threads
    c.is_double, c.p = is_double, p
    c.per_task = p.rows
    if p.n_threads > 1 and p.rows * p.V >= SOFTMAX_TEAM_MIN_ELEMENTS:
        c.per_task = (p.rows + pieces - 1) // pieces
    if c.per_task >= p.rows:
        softmax_pieces(&c, 0)
        return
    team_run(p.n_threads, 1, (p.rows + c.per_task - 1) // c.per_task,
             step_kind(p.rows * p.V, True, is_double, LAYER_PRODUCTS),
             softmax_task, softmax_pieces, &c)
