"""The fast backend: allocation around the whole-pass Cython kernels (recurrence_impl.pxi).

Each pass is one call into compiled code without the GIL: the input projection and the weight
gradients as single GEMMs over all T*B rows, and the time loop between them. This module only
allocates the outputs and the scratch buffers, and chooses the step path; what it allocates is
listed by forward_buffers and backward_buffers, from which rnnfast.functional checks that a
call fits in memory. Inputs arrive validated and C-contiguous from rnnfast.functional.
"""
import os
from typing import NamedTuple, Optional

import numpy as np

from rnnfast._kernels import recurrence as _recurrence
from rnnfast.grads import RNNGrads
from rnnfast.utils.threads import available_cores, blas_threads_at_most


def _kernel_builds():
    """The compiled builds of the kernels that this machine can run, by name."""
    builds = {"baseline": _recurrence}
    try:
        from rnnfast._kernels import recurrence_avx2 as _recurrence_avx2
    except ImportError:  # not built: a platform other than x86-64
        pass
    else:
        if _recurrence.cpu_has_avx2_fma():
            builds["avx2"] = _recurrence_avx2
    return builds


KERNEL_BUILDS = _kernel_builds()
# The fastest build this processor runs; RNNFAST_KERNEL=baseline forces the portable one.
KERNEL = os.environ.get("RNNFAST_KERNEL") or ("avx2" if "avx2" in KERNEL_BUILDS else "baseline")
if KERNEL not in KERNEL_BUILDS:
    raise ImportError(f"RNNFAST_KERNEL={KERNEL!r} is not available on this machine; "
                      f"choose one of {', '.join(KERNEL_BUILDS)}")

# The switch between the two step paths, measured on a 2-core AMD EPYC (AVX2) against
# OpenBLAS, one thread, float32 and float64, B = 1..64 and H = 32..512: the micro-kernel wins
# every step of fewer than 32 rows in float32 and 16 in float64 (BLAS's per-call and packing
# costs are not repaid), whatever H, except where it must stream a W_hh larger than the L2
# cache more than once per step (it reads M once per group of 6, 4, 2 or 1 rows).
# The one place this switch lives.
BLAS_MIN_BATCH = {np.dtype(np.float32): 32, np.dtype(np.float64): 16}
L2_CACHE_BYTES = 1 << 20


def _specialisations(kernel):
    """The kernels' float32 and float64 versions, to call directly: Cython's dispatch on the
    argument types costs microseconds per call, as much as a whole short sequence."""
    module = KERNEL_BUILDS[kernel]
    return ({np.dtype(np.float32): module.forward_pass["float"],
             np.dtype(np.float64): module.forward_pass["double"]},
            {np.dtype(np.float32): module.backward_pass["float"],
             np.dtype(np.float64): module.backward_pass["double"]})


_FORWARD, _BACKWARD = _specialisations(KERNEL)
_NO_BIAS = {np.dtype(np.float32): np.empty(0, np.float32),
            np.dtype(np.float64): np.empty(0, np.float64)}
# What the backward kernel takes for "no norms": no work, no allocation.
_NO_NORMS = {np.dtype(np.float32): np.empty((0, 0), np.float32),
             np.dtype(np.float64): np.empty((0, 0), np.float64)}
_NO_SQUARES = np.empty((0, 0), np.float64)
_INTP, _FLOAT64 = np.dtype(np.intp), np.dtype(np.float64)  # in the buffer lists
# The narrowest column block of any build, in bytes: scratch sized by it fits every build.
_MIN_BLOCK_BYTES = min(module.BLOCK_BYTES for module in KERNEL_BUILDS.values())

# Small steps are shared among threads only from this many multiply-adds (B * H * H) up: below,
# the barrier that ends every step costs more than the second core saves. On 2 cores with BLAS
# idle, forward+backward ran 1.1-1.5x faster from 128K multiply-adds per step; but BLAS workers
# left spinning by an earlier NumPy call (OpenBLAS keeps them busy for a while) take the second
# core from a step's barrier, and then 2 threads ran 1.6x slower at 128K. From 1M on (B=1,
# H=1024; B=4, H=512; B=16, H=256) a step is long enough to absorb that.
THREADS_MIN_STEP_FLOPS = 1 << 20

# Inside a pass BLAS (the input projection, dx, the steps of large batches) runs on one thread:
# OpenBLAS wakes its workers for every GEMM, which cost more than they gave back here (2-5x
# slower at 1000,1,16,64), and they must not spin on the cores of the kernel's own threads.
# OpenBLAS itself keeps a GEMM with M * N * K up to 65536 * GEMM_MULTITHREAD_THRESHOLD (4, its
# default) on one thread: passes whose GEMMs are all that small skip the thread-count calls,
# which would otherwise cost a tenth of a forward + backward at T = 25.
OPENBLAS_SINGLE_THREAD_MNK = 65536 * 4

