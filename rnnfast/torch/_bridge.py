"""Every call the PyTorch front end makes into rnnfast's kernels, in one place.

The front end validates its tensors itself (rnnfast.torch._checks) and hands NumPy views of
them here, so this module adds no checks of its own: what arrives is C-contiguous, of one dtype (float32
or float64), with matching shapes, T*B within BLAS's range, and ``lengths`` (if any) sorted
longest first. The kernels run without bounds checks and trust all of that.

It calls the compiled entry of the kernels (rnnfast._kernels.entry) directly rather than
rnnfast.functional: a torch operator's forward and backward are separate calls that exchange
only tensors, so the backward starts from saved arrays, not from an RNNCache, and the
validation rnn_forward and rnn_backward do on every call has already been done once for the
whole layer. The entry still checks, at C level, what the kernels rely on (a few nanoseconds
per array): a forward it does not take goes through rnnfast.rnn_forward, whose message says
why; a backward it refuses raises.
"""
import functools

import numpy as np

from rnnfast._kernels import backend as _backend
from rnnfast._kernels import entry as _entry
from rnnfast.functional import rnn_forward
from rnnfast.utils.memory import buffer_bytes, check_allocation, surely_fits
from rnnfast.utils.validation import MAX_DIM

__all__ = ["forward", "backward", "check_memory", "MAX_DIM"]


def forward(x, h0, W_xh, W_hh, b, nonlinearity, n_threads, lengths):
    """The states h_1..h_T of one direction of one layer, as rnnfast.rnn_forward computes them.

    Parameters
    ----------
    x : ndarray (T, B, D); h0 : ndarray (B, H) or None (zeros); W_xh : ndarray (H, D);
    W_hh : ndarray (H, H); b : ndarray (H,) or None
    nonlinearity : {"tanh", "relu"}
    n_threads : int >= 1
    lengths : ndarray of intp (B,), non-increasing, values in 1..T, or None

    Returns
    -------
    out : ndarray (T, B, H), a new array; rows past a sequence's end are zeros.
    """
    result = _entry.forward(x, h0, W_xh, W_hh, b, nonlinearity, "cython", n_threads, lengths,
                            1.0, None, None, False)
    if result is None:  # not expected: the checked, converted path says what is wrong
        result = rnn_forward(x, h0, W_xh, W_hh, b, nonlinearity=nonlinearity,
                             n_threads=n_threads, lengths=lengths, need_grad=False)
    return result[0]


def backward(dout, dh_n, x, h0, W_xh, W_hh, has_bias, out, nonlinearity, n_threads, lengths,
             need_dx=True, need_weight_grads=True):
    """Backprop through time of one ``forward`` call, from its inputs and states.

    dout (T, B, H) and dh_n (B, H) or None are the gradients on ``out`` and on the final
    states; the other arguments are those of the forward call and its ``out``. Returns
    rnnfast's RNNGrads (dx, dh0, dW_xh, dW_hh, db), new arrays (db None without bias).

    need_dx=False skips dx (its GEMM), need_weight_grads=False dW_xh, dW_hh and db (theirs):
    None in their places.
    """
    return _entry.backward_arrays(dout, dh_n, x, h0, W_xh, W_hh, has_bias, out, None,
                                  nonlinearity, n_threads, lengths, None, False, need_dx,
                                  need_weight_grads)


def check_memory(caller, T, B, D, H, directions, itemsize):
    """MemoryError before any work if a layer's forward + backward cannot fit in this machine.

    The buffers are the backend's own lists (what each direction's forward keeps and its
    backward allocates) and the layer's output; a shape seen before costs one lookup.
    """
    buffers = _layer_buffers(T, B, D, H, directions, itemsize)
    if not _fits(buffers):
        check_allocation(caller, list(buffers),
                         "split the sequence into chunks or the batch into smaller ones")


@functools.lru_cache(maxsize=1024)
def _layer_buffers(T, B, D, H, directions, itemsize):
    dtype = np.dtype(np.float32 if itemsize == 4 else np.float64)
    kept, scratch = _backend.forward_buffers(T, B, D, H, dtype)
    per_direction = kept + _backend.backward_buffers(T, B, D, H, dtype)
    buffers = [(f"{what}, for each direction", (directions,) + shape, kind)
               for what, shape, kind in per_direction] + scratch
    buffers.append(("the output (T, B, num_directions * H)", (T, B, directions * H), dtype))
    if directions == 2:
        buffers.append(("the reversed input and its gradient (2, T, B, D)", (2, T, B, D), dtype))
    return tuple(buffers)


@functools.lru_cache(maxsize=1024)
def _fits(buffers):
    return surely_fits(sum(buffer_bytes(shape, kind) for _, shape, kind in buffers))
