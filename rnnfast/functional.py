"""The functional API: rnn_forward and rnn_backward, for both backends.

Validation, casting to contiguous arrays and backend dispatch happen here, once; the backends
(rnnfast.reference and the Cython kernels) trust what they receive.
"""
from typing import NamedTuple, Optional

import numpy as np

from rnnfast import _cython_backend, reference
from rnnfast._grads import RNNGrads
from rnnfast._threads import resolve_n_threads
from rnnfast._validation import (MAX_DIM, as_float_array, check_bool, check_choice,
                                 check_lengths, check_same_dtype, check_shape)

NONLINEARITIES = ("tanh", "relu")
BACKENDS = {"cython": _cython_backend, "numpy": reference}

__all__ = ["RNNCache", "RNNGrads", "rnn_forward", "rnn_backward", "NONLINEARITIES", "BACKENDS"]


class RNNCache(NamedTuple):
    """What rnn_backward needs from a forward pass. Treat it as opaque.

    It keeps references (not copies) to the inputs and to ``out``; do not modify them in place
    between the forward and the backward pass.
    """

    x: np.ndarray
    h0: Optional[np.ndarray]
    W_xh: np.ndarray
    W_hh: np.ndarray
    has_bias: bool
    out: np.ndarray
    nonlinearity: str
    backend: str
    saved: object  # what the backend keeps for its backward pass


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
    x = as_float_array(x, "x", ("T", "B", "D"))
    W_hh = as_float_array(W_hh, "W_hh", ("H", "H"))
    W_xh = as_float_array(W_xh, "W_xh", ("H", "D"))
    h0 = None if h0 is None else as_float_array(h0, "h0", ("B", "H"))
    b = None if b is None else as_float_array(b, "b", ("H",))
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

    if lengths is not None:
        lengths = check_lengths(lengths, B, T)
    out, saved = BACKENDS[backend].forward(x, h0, W_xh, W_hh, b, nonlinearity, n_threads, lengths)
    out.flags.writeable = False
    cache = RNNCache(x, h0, W_xh, W_hh, b is not None, out, nonlinearity, backend, saved)
    return out, cache


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
    if not isinstance(cache, RNNCache):
        raise TypeError(f"cache must be the RNNCache returned by rnn_forward; "
                        f"got {type(cache).__name__}")
    n_threads = resolve_n_threads(n_threads)
    return_norms = check_bool(return_norms, "return_norms")
    T, B, H = cache.out.shape
    dout = as_float_array(dout, "dout", ("T", "B", "H"))
    check_shape(dout, "dout", ("T", "B", "H"), (T, B, H), "(the shape of the forward output)")
    if dh_n is not None:
        dh_n = as_float_array(dh_n, "dh_n", ("B", "H"))
        check_shape(dh_n, "dh_n", ("B", "H"), (B, H), "(the shape of the final state)")
    for name, array in (("dout", dout), ("dh_n", dh_n)):
        if array is not None and array.dtype != cache.out.dtype:
            raise TypeError(f"{name} must have the dtype of the forward pass, "
                            f"{cache.out.dtype}; got {array.dtype}")
    return BACKENDS[cache.backend].backward(
        dout, dh_n, cache.x, cache.h0, cache.W_xh, cache.W_hh, cache.has_bias, cache.out,
        cache.nonlinearity, n_threads, cache.saved, return_norms,
    )
