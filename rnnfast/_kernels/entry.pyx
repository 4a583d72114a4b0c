"""The compiled entry of the passes: what a call costs besides its arithmetic.

``forward`` and ``backward`` take the arguments of rnnfast.rnn_forward and rnn_backward as
given, and check at C level, in a few nanoseconds per array, everything the kernels rely on:
exact NumPy arrays of one dtype (float32 or float64, native byte order, C-contiguous), the
numbers of dimensions and the shapes, sizes within BLAS's range, the leak's values in (0, 1],
sorted lengths within 1..T. A call that passes allocates its outputs (NumPy arrays) and its
cache, takes its scratch from the calling thread's (scratch.h), and runs one kernel build
(recurrence_impl.pxi) through its KernelTable (passes.pxd) with pointers. A call that does not
pass, or that this entry does not take (the NumPy backend, array-likes, non-contiguous or
byte-swapped arrays, a batch to reorder by length), returns None: rnnfast.functional then
checks it in Python, which words the error or converts the arguments and comes back here.

``backward_arrays`` is the same backward pass from arrays rather than a cache, for callers that
checked their arrays themselves (rnnfast.torch, a reordered batch in backend.py); it raises on
anything its checks refuse, and can skip dx and the weight gradients.

The switches between the kernels' paths (the step kernel, threads, BLAS's threads, where the
weight gradients go), measured, are ``switches`` (switches.pxi, included here); tests set them
to force a path.
"""
cimport cython
cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset

import numpy as np

from rnnfast._kernels.passes cimport (BackwardPass, ForwardPass, KernelTable, MatmulPass,
                                      SoftmaxPass)

from rnnfast._kernels.buffers import (GEMM_PRODUCTS_MAX_BYTES, backward_fits, batch_order,
                                     forward_fits)
from rnnfast._kernels.builds import COLUMN_PAD, KERNEL, KERNEL_BUILDS
from rnnfast.grads import RNNGrads
from rnnfast.utils.caches import l1_data_cache_bytes, l2_cache_bytes
from rnnfast.utils.threads import available_cores, blas_threads_at_most

cnp.import_array()

__all__ = ["RNNCache", "Switches", "switches", "forward", "backward", "backward_arrays",
           "new_cache", "use_blas", "step_plan", "matmul", "release_scratch",
           "kept_scratch_bytes", "leak_for_every_unit"]


cdef extern from "scratch.h" nogil:
    ctypedef struct rnnfast_scratch:
        pass
    void scratch_begin "rnnfast_scratch_begin"(rnnfast_scratch* s)
    void* scratch_get "rnnfast_scratch_get"(rnnfast_scratch* s, int slot, size_t bytes)
    void scratch_end "rnnfast_scratch_end"(rnnfast_scratch* s)
    void scratch_release_thread "rnnfast_scratch_release_thread"()
    size_t scratch_kept_bytes "rnnfast_scratch_kept_bytes"()


# The scratch slots of a pass (scratch.h keeps each one per thread).
cdef enum Slot:
    SLOT_STEP_MATRIX = 0
    SLOT_ZEROS = 1  # a zero (B, H) state: h0 and dh_n when absent
    SLOT_ACTIVE = 2  # (T,) rows active at each step
    SLOT_DA = 3  # da (T, B, H) of a backward pass; act(a_t) of one step forward
    SLOT_SMALL = 4  # a scalar leak per unit (H,) forward; the carry (B, H) backward
    SLOT_SQUARES = 5  # the norms' float64 squares
    SLOT_PRODUCT_MATRIX = 6  # W_xh in GEMM panels for the products' ranges on our GEMM

# BLAS takes its dimensions as 32-bit ints (rnnfast.utils.validation.MAX_DIM).
cdef Py_ssize_t MAX_DIM = 2147483647
# The step matrix's row length is H rounded up to a multiple of this (builds.py's COLUMN_PAD),
# as a C integer: the calls round in C, not on Python objects.
cdef Py_ssize_t STEP_MATRIX_PAD = COLUMN_PAD


# The switches between the kernels' paths, measured: Switches, switches, and what they decide.
include "switches.pxi"


def matmul(a, b, out, n_threads, bint trans_a=False, bint trans_b=False,
           bint split_columns=False):
    """out = op(a) @ op(b) (op: the transpose where asked) on n_threads of the kernels' team
    (at most the cores), in ranges of out's rows, or with split_columns of its columns; each
    range one GEMM on one BLAS thread. For the GEMMs around the kernels' passes (the output
    layer's, the weight gradients) when n_threads > 1: the pass's team, not a second pool of
    threads. The bits depend on n_threads (the ranges), not on who ran which.

    a, b, out: C-contiguous float32 or float64 arrays of one dtype, 2-D, out (m, n), op(a)
    (m, k), op(b) (k, n). Returns out.
    """
    cdef Switches s = switches
    cdef MatmulPass p
    cdef int typenum
    cdef int threads = n_threads if type(n_threads) is int else -1
    if threads < 1:
        raise ValueError(f"n_threads must be a positive int; got {n_threads!r}")
    if threads > s.cores:
        threads = s.cores
    if type(out) is not cnp.ndarray:
        raise TypeError(f"out must be a NumPy array; got {type(out).__name__}")
    typenum = cnp.PyArray_TYPE(<cnp.ndarray>out)
    if typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE:
        raise TypeError(f"out must be float32 or float64; got {out.dtype}")
    for name, array in (("a", a), ("b", b), ("out", out)):
        if not is_array(array, typenum, 2):
            raise ValueError(f"{name} must be a C-contiguous, aligned 2-D array of out's dtype "
                             f"{out.dtype}; got {getattr(array, 'dtype', type(array).__name__)} "
                             f"with shape {getattr(array, 'shape', None)}")
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
        raise ValueError("out must be writeable")
    if np.may_share_memory(out, a) or np.may_share_memory(out, b):
        raise ValueError("out must not overlap a or b")
    p.m, p.n = out.shape
    p.k = a.shape[0] if trans_a else a.shape[1]
    if ((a.shape[1] if trans_a else a.shape[0]) != p.m
            or (b.shape[1] if trans_b else b.shape[0]) != p.k
            or (b.shape[0] if trans_b else b.shape[1]) != p.n):
        raise ValueError(f"op(a) @ op(b) does not fit out {out.shape}: a {a.shape} "
                         f"(transposed: {trans_a}), b {b.shape} (transposed: {trans_b})")
    p.lda, p.ldb, p.ldc = a.shape[1], b.shape[1], p.n
    p.trans_a, p.trans_b, p.split_columns = trans_a, trans_b, split_columns
    p.A, p.B, p.C = data(a), data(b), data(out)
    p.n_threads = threads
    if p.m == 0 or p.n == 0:
        return out
    if p.k == 0:
        memset(p.C, 0, p.m * p.n * (4 if typenum == cnp.NPY_FLOAT else 8))
        return out
    cap = blas_cap_for(s, p.m * p.n * p.k)
    try:
        with nogil:
            if typenum == cnp.NPY_FLOAT:
                s.table.matmul_f32(&p)
            else:
                s.table.matmul_f64(&p)
    finally:
        if cap is not None:
            cap.__exit__(None, None, None)
    return out


