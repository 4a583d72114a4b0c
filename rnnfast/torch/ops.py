"""The operators: one layer of the RNN (every direction) as ``torch.ops.rnnfast.rnn_layer``,
and its backward pass as ``torch.ops.rnnfast.rnn_layer_backward``.

Both are ``torch.library.custom_op``s with fake (meta) implementations, and the forward has
its autograd formula registered (``register_autograd``), so autograd, ``torch.compile``
(``fullgraph=True``: one opaque node per layer, the time loop never unrolled) and
``torch.library.opcheck`` see ordinary operators. The backward operator's own autograd formula
refuses double backward with a clear message.

``rnn_layer`` below is what ``rnnfast.torch.RNN`` calls. In plain eager mode it runs the same
computation through a ``torch.autograd.Function`` instead of the dispatcher: the operators'
Python dispatch (torch's wrappers of a custom operator, which among other things fill in the
defaults of the 13 arguments, quadratically in their number) cost 250-300 µs more per forward
+ backward here, several times a whole short-sequence pass. Under ``torch.compile``/``torch.export``, a dispatch mode (fake tensors,
tracing), functorch transforms or tensor subclasses it calls the operators.

Inductor's caches of compiled graphs (and AOTAutograd's) key a graph by the operators it
calls, not by their registrations: a change of either operator's schema or of the backward
formula must come with a new name for rnn_layer, or compiled programs cached by an earlier
version would call the backward as it was.

Schema of rnn_layer: x (T, B, D); hx (num_directions, B, H) or None; the parameters of the
forward direction (w_ih (H, D), w_hh (H, H), b_ih and b_hh (H,) or None) and, for a
bidirectional layer, of the reverse one (None otherwise); lengths None or int64 (B,), sorted
longest first; nonlinearity "tanh" or "relu"; n_threads (0: torch.get_num_threads()). It
returns (output (T, B, num_directions * H), h_n (num_directions, B, H), reverse_states), the
last being the reverse direction's states in the order it ran them ((0,) for one direction),
which the backward reads; it carries no gradient.
"""
from typing import Optional

import torch
from torch import Tensor

from rnnfast.torch._checks import DtypeError, ShapeError, check_cpu, check_layer_inputs
from rnnfast.torch._layer import (backward_arrays, forward_arrays, grads_as_tensors,
                                  layer_arrays, layer_backward, layer_forward)

__all__ = ["rnn_layer", "rnn_layer_op", "rnn_layer_backward_op"]

def _lists(w_ih, w_hh, b_ih, b_hh, w_ih_reverse, w_hh_reverse, b_ih_reverse, b_hh_reverse):
    """The schema's eight parameter slots as per-direction lists (the bias lists empty without
    bias), as _checks and _layer take them."""
    w_ih, w_hh = [w_ih], [w_hh]
    b_ih, b_hh = ([b_ih], [b_hh]) if b_ih is not None else ([], [])
    if w_ih_reverse is not None:
        w_ih.append(w_ih_reverse)
        w_hh.append(w_hh_reverse)
        if b_ih:
            b_ih.append(b_ih_reverse)
            b_hh.append(b_hh_reverse)
    return w_ih, w_hh, b_ih, b_hh


def _check_bias_slots(parameters):
    """Bias present for both directions or for neither; a reverse w_ih with a reverse w_hh."""
    b_ih, b_hh, w_ih_r, w_hh_r, b_ih_r, b_hh_r = parameters[2:]
    if (w_ih_r is None) != (w_hh_r is None):
        raise ValueError("w_ih_reverse and w_hh_reverse must be given together")
    with_bias = [b is not None for b in (b_ih, b_hh) + ((b_ih_r, b_hh_r) if w_ih_r is not None
                                                         else ())]
    if any(with_bias) and not all(with_bias):
        raise ValueError("the biases (b_ih, b_hh and, bidirectional, b_ih_reverse, "
                         "b_hh_reverse) must all be given or all be None")


# ---------------------------------------------------------------------------------------------
# The forward operator.
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("rnnfast::rnn_layer", mutates_args=())
def rnn_layer_op(x: Tensor, hx: Optional[Tensor], w_ih: Tensor, w_hh: Tensor,
                 b_ih: Optional[Tensor], b_hh: Optional[Tensor], w_ih_reverse: Optional[Tensor],
                 w_hh_reverse: Optional[Tensor], b_ih_reverse: Optional[Tensor],
                 b_hh_reverse: Optional[Tensor], lengths: Optional[Tensor], nonlinearity: str,
                 n_threads: int) -> tuple[Tensor, Tensor, Tensor]:
    parameters = (w_ih, w_hh, b_ih, b_hh, w_ih_reverse, w_hh_reverse, b_ih_reverse, b_hh_reverse)
    _check_bias_slots(parameters)
    check_layer_inputs(x, hx, *_lists(*parameters), lengths, nonlinearity)
    return layer_forward(x, hx, _present(parameters), b_ih is not None, lengths, nonlinearity,
                         n_threads)


