"""The functional API: rnn_forward and rnn_backward, for both backends.

Validation, casting to contiguous arrays and backend dispatch happen here, once; the backends
(rnnfast.reference and the Cython kernels) trust what they receive.
"""
import operator
from typing import NamedTuple, Optional

import numpy as np

from rnnfast._kernels import backend as _cython_backend
from rnnfast import reference
from rnnfast.grads import RNNGrads
from rnnfast.utils.threads import resolve_n_threads
from rnnfast.utils.validation import (MAX_DIM, check_allocation, check_bool, check_choice,
                                 check_lengths, check_same_dtype, check_shape, contiguous,
                                 copy_size, float_array, native_dtype, surely_fits)

NONLINEARITIES = ("tanh", "relu")
_INTP = np.dtype(np.intp)
_LAYOUTS = {"x": ("T", "B", "D"), "W_hh": ("H", "H"), "W_xh": ("H", "D"), "h0": ("B", "H"),
            "b": ("H",), "dout": ("T", "B", "H"), "dh_n": ("B", "H")}
BACKENDS = {"cython": _cython_backend, "numpy": reference}

__all__ = ["RNNCache", "RNNGrads", "rnn_forward", "rnn_backward", "NONLINEARITIES", "BACKENDS"]


class RNNCache(NamedTuple):
    """What rnn_backward needs from a forward pass. Treat it as opaque.

    It keeps references (not copies) to the inputs and to ``out``; do not modify them in place
    between the forward and the backward pass. rnn_backward refuses a cache whose fields were
    replaced (``cache._replace(...)``) or that was built by hand.
    """

    x: np.ndarray
    h0: Optional[np.ndarray]
    W_xh: np.ndarray
    W_hh: np.ndarray
    has_bias: bool
    out: np.ndarray
    nonlinearity: str
    backend: str
    saved: object  # what the backend keeps for its backward pass, sealed (see _Sealed)


def rnn_forward(x, h0, W_xh, W_hh, b, *, nonlinearity="tanh", backend="cython", n_threads=None,
                lengths=None):
    """Run a single-layer Elman RNN over a whole sequence.

    h_t = act(W_xh x_t + W_hh h_{t-1} + b) for t = 1..T, with vectors as rows of a batch.

    Parameters
    ----------
    x : array_like, shape (T, B, D)
        Inputs, time-major: T steps, B sequences, D features.
    h0 : array_like, shape (B, H), or None
        Initial hidden state; None means zeros.
    W_xh : array_like, shape (H, D)
        Input-to-hidden weights (``weight_ih_l0`` in ``torch.nn.RNN``).
    W_hh : array_like, shape (H, H)
        Hidden-to-hidden weights (``weight_hh_l0``).
    b : array_like, shape (H,), or None
        Bias (``bias_ih_l0 + bias_hh_l0``); None means no bias.
    nonlinearity : {"tanh", "relu"}
    backend : {"cython", "numpy"}
        "cython" runs the compiled kernels; "numpy" the step-by-step reference. Same results.
    n_threads : int or None
        Threads to use, in the kernels and in BLAS; None (the default) means every available
        core. Steps too small to share gain nothing and run on one. Results are the same for
        every thread count up to rounding.
    lengths : array_like of int, shape (B,), or None
        Variable-length batches: sequence b runs for lengths[b] steps (1 <= lengths[b] <= T).
        After that its state stays as it was (its final state is ``out[lengths[b] - 1, b]``),
        its outputs are zeros and the gradients on them are ignored; ``dh_n`` reaches it at
        its last step. The kernels skip the finished rows.

    All arrays must share one dtype, float32 or float64, which is the dtype of the computation
    and of every result. Array-likes are converted with NumPy; non-contiguous and read-only
    arrays are accepted and never modified.

    Returns
    -------
    out : ndarray, shape (T, B, H)
        Hidden states; ``out[t]`` is the state after step t+1, so ``out[-1]`` is the final state.
        It is read-only, because the cache keeps it for the backward pass; copy it to modify it.
    cache : RNNCache
        Pass to ``rnn_backward``.

    Raises
    ------
    TypeError
        A non-floating dtype, arrays of different dtypes, or an ``n_threads`` that is not an int.
    ValueError
        A wrong number of dimensions, a shape that does not match, a dimension of size 0, more
        than 2**31 - 1 rows T*B, an unknown ``nonlinearity`` or ``backend``, or ``n_threads``
        below 1.
    """
    check_choice(nonlinearity, "nonlinearity", NONLINEARITIES)
    check_choice(backend, "backend", tuple(BACKENDS))
    n_threads = resolve_n_threads(n_threads)
    x, h0, W_xh, W_hh, b = check_forward_inputs(x, h0, W_xh, W_hh, b)
    dtype = x.dtype
    T, B, D = x.shape
    H = W_hh.shape[0]
    if lengths is not None:
        lengths = check_lengths(lengths, B, T)
    # At most: copies of every input, out and the reordered x and out, the step matrix, states.
    if not surely_fits(dtype.itemsize * (3 * T * B * (D + H) + H * (2 * H + D + 18) + 2 * B * H)
                       + 8 * (T + 3 * B)):
        inputs = {"x": x, "W_hh": W_hh, "W_xh": W_xh, "h0": h0, "b": b}
        copies = [copy_size(array, name, _LAYOUTS[name])
                  for name, array in inputs.items() if array is not None]
        check_allocation("rnn_forward", copies + _forward_buffers(T, B, D, H, dtype, h0, lengths),
                         "split the sequence into chunks or the batch into smaller ones")
    x, W_hh, W_xh = contiguous(x), contiguous(W_hh), contiguous(W_xh)
    h0 = None if h0 is None else contiguous(h0)
    b = None if b is None else contiguous(b)
    if lengths is not None:
        lengths = lengths.astype(np.intp)
    out, saved = BACKENDS[backend].forward(x, h0, W_xh, W_hh, b, nonlinearity, n_threads, lengths)
    out.flags.writeable = False
    fields = (x, h0, W_xh, W_hh, b is not None, out, nonlinearity, backend)
    return out, RNNCache(*fields, _Sealed(saved, fields))


