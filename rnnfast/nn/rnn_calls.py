"""The checks of an ``RNN`` layer's calls, made once per call: its arguments, and the memory
its passes need; and the random draws of a pass (noise, dropout masks), in their one order.

Arguments that need no conversion (NumPy arrays of the layer's dtype, C-contiguous, of the
right shapes) pass a few attribute tests; anything else goes through the full checks, which
word the errors and convert. Whether a call's buffers fit in memory is asked once per kind of
call (its sizes and options) and remembered: a training loop repeats its shapes.
"""
import numpy as np

from rnnfast._kernels.backend import backward_buffers, batch_order, forward_buffers
from rnnfast.nn.leaky import draw_noise, leaky_passes
from rnnfast.utils.memory import check_allocation
from rnnfast.utils.validation import (MAX_DIM, check_bool, check_lengths, check_shape, contiguous,
                                      copy_size, float_array)

__all__ = ["Steps", "check_parameter_memory", "forward_inputs", "backward_inputs", "MEMORY_ADVICE", "direction_noise",
           "drops_out", "dropout_mask", "pass_draws"]

MEMORY_ADVICE = "split the sequence into chunks or the batch into smaller ones"
_KEPT_FITS = 64  # kinds of call whose fit a layer remembers


class Steps:
    """The time axis of a batch: the reversal a reverse direction reads it in, and where each
    sequence's first and last states are (its own length, or T). Without lengths nothing is
    built: the reversal is a view and the last state is row T - 1."""

    def __init__(self, T, B, lengths):
        self.lengths = lengths
        if lengths is None:
            self._reversed_time = None
            return
        # Sequence b is reversed within its first lengths[b] steps; padding stays put.
        t = np.arange(T)[:, None]
        self._reversed_time = np.where(t < lengths, lengths - 1 - t, t)
        self._last = lengths - 1
        self._rows = np.arange(B)

    def reverse(self, array):
        """array (T, B, ...) with each sequence's steps in reverse order (an involution)."""
        if self._reversed_time is None:
            return array[::-1]
        return array[self._reversed_time, self._rows]

    def last_states(self, out):
        """Each sequence's state after its last step, from states in time order."""
        if self._reversed_time is None:
            return out[-1]
        return out[self._last, self._rows]

    @staticmethod
    def first_states(out):
        """Each sequence's state at step 0: the reverse direction's final state."""
        return out[0]


_FULL_LENGTH = Steps(1, 1, None)  # every batch without lengths: nothing to build


def check_parameter_memory(rnn):
    """MemoryError before an RNN's parameters are drawn, if they cannot fit (counted without
    listing them: a billion layers must not take a billion steps to refuse)."""
    H, L, directions = rnn.hidden_size, rnn.num_layers, rnn.num_directions
    per_direction = H * (rnn.input_size + H + 2 * rnn.bias)  # layer 0
    per_direction += (L - 1) * H * (directions * H + H + 2 * rnn.bias)  # layers 1..L-1
    largest = (H, max(rnn.input_size, directions * H if L > 1 else 0, H))
    check_allocation("RNN", [
        ("its parameters (values,)", (directions * per_direction,), rnn.dtype),
        # Each is drawn in float64, then cast; and each array is a Python object.
        ("the float64 draw of the largest weight (H, max(D, num_directions * H))", largest,
         np.float64),
        ("an array object per parameter (parameters, 128 bytes)", (directions * L * 4, 128),
         np.uint8),
    ])


def _is_plain(array, dtype, shape):
    """Whether array needs no conversion: a NumPy array (not a subclass) of dtype (native
    byte order), C-contiguous, of this shape."""
    return (type(array) is np.ndarray and array.dtype is dtype and array.shape == shape
            and array.flags.c_contiguous)


def _remember_fit(rnn, caller, key, buffers):
    """check_allocation(caller, buffers), then remember that this kind of call (key) fits: it
    always will (the machine's total memory is read once)."""
    check_allocation(caller, buffers, MEMORY_ADVICE)
    fitted = rnn._fitted
    if len(fitted) >= _KEPT_FITS:
        fitted.clear()
    fitted[key] = True


