"""One layer of the RNN, every direction: what the operator computes.

The tensors are checked (rnnfast.torch._checks) before they arrive. They reach the kernels as
NumPy views of their memory (no copy when they are contiguous; others are made contiguous
once), and the results go back as tensors over the arrays the kernels wrote. The reverse
direction runs the same kernels on the time-reversed sequence: each sequence reversed within
its own length, as torch's packed sequences do (rnnfast.nn.rnn_calls.Steps).

``LayerArrays`` holds a call's inputs as arrays: the forward pass makes it, and the eager
autograd path keeps it for the backward pass, which then converts nothing again.
"""
from typing import NamedTuple, Optional

import numpy as np
import torch

from rnnfast.nn.rnn_calls import Steps
from rnnfast.torch import _bridge

__all__ = ["LayerArrays", "layer_arrays", "forward_arrays", "backward_arrays", "layer_forward",
           "layer_backward", "grads_as_tensors", "as_array", "resolve_threads"]


def as_array(tensor):
    """A C-contiguous NumPy view of a CPU tensor's values (a copy only when it is not
    contiguous)."""
    array = tensor.detach().numpy()
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def resolve_threads(n_threads):
    """The operator's n_threads: 0 means torch.get_num_threads(), read at each call."""
    return n_threads if n_threads > 0 else torch.get_num_threads()


class LayerArrays(NamedTuple):
    """The inputs of one layer call as C-contiguous arrays, per direction."""

    x: np.ndarray  # (T, B, D)
    hx: Optional[np.ndarray]  # (num_directions, B, H)
    w_ih: list  # num_directions arrays (H, D)
    w_hh: list  # num_directions arrays (H, H)
    b: list  # num_directions arrays (H,), b_ih + b_hh, or empty without bias
    lengths: Optional[np.ndarray]  # (B,) intp, sorted longest first
    nonlinearity: str
    threads: int


def layer_arrays(x, hx, parameters, bias, lengths, nonlinearity, n_threads):
    """LayerArrays of checked tensors. parameters: per direction w_ih, w_hh and, with bias,
    b_ih, b_hh, one direction after the other (as rnnfast.torch.RNN lists them)."""
    arrays = [as_array(p) for p in parameters]
    step = 4 if bias else 2
    return LayerArrays(
        as_array(x), None if hx is None else as_array(hx), arrays[0::step], arrays[1::step],
        [arrays[i] + arrays[i + 1] for i in range(2, len(arrays), step)] if bias else [],
        None if lengths is None else lengths.numpy().astype(np.intp, copy=False),
        nonlinearity, resolve_threads(n_threads))


def _steps(a):
    """The time axis of the call: reversal within lengths, last steps."""
    return Steps(a.x.shape[0], a.x.shape[1], a.lengths)


def forward_arrays(a):
    """Run one layer over a.x (T, B, D), every direction.

    Returns
    -------
    output : ndarray (T, B, num_directions * H)
        The states in time order, the directions side by side (torch.nn.RNN's output).
    h_n : ndarray (num_directions, B, H)
        Each direction's final state: at each sequence's last step going forward, at t = 0
        in reverse.
    reverse_states : ndarray (T, B, H), or None for one direction
        The reverse direction's states in the order it ran them (reversed time), which its
        backward pass reads.
    """
    T, B, D = a.x.shape
    H = a.w_hh[0].shape[0]
    directions = len(a.w_ih)
    _bridge.check_memory("rnnfast.torch", T, B, D, H, directions, a.x.itemsize)
    if directions == 1 and a.lengths is None:  # the common case, without index arrays
        out = _bridge.forward(a.x, None if a.hx is None else a.hx[0], a.w_ih[0], a.w_hh[0],
                              a.b[0] if a.b else None, a.nonlinearity, a.threads, None)
        return out, out[T - 1:].copy(), None
    steps = _steps(a)
    states = []
    for d in range(directions):
        layer_input = a.x if d == 0 else np.ascontiguousarray(steps.reverse(a.x))
        states.append(_bridge.forward(
            layer_input, None if a.hx is None else a.hx[d], a.w_ih[d], a.w_hh[d],
            a.b[d] if a.b else None, a.nonlinearity, a.threads, a.lengths))
    h_n = np.empty((directions, B, H), dtype=a.x.dtype)
    for d, out in enumerate(states):  # every direction ends at each sequence's last step
        h_n[d] = steps.last_states(out)
    if directions == 1:
        return states[0], h_n, None
    output = np.empty((T, B, 2 * H), dtype=a.x.dtype)
    output[:, :, :H] = states[0]
    output[:, :, H:] = steps.reverse(states[1])
    return output, h_n, states[1]


