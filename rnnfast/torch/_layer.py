"""One layer of the RNN, both directions, on tensors: what the operator computes.

The tensors are checked (rnnfast.torch._checks) before they arrive. They reach the kernels as
NumPy views of their memory (no copy when they are contiguous; others are made contiguous
once), and the results come back as tensors over the arrays the kernels wrote. The reverse
direction runs the same kernels on the time-reversed sequence: each sequence reversed within
its own length, as torch's packed sequences do (rnnfast.nn.rnn._Steps).
"""
import numpy as np
import torch

from rnnfast.nn.rnn import _Steps
from rnnfast.torch import _bridge

__all__ = ["layer_forward", "layer_backward", "resolve_threads"]


def as_array(tensor):
    """A C-contiguous NumPy view of a CPU tensor's values (a copy only when it is not
    contiguous)."""
    array = tensor.detach().numpy()
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def resolve_threads(n_threads):
    """The operator's n_threads: 0 means torch.get_num_threads(), read at each call."""
    return n_threads if n_threads > 0 else torch.get_num_threads()


def _lengths_array(lengths):
    return None if lengths is None else lengths.numpy().astype(np.intp, copy=False)


def _bias(b_ih, b_hh, d):
    """b_ih + b_hh of direction d, or None without bias."""
    if not b_ih:
        return None
    return as_array(b_ih[d]) + as_array(b_hh[d])


def layer_forward(x, hx, w_ih, w_hh, b_ih, b_hh, lengths, nonlinearity, n_threads):
    """Run one layer over x (T, B, D), every direction.

    Returns
    -------
    output : Tensor (T, B, num_directions * H)
        The states in time order, the directions side by side (torch.nn.RNN's output).
    h_n : Tensor (num_directions, B, H)
        Each direction's final state: at each sequence's last step going forward, at t = 0
        in reverse.
    reverse_states : Tensor (T, B, H), or (0,) for one direction
        The reverse direction's states in the order it ran them (reversed time), which its
        backward pass reads.
    """
    T, B, D = x.shape
    H = w_hh[0].shape[0]
    _bridge.check_memory("rnnfast.torch", T, B, D, H, len(w_ih), x.element_size())
    x_array = as_array(x)
    lengths = _lengths_array(lengths)
    steps = _Steps(T, B, lengths)
    threads = resolve_threads(n_threads)
    hx_array = None if hx is None else as_array(hx)
    states = []
    for d in range(len(w_ih)):
        layer_input = x_array if d == 0 else np.ascontiguousarray(steps.reverse(x_array))
        states.append(_bridge.forward(
            layer_input, None if hx_array is None else hx_array[d], as_array(w_ih[d]),
            as_array(w_hh[d]), _bias(b_ih, b_hh, d), nonlinearity, threads, lengths))
    # Both directions end at each sequence's last step in the order they ran.
    h_n = np.stack([steps.last_states(out) for out in states])
    if len(states) == 1:
        return torch.from_numpy(states[0]), torch.from_numpy(h_n), x.new_empty(0)
    output = np.empty((T, B, 2 * H), dtype=x_array.dtype)
    output[:, :, :H] = states[0]
    output[:, :, H:] = steps.reverse(states[1])
    return torch.from_numpy(output), torch.from_numpy(h_n), torch.from_numpy(states[1])


def layer_backward(grad_output, grad_h_n, x, hx, w_ih, w_hh, b_ih, b_hh, lengths, output,
                   reverse_states, nonlinearity, n_threads, need_input, need_hx):
    """Backprop through time of a ``layer_forward`` call.

    grad_output (T, B, num_directions * H) and grad_h_n (num_directions, B, H) are the
    gradients on its output and h_n (None for zeros); the other arguments are the forward's
    arguments and results.

    Returns
    -------
    dx : Tensor (T, B, D), or None unless need_input
    dhx : Tensor (num_directions, B, H), or None unless need_hx (and hx was given)
    dw_ih, dw_hh, db_ih, db_hh : lists of Tensors, one per direction (the bias lists empty
        without bias; db_ih and db_hh hold equal values in separate tensors).
    """
    x_array = as_array(x)
    T, B, _ = x_array.shape
    H = w_hh[0].shape[0]
    directions = len(w_ih)
    lengths = _lengths_array(lengths)
    steps = _Steps(T, B, lengths)
    threads = resolve_threads(n_threads)
    hx_array = None if hx is None else as_array(hx)
    out_array = as_array(output)
    g_out = None if grad_output is None else grad_output.detach().numpy()
    g_h_n = None if grad_h_n is None else as_array(grad_h_n)
    dx = None
    dhx = np.empty((directions, B, H), dtype=x_array.dtype) if need_hx else None
    dw_ih, dw_hh, db_ih, db_hh = [], [], [], []
    for d in range(directions):
        if d == 0:
            layer_input = x_array
            states = out_array if directions == 1 else np.ascontiguousarray(out_array[:, :, :H])
        else:
            layer_input = np.ascontiguousarray(steps.reverse(x_array))
            states = as_array(reverse_states)
        if g_out is None:
            dout = np.zeros((T, B, H), dtype=x_array.dtype)
        else:
            dout = g_out if directions == 1 else g_out[:, :, d * H:(d + 1) * H]
            dout = np.ascontiguousarray(steps.reverse(dout) if d == 1 else dout)
        grads = _bridge.backward(
            dout, None if g_h_n is None else g_h_n[d], layer_input,
            None if hx_array is None else hx_array[d], as_array(w_ih[d]), as_array(w_hh[d]),
            bool(b_ih), states, nonlinearity, threads, lengths)
        if need_input:
            d_input = grads.dx if d == 0 else steps.reverse(grads.dx)
            dx = d_input if dx is None else dx + d_input
        if need_hx:
            dhx[d] = grads.dh0
        dw_ih.append(torch.from_numpy(grads.dW_xh))
        dw_hh.append(torch.from_numpy(grads.dW_hh))
        if b_ih:
            db_ih.append(torch.from_numpy(grads.db))
            db_hh.append(torch.from_numpy(grads.db.copy()))
    return (None if dx is None else torch.from_numpy(np.ascontiguousarray(dx)),
            None if dhx is None else torch.from_numpy(dhx), dw_ih, dw_hh, db_ih, db_hh)