# The weight gradients reduce over all T*B rows (dW = da^T @ inputs). From this many
# multiply-adds (T * B * H * (D + H)) on, they go to NumPy's BLAS after the pass: the OpenBLAS
# that NumPy ships ran these transposed GEMMs 1.2-2x faster than SciPy's here (0.3.31 against
# 0.3.30, both measured on this machine), which repays NumPy's few microseconds of per-call
# cost. Below, they stay inside the kernel's call. From BLAS_THREADS_MIN_PASS_FLOPS on they get
# n_threads BLAS threads.
NUMPY_WEIGHT_GRADS_MIN_FLOPS = 1 << 20
BLAS_THREADS_MIN_PASS_FLOPS = 1 << 24


def use_blas(B, H, dtype):
    """Whether a (B, H) step in dtype goes to BLAS rather than the small-step kernel."""
    if B >= BLAS_MIN_BATCH[dtype]:
        return True
    passes_over_W_hh = B // 6 + (B % 6) // 4 + (B % 6 % 4) // 2 + B % 2
    return passes_over_W_hh > 1 and H * H * dtype.itemsize > L2_CACHE_BYTES


def step_plan(B, H, dtype, n_threads):
    """How (B, H) steps run: (use_blas, kernel_threads).

    With threads to spare and steps big enough to share, the micro-kernel runs on n_threads
    (OpenMP over column blocks) whatever the batch: calling a threaded BLAS once per step from
    the loop fought NumPy's BLAS workers for the cores (100,32,128,128 forward+backward took
    43 ms on 2 threads against 17 ms on one). Otherwise one thread, and the step switch.
    """
    # More threads than cores would make every step's barrier wait for a descheduled thread.
    n_threads = min(n_threads, available_cores())
    if n_threads > 1 and B * H * H >= THREADS_MIN_STEP_FLOPS:
        return False, n_threads
    return use_blas(B, H, dtype), 1


def _blas_threads_in_pass(T, B, D, H):
    """BLAS's thread cap inside a pass: one, unless OpenBLAS keeps every GEMM of it on one
    thread anyway (then no cap, and no cost)."""
    largest_gemm = T * B * H * max(D, H)
    return 1 if largest_gemm > OPENBLAS_SINGLE_THREAD_MNK else available_cores()


def step_matrix_shape(H):
    """The shape of the kernels' step matrix, W_hh^T or W_hh with its rows zero-padded to a
    multiple of COLUMN_PAD (a whole number of micro-kernel column blocks)."""
    return (H, H + -H % _recurrence.COLUMN_PAD)


def _step_scratch(H, dtype):
    """Scratch for the step matrix (see step_matrix_shape)."""
    return np.empty(step_matrix_shape(H), dtype=dtype)


class _Sorted(NamedTuple):
    """A batch reordered by length, longest first, for the kernels (their active rows at each
    step are then a prefix); None stands for "already in that order"."""

    order: Optional[np.ndarray]  # sorted row -> original row
    inverse: Optional[np.ndarray]  # original row -> sorted row
    active: np.ndarray  # (T,) rows still running at each step, in the sorted order


def _sort_by_length(T, B, lengths):
    if lengths is None:
        return _Sorted(None, None, np.full(T, B, dtype=np.intp))
    order = np.argsort(-lengths, kind="stable")
    # active[t] = how many lengths exceed t, by binary search in the sorted lengths: O(T + B)
    # memory (a (T, B) comparison table would be larger than out when H is small).
    ended = np.searchsorted(lengths[order[::-1]], np.arange(T), side="right")
    active = (B - ended).astype(np.intp)
    if np.all(order == np.arange(B)):
        return _Sorted(None, None, active)
    return _Sorted(order, np.argsort(order), active)


class _Saved(NamedTuple):
    """What backward needs beyond the cache: the batch order, for a reordered batch the inputs
    and states in the kernels' (sorted) order, and for a leaky pass act(a_t) (in that order)."""

    batch: _Sorted
    x: Optional[np.ndarray] = None
    h0: Optional[np.ndarray] = None
    out: Optional[np.ndarray] = None
    act: Optional[np.ndarray] = None


def _rows(array, order, axis):
    """array with its batch axis reordered (a copy), or array itself for no order."""
    return array if order is None or array is None else np.take(array, order, axis=axis)


