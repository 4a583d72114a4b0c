"""The functional API: rnn_forward and rnn_backward, for both backends.

Validation, casting to contiguous arrays and backend dispatch happen here, once; the backends
(rnnfast.reference and the Cython kernels) trust what they receive.
"""
import numbers

import numpy as np

from rnnfast._kernels import backend as _cython_backend
from rnnfast._kernels import entry as _entry
from rnnfast._kernels.buffers import backward_fits, forward_fits
from rnnfast._kernels.entry import RNNCache
from rnnfast import reference
from rnnfast.grads import RNNGrads
from rnnfast.utils.memory import check_allocation
from rnnfast.utils.threads import resolve_n_threads
from rnnfast.utils.validation import (MAX_DIM, check_bool, check_choice, check_lengths,
                                      check_same_dtype, check_shape, contiguous, copy_size,
                                      float_array, native_dtype)

NONLINEARITIES = ("tanh", "relu")
_LAYOUTS = {"x": ("T", "B", "D"), "W_hh": ("H", "H"), "W_xh": ("H", "D"), "h0": ("B", "H"),
            "b": ("H",), "dout": ("T", "B", "H"), "dh_n": ("B", "H"), "leak": ("H",),
            "noise": ("T", "B", "H"), "state_noise": ("T", "B", "H")}
BACKENDS = {"cython": _cython_backend, "numpy": reference}
_ADVICE = "split the sequence into chunks or the batch into smaller ones"

__all__ = ["RNNCache", "RNNGrads", "rnn_forward", "rnn_backward", "NONLINEARITIES", "BACKENDS"]


def rnn_forward(x, h0, W_xh, W_hh, b, *, nonlinearity="tanh", backend="cython", n_threads=None,
                lengths=None, leak=1.0, noise=None, state_noise=None, need_grad=True):
    """Run a single-layer Elman RNN over a whole sequence.

    h_t = act(W_xh x_t + W_hh h_{t-1} + b) for t = 1..T, with vectors as rows of a batch; with a
    leak alpha and noise, h_t = (1 - alpha) h_{t-1} + alpha act(a_t) + state_noise_t, where
    a_t = W_xh x_t + W_hh h_{t-1} + b + noise_t.

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
    leak : float or array_like, shape (H,)
        alpha, the weight of the new activation in each step, in (0, 1]: one for every unit (a
        real number, cast to the dtype) or one per unit (an array of the dtype of x); alpha =
        dt / tau for a discretised continuous-time network. 1 (the default) is the plain RNN,
        bit for bit and at its cost. A leaky pass keeps act(a_t) for the backward pass: one
        more (T, B, H) array, held by the cache.
    noise : array_like, shape (T, B, H), or None
        Added to the pre-activation a_t (Yang et al. 2019's placement); it folds into the input
        projection, so it costs one addition per element. A constant for the gradients (which
        equal dL/db per step: ``db`` is their sum).
    state_noise : array_like, shape (T, B, H), or None
        Added to the state after the leak (PsychRNN's placement). A constant for the gradients;
        since act(a_t) is then not h_t, a pass with it runs as a leaky one (with leak 1 if none
        is given: the same results, the memory of a leaky pass).
    need_grad : bool
        False: return the states only, keep nothing for a backward pass (no cache, no act(a_t)
        of a leaky pass: a (B, H) scratch for it instead), at the plain forward's cost per
        step. For long runs of a fixed network, as in reservoir computing.

    All arrays must share one dtype, float32 or float64, which is the dtype of the computation
    and of every result. Array-likes are converted with NumPy; non-contiguous and read-only
    arrays are accepted and never modified.

    Returns
    -------
    out : ndarray, shape (T, B, H)
        Hidden states; ``out[t]`` is the state after step t+1, so ``out[-1]`` is the final state.
        It is read-only, because the cache keeps it for the backward pass; copy it to modify it
        (with ``need_grad=False`` it is the caller's own, writable).
    cache : RNNCache, or None with ``need_grad=False``
        Pass to ``rnn_backward``.

    Raises
    ------
    TypeError
        A non-floating dtype, arrays of different dtypes, an ``n_threads`` that is not an int, a
        ``leak`` that is neither a real number nor a float array, or a ``need_grad`` that is
        not a bool.
    ValueError
        A wrong number of dimensions, a shape that does not match, a dimension of size 0, more
        than 2**31 - 1 rows T*B, an unknown ``nonlinearity`` or ``backend``, ``n_threads``
        below 1, or a ``leak`` outside (0, 1] (NaN included).
    MemoryError
        The call's buffers cannot fit in this machine's memory (said before any is allocated).
    """
    fast = _entry.forward(x, h0, W_xh, W_hh, b, nonlinearity, backend, n_threads, lengths, leak,
                          noise, state_noise, need_grad)
    if fast is not None:  # arrays that needed no conversion, checked in compiled code
        return fast
    check_choice(nonlinearity, "nonlinearity", NONLINEARITIES)
    check_choice(backend, "backend", tuple(BACKENDS))
    n_threads = resolve_n_threads(n_threads)
    if need_grad is not True:
        need_grad = check_bool(need_grad, "need_grad")
    x, h0, W_xh, W_hh, b = check_forward_inputs(x, h0, W_xh, W_hh, b)
    dtype = native_dtype(x)  # x may still be a view in the other byte order
    T, B, D = x.shape
    H = W_hh.shape[0]
    if lengths is not None:
        lengths = check_lengths(lengths, B, T)
    leak = check_leak(leak, H, dtype)
    if noise is not None or state_noise is not None:
        noise, state_noise = _check_noises(noise, state_noise, x, H)
        if state_noise is not None and leak is None:  # act(a_t) is not h_t: a leaky pass
            leak = _entry.leak_for_every_unit(1.0, H, dtype)
    buffers = (T, B, D, H, dtype, h0 is not None, _cython_backend.batch_order(lengths),
               leak is not None, noise is not None, state_noise is not None, need_grad)
    # The inputs' copies at most: x, W_hh, W_xh, h0, b and leak, the noises.
    inputs = (T * B * D + H * (H + D + B + 2)
              + T * B * H * ((noise is not None) + (state_noise is not None)))
    if not forward_fits(buffers, inputs):
        kept, scratch = _cython_backend.forward_buffers(*buffers)
        _check_memory("rnn_forward", _FORWARD_INPUTS, (x, W_hh, W_xh, h0, b, noise, state_noise),
                      kept + scratch)
    x, W_hh, W_xh = contiguous(x), contiguous(W_hh), contiguous(W_xh)
    h0 = None if h0 is None else contiguous(h0)
    b = None if b is None else contiguous(b)
    noise = None if noise is None else contiguous(noise)
    state_noise = None if state_noise is None else contiguous(state_noise)
    if lengths is not None:
        lengths = lengths.astype(np.intp)
    if backend == "cython":
        return _cython_backend.forward(x, h0, W_xh, W_hh, b, nonlinearity, n_threads, lengths,
                                       leak, noise, state_noise, need_grad)
    out, saved = reference.forward(x, h0, W_xh, W_hh, b, nonlinearity, n_threads, lengths, leak,
                                   noise, state_noise, need_grad)
    if not need_grad:
        return out, None
    out.flags.writeable = False
    return out, _entry.new_cache(x, h0, W_xh, W_hh, b is not None, out, nonlinearity, backend,
                                 lengths, leak, None, saved)