def forward_inputs(rnn, x, h0, lengths):
    """The arguments of RNN.forward checked, converted and time-major: (x (T, B, D)
    C-contiguous, h0 (states, B, H) C-contiguous or None, Steps), after the memory check of
    the whole pass."""
    dtype, H = rnn.dtype, rnn.hidden_size
    states = rnn.num_layers * rnn.num_directions
    shape = getattr(x, "shape", None)
    copies = None
    if (type(x) is np.ndarray and len(shape) == 3 and x.dtype is dtype and x.flags.c_contiguous
            and shape[2] == rnn.input_size and 0 < shape[0] <= MAX_DIM
            and 0 < shape[1] <= MAX_DIM):
        T, B = (shape[1], shape[0]) if rnn.batch_first else shape[:2]
        if h0 is None or _is_plain(h0, dtype, (states, B, H)):
            copies = ()  # only batch_first's transpose, which the buffers count
    if copies is None:  # the full checks, which word the errors
        x, h0, copies = _checked_forward_arrays(rnn, x, h0)
        T, B = (x.shape[1], x.shape[0]) if rnn.batch_first else x.shape[:2]
    if lengths is not None:
        lengths = check_lengths(lengths, B, T)
    order = None if lengths is None else batch_order(lengths)
    key = ("forward", T, B, h0 is not None, order, rnn.training and rnn.dropout > 0,
           rnn._noise_std > 0, rnn._state_noise_std > 0, rnn.batch_first)
    if copies:
        check_allocation("RNN.forward", list(copies) + _forward_buffers(rnn, T, B, h0 is not None,
                                                                        order), MEMORY_ADVICE)
    elif key not in rnn._fitted:
        _remember_fit(rnn, "RNN.forward", key, _forward_buffers(rnn, T, B, h0 is not None,
                                                                 order))
    if rnn.batch_first:
        x = contiguous(x.transpose(1, 0, 2))
    elif copies:
        x, h0 = contiguous(x), None if h0 is None else contiguous(h0)
    if lengths is None:
        return x, h0, _FULL_LENGTH
    return x, h0, Steps(T, B, lengths.astype(np.intp))


def _checked_forward_arrays(rnn, x, h0):
    """x and h0 checked as given (not copied: see functional.rnn_forward), and the copies
    their conversion makes, for check_allocation."""
    x_layout = ("B", "T", "D") if rnn.batch_first else ("T", "B", "D")
    x = float_array(x, "x", x_layout)
    rnn._check_dtype(x, "x")
    T, B, D = (x.shape[1], x.shape[0], x.shape[2]) if rnn.batch_first else x.shape
    if D != rnn.input_size:
        raise ValueError(f"x must have input_size = {rnn.input_size} features; got {D} "
                         f"(shape {x.shape})")
    states = rnn.num_layers * rnn.num_directions
    if h0 is not None:
        h0 = float_array(h0, "h0", ("L", "B", "H"))
        check_shape(h0, "h0", ("num_layers * num_directions", "B", "H"),
                    (states, B, rnn.hidden_size), "(B from x)")
        rnn._check_dtype(h0, "h0")
    x_copy = (None if rnn.batch_first  # its transpose is counted with the buffers
              else copy_size(x, "x", x_layout))
    h0_copy = None if h0 is None else copy_size(h0, "h0", ("L", "B", "H"))
    return x, h0, [copy for copy in (x_copy, h0_copy) if copy is not None]