def check_forward_inputs(x, h0, W_xh, W_hh, b):
    """The arrays of an rnn_forward call, checked as rnn_forward checks them: float32/float64,
    one dtype, matching shapes, T*B rows within BLAS's range. Returned as NumPy arrays but not
    copied (views as given, maybe non-contiguous): everything is checked before anything is
    copied or allocated, since a zero-stride view may stand for terabytes.
    """
    x = float_array(x, "x", _LAYOUTS["x"])
    W_hh = float_array(W_hh, "W_hh", _LAYOUTS["W_hh"])
    W_xh = float_array(W_xh, "W_xh", _LAYOUTS["W_xh"])
    h0 = None if h0 is None else float_array(h0, "h0", _LAYOUTS["h0"])
    b = None if b is None else float_array(b, "b", _LAYOUTS["b"])
    check_same_dtype({"x": x, "h0": h0, "W_xh": W_xh, "W_hh": W_hh, "b": b})
    T, B, D = x.shape
    H = W_hh.shape[0]
    if T * B > MAX_DIM:  # the kernels' GEMMs run over all T*B rows at once
        raise ValueError(f"x has T * B = {T} * {B} = {T * B} rows (shape {x.shape}); at most "
                         f"{MAX_DIM} are supported: split the sequence into chunks")
    check_shape(W_hh, "W_hh", ("H", "H"), (H, H), "(square)")
    check_shape(W_xh, "W_xh", ("H", "D"), (H, D), "(H from W_hh, D from x)")
    if h0 is not None:
        check_shape(h0, "h0", ("B", "H"), (B, H), "(B from x, H from W_hh)")
    if b is not None:
        check_shape(b, "b", ("H",), (H,), "(H from W_hh)")
    return x, h0, W_xh, W_hh, b


def rnn_backward(dout, cache, dh_n=None, *, n_threads=None, return_norms=False):
    """Backpropagate through time: gradients of the loss with respect to every input.

    Parameters
    ----------
    dout : array_like, shape (T, B, H)
        dL/d``out``: the gradient on every hidden state the forward pass returned.
    cache : RNNCache
        From the ``rnn_forward`` call being differentiated; its backend is used.
    dh_n : array_like, shape (B, H), or None
        An extra gradient on the final state (from the next chunk in truncated BPTT).
    n_threads : int or None
        As in ``rnn_forward``.
    return_norms : bool
        Also return the per-step gradient norms (see Returns), measured inside the backward
        time loop. False (the default) returns the gradients alone and costs nothing.

    ``dout`` and ``dh_n`` must have the dtype of the forward pass.

    Returns
    -------
    grads : RNNGrads
        ``(dx, dh0, dW_xh, dW_hh, db)``, each shaped like its input; ``db`` is None when the
        forward pass had no bias; ``dh0`` is returned also when h0 was None (zeros).
    norms : ndarray, shape (T, B), only with ``return_norms=True``
        ``norms[t, b]`` = ||dL/dh_t|| for sequence b, the Euclidean norm over the H units of the
        whole gradient reaching the state ``out[t, b]``: ``dout[t, b]``, plus what flows back
        from step t+1 (and ``dh_n[b]`` at the sequence's last step), before the product with
        act'. How gradients vanish or explode along the sequence. With ``lengths``, 0 past a
        sequence's end (no state there). The dtype of the computation; for float32 the squares
        are summed in float64, so exploding or vanishing gradients (beyond 1e19 or below 1e-19,
        whose float32 squares would overflow or underflow) still get their norms.

    Raises
    ------
    TypeError
        ``cache`` is not an RNNCache, ``dout``/``dh_n`` are not float arrays of the forward's
        dtype, ``n_threads`` is not an int, or ``return_norms`` is not a bool.
    ValueError
        ``dout``/``dh_n`` do not have the shapes of the forward's output and final state, or
        ``n_threads`` is below 1.
    """
    _check_cache(cache)
    n_threads = resolve_n_threads(n_threads)
    return_norms = check_bool(return_norms, "return_norms")
    T, B, H = cache.out.shape
    D = cache.x.shape[2]
    dout = float_array(dout, "dout", _LAYOUTS["dout"])
    check_shape(dout, "dout", ("T", "B", "H"), (T, B, H), "(the shape of the forward output)")
    if dh_n is not None:
        dh_n = float_array(dh_n, "dh_n", _LAYOUTS["dh_n"])
        check_shape(dh_n, "dh_n", ("B", "H"), (B, H), "(the shape of the final state)")
    for name, array in (("dout", dout), ("dh_n", dh_n)):
        if array is not None and native_dtype(array) != cache.out.dtype:
            raise TypeError(f"{name} must have the dtype of the forward pass, "
                            f"{cache.out.dtype}; got {array.dtype}")
    saved = cache.saved.backend_saved
    # At most: copies of dout and dh_n, da, dx, both reordered, the weight gradients, states.
    if not surely_fits(cache.out.itemsize * (3 * T * B * (D + H) + H * (2 * H + D + 16)
                                             + 5 * B * H)):
        copies = [copy_size(array, name, _LAYOUTS[name])
                  for name, array in (("dout", dout), ("dh_n", dh_n)) if array is not None]
        check_allocation("rnn_backward",
                         copies + _backward_buffers(T, B, D, H, cache.out.dtype, saved),
                         "split the sequence into chunks or the batch into smaller ones")
    dout = contiguous(dout)
    dh_n = None if dh_n is None else contiguous(dh_n)
    return BACKENDS[cache.backend].backward(
        dout, dh_n, cache.x, cache.h0, cache.W_xh, cache.W_hh, cache.has_bias, cache.out,
        cache.nonlinearity, n_threads, saved, return_norms,
    )