def softmax_cross_entropy(logits, targets, mask, dlogits, nll, double scale, n_threads):
    """The rows of a softmax cross-entropy (rnnfast.nn.softmax_cross_entropy, which checks its
    arguments first and sums nll): for each row r of logits (rows, V) where mask (rows,) is
    set (every row with mask None), nll[r] = -log softmax(logits[r])[targets[r]] and dlogits[r]
    = (softmax(logits[r]) - onehot(targets[r])) * scale; zeros elsewhere. On n_threads of the
    team (None: every core), in row ranges: the bits do not depend on the count.

    logits, dlogits: C-contiguous (rows, V) arrays of one dtype, float32 or float64; targets:
    (rows,) intp, each in [0, V) where it counts; mask: (rows,) bool or None; nll: (rows,)
    float64. Raises ValueError or TypeError on anything else.
    """
    cdef Switches s = switches
    cdef SoftmaxPass p
    cdef int typenum
    cdef Py_ssize_t r
    cdef int threads = thread_count(n_threads, s.cores)
    if threads < 1:
        raise ValueError(f"n_threads must be None or a positive int; got {n_threads!r}")
    if type(logits) is not cnp.ndarray:
        raise TypeError(f"logits must be a NumPy array; got {type(logits).__name__}")
    typenum = cnp.PyArray_TYPE(<cnp.ndarray>logits)
    if typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE:
        raise TypeError(f"logits must be float32 or float64; got {logits.dtype}")
    if not is_array(logits, typenum, 2) or not is_array(dlogits, typenum, 2) \
            or dlogits.shape != logits.shape:
        raise ValueError("logits and dlogits must be C-contiguous 2-D arrays of one shape and "
                         "dtype")
    p.rows, p.V = logits.shape
    if not is_array(targets, cnp.NPY_INTP, 1) or targets.shape[0] != p.rows:
        raise ValueError(f"targets must be a C-contiguous intp array of shape ({p.rows},)")
    if not is_array(nll, cnp.NPY_DOUBLE, 1) or nll.shape[0] != p.rows:
        raise ValueError(f"nll must be a C-contiguous float64 array of shape ({p.rows},)")
    if mask is not None and (not is_array(mask, cnp.NPY_BOOL, 1) or mask.shape[0] != p.rows):
        raise ValueError(f"mask must be None or a C-contiguous bool array of shape ({p.rows},)")
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>dlogits) or \
            not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>nll):
        raise ValueError("dlogits and nll must be writeable")
    if np.may_share_memory(dlogits, logits):
        raise ValueError("dlogits must not overlap logits")
    p.logits, p.dlogits, p.nll = data(logits), data(dlogits), <double*>data(nll)
    p.targets = <const Py_ssize_t*>data(targets)
    p.mask = <const unsigned char*>data(mask)
    for r in range(p.rows):  # the kernel indexes a row by its target
        if (p.mask == NULL or p.mask[r]) and not 0 <= p.targets[r] < p.V:
            raise ValueError(f"targets[{r}] = {p.targets[r]} is out of [0, {p.V})")
    p.scale, p.n_threads = scale, threads
    if p.rows == 0 or p.V == 0:
        return
    with nogil:
        if typenum == cnp.NPY_FLOAT:
            s.table.softmax_f32(&p)
        else:
            s.table.softmax_f64(&p)


def release_scratch():
    """Free the scratch the calling thread keeps between calls (see scratch.h)."""
    scratch_release_thread()


def kept_scratch_bytes():
    """The bytes of scratch the calling thread keeps between calls."""
    return scratch_kept_bytes()


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------
@cython.no_gc
cdef class RNNCache:
    """What rnn_backward needs from a forward pass. Treat it as opaque.

    It keeps references (not copies) to the inputs and to ``out``; do not modify them in place
    between the forward and the backward pass. Only rnn_forward makes one, and its fields are
    read-only: the kernels trust the arrays in it (the backward pass checks their shapes and
    layout again), so a cache built or edited by hand must never reach them (building one
    raises TypeError, assigning a field AttributeError).
    """

    cdef readonly object x, h0, W_xh, W_hh, out, nonlinearity, backend, lengths, leak, act
    cdef readonly object saved, states
    cdef readonly bint has_bias

    # The names of the fields, in the order new_cache takes them (then states, which only the
    # compiled forward pass makes: see run_forward).
    FIELDS = ("x", "h0", "W_xh", "W_hh", "has_bias", "out", "nonlinearity", "backend",
              "lengths", "leak", "act", "saved", "states")

    def __init__(self, *args, **kwargs):
        raise TypeError("an RNNCache is made by rnn_forward only; pass the one it returned")

    def __repr__(self):
        T, B, H = self.out.shape
        return (f"RNNCache(T={T}, B={B}, H={H}, dtype={self.out.dtype}, "
                f"nonlinearity={self.nonlinearity!r}, backend={self.backend!r}, "
                f"leaky={self.leak is not None})")