@rnn_layer_op.register_fake
def _rnn_layer_fake(x, hx, w_ih, w_hh, b_ih, b_hh, w_ih_reverse, w_hh_reverse, b_ih_reverse,
                    b_hh_reverse, lengths, nonlinearity, n_threads):
    T, B, _ = x.shape
    H = w_hh.shape[0]
    directions = 1 if w_ih_reverse is None else 2
    reverse_states = x.new_empty(0) if directions == 1 else x.new_empty((T, B, H))
    return x.new_empty((T, B, directions * H)), x.new_empty((directions, B, H)), reverse_states


def _setup_context(ctx, inputs, output):
    x, hx, *parameters, lengths, nonlinearity, n_threads = inputs
    out, _, reverse_states = output
    ctx.save_for_backward(x, hx, lengths, out, reverse_states, *parameters)
    ctx.config = (nonlinearity, n_threads)
    ctx.mark_non_differentiable(reverse_states)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_output, grad_h_n, _grad_reverse_states):
    x, hx, lengths, output, reverse_states, *parameters = ctx.saved_tensors
    nonlinearity, n_threads = ctx.config
    needs = ctx.needs_input_grad
    grads = rnn_layer_backward_op(grad_output, grad_h_n, x, hx, *parameters, lengths, output,
                                  reverse_states, nonlinearity, n_threads, needs[0], needs[1],
                                  any(needs[2:10]))
    return _input_grads(grads, parameters, needs)


def _input_grads(grads, parameters, needs):
    """The backward operator's ten results as gradients of the forward's thirteen inputs
    (None for the absent parameters and for what needs no gradient)."""
    dx, dhx, *d_parameters = grads
    d_parameters = [d if p is not None and need else None
                    for d, p, need in zip(d_parameters, parameters, needs[2:10])]
    return (dx if needs[0] else None, dhx if needs[1] else None, *d_parameters,
            None, None, None)