# ---------------------------------------------------------------------------------------------
# What a pass allocates (for check_allocation), and the checks of a cache.
# ---------------------------------------------------------------------------------------------
def _forward_buffers(T, B, D, H, dtype, h0, lengths):
    """The buffers a forward pass allocates, as the Cython backend does (the NumPy reference
    allocates less: no step matrix, only per-step temporaries beside out)."""
    buffers = [("out (T, B, H)", (T, B, H), dtype),
               ("the step matrix (H, H + padding)", (H, H + 15), dtype),
               ("the rows active at each step (T,)", (T,), _INTP)]
    if h0 is None:
        buffers.append(("a zero initial state (B, H)", (B, H), dtype))
    if lengths is not None:
        buffers.append(("lengths, their order and its inverse (3, B)", (3, B), _INTP))
        if np.any(lengths[1:] > lengths[:-1]):  # the batch is reordered by length
            buffers += [("x in length order (T, B, D)", (T, B, D), dtype),
                        ("out in length order (T, B, H)", (T, B, H), dtype)]
    return buffers


def _backward_buffers(T, B, D, H, dtype, saved):
    """The buffers a backward pass allocates, as the Cython backend does."""
    buffers = [("da (T, B, H)", (T, B, H), dtype), ("dx (T, B, D)", (T, B, D), dtype),
               ("dW_xh (H, D)", (H, D), dtype), ("dW_hh (H, H)", (H, H), dtype),
               ("the step matrix (H, H + padding)", (H, H + 15), dtype),
               ("dh0 and two zero states (3, B, H)", (3, B, H), dtype)]
    if isinstance(saved, _cython_backend._Saved) and saved.batch.order is not None:
        buffers += [("dout in length order (T, B, H)", (T, B, H), dtype),
                    ("dx in the caller's order (T, B, D)", (T, B, D), dtype)]
    return buffers


class _Sealed(NamedTuple):
    """RNNCache.saved: what the backend saved, and the fields rnn_forward put in the cache.

    The kernels trust the cache's arrays (their shapes, dtype and layout): a cache edited by
    hand (``cache._replace(x=...)``) or built from parts must not reach them. Comparing each
    field with the one recorded here, by identity, tells the original apart in a microsecond.
    """

    backend_saved: object
    fields: tuple


def _check_cache(cache):
    """Raise unless cache is an RNNCache exactly as rnn_forward returned it."""
    if not isinstance(cache, RNNCache):
        raise TypeError(f"cache must be the RNNCache returned by rnn_forward; "
                        f"got {type(cache).__name__}")
    seal = cache.saved
    if type(seal) is not _Sealed:
        raise ValueError("cache is not as rnn_forward returned it: its field saved was "
                         "replaced; pass the cache itself")
    if not all(map(operator.is_, seal.fields, cache)):  # runs on every call: no list first
        edited = [name for name, kept, given in zip(RNNCache._fields, seal.fields, cache)
                  if kept is not given]
        raise ValueError(f"cache is not as rnn_forward returned it: its field "
                         f"{', '.join(edited)} was replaced; pass the cache itself")