def forward(x, h0, W_xh, W_hh, b, nonlinearity, n_threads, lengths=None, leak=None, noise=None,
            state_noise=None, need_grad=True):
    """Returns out (T, B, H) and what backward needs beyond the inputs (None without need_grad).

    leak (H,) or None (the plain RNN); noise and state_noise (T, B, H) or None; see
    rnnfast.functional.rnn_forward. Without need_grad nothing is kept: a leaky pass writes
    act(a_t) to one (B, H) scratch instead of a (T, B, H) buffer, and a reordered batch's
    sorted copies are dropped.
    """
    T, B, D = x.shape
    H = W_hh.shape[0]
    dtype = x.dtype
    batch = _sort_by_length(T, B, lengths)
    x_s, h0_s = _rows(x, batch.order, 1), _rows(h0, batch.order, 0)
    out = np.empty((T, B, H), dtype=dtype)
    if h0_s is None:
        h0_s = np.zeros((B, H), dtype=dtype)
    act = None
    if leak is not None:  # act(a_t) for the backward pass, or scratch for one step
        act = np.empty((T if need_grad else 1, B, H), dtype=dtype)
    blas_steps, threads = step_plan(B, H, dtype, n_threads)
    with blas_threads_at_most(_blas_threads_in_pass(T, B, D, H)):
        _FORWARD[dtype](x_s, h0_s, W_xh, W_hh, _NO_BIAS[dtype] if b is None else b, out,
                        _step_scratch(H, dtype), batch.active, nonlinearity == "relu",
                        blas_steps, threads, leak, act, _rows(noise, batch.order, 1),
                        _rows(state_noise, batch.order, 1))
    if batch.order is None:
        return out, (_Saved(batch, act=act) if need_grad else None)
    # The caller's row order for the user; the sorted arrays stay for the backward pass.
    return _rows(out, batch.inverse, 1), (_Saved(batch, x_s, h0_s, out, act) if need_grad
                                          else None)


def batch_order(lengths):
    """How the kernels take a batch with these lengths (an array, or None): None without
    lengths; "sorted" when they come longest first already; "reordered" when the batch is
    sorted by length for the kernels and back."""
    if lengths is None:
        return None
    return "reordered" if np.any(lengths[1:] > lengths[:-1]) else "sorted"


def forward_buffers(T, B, D, H, dtype, h0=True, order=None, leaky=False, noise=False,
                    state_noise=False, need_grad=True):
    """What ``forward`` allocates for these arguments: two lists of (description, shape,
    np.dtype), what it returns or keeps for the backward pass, and what it frees before
    returning (inputs arrive contiguous: their copies are the caller's). h0, noise,
    state_noise: whether they are given; order: batch_order(lengths).

    These lists (and backward_buffers') add up buffers that are not all alive at once (a
    sorted copy is freed before the caller's order is restored): their total is an upper
    bound of a pass's peak, by less than their largest buffer (tests/test_memory.py measures
    both)."""
    kept = [("out (T, B, H)", (T, B, H), dtype)]
    scratch = [("the step matrix (H, H padded)", step_matrix_shape(H), dtype),
               ("the rows active at each step (T,)", (T,), _INTP)]
    if leaky:
        if need_grad:
            kept.append(("act(a_t) for the backward pass (T, B, H)", (T, B, H), dtype))
        else:
            scratch.append(("act(a_t) of one step (B, H)", (B, H), dtype))
    if not h0:
        scratch.append(("a zero initial state (B, H)", (B, H), dtype))
    if order is not None:
        scratch.append(("lengths, their order and its inverse (3, B)", (3, B), _INTP))
    if order == "reordered":  # the kernels see the batch sorted by length
        sorted_copies = kept if need_grad else scratch
        sorted_copies += [("x in length order (T, B, D)", (T, B, D), dtype),
                          ("out in length order (T, B, H)", (T, B, H), dtype)]
        if noise:
            scratch.append(("noise in length order (T, B, H)", (T, B, H), dtype))
        if state_noise:
            scratch.append(("state_noise in length order (T, B, H)", (T, B, H), dtype))
    return kept, scratch


def backward_buffers(T, B, D, H, dtype, order=None, leaky=False, return_norms=False):
    """What ``backward`` allocates (for a forward pass with this batch order and leak), as
    (description, shape, np.dtype), the gradients it returns included (see forward_buffers)."""
    buffers = [("da (T, B, H)", (T, B, H), dtype), ("dx (T, B, D)", (T, B, D), dtype),
               ("dW_xh (H, D)", (H, D), dtype), ("dW_hh (H, H)", (H, H), dtype),
               ("the step matrix (H, H padded)", step_matrix_shape(H), dtype),
               ("dh0, db, a zero state (2 * B + 1, H)", (2 * B + 1, H), dtype)]
    # (The (H, H) temporary of the weight gradients in NumPy comes after the step matrix has
    # been freed, in its room.)
    if leaky:
        buffers.append(("the gradient carried past W_hh (B, H)", (B, H), dtype))
    if return_norms:
        buffers += [("norms (T, B)", (T, B), dtype),
                    ("their float64 squares (T + 2 * column blocks, B)",
                     (T + _threaded_square_rows(H, dtype), B), _FLOAT64)]
    if order == "reordered":
        buffers += [("dout in length order (T, B, H)", (T, B, H), dtype),
                    ("dx in the caller's order (T, B, D)", (T, B, D), dtype),
                    ("dh_n and dh0 reordered (2, B, H)", (2, B, H), dtype)]
        if return_norms:
            buffers.append(("the norms in the caller's order (T, B)", (T, B), dtype))
    return buffers


