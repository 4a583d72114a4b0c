"""The NumPy reference: forward and backprop through time, one step at a time, as in the math.

This is the textbook algorithm, written to be read beside the equations (see DESIGN.md):

    a_t = W_xh x_t + W_hh h_{t-1} + b,      h_t = act(a_t)

and, going backwards with g_t = dL/dh_t from the output at step t,

    dh_t = g_t + W_hh^T da_{t+1},   da_t = dh_t * act'(a_t),
    dW_hh += da_t h_{t-1}^T,  dW_xh += da_t x_t^T,  db += da_t,  dx_t = W_xh^T da_t.

A leaky (continuous-time) network, with leak alpha in (0, 1] per unit, and noise n_t on the
pre-activation and e_t on the state (both given, constants for the gradients):

    a_t = W_xh x_t + W_hh h_{t-1} + b + n_t,      h_t = (1 - alpha) h_{t-1} + alpha act(a_t) + e_t
    dh_t = g_t + (1 - alpha) dh_{t+1} + W_hh^T da_{t+1},   da_t = alpha dh_t * act'(a_t)

(alpha = 1 without a leak). On request it also gives ||dh_t||, the norm of the whole gradient
dL/dh_t, at every step.

Vectors here are rows of a batch: x_t is (B, D), h_t is (B, H), so "W_xh x_t" is x_t @ W_xh.T.
It is the oracle the Cython kernels are tested against and the baseline their speed is measured
against. Inputs arrive validated by rnnfast.functional.
"""
from typing import NamedTuple, Optional

import numpy as np

from rnnfast.grads import RNNGrads
from rnnfast.utils.threads import blas_threads_at_most


def _tanh_derivative(f):
    return 1 - f * f  # tanh'(a) = 1 - tanh(a)^2, so act(a_t) (h_t without a leak) is enough


def _relu(a):
    return np.maximum(a, 0)


def _relu_derivative(f):
    return f > 0  # relu'(a) = 1 where a > 0, which is where relu(a) > 0


ACTIVATIONS = {"tanh": (np.tanh, _tanh_derivative), "relu": (_relu, _relu_derivative)}


def _active(lengths, t, B):
    """(B, 1) mask of the sequences that still run at step t (all of them without lengths)."""
    return np.ones((B, 1), dtype=bool) if lengths is None else (t < lengths)[:, None]


class Saved(NamedTuple):
    """What the backward pass needs beyond the inputs and out."""

    lengths: Optional[np.ndarray]
    act: Optional[np.ndarray]  # act(a_t) (T, B, H) of a leaky pass (without a leak: out)


def forward(x, h0, W_xh, W_hh, b, nonlinearity, n_threads=1, lengths=None, leak=None,
            noise=None, state_noise=None, need_grad=True):
    """Hidden states (T, B, H) of the RNN over x (T, B, D), starting from h0 (B, H) or zeros.

    With lengths (B,), sequence b runs for lengths[b] steps: after that its state stays as it
    was and its outputs are zeros. leak (H,) or None (no leak); noise and state_noise
    (T, B, H) or None. n_threads caps the threads of NumPy's BLAS. Returns out and what the
    backward pass needs beyond the inputs (a Saved; None without need_grad).
    """
    with blas_threads_at_most(n_threads):
        out, act = _forward(x, h0, W_xh, W_hh, b, nonlinearity, lengths, leak, noise,
                            state_noise)
    return out, (Saved(lengths, act) if need_grad else None)


def _forward(x, h0, W_xh, W_hh, b, nonlinearity, lengths, leak, noise, state_noise):
    act, _ = ACTIVATIONS[nonlinearity]
    T, B, _ = x.shape
    H = W_hh.shape[0]
    h = np.zeros((B, H), dtype=x.dtype) if h0 is None else h0
    out = np.empty((T, B, H), dtype=x.dtype)
    acts = None if leak is None else np.empty((T, B, H), dtype=x.dtype)
    for t in range(T):
        a = x[t] @ W_xh.T + h @ W_hh.T  # a_t = W_xh x_t + W_hh h_{t-1}
        if b is not None:
            a += b  # ... + b
        if noise is not None:
            a += noise[t]  # ... + n_t
        if leak is None:
            h_new = act(a)  # h_t = act(a_t)
        else:
            acts[t] = act(a)
            h_new = (1 - leak) * h + leak * acts[t]  # h_t = (1 - alpha) h_{t-1} + alpha act(a_t)
        if state_noise is not None:
            h_new = h_new + state_noise[t]  # ... + e_t
        active = _active(lengths, t, B)
        h = np.where(active, h_new, h)  # finished sequences keep their state
        out[t] = np.where(active, h, 0)
    return out, acts


