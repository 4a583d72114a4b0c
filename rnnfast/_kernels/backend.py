"""The fast backend: rnnfast.functional's Cython backend, on arguments it has checked.

Every pass runs in the compiled entry (rnnfast/_kernels/entry.pyx: allocation, scratch, the
kernels). This module adds what the entry leaves to Python: a batch whose lengths do not come
longest first is sorted by length for the kernels (their active rows at each step are then a
prefix) and put back in the caller's order afterwards. It also gathers the names the rest of
the package uses: the kernel builds (builds.py), the buffer lists the memory checks derive from
(buffers.py) and the switches between the kernels' paths (entry.py's ``switches``).
"""
from typing import NamedTuple

import numpy as np

from rnnfast._kernels import entry as _entry
from rnnfast._kernels.buffers import (backward_buffers, batch_order, forward_buffers,
                                      step_matrix_shape)
from rnnfast._kernels import numpy_blas  # noqa: F401 (points the weight gradients' sgemm)
from rnnfast._kernels.builds import KERNEL, KERNEL_BUILDS
from rnnfast._kernels.entry import (RNNCache, align_small_steps, matmul, softmax_cross_entropy,
                                    step_plan, switches, transposed_small_steps, use_blas)

__all__ = ["forward", "backward", "forward_buffers", "backward_buffers", "batch_order",
           "step_matrix_shape", "KERNEL", "KERNEL_BUILDS", "RNNCache", "matmul",
           "softmax_cross_entropy", "step_plan", "switches", "use_blas", "align_small_steps",
           "transposed_small_steps"]


class _Reordered(NamedTuple):
    """What the backward pass of a reordered batch needs beyond the cache: the order (sorted
    row -> original row), its inverse, and the cache of the pass the kernels ran, on the batch
    sorted by length (its x, h0, out, act and lengths in that order)."""

    order: np.ndarray
    inverse: np.ndarray
    sorted_pass: RNNCache


def _rows(array, order, axis):
    """array with its batch axis reordered (a copy), or None for None."""
    return None if array is None else np.take(array, order, axis=axis)


def forward(x, h0, W_xh, W_hh, b, nonlinearity, n_threads, lengths=None, leak=None, noise=None,
            state_noise=None, need_grad=True):
    """(out (T, B, H), cache) of a forward pass (cache None without need_grad).

    Arguments as rnnfast.functional.rnn_forward has checked and converted them: arrays
    C-contiguous in native byte order, n_threads an int, lengths None or intp (B,), leak None
    (the plain RNN) or (H,) in (0, 1].
    """
    leak_argument = 1.0 if leak is None else leak
    if lengths is None or batch_order(lengths) == "sorted":
        result = _entry.forward(x, h0, W_xh, W_hh, b, nonlinearity, "cython", n_threads,
                                lengths, leak_argument, noise, state_noise, need_grad)
        if result is None:
            raise RuntimeError("internal error: the compiled entry refused checked arguments")
        return result
    order = np.argsort(-lengths, kind="stable")
    inverse = np.argsort(order)
    out, sorted_pass = forward(_rows(x, order, 1), _rows(h0, order, 0), W_xh, W_hh, b,
                               nonlinearity, n_threads, lengths[order], leak,
                               _rows(noise, order, 1), _rows(state_noise, order, 1), need_grad)
    # The caller's row order for the user; the sorted arrays stay for the backward pass.
    out = _rows(out, inverse, 1)
    if not need_grad:
        return out, None
    out.flags.writeable = False
    return out, _entry.new_cache(x, h0, W_xh, W_hh, b is not None, out, nonlinearity,
                                 "cython", lengths, sorted_pass.leak, None,
                                 _Reordered(order, inverse, sorted_pass))


def backward(dout, cache, dh_n=None, n_threads=1, return_norms=False, need_dx=True,
             need_weight_grads=True):
    """RNNGrads, and with return_norms also norms (T, B), of the pass that made ``cache``
    (rnnfast.functional.rnn_backward), dout and dh_n checked and contiguous. need_dx=False
    skips dx, need_weight_grads=False the weight gradients (None in their places)."""
    reordered = cache.saved
    if reordered is None:
        return _entry.backward_arrays(dout, dh_n, cache.x, cache.h0, cache.W_xh, cache.W_hh,
                                      cache.has_bias, cache.out, cache.act, cache.nonlinearity,
                                      n_threads, cache.lengths, cache.leak, return_norms,
                                      need_dx, need_weight_grads)
    order, inverse, sorted_pass = reordered
    result = backward(_rows(dout, order, 1), sorted_pass, _rows(dh_n, order, 0), n_threads,
                      return_norms, need_dx, need_weight_grads)
    grads, norms = result if return_norms else (result, None)
    grads = grads._replace(dx=_rows(grads.dx, inverse, 1), dh0=_rows(grads.dh0, inverse, 0))
    return (grads, _rows(norms, inverse, 1)) if return_norms else grads