def _threaded_square_rows(H, dtype):
    """The rows of squares that threaded small steps add: two per column block (see
    backward_loop_threaded), counted for the narrowest block of any build."""
    return 2 * -(-H * dtype.itemsize // _MIN_BLOCK_BYTES)


def _norm_buffers(T, B, H, dtype, threads):
    """norms (T, B) and the kernel's float64 scratch for them: each step's sums of squares
    (T rows of B), and on threaded small steps more rows (_threaded_square_rows)."""
    extra_rows = _threaded_square_rows(H, dtype) if threads > 1 else 0
    return np.empty((T, B), dtype=dtype), np.empty((T + extra_rows, B), np.float64)


def backward(dout, dh_n, x, h0, W_xh, W_hh, has_bias, out, nonlinearity, n_threads,
             saved=None, return_norms=False, leak=None):
    """RNNGrads, and with return_norms also norms (T, B): ||dL/dh_t|| for each step and
    sequence, 0 past a sequence's end (see rnnfast.functional.rnn_backward). leak: the forward
    pass's, (H,) or None."""
    T, B, D = x.shape
    H = W_hh.shape[0]
    dtype = x.dtype
    saved = saved if saved is not None else _Saved(_sort_by_length(T, B, None))
    batch = saved.batch
    if batch.order is not None:  # the kernels work in the sorted order
        x, h0, out = saved.x, saved.h0, saved.out
        dout, dh_n = _rows(dout, batch.order, 1), _rows(dh_n, batch.order, 0)
    zeros_BH = np.zeros((B, H), dtype=dtype) if dh_n is None or h0 is None else None
    dx = np.empty_like(x)
    dh0 = np.empty((B, H), dtype=dtype)
    dW_xh = np.empty_like(W_xh)
    dW_hh = np.empty_like(W_hh)
    db = np.empty(H, dtype=dtype) if has_bias else _NO_BIAS[dtype]
    h0 = zeros_BH if h0 is None else h0
    da = np.empty_like(out)
    carry = None if leak is None else np.empty((B, H), dtype=dtype)
    weight_grads_in_numpy = T * B * H * (D + H) >= NUMPY_WEIGHT_GRADS_MIN_FLOPS
    blas_steps, threads = step_plan(B, H, dtype, n_threads)
    if return_norms:
        norms, squares = _norm_buffers(T, B, H, dtype, threads)
    else:
        norms, squares = _NO_NORMS[dtype], _NO_SQUARES
    with blas_threads_at_most(_blas_threads_in_pass(T, B, D, H)):
        _BACKWARD[dtype](
            dout, zeros_BH if dh_n is None else dh_n, x, h0, W_xh, W_hh, out, da,
            _step_scratch(H, dtype), dx, dh0, dW_xh, dW_hh, db, batch.active,
            nonlinearity == "relu", blas_steps, threads, not weight_grads_in_numpy, norms,
            squares, leak, saved.act, carry,
        )
    if weight_grads_in_numpy:
        threaded = T * B * H * (D + H) >= BLAS_THREADS_MIN_PASS_FLOPS
        with blas_threads_at_most(n_threads if threaded else 1):
            _weight_grads(da, x, h0, out, dW_xh, dW_hh)
    dx, dh0 = _rows(dx, batch.inverse, 1), _rows(dh0, batch.inverse, 0)
    grads = RNNGrads(dx, dh0, dW_xh, dW_hh, db if has_bias else None)
    if return_norms:
        return grads, _rows(norms, batch.inverse, 1)
    return grads


def _weight_grads(da, x, h0, out, dW_xh, dW_hh):
    """dW_xh = sum_t da_t^T x_t and dW_hh = sum_t da_t^T h_{t-1}, as GEMMs over all T*B rows."""
    T, B, H = da.shape
    np.matmul(da.reshape(T * B, H).T, x.reshape(T * B, -1), out=dW_xh)
    np.matmul(da[0].T, h0, out=dW_hh)  # step 0 pairs with h0
    if T > 1:
        dW_hh += da[1:].reshape(-1, H).T @ out[:-1].reshape(-1, H)  # steps 1..T-1, out[0..T-2]