def backward(dout, dh_n, x, h0, W_xh, W_hh, has_bias, out, nonlinearity, n_threads=1,
             saved=None, return_norms=False, leak=None):
    """Gradients of the loss with respect to x, h0, W_xh, W_hh and b, by BPTT.

    dout (T, B, H) is dL/dh_t for every step; dh_n (B, H) or None is an extra gradient on the
    final state (with lengths, each sequence's last real state), coming from a later chunk of
    the sequence. saved is what forward returned beside out; leak the forward pass's (H,) or
    None. n_threads caps NumPy's BLAS threads. With return_norms, returns (grads, norms):
    norms (T, B) holds ||dh_t||, 0 for the steps past a sequence's end.
    """
    saved = saved if saved is not None else Saved(None, None)
    with blas_threads_at_most(n_threads):
        grads, norms = _backward(dout, dh_n, x, h0, W_xh, W_hh, has_bias, out, nonlinearity,
                                 saved, return_norms, leak)
    return (grads, norms) if return_norms else grads


def _row_norms(dh):
    """||dh[b]|| for each row, the squares summed in float64 (as the kernels sum them)."""
    return np.sqrt(np.sum(np.square(dh, dtype=np.float64), axis=1)).astype(dh.dtype)


def _backward(dout, dh_n, x, h0, W_xh, W_hh, has_bias, out, nonlinearity, saved,
              return_norms, leak):
    _, act_derivative = ACTIVATIONS[nonlinearity]
    T, B, _ = x.shape
    H = W_hh.shape[0]
    if h0 is None:
        h0 = np.zeros((B, H), dtype=x.dtype)
    acts = out if leak is None else saved.act  # act(a_t): the states themselves without a leak
    alpha = 1 if leak is None else leak
    dx = np.empty_like(x)
    dW_xh = np.zeros_like(W_xh)
    dW_hh = np.zeros_like(W_hh)
    db = np.zeros(H, dtype=x.dtype)
    # The gradient reaching h_t from the future, W_hh^T da_{t+1} (+ (1 - alpha) dh_{t+1});
    # beyond the last step, dh_n.
    dh_from_next = np.zeros((B, H), dtype=x.dtype) if dh_n is None else dh_n
    norms = np.empty((T, B), dtype=x.dtype) if return_norms else None
    for t in reversed(range(T)):
        active = _active(saved.lengths, t, B)  # past its end a sequence's outputs are zeros
        dh = np.where(active, dout[t], 0) + dh_from_next  # dh_t = g_t + (from step t+1)
        if return_norms:  # ||dL/dh_t||; past its end a sequence has no state h_t to measure
            norms[t] = np.where(active[:, 0], _row_norms(dh), 0)
        # da_t = alpha dh_t * act'(a_t)
        da = np.where(active, alpha * dh * act_derivative(acts[t]), 0)
        h_prev = out[t - 1] if t > 0 else h0
        dW_hh += da.T @ h_prev  # dW_hh += da_t h_{t-1}^T
        dW_xh += da.T @ x[t]  # dW_xh += da_t x_t^T
        db += da.sum(axis=0)  # db += da_t
        dx[t] = da @ W_xh  # dx_t = W_xh^T da_t
        # carried to step t-1: W_hh^T da_t, and (1 - alpha) dh_t through the leak; a finished
        # sequence passes its gradient on as is
        carried = da @ W_hh if leak is None else (1 - leak) * dh + da @ W_hh
        dh_from_next = np.where(active, carried, dh)
    return RNNGrads(dx, dh_from_next, dW_xh, dW_hh, db if has_bias else None), norms


def softmax_cross_entropy_rows(logits, targets, mask, count):
    """The loss and dL/dlogits of rnnfast.nn.softmax_cross_entropy over rows, in NumPy: logits
    (N, V), targets (N,) in [0, V) where mask (N,) bool is set (every row with None), count
    the rows that count. Returns (loss, dlogits (N, V)), dlogits 0 on masked rows."""
    rows = None if mask is None else np.flatnonzero(mask)
    if rows is not None:  # only unmasked rows are computed: masked ones get exactly 0
        logits, targets = logits[rows], targets[rows]
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)  # largest entry is 0
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1)  # in [1, V]: log is safe
    picked = np.arange(n)
    nll = np.log(sum_exp) - shifted[picked, targets]  # -log softmax[target], per row
    loss = float(np.sum(nll, dtype=np.float64) / count)
    grad = exp
    grad /= sum_exp[:, None]  # softmax
    grad[picked, targets] -= 1
    grad /= count
    if rows is None:
        return loss, grad
    dlogits = np.zeros((len(mask), grad.shape[1]), dtype=grad.dtype)
    dlogits[rows] = grad
    return loss, dlogits