cdef RNNCache make_cache(object x, object h0, object W_xh, object W_hh, bint has_bias,
                         object out, object nonlinearity, object backend, object lengths,
                         object leak, object act, object saved):
    cdef RNNCache cache = RNNCache.__new__(RNNCache)
    cache.x, cache.h0, cache.W_xh, cache.W_hh, cache.has_bias = x, h0, W_xh, W_hh, has_bias
    cache.out, cache.nonlinearity, cache.backend = out, nonlinearity, backend
    cache.lengths, cache.leak, cache.act, cache.saved = lengths, leak, act, saved
    cache.states = None
    return cache


def new_cache(x, h0, W_xh, W_hh, has_bias, out, nonlinearity, backend, lengths, leak, act,
              saved):
    """The RNNCache of a forward pass made in Python (the NumPy backend, a reordered batch):
    the fields of RNNCache.FIELDS but states. ``saved`` is what that backend's backward needs
    besides."""
    return make_cache(x, h0, W_xh, W_hh, has_bias, out, nonlinearity, backend, lengths, leak,
                      act, saved)


cdef object make_grads(object dx, object dh0, object dW_xh, object dW_hh, object db):
    """RNNGrads(dx, dh0, dW_xh, dW_hh, db), without the Python-level __new__ of a NamedTuple."""
    return tuple.__new__(RNNGrads, (dx, dh0, dW_xh, dW_hh, db))


# ---------------------------------------------------------------------------------------------
# Checks at C level: each says yes or no; the words are rnnfast.functional's.
# ---------------------------------------------------------------------------------------------
cdef inline bint is_array(object a, int typenum, int ndim) noexcept:
    """Whether a is a NumPy array (not a subclass) of typenum in native byte order, with ndim
    dimensions, C-contiguous."""
    if type(a) is not cnp.ndarray:
        return False
    cdef cnp.ndarray array = <cnp.ndarray>a
    return (cnp.PyArray_TYPE(array) == typenum and cnp.PyArray_NDIM(array) == ndim
            and cnp.PyArray_IS_C_CONTIGUOUS(array) and cnp.PyArray_ISNOTSWAPPED(array))


cdef inline bint is_size(Py_ssize_t n) noexcept:
    return 1 <= n <= MAX_DIM


cdef inline bint has_shape(object a, int typenum, Py_ssize_t d0, Py_ssize_t d1,
                           Py_ssize_t d2, int ndim) noexcept:
    """is_array(a, typenum, ndim) with dimensions (d0, d1, d2)[:ndim]."""
    if not is_array(a, typenum, ndim):
        return False
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(<cnp.ndarray>a)
    if dims[0] != d0:
        return False
    if ndim > 1 and dims[1] != d1:
        return False
    return ndim < 3 or dims[2] == d2


cdef inline void* data(object a) noexcept:
    """The first element of an array (NULL for None)."""
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline int thread_count(object n_threads, int cores) noexcept:
    """n_threads (None: every core) as a C int, at most cores; 0 if it is not an int >= 1."""
    if n_threads is None:
        return cores
    if type(n_threads) is not int or n_threads < 1:
        return 0
    return cores if n_threads >= cores else <int>n_threads


cdef inline bint lengths_sorted(object lengths, Py_ssize_t T, Py_ssize_t B) noexcept:
    """Whether lengths (intp (B,)) are non-increasing and within 1..T."""
    cdef const Py_ssize_t* length = <const Py_ssize_t*>data(lengths)
    cdef Py_ssize_t b
    if length[0] > T or length[B - 1] < 1:
        return False
    for b in range(1, B):
        if length[b] > length[b - 1]:
            return False
    return True


cdef inline bint fill_active(Py_ssize_t* active, object lengths, Py_ssize_t T,
                             Py_ssize_t B) noexcept:
    """active[t] = how many sequences run at step t: B, or with lengths (intp (B,), checked
    here to be non-increasing and within 1..T) how many lengths exceed t. False if lengths
    are not such."""
    cdef Py_ssize_t t, running = B
    cdef const Py_ssize_t* length
    if lengths is None:
        for t in range(T):
            active[t] = B
        return True
    if not lengths_sorted(lengths, T, B):
        return False
    length = <const Py_ssize_t*>data(lengths)
    for t in range(T):
        while running > 0 and length[running - 1] <= t:
            running -= 1
        active[t] = running
    return True


cdef inline bint are_lengths(object lengths, Py_ssize_t B) noexcept:
    """Whether lengths is None or an intp array (B,) (its values are checked by fill_active)."""
    return lengths is None or has_shape(lengths, cnp.NPY_INTP, B, 0, 0, 1)


cdef inline int leak_kind(object leak, int typenum, Py_ssize_t H, double* value) noexcept:
    """What a leak argument is: 0 the plain RNN (1, 1.0, or an array of ones), 1 one value
    for every unit (stored in value, as the dtype rounds it), 2 an array (H,) of the dtype
    with every value in (0, 1]; -1 anything else (left to rnnfast.functional)."""
    cdef double v
    cdef Py_ssize_t i
    cdef bint all_one = True
    if type(leak) is float:
        v = <double>leak
        if typenum == cnp.NPY_FLOAT:
            v = <double>(<float>v)
        if not (0 < v <= 1):  # NaN too
            return -1
        value[0] = v
        return 0 if v == 1 else 1
    if type(leak) is int:
        return 0 if leak == 1 else -1
    if not has_shape(leak, typenum, H, 0, 0, 1):
        return -1
    if typenum == cnp.NPY_FLOAT:
        for i in range(H):
            v = (<const float*>data(leak))[i]
            if not (0 < v <= 1):
                return -1
            all_one = all_one and v == 1
    else:
        for i in range(H):
            v = (<const double*>data(leak))[i]
            if not (0 < v <= 1):
                return -1
            all_one = all_one and v == 1
    return 0 if all_one else 2