def backward_arrays(a, output, reverse_states, grad_output, grad_h_n, need_input, need_hx,
                    need_weights=True):
    """Backprop through time of ``forward_arrays(a)``, which returned output and
    reverse_states; grad_output (T, B, num_directions * H) and grad_h_n (num_directions, B, H)
    are the gradients on its results (arrays, any layout, or None for zeros).

    Returns (dx or None, dhx or None, dw_ih, dw_hh, db), the last three lists of arrays per
    direction (db empty without bias); dx only if need_input, dhx only if need_hx, the
    parameters' gradients only if need_weights (empty lists otherwise).
    """
    T, B, _ = a.x.shape
    H = a.w_hh[0].shape[0]
    directions = len(a.w_ih)
    steps = None if directions == 1 and a.lengths is None else _steps(a)
    dx = None
    dhx = np.empty((directions, B, H), dtype=a.x.dtype) if need_hx else None
    dw_ih, dw_hh, db = [], [], []
    for d in range(directions):
        if d == 0:
            layer_input = a.x
            states = output if directions == 1 else np.ascontiguousarray(output[:, :, :H])
        else:
            layer_input = np.ascontiguousarray(steps.reverse(a.x))
            states = reverse_states
        if grad_output is None:
            dout = np.zeros((T, B, H), dtype=a.x.dtype)
        else:
            dout = grad_output if directions == 1 else grad_output[:, :, d * H:(d + 1) * H]
            dout = np.ascontiguousarray(steps.reverse(dout) if d == 1 else dout)
        dh_n = None if grad_h_n is None else np.ascontiguousarray(grad_h_n[d])
        grads = _bridge.backward(dout, dh_n, layer_input, None if a.hx is None else a.hx[d],
                                 a.w_ih[d], a.w_hh[d], bool(a.b), states, a.nonlinearity,
                                 a.threads, a.lengths, need_input, need_weights)
        if need_input:
            d_input = grads.dx if d == 0 else steps.reverse(grads.dx)
            dx = d_input if dx is None else dx + d_input
        if need_hx:
            dhx[d] = grads.dh0
        if need_weights:
            dw_ih.append(grads.dW_xh)
            dw_hh.append(grads.dW_hh)
            if a.b:
                db.append(grads.db)
    return dx, dhx, dw_ih, dw_hh, db


# ---------------------------------------------------------------------------------------------
# The same on tensors, for the operators.
# ---------------------------------------------------------------------------------------------
def layer_forward(x, hx, parameters, bias, lengths, nonlinearity, n_threads):
    """forward_arrays on tensors: (output, h_n, reverse_states) as tensors, reverse_states
    (0,) for one direction."""
    output, h_n, reverse_states = forward_arrays(
        layer_arrays(x, hx, parameters, bias, lengths, nonlinearity, n_threads))
    reverse_states = x.new_empty(0) if reverse_states is None else torch.from_numpy(
        reverse_states)
    return torch.from_numpy(output), torch.from_numpy(h_n), reverse_states


def layer_backward(grad_output, grad_h_n, x, hx, parameters, bias, lengths, output,
                   reverse_states, nonlinearity, n_threads, need_input, need_hx, need_weights):
    """backward_arrays on tensors: (dx, dhx, parameter_grads) as grads_as_tensors gives them."""
    a = layer_arrays(x, hx, parameters, bias, lengths, nonlinearity, n_threads)
    grads = backward_arrays(
        a, as_array(output), None if len(a.w_ih) == 1 else as_array(reverse_states),
        None if grad_output is None else grad_output.detach().numpy(),
        None if grad_h_n is None else grad_h_n.detach().numpy(), need_input, need_hx,
        need_weights)
    return grads_as_tensors(grads, len(parameters))


def grads_as_tensors(grads, n_parameters):
    """backward_arrays' results as tensors: (dx or None, dhx or None, the parameters'
    gradients in the order of the parameters, or n_parameters Nones when not computed).

    b = b_ih + b_hh, so both get the gradient of b, in separate tensors, since each becomes a
    parameter's .grad."""
    dx, dhx, dw_ih, dw_hh, db = grads
    from_numpy = torch.from_numpy
    d_parameters = []
    for d in range(len(dw_ih)):
        d_parameters += [from_numpy(dw_ih[d]), from_numpy(dw_hh[d])]
        if db:
            d_parameters += [from_numpy(db[d]), from_numpy(db[d].copy())]
    return (None if dx is None else from_numpy(np.ascontiguousarray(dx)),
            None if dhx is None else from_numpy(dhx), d_parameters or [None] * n_parameters)