def check_leak(leak, H, dtype):
    """leak as the kernels take it: None for the plain RNN (leak 1), else a C-contiguous (H,)
    array of dtype with every value in (0, 1]. A real number is cast to dtype and given to
    every unit; an array must be (H,) and of dtype. Raises TypeError or ValueError naming leak.
    """
    if (type(leak) is float or type(leak) is int) and leak == 1:  # the default, first and fast
        return None
    if isinstance(leak, numbers.Real) and not isinstance(leak, (bool, np.bool_)):
        value = float(dtype.type(leak))  # as the kernels see it (0.1 differs in float32)
        if not 0 < value <= 1:  # NaN too
            check_leak_values(np.asarray(value), leak)  # raises, saying so
        return None if value == 1 else _entry.leak_for_every_unit(value, H, dtype)
    array = float_array(leak, "leak", _LAYOUTS["leak"])
    check_shape(array, "leak", _LAYOUTS["leak"], (H,), "(H from W_hh)")
    if native_dtype(array) != dtype:
        raise TypeError(f"leak must have the dtype of the other arrays, {dtype}, or be a "
                        f"number; got {array.dtype}")
    # NaN if any is NaN; as Python floats, whose comparisons cost a tenth of NumPy scalars'.
    smallest, largest = float(np.minimum.reduce(array)), float(np.maximum.reduce(array))
    if not (0 < smallest and largest <= 1):
        check_leak_values(array)
    return None if smallest == 1 else contiguous(array)