# One leak for every unit, as a read-only array (H,) per (value, H, dtype) that a program uses,
# kept in its cache; at most this many are remembered.
cdef dict _every_unit_arrays = {}
cdef Py_ssize_t EVERY_UNIT_KEPT = 64


cdef object every_unit(double value, Py_ssize_t H, int typenum):
    key = (value, H, typenum)
    array = _every_unit_arrays.get(key)
    if array is None:
        if len(_every_unit_arrays) >= EVERY_UNIT_KEPT:
            _every_unit_arrays.clear()
        array = np.full(H, value, np.float32 if typenum == cnp.NPY_FLOAT else np.float64)
        array.flags.writeable = False
        _every_unit_arrays[key] = array
    return array


def leak_for_every_unit(value, H, dtype):
    """np.full(H, value, dtype), read-only, made once for the leaks a program uses: the leak
    a cache keeps when one value was given for every unit."""
    return every_unit(value, H, cnp.NPY_FLOAT if np.dtype(dtype) == np.float32
                      else cnp.NPY_DOUBLE)


cdef inline void fill_value(void* buffer, double value, Py_ssize_t n, int typenum) noexcept:
    cdef Py_ssize_t i
    if typenum == cnp.NPY_FLOAT:
        for i in range(n):
            (<float*>buffer)[i] = <float>value
    else:
        for i in range(n):
            (<double*>buffer)[i] = value


# ---------------------------------------------------------------------------------------------
# The memory check, memoised in C: a shape that fitted once fits again.
# ---------------------------------------------------------------------------------------------
ctypedef struct FitKey:
    Py_ssize_t T, B, D, H
    int flags  # the pass, the dtype and the options that change what it allocates


cdef enum:
    FITS_SLOTS = 256

cdef FitKey fitted[FITS_SLOTS]  # zeros (static): no key, since every size is at least 1


cdef inline Py_ssize_t fit_slot(const FitKey* key) noexcept:
    cdef uint64_t h = <uint64_t>key.T * 0x9E3779B97F4A7C15ULL
    h ^= <uint64_t>key.B * 0xC2B2AE3D27D4EB4FULL + <uint64_t>key.D * 0x165667B19E3779F9ULL
    h ^= <uint64_t>key.H * 0x27D4EB2F165667C5ULL + <uint64_t>key.flags
    return <Py_ssize_t>((h ^ (h >> 29)) % FITS_SLOTS)


cdef inline bint seen_fit(const FitKey* key) noexcept:
    cdef const FitKey* slot = &fitted[fit_slot(key)]
    return (slot.T == key.T and slot.B == key.B and slot.D == key.D and slot.H == key.H
            and slot.flags == key.flags)


cdef bint forward_surely_fits(Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H,
                              int typenum, bint has_h0, bint sorted_lengths, bint leaky,
                              bint noise, bint state_noise, bint need_grad):
    """Whether this forward pass surely fits in memory (rnnfast._kernels.buffers), asked of
    Python once per kind of call."""
    cdef FitKey key
    key.T, key.B, key.D, key.H = T, B, D, H
    key.flags = (1 | (typenum == cnp.NPY_DOUBLE) << 1 | has_h0 << 2 | sorted_lengths << 3
                 | leaky << 4 | noise << 5 | state_noise << 6 | need_grad << 7)
    if seen_fit(&key):
        return True
    dtype = np.dtype(np.float32 if typenum == cnp.NPY_FLOAT else np.float64)
    if not forward_fits((T, B, D, H, dtype, has_h0, "sorted" if sorted_lengths else None,
                         leaky, noise, state_noise, need_grad)):
        return False
    fitted[fit_slot(&key)] = key
    return True


cdef bint backward_surely_fits(Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H,
                               int typenum, bint sorted_lengths, bint leaky,
                               bint return_norms):
    cdef FitKey key
    key.T, key.B, key.D, key.H = T, B, D, H
    key.flags = ((typenum == cnp.NPY_DOUBLE) << 1 | sorted_lengths << 3 | leaky << 4
                 | return_norms << 8)
    if seen_fit(&key):
        return True
    dtype = np.dtype(np.float32 if typenum == cnp.NPY_FLOAT else np.float64)
    if not backward_fits((T, B, D, H, dtype, "sorted" if sorted_lengths else None, leaky,
                          return_norms)):
        return False
    fitted[fit_slot(&key)] = key
    return True


# ---------------------------------------------------------------------------------------------
# BLAS's threads during a pass
# ---------------------------------------------------------------------------------------------
cdef object blas_cap(Switches s, Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H):
    """A blas_threads_at_most(1) entered for a pass whose largest GEMM OpenBLAS would thread,
    or None (nothing to do: OpenBLAS keeps every GEMM of the pass on one thread, or one core).
    The caller exits it after the pass."""
    return blas_cap_for(s, T * B * H * (D if D > H else H))