def _forward_buffers(rnn, T, B, has_h0, order):
    """What a forward pass allocates (for check_allocation): what every pass keeps for
    backward (its states, and act(a_t) if it is leaky), the scratch and noise of one pass,
    and what the layer allocates around them."""
    H, L, directions = rnn.hidden_size, rnn.num_layers, rnn.num_directions
    width, dtype = directions * H, rnn.dtype
    buffers = [("h_n (L * num_directions, B, H)", (L * directions, B, H), dtype)]
    noise, state_noise = rnn.noise_std > 0, rnn.state_noise_std > 0
    passes = leaky_passes(rnn.leak, rnn.input_size, width, directions)
    for (D, leaky), count in passes.items():
        kept, scratch = forward_buffers(T, B, D, H, dtype, h0=has_h0, order=order, leaky=leaky,
                                        noise=noise, state_noise=state_noise)
        buffers += [(f"{what}, in each of {count} passes", (count,) + shape, dtype)
                    for what, shape, dtype in kept]
    buffers += scratch  # the same for every pass, and one pass runs at a time
    if noise or state_noise:
        buffers.append(("the noise drawn for one pass (noises, T, B, H)",
                        (noise + state_noise, T, B, H), dtype))
    if order is not None:  # the index that reverses each sequence within its length
        buffers.append(("the time index of each sequence (3, T, B)", (3, T, B), np.intp))
    if rnn.bidirectional:  # the reversed inputs, the concatenated outputs
        buffers.append(("the time-reversed input of every layer (T, B, D + (L - 1) * 2H)",
                        (T, B, rnn.input_size + (L - 1) * width), dtype))
        buffers.append(("each layer's output (L, T, B, 2H)", (L, T, B, width), dtype))
    if rnn.training and rnn.dropout > 0 and L > 1:  # mask (drawn in float64), output
        buffers.append(("the dropout masks (L - 1, T, B, num_directions * H)",
                        (L - 1, T, B, width), np.float64))
        buffers.append(("the outputs after dropout (2 * (L - 1), T, B, num_directions * H)",
                        (2 * (L - 1), T, B, width), dtype))
    if rnn.batch_first:
        buffers.append(("a contiguous copy of x (T, B, D)", (T, B, rnn.input_size), dtype))
        buffers.append(("out in (B, T, num_directions * H)", (B, T, width), dtype))
    return buffers


def backward_inputs(rnn, dout, dh_n, return_norms, T, B, D, order):
    """The arguments of RNN.backward checked, converted and time-major: (dout (T, B,
    num_directions * H), dh_n (states, B, H) or None, return_norms), after the memory check
    of the whole pass."""
    if return_norms is not False:
        return_norms = check_bool(return_norms, "return_norms")
    dtype, H = rnn.dtype, rnn.hidden_size
    width, states = rnn.num_directions * H, rnn.num_layers * rnn.num_directions
    expected = (B, T, width) if rnn.batch_first else (T, B, width)
    if _is_plain(dout, dtype, expected) and (dh_n is None or _is_plain(dh_n, dtype,
                                                                        (states, B, H))):
        key = ("backward", T, B, D, order, return_norms, rnn.batch_first)
        if key not in rnn._fitted:
            _remember_fit(rnn, "RNN.backward", key,
                          _backward_buffers(rnn, T, B, D, order, return_norms))
    else:
        dout, dh_n = _checked_backward_arrays(rnn, dout, dh_n, return_norms, T, B, D, order)
    dout = contiguous(dout.transpose(1, 0, 2)) if rnn.batch_first else dout
    return dout, dh_n, return_norms