def check_leak_values(values, given=None):
    """Raise ValueError unless every value of the array is in (0, 1]; given: the number the
    caller passed, if the array is that number cast to the computation's dtype."""
    bad = ~((values > 0) & (values <= 1))  # NaN is bad too
    if not bad.any():
        return
    where = np.flatnonzero(bad)[0]
    what = f"{given!r}" if given is not None else f"{values.flat[where]} (unit {where})"
    rounded = " (as the computation's dtype)" if given is not None and given > 0 else ""
    raise ValueError(f"leak must be in (0, 1], the weight of act(a_t) in each step; got "
                     f"{what}{rounded}")


def _check_noises(noise, state_noise, x, H):
    """noise and state_noise (each None or array_like (T, B, H) of x's dtype), checked and
    returned as NumPy arrays, not copied."""
    T, B, _ = x.shape
    checked = []
    for name, value in (("noise", noise), ("state_noise", state_noise)):
        if value is not None:
            value = float_array(value, name, _LAYOUTS[name])
            check_shape(value, name, _LAYOUTS[name], (T, B, H), "(T and B from x, H from W_hh)")
            if native_dtype(value) != native_dtype(x):
                raise TypeError(f"{name} must have the dtype of x, {native_dtype(x)}; got "
                                f"{value.dtype}")
        checked.append(value)
    return checked


_FORWARD_INPUTS = ("x", "W_hh", "W_xh", "h0", "b", "noise", "state_noise")
_BACKWARD_INPUTS = ("dout", "dh_n")


def _check_memory(caller, names, arrays, buffers):
    """MemoryError before anything is allocated if the contiguous copies of the arrays (each
    None or a checked array, named by names) and buffers (description, shape, np.dtype) cannot
    fit in this machine, naming the largest."""
    copies = [copy_size(array, name, _LAYOUTS[name]) for name, array in zip(names, arrays)
              if array is not None]
    check_allocation(caller, copies + buffers, _ADVICE)


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

    A leaky pass's gradients include the leak: dL/dh_t gets (1 - alpha) dL/dh_{t+1} beside
    W_hh^T da_{t+1}, and da_t = alpha dL/dh_t act'(a_t) (the norms measure the whole of it).

    Raises
    ------
    TypeError
        ``cache`` is not an RNNCache (or None, from ``need_grad=False``), ``dout``/``dh_n`` are not float arrays of the forward's
        dtype, ``n_threads`` is not an int, or ``return_norms`` is not a bool.
    ValueError
        ``dout``/``dh_n`` do not have the shapes of the forward's output and final state, or
        ``n_threads`` is below 1.
    """
    fast = _entry.backward(dout, cache, dh_n, n_threads, return_norms)
    if fast is not None:  # arrays that needed no conversion, checked in compiled code
        return fast
    _check_cache(cache)
    n_threads = resolve_n_threads(n_threads)
    return_norms = check_bool(return_norms, "return_norms")
    T, B, H = cache.out.shape
    D = cache.x.shape[2]
    dtype = cache.out.dtype
    dout = float_array(dout, "dout", _LAYOUTS["dout"])
    check_shape(dout, "dout", ("T", "B", "H"), (T, B, H), "(the shape of the forward output)")
    if dh_n is not None:
        dh_n = float_array(dh_n, "dh_n", _LAYOUTS["dh_n"])
        check_shape(dh_n, "dh_n", ("B", "H"), (B, H), "(the shape of the final state)")
    for name, array in (("dout", dout), ("dh_n", dh_n)):
        if array is not None and native_dtype(array) != dtype:
            raise TypeError(f"{name} must have the dtype of the forward pass, "
                            f"{dtype}; got {array.dtype}")
    buffers = (T, B, D, H, dtype, _cython_backend.batch_order(cache.lengths),
               cache.leak is not None, return_norms)
    if not backward_fits(buffers, T * B * H + B * H):  # the copies of dout, dh_n at most
        _check_memory("rnn_backward", _BACKWARD_INPUTS, (dout, dh_n),
                      _cython_backend.backward_buffers(*buffers))
    dout = contiguous(dout)
    dh_n = None if dh_n is None else contiguous(dh_n)
    if cache.backend == "cython":
        return _cython_backend.backward(dout, cache, dh_n, n_threads, return_norms)
    return reference.backward(dout, dh_n, cache.x, cache.h0, cache.W_xh, cache.W_hh,
                              cache.has_bias, cache.out, cache.nonlinearity, n_threads,
                              cache.saved, return_norms, cache.leak)


def _check_cache(cache):
    """Raise TypeError unless cache is an RNNCache (which only rnn_forward makes)."""
    if type(cache) is not RNNCache:
        hint = " (rnn_forward returns None with need_grad=False)" if cache is None else ""
        raise TypeError(f"cache must be the RNNCache returned by rnn_forward; "
                        f"got {type(cache).__name__}{hint}")