cdef object blas_cap_for(Switches s, Py_ssize_t mnk):
    """blas_cap for calls whose largest GEMM has M * N * K = mnk."""
    if mnk <= s.openblas_single_thread_mnk or s.cores <= 1:
        return None
    cap = blas_threads_at_most(1)
    cap.__enter__()
    return cap


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------
cdef object run_forward(Switches s, int typenum, Py_ssize_t T, Py_ssize_t B, Py_ssize_t D,
                        Py_ssize_t H, object x, object h0, object W_xh, object W_hh, object b,
                        bint relu, int threads, object lengths, int leak_is, double leak_value,
                        object leak, object noise, object state_noise, bint need_grad):
    """The pass on checked arguments: (out, act, states) with act(a_t) (T, B, H) of a leaky
    pass that keeps it, else None. leak_is as leak_kind says (an array in leak when 2); a
    state noise makes a plain pass leaky (leak 1: the same results).

    With need_grad the states go to states (T + 1, B, H), whose row 0 is h0 (or zeros) and
    out is a view of rows 1..T: the backward pass then pairs every da_t with its h_{t-1} in
    one GEMM (dW_hh = da^T @ states[:-1]). Without, out is an array of its own, states None."""
    cdef Py_ssize_t itemsize = 4 if typenum == cnp.NPY_FLOAT else 8
    cdef cnp.npy_intp dims[3]
    cdef ForwardPass p
    cdef rnnfast_scratch scratch
    cdef bint leaky = leak_is != 0 or state_noise is not None
    states = None
    if need_grad:
        dims[0], dims[1], dims[2] = T + 1, B, H
        states = cnp.PyArray_EMPTY(3, dims, typenum, 0)
        out = rows_after_first(states, T, B, H, typenum, itemsize)
        if h0 is None:
            memset(cnp.PyArray_DATA(<cnp.ndarray>states), 0, B * H * itemsize)
        else:
            memcpy(cnp.PyArray_DATA(<cnp.ndarray>states), data(h0), B * H * itemsize)
    dims[0], dims[1], dims[2] = T, B, H
    if not need_grad:
        out = cnp.PyArray_EMPTY(3, dims, typenum, 0)
    act = None
    if leaky and need_grad:
        act = cnp.PyArray_EMPTY(3, dims, typenum, 0)
    p.T, p.B, p.D, p.H = T, B, D, H
    p.x, p.W_xh, p.W_hh, p.b = data(x), data(W_xh), data(W_hh), data(b)
    p.h0, p.out = data(h0 if states is None else states), data(out)
    p.ldm = (H + STEP_MATRIX_PAD - 1) // STEP_MATRIX_PAD * STEP_MATRIX_PAD
    p.relu = relu
    p.n_threads = kernel_threads(s, T, B, H, itemsize, threads)
    p.product_threads = product_threads(s, T * B, D, H, itemsize, threads)
    p.use_blas = blas_steps(s, T, B, H, itemsize)
    p.own_products = own_products(s, p.use_blas, T * B, H, D, itemsize)
    p.alternate = alternate_steps(s, H, itemsize)
    p.align_steps = align_steps(s, T, H, itemsize)
    p.transposed_steps = transposed_steps(s, T, B, H, itemsize)
    p.noise, p.state_noise = data(noise), data(state_noise)
    p.leak, p.act, p.act_step = NULL, NULL, 0
    if leaky:
        p.leak = data(leak) if leak_is == 2 else NULL
        p.act = data(act)
        p.act_step = B * H if need_grad else 0
    p.own_gemm = gemm_steps(s, p.use_blas, H, itemsize)
    s.passes, s.last_threads = s.passes + 1, p.n_threads
    s.last_step = ("gemm" if p.own_gemm else "blas") if p.use_blas else "small"
    cap = blas_cap(s, T, B, D, H)
    scratch_begin(&scratch)
    try:
        p.M = scratch_get(&scratch, SLOT_STEP_MATRIX, H * p.ldm * itemsize)
        p.active = <const Py_ssize_t*>scratch_get(&scratch, SLOT_ACTIVE, T * sizeof(Py_ssize_t))
        p.product_matrix = NULL
        if gemm_products(s, D, H, itemsize, p.product_threads, p.own_products):
            p.product_matrix = scratch_get(&scratch, SLOT_PRODUCT_MATRIX,
                                           D * (H + 64) * itemsize)
            if p.product_matrix == NULL:
                raise MemoryError("rnn_forward: no memory for the pass's scratch")
        if p.M == NULL or p.active == NULL:
            raise MemoryError("rnn_forward: no memory for the pass's scratch")
        if not fill_active(<Py_ssize_t*>p.active, lengths, T, B):
            raise ValueError("lengths must be sorted longest first and within 1..T here")
        if p.h0 == NULL:
            p.h0 = scratch_get(&scratch, SLOT_ZEROS, B * H * itemsize)
            if p.h0 == NULL:
                raise MemoryError("rnn_forward: no memory for a zero state")
            memset(<void*>p.h0, 0, B * H * itemsize)
        if leaky and p.leak == NULL:  # one value for every unit (1 with a state noise only)
            p.leak = scratch_get(&scratch, SLOT_SMALL, H * itemsize)
            if p.leak == NULL:
                raise MemoryError("rnn_forward: no memory for the leak")
            fill_value(<void*>p.leak, leak_value if leak_is == 1 else 1.0, H, typenum)
        if leaky and not need_grad:
            p.act = scratch_get(&scratch, SLOT_DA, B * H * itemsize)
            if p.act == NULL:
                raise MemoryError("rnn_forward: no memory for act(a_t)")
        with nogil:
            if typenum == cnp.NPY_FLOAT:
                s.table.forward_f32(&p)
            else:
                s.table.forward_f64(&p)
    finally:
        scratch_end(&scratch)
        if cap is not None:
            cap.__exit__(None, None, None)
    return out, act, states


cdef object rows_after_first(object states, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
                             int typenum, Py_ssize_t itemsize):
    """states[1:] of a C-contiguous (T + 1, B, H) array, as a view (of states)."""
    cdef cnp.npy_intp dims[3]
    dims[0], dims[1], dims[2] = T, B, H
    view = cnp.PyArray_SimpleNewFromData(3, dims, typenum,
                                         <char*>cnp.PyArray_DATA(<cnp.ndarray>states)
                                         + B * H * itemsize)
    cnp.set_array_base(<cnp.ndarray>view, states)
    return view