def _checked_backward_arrays(rnn, dout, dh_n, return_norms, T, B, D, order):
    """dout and dh_n checked, then the memory of the pass with their copies, then made
    contiguous (dout not yet time-major)."""
    H = rnn.hidden_size
    width, states = rnn.num_directions * H, rnn.num_layers * rnn.num_directions
    dout_layout = ("B", "T", "H*") if rnn.batch_first else ("T", "B", "H*")
    dout = float_array(dout, "dout", dout_layout)
    check_shape(dout.transpose(1, 0, 2) if rnn.batch_first else dout, "dout",
                ("T", "B", "num_directions * H"), (T, B, width), "(the shape of out)")
    if dh_n is not None:
        dh_n = float_array(dh_n, "dh_n", ("L", "B", "H"))
        check_shape(dh_n, "dh_n", ("num_layers * num_directions", "B", "H"), (states, B, H),
                    "(the shape of h_n)")
    for name, array in (("dout", dout), ("dh_n", dh_n)):
        if array is not None:
            rnn._check_dtype(array, name)
    dout_copy = None if rnn.batch_first else copy_size(dout, "dout", dout_layout)
    dh_n_copy = None if dh_n is None else copy_size(dh_n, "dh_n", ("L", "B", "H"))
    check_allocation("RNN.backward", [dout_copy, dh_n_copy]
                     + _backward_buffers(rnn, T, B, D, order, return_norms), MEMORY_ADVICE)
    return contiguous(dout), None if dh_n is None else contiguous(dh_n)


def _backward_buffers(rnn, T, B, D, order, return_norms):
    """What a backward pass allocates at its peak (for check_allocation): the gradients of
    the parameters, and the largest layer's gradient buffers (each layer's are freed when
    the next one down starts): each direction's pass, and around them the incoming
    gradient, a reversed dx and the sum of the directions' dx."""
    H, L, directions, dtype = rnn.hidden_size, rnn.num_layers, rnn.num_directions, rnn.dtype
    width = directions * H
    parameters = sum(array.size for array in rnn._params.values())
    layer_input = D if L == 1 else max(D, width)
    one_pass = backward_buffers(T, B, layer_input, H, dtype, order=order,
                                leaky=bool(np.any(rnn.leak != 1)), return_norms=return_norms)
    buffers = [("the gradients of the parameters", (parameters,), dtype),
               ("dh0 (L * num_directions, B, H)", (L * directions, B, H), dtype),
               ("the incoming gradient, a reversed dx, their sum (T, B, width + 2 * input)",
                (T, B, width + 2 * layer_input), dtype),
               ("dx (T, B, D)", (T, B, D), dtype)]
    buffers += [(f"{what}, for each direction", (directions,) + shape, dtype)
                for what, shape, dtype in one_pass]
    if return_norms:
        buffers.append(("norms (L, num_directions, T, B)", (L, directions, T, B), dtype))
    if rnn.batch_first:
        buffers.append(("a contiguous copy of dout (T, B, num_directions * H)", (T, B, width),
                        dtype))
    return buffers


# ---------------------------------------------------------------------------------------------
# The random draws of a pass, from rnn.rng: for each layer, each direction's noise on a_t, then
# on h_t, then the layer's dropout mask.
# ---------------------------------------------------------------------------------------------
def direction_noise(rnn, layer, shape):
    """(noise, state_noise) (T, B, H) for one direction of layer, each None when its sigma is
    0 (rnnfast.nn.leaky.draw_noise)."""
    if rnn._noise_std or rnn._state_noise_std:
        return draw_noise(rnn.rng, rnn._leak[layer], rnn._noise_std, rnn._state_noise_std,
                          shape, rnn.dtype)
    return None, None


def drops_out(rnn, layer):
    """Whether the outputs of layer get a dropout mask in this pass."""
    return rnn.training and rnn.dropout > 0 and layer < rnn.num_layers - 1


def dropout_mask(rnn, shape):
    """A dropout mask of shape: 0 with probability dropout, else 1 / (1 - dropout)."""
    keep = 1 - rnn.dropout
    return (rnn.rng.random(shape) < keep).astype(rnn.dtype) / keep


def pass_draws(rnn, T, B):
    """Every draw of a unidirectional pass on (T, B), in the order a sequential pass makes
    them: ([(noise, state_noise) per layer], [mask or None per layer])."""
    shape = (T, B, rnn.hidden_size)
    noises, masks = [], []
    for layer in range(rnn.num_layers):
        noises.append(direction_noise(rnn, layer, shape))
        masks.append(dropout_mask(rnn, shape) if drops_out(rnn, layer) else None)
    return noises, masks