rnn_layer_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# The backward operator.
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("rnnfast::rnn_layer_backward", mutates_args=())
def rnn_layer_backward_op(
        grad_output: Optional[Tensor], grad_h_n: Optional[Tensor], x: Tensor,
        hx: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
        b_hh: Optional[Tensor], w_ih_reverse: Optional[Tensor], w_hh_reverse: Optional[Tensor],
        b_ih_reverse: Optional[Tensor], b_hh_reverse: Optional[Tensor], lengths: Optional[Tensor],
        output: Tensor, reverse_states: Tensor, nonlinearity: str, n_threads: int,
        need_input: bool, need_hx: bool, need_weights: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients (dx, dhx, then one per parameter slot of rnn_layer); empty (0,) tensors for
    what was not asked for (need_input, need_hx, need_weights: the parameters') or is
    absent."""
    parameters = (w_ih, w_hh, b_ih, b_hh, w_ih_reverse, w_hh_reverse, b_ih_reverse, b_hh_reverse)
    _check_bias_slots(parameters)
    lists = _lists(*parameters)
    T, B, _, H = check_layer_inputs(x, hx, *lists, lengths, nonlinearity)
    _check_backward_tensors(grad_output, grad_h_n, output, reverse_states, T, B, H,
                            len(lists[0]), x.dtype)
    bias = b_ih is not None
    dx, dhx, d_parameters = layer_backward(
        grad_output, grad_h_n, x, hx, _present(parameters), bias, lengths, output,
        reverse_states, nonlinearity, n_threads, need_input, need_hx and hx is not None,
        need_weights)

    def empty():  # a new one each time: the results of an operator must not alias each other
        return x.new_empty(0)

    return (empty() if dx is None else dx, empty() if dhx is None else dhx,
            *[empty() if g is None else g for g in _slots(d_parameters, bias)])


def _check_backward_tensors(grad_output, grad_h_n, output, reverse_states, T, B, H, directions,
                            dtype):
    """The forward's results and their gradients have the forward's shapes and dtype."""
    expected = {"grad_output": (T, B, directions * H), "grad_h_n": (directions, B, H),
                "output": (T, B, directions * H),
                "reverse_states": (T, B, H) if directions == 2 else (0,)}
    given = {"grad_output": grad_output, "grad_h_n": grad_h_n, "output": output,
             "reverse_states": reverse_states}
    for name, tensor in given.items():
        if tensor is None:
            continue
        check_cpu(tensor, name)
        if tensor.dtype != dtype:
            raise DtypeError(f"{name} must have the dtype of x, {dtype}; got {tensor.dtype}")
        if tuple(tensor.shape) != expected[name]:
            raise ShapeError(f"{name} must have shape {expected[name]}; got "
                             f"{tuple(tensor.shape)}")


@rnn_layer_backward_op.register_fake
def _rnn_layer_backward_fake(grad_output, grad_h_n, x, hx, w_ih, w_hh, b_ih, b_hh, w_ih_reverse,
                             w_hh_reverse, b_ih_reverse, b_hh_reverse, lengths, output,
                             reverse_states, nonlinearity, n_threads, need_input, need_hx,
                             need_weights):
    def like(tensor, wanted=True):
        return x.new_empty(0) if tensor is None or not wanted else torch.empty_like(tensor)

    return (like(x, need_input), like(hx, need_hx),
            *[like(p, need_weights) for p in (w_ih, w_hh, b_ih, b_hh, w_ih_reverse, w_hh_reverse,
                                               b_ih_reverse, b_hh_reverse)])


def _refuse_double_backward(ctx, *grads):
    raise RuntimeError("rnnfast.torch does not support double backward (gradients of its "
                       "gradients, e.g. for a gradient penalty): use torch.nn.RNN for that")


rnn_layer_backward_op.register_autograd(_refuse_double_backward,
                                        setup_context=lambda ctx, inputs, output: None)


# ---------------------------------------------------------------------------------------------
# What rnnfast.torch.RNN calls: the operator, or the same computation without the dispatcher.
# ---------------------------------------------------------------------------------------------
class _EagerLayer(torch.autograd.Function):
    """rnn_layer_op and its registered autograd formula, as a plain autograd.Function.

    It takes only the parameters present (per direction: w_ih, w_hh and, with bias, b_ih,
    b_hh), and keeps the forward's arrays for the backward pass. The tensors are saved too,
    so that autograd refuses a backward after any of them was modified in place.
    """

    @staticmethod
    def forward(ctx, config, x, hx, *parameters):
        lengths, nonlinearity, n_threads, bias = config
        arrays = layer_arrays(x, hx, parameters, bias, lengths, nonlinearity, n_threads)
        output, h_n, reverse_states = forward_arrays(arrays)
        output = torch.from_numpy(output)
        ctx.save_for_backward(x, hx, output, *parameters)
        ctx.arrays = (arrays, reverse_states)
        ctx.config = config
        ctx.set_materialize_grads(False)
        return output, torch.from_numpy(h_n)

    @staticmethod
    def backward(ctx, grad_output, grad_h_n):
        x, hx, output, *parameters = ctx.saved_tensors  # checks the versions
        arrays, reverse_states = ctx.arrays
        needs = ctx.needs_input_grad
        need_input, need_hx, need_weights = needs[1], needs[2], any(needs[3:])
        lengths, nonlinearity, n_threads, bias = ctx.config
        if torch.is_grad_enabled():  # create_graph=True: the operator refuses double backward
            slots = _slots(parameters, bias)
            states = x.new_empty(0) if reverse_states is None else torch.from_numpy(
                reverse_states)
            grads = rnn_layer_backward_op(grad_output, grad_h_n, x, hx, *slots, lengths,
                                          output, states, nonlinearity, n_threads, need_input,
                                          need_hx, need_weights)
            grads = _input_grads(grads, slots, (need_input, need_hx, *[need_weights] * 8))
            return (None, grads[0], grads[1], *_present(grads[2:10], slots))
        dx, dhx, d_parameters = grads_as_tensors(backward_arrays(
            arrays, output.detach().numpy(), reverse_states,
            None if grad_output is None else grad_output.detach().numpy(),
            None if grad_h_n is None else grad_h_n.detach().numpy(), need_input,
            need_hx and hx is not None, need_weights), len(parameters))
        return (None, dx, dhx, *d_parameters)


def _present(values, slots=None):
    """The entries of the eight slots (values) whose slot holds a parameter (of ``slots``, by
    default of ``values`` themselves)."""
    return [v for v, p in zip(values, values if slots is None else slots) if p is not None]


def _slots(parameters, bias):
    """The parameters present as the schema's eight slots."""
    step = 4 if bias else 2
    slots = []
    for i in range(0, len(parameters), step):
        slots += [*parameters[i:i + step], *([] if bias else [None, None])]
    return (*slots, *[None] * (8 - len(slots)))


def _can_skip_dispatcher(x):
    """Whether the call is plain eager PyTorch: no compiler, tracer, dispatch mode, functorch
    transform or tensor subclass that needs to see the operator."""
    return (type(x) is torch.Tensor and not torch.compiler.is_compiling()
            and not torch._C._len_torch_dispatch_stack()
            and not torch._C._are_functorch_transforms_active())


def rnn_layer(x, hx, parameters, bias, lengths, nonlinearity, n_threads):
    """One layer through the operator or, in plain eager mode, without the dispatcher (the
    same computation and results): (output, h_n). parameters: per direction w_ih, w_hh and,
    with bias, b_ih, b_hh. Inputs checked by the caller (rnnfast.torch.RNN)."""
    if not _can_skip_dispatcher(x):
        return rnn_layer_op(x, hx, *_slots(parameters, bias), lengths, nonlinearity,
                            n_threads)[:2]
    if torch.is_grad_enabled() and (x.requires_grad or (hx is not None and hx.requires_grad)
                                    or any(p.requires_grad for p in parameters)):
        return _EagerLayer.apply((lengths, nonlinearity, n_threads, bias), x, hx, *parameters)
    output, h_n, _ = forward_arrays(layer_arrays(x, hx, parameters, bias, lengths,
                                                 nonlinearity, n_threads))
    return torch.from_numpy(output), torch.from_numpy(h_n)