def forward(x, h0, W_xh, W_hh, b, nonlinearity, backend, n_threads, lengths, leak, noise,
            state_noise, need_grad):
    """rnnfast.rnn_forward on arguments that need no conversion: (out, cache), (out, None)
    without need_grad, or None when a check fails or the call is not one this entry takes
    (then rnnfast.functional checks and words, or converts and calls again).

    Taken: backend "cython"; x, h0 (or None), W_xh, W_hh, b (or None), noise and state_noise
    (or None) NumPy arrays of one dtype, C-contiguous, native byte order, of matching shapes;
    lengths None or an intp array (B,) sorted longest first; leak 1, a float in (0, 1] or an
    array (H,) of the dtype with values in (0, 1].
    """
    cdef Switches s = switches
    cdef int typenum, threads, leak_is
    cdef Py_ssize_t T, B, D, H
    cdef cnp.npy_intp* dims
    cdef double leak_value = 1
    cdef bint relu, grad, leaky
    if type(backend) is not str or backend != "cython":
        return None
    if type(nonlinearity) is not str:
        return None
    if nonlinearity == "tanh":
        relu = False
    elif nonlinearity == "relu":
        relu = True
    else:
        return None
    if need_grad is True:
        grad = True
    elif need_grad is False:
        grad = False
    else:
        return None
    if type(x) is not cnp.ndarray:
        return None
    typenum = cnp.PyArray_TYPE(<cnp.ndarray>x)
    if (typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE) or not is_array(x, typenum, 3):
        return None
    if not is_array(W_hh, typenum, 2):
        return None
    dims = cnp.PyArray_DIMS(<cnp.ndarray>x)
    T, B, D = dims[0], dims[1], dims[2]
    H = cnp.PyArray_DIMS(<cnp.ndarray>W_hh)[0]
    if not (is_size(T) and is_size(B) and is_size(D) and is_size(H) and T * B <= MAX_DIM):
        return None
    if not (has_shape(W_hh, typenum, H, H, 0, 2) and has_shape(W_xh, typenum, H, D, 0, 2)):
        return None
    if h0 is not None and not has_shape(h0, typenum, B, H, 0, 2):
        return None
    if b is not None and not has_shape(b, typenum, H, 0, 0, 1):
        return None
    if noise is not None and not has_shape(noise, typenum, T, B, H, 3):
        return None
    if state_noise is not None and not has_shape(state_noise, typenum, T, B, H, 3):
        return None
    threads = thread_count(n_threads, s.cores)
    if threads == 0 or not are_lengths(lengths, B):
        return None
    leak_is = leak_kind(leak, typenum, H, &leak_value)
    if leak_is < 0:
        return None
    leaky = leak_is != 0 or state_noise is not None
    if not forward_surely_fits(T, B, D, H, typenum, h0 is not None, lengths is not None,
                               leaky, noise is not None, state_noise is not None, grad):
        return None
    if lengths is not None:
        if not lengths_sorted(lengths, T, B):
            return None
        # A copy of its own: the cache's lengths must stay those of this pass.
        lengths = cnp.PyArray_NewCopy(<cnp.ndarray>lengths, cnp.NPY_CORDER)
    out, act, states = run_forward(s, typenum, T, B, D, H, x, h0, W_xh, W_hh, b, relu,
                                   threads, lengths, leak_is, leak_value, leak, noise,
                                   state_noise, grad)
    if not grad:
        return out, None
    cnp.PyArray_CLEARFLAGS(<cnp.ndarray>out, cnp.NPY_ARRAY_WRITEABLE)
    if leaky:
        if leak_is != 2:
            leak = every_unit(leak_value if leak_is == 1 else 1.0, H, typenum)
    else:
        leak = None
    cache = make_cache(x, h0, W_xh, W_hh, b is not None, out, nonlinearity, backend, lengths,
                       leak, act, None)
    cache.states = states
    return out, cache


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------
cdef object run_backward(Switches s, int typenum, Py_ssize_t T, Py_ssize_t B, Py_ssize_t D,
                         Py_ssize_t H, object dout, object dh_n, object x, object h0,
                         object W_xh, object W_hh, bint has_bias, object out, object act,
                         bint relu, int threads, object lengths, object leak,
                         bint return_norms, bint need_dx, bint need_weight_grads,
                         object states=None):
    """The backward pass on checked arguments: RNNGrads (dx None without need_dx; dW_xh,
    dW_hh and db None without need_weight_grads), and with return_norms (grads, norms).
    states: the forward's (T + 1, B, H) of which out is rows 1..T (see run_forward), or None:
    then h0 (or zeros) and out are apart."""
    cdef Py_ssize_t itemsize = 4 if typenum == cnp.NPY_FLOAT else 8
    cdef cnp.npy_intp dims[3]
    cdef BackwardPass p
    cdef rnnfast_scratch scratch
    cdef Py_ssize_t extra_rows = 0
    cdef Py_ssize_t pass_flops = T * B * H * (D + H)
    # With the products on the team, so are dW_hh and dW_xh (from team_weight_grads_min_hidden).
    cdef int products = product_threads(s, T * B, D, H, itemsize, threads)
    cdef bint weight_grads_in_numpy = (
        need_weight_grads and typenum == cnp.NPY_FLOAT
        and pass_flops >= s.numpy_weight_grads_min_flops
        and (H < s.team_weight_grads_min_hidden or products == 1))
    dims[0], dims[1], dims[2] = T, B, D
    dx = cnp.PyArray_EMPTY(3, dims, typenum, 0) if need_dx else None
    dims[0], dims[1] = B, H
    dh0 = cnp.PyArray_EMPTY(2, dims, typenum, 0)
    dW_xh = dW_hh = db = norms = da = None
    if need_weight_grads:
        dims[0], dims[1] = H, D
        dW_xh = cnp.PyArray_EMPTY(2, dims, typenum, 0)
        dims[0], dims[1] = H, H
        dW_hh = cnp.PyArray_EMPTY(2, dims, typenum, 0)
        if has_bias:
            dims[0] = H
            db = cnp.PyArray_EMPTY(1, dims, typenum, 0)
    if return_norms:
        dims[0], dims[1] = T, B
        norms = cnp.PyArray_EMPTY(2, dims, typenum, 0)
    if weight_grads_in_numpy:  # NumPy reads da after the pass
        dims[0], dims[1], dims[2] = T, B, H
        da = cnp.PyArray_EMPTY(3, dims, typenum, 0)
    p.T, p.B, p.D, p.H = T, B, D, H
    p.dout, p.dh_n, p.x = data(dout), data(dh_n), data(x)
    p.h0 = data(h0 if states is None else states)
    p.W_xh, p.W_hh, p.out = data(W_xh), data(W_hh), data(out)
    p.act = data(act) if leak is not None else data(out)
    p.ldm = (H + STEP_MATRIX_PAD - 1) // STEP_MATRIX_PAD * STEP_MATRIX_PAD
    p.dx, p.dh0, p.db = data(dx), data(dh0), data(db)
    p.dW_xh = NULL if weight_grads_in_numpy else data(dW_xh)
    p.dW_hh = NULL if weight_grads_in_numpy else data(dW_hh)
    p.relu = relu
    p.n_threads = kernel_threads(s, T, B, H, itemsize, threads)
    p.product_threads = products
    p.use_blas = blas_steps(s, T, B, H, itemsize)
    p.own_products = own_products(s, p.use_blas, T * B, H, D, itemsize)
    p.alternate = alternate_steps(s, H, itemsize)
    p.align_steps = align_steps(s, T, H, itemsize)
    p.norms = data(norms)
    p.leak = data(leak)
    p.da, p.squares, p.carry = data(da), NULL, NULL
    if return_norms and p.n_threads > 1:  # two rows per column block: backward_loop_threaded
        extra_rows = 2 * ((H * itemsize + s.table.block_bytes - 1) // s.table.block_bytes)
    p.own_gemm = gemm_steps(s, p.use_blas, H, itemsize)
    s.passes, s.last_threads = s.passes + 1, p.n_threads
    s.last_step = ("gemm" if p.own_gemm else "blas") if p.use_blas else "small"
    cap = blas_cap(s, T, B, D, H)
    scratch_begin(&scratch)
    try:
        p.M = scratch_get(&scratch, SLOT_STEP_MATRIX, H * p.ldm * itemsize)
        p.active = <const Py_ssize_t*>scratch_get(&scratch, SLOT_ACTIVE, T * sizeof(Py_ssize_t))
        if p.da == NULL:
            p.da = scratch_get(&scratch, SLOT_DA, T * B * H * itemsize)
        p.product_matrix = NULL
        if p.dx != NULL and gemm_products(s, D, H, itemsize, p.product_threads,
                                          p.own_products):
            p.product_matrix = scratch_get(&scratch, SLOT_PRODUCT_MATRIX,
                                           H * (D + 64) * itemsize)
            if p.product_matrix == NULL:
                raise MemoryError("rnn_backward: no memory for the pass's scratch")
        if p.M == NULL or p.active == NULL or p.da == NULL:
            raise MemoryError("rnn_backward: no memory for the pass's scratch")
        if not fill_active(<Py_ssize_t*>p.active, lengths, T, B):
            raise ValueError("the cache's lengths are no longer those of its forward pass")
        if p.h0 == NULL or dh_n is None:
            zeros = scratch_get(&scratch, SLOT_ZEROS, B * H * itemsize)
            if zeros == NULL:
                raise MemoryError("rnn_backward: no memory for a zero state")
            memset(zeros, 0, B * H * itemsize)
            if p.h0 == NULL:
                p.h0 = zeros
            if dh_n is None:
                p.dh_n = zeros
        if leak is not None:
            p.carry = scratch_get(&scratch, SLOT_SMALL, B * H * itemsize)
            if p.carry == NULL:
                raise MemoryError("rnn_backward: no memory for the carried gradient")
        if return_norms:
            p.squares = <double*>scratch_get(&scratch, SLOT_SQUARES,
                                             (T + extra_rows) * B * sizeof(double))
            if p.squares == NULL:
                raise MemoryError("rnn_backward: no memory for the norms")
        with nogil:
            if typenum == cnp.NPY_FLOAT:
                s.table.backward_f32(&p)
            else:
                s.table.backward_f64(&p)
    finally:
        scratch_end(&scratch)
        if cap is not None:
            cap.__exit__(None, None, None)
    if weight_grads_in_numpy:
        with blas_threads_at_most(1):
            if states is not None:
                weight_grads_from_states(da, x, states, dW_xh, dW_hh)
            else:
                weight_grads(da, x, np.zeros((B, H), da.dtype) if h0 is None else h0, out,
                             dW_xh, dW_hh)
    grads = make_grads(dx, dh0, dW_xh, dW_hh, db)
    return (grads, norms) if return_norms else grads


def weight_grads_from_states(da, x, states, dW_xh, dW_hh):
    """dW_xh = sum_t da_t^T x_t and dW_hh = sum_t da_t^T h_{t-1}, h_{t-1} = states[t]: two GEMMs
    over all T*B rows."""
    T, B, H = da.shape
    rows = da.reshape(T * B, H).T
    np.matmul(rows, x.reshape(T * B, -1), out=dW_xh)
    np.matmul(rows, states[:T].reshape(T * B, H), out=dW_hh)


def weight_grads(da, x, h0, out, dW_xh, dW_hh):
    """dW_xh = sum_t da_t^T x_t and dW_hh = sum_t da_t^T h_{t-1}, as GEMMs over all T*B rows."""
    T, B, H = da.shape
    np.matmul(da.reshape(T * B, H).T, x.reshape(T * B, -1), out=dW_xh)
    np.matmul(da[0].T, h0, out=dW_hh)  # step 0 pairs with h0
    if T > 1:
        dW_hh += da[1:].reshape(-1, H).T @ out[:-1].reshape(-1, H)  # steps 1..T-1, out[0..T-2]


cdef inline int check_cached(RNNCache c, int* typenum, Py_ssize_t* T, Py_ssize_t* B,
                             Py_ssize_t* D, Py_ssize_t* H) noexcept:
    """The arrays of a cache checked again (their layout and shapes, which an in-place reshape
    could have changed): 1 if they are a forward pass's, with its sizes stored; 0 if not."""
    if type(c.out) is not cnp.ndarray:
        return 0
    typenum[0] = cnp.PyArray_TYPE(<cnp.ndarray>c.out)
    if typenum[0] != cnp.NPY_FLOAT and typenum[0] != cnp.NPY_DOUBLE:
        return 0
    if not (is_array(c.out, typenum[0], 3) and is_array(c.x, typenum[0], 3)):
        return 0
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(<cnp.ndarray>c.out)
    T[0], B[0], H[0] = dims[0], dims[1], dims[2]
    D[0] = cnp.PyArray_DIMS(<cnp.ndarray>c.x)[2]
    if not (has_shape(c.x, typenum[0], T[0], B[0], D[0], 3)
            and has_shape(c.W_hh, typenum[0], H[0], H[0], 0, 2)
            and has_shape(c.W_xh, typenum[0], H[0], D[0], 0, 2)
            and (c.h0 is None or has_shape(c.h0, typenum[0], B[0], H[0], 0, 2))
            and (c.leak is None or (has_shape(c.leak, typenum[0], H[0], 0, 0, 1)
                                    and has_shape(c.act, typenum[0], T[0], B[0], H[0], 3)))
            and are_lengths(c.lengths, B[0])):
        return 0
    if c.states is not None and not (
            has_shape(c.states, typenum[0], T[0] + 1, B[0], H[0], 3)
            and <char*>data(c.out) == <char*>data(c.states) + B[0] * H[0]
            * (4 if typenum[0] == cnp.NPY_FLOAT else 8)):
        return 0
    return 1


def backward(dout, cache, dh_n, n_threads, return_norms):
    """rnnfast.rnn_backward on arguments that need no conversion: RNNGrads, or (grads, norms)
    with return_norms; None when a check fails or the call is not one this entry takes (a
    cache of the NumPy backend or of a reordered batch)."""
    cdef Switches s = switches
    cdef RNNCache c
    cdef int typenum, threads
    cdef Py_ssize_t T, B, D, H
    cdef bint norms
    if type(cache) is not RNNCache:
        return None
    c = <RNNCache>cache
    if c.backend != "cython" or c.saved is not None:
        return None
    if return_norms is True:
        norms = True
    elif return_norms is False:
        norms = False
    else:
        return None
    if not check_cached(c, &typenum, &T, &B, &D, &H):
        return None
    if not has_shape(dout, typenum, T, B, H, 3):
        return None
    if dh_n is not None and not has_shape(dh_n, typenum, B, H, 0, 2):
        return None
    threads = thread_count(n_threads, s.cores)
    if threads == 0:
        return None
    if not backward_surely_fits(T, B, D, H, typenum, c.lengths is not None, c.leak is not None,
                                norms):
        return None
    return run_backward(s, typenum, T, B, D, H, dout, dh_n, c.x, c.h0, c.W_xh, c.W_hh,
                        c.has_bias, c.out, c.act, c.nonlinearity == "relu", threads, c.lengths,
                        c.leak, norms, True, True, c.states)


def backward_arrays(dout, dh_n, x, h0, W_xh, W_hh, bint has_bias, out, act, nonlinearity,
                    n_threads, lengths, leak, bint return_norms, bint need_dx=True,
                    bint need_weight_grads=True):
    """The backward pass of a forward pass given by its arrays (no cache), for callers that
    checked them: dout (T, B, H), dh_n (B, H) or None, x, h0 (or None), W_xh, W_hh, out and
    (a leaky pass's, else None) act and leak (H,) as the forward pass had them, lengths None
    or intp (B,) sorted longest first. need_dx=False skips dx, need_weight_grads=False the
    weight gradients (their GEMMs): None in their places. Raises ValueError naming what the
    C-level checks refuse (an internal error: the callers check first)."""
    cdef Switches s = switches
    cdef int typenum, threads
    cdef Py_ssize_t T, B, D, H
    if not is_array(out, cnp.NPY_FLOAT, 3) and not is_array(out, cnp.NPY_DOUBLE, 3):
        raise ValueError("backward_arrays: out must be a C-contiguous float array (T, B, H)")
    typenum = cnp.PyArray_TYPE(<cnp.ndarray>out)
    T, B, H = out.shape
    if not is_array(x, typenum, 3):
        raise ValueError("backward_arrays: x must be a C-contiguous array (T, B, D) of out's "
                         "dtype")
    D = x.shape[2]
    for name, array, d0, d1, d2, ndim in (
            ("dout", dout, T, B, H, 3), ("x", x, T, B, D, 3), ("W_hh", W_hh, H, H, 0, 2),
            ("W_xh", W_xh, H, D, 0, 2), ("h0", h0, B, H, 0, 2), ("dh_n", dh_n, B, H, 0, 2),
            ("leak", leak, H, 0, 0, 1), ("act", act if leak is not None else None, T, B, H, 3)):
        if (array is not None or name in ("dout", "x", "W_hh", "W_xh")) and not has_shape(
                array, typenum, d0, d1, d2, ndim):
            raise ValueError(f"backward_arrays: {name} must be a C-contiguous array of out's "
                             f"dtype with shape {(d0, d1, d2)[:ndim]}")
    if not are_lengths(lengths, B) or (lengths is not None and not lengths_sorted(lengths, T, B)):
        raise ValueError("backward_arrays: lengths must be None or intp (B,), sorted longest "
                         "first, within 1..T")
    threads = thread_count(n_threads, s.cores)
    if threads == 0:
        raise ValueError(f"backward_arrays: n_threads must be None or an int >= 1; got "
                         f"{n_threads!r}")
    return run_backward(s, typenum, T, B, D, H, dout, dh_n, x, h0, W_xh, W_hh, has_bias, out,
                        act, nonlinearity == "relu", threads, lengths, leak, return_norms,
                        need_dx, need_weight_grads)
