"""`rnnfast.RNN`: the layer, with the semantics, shapes, parameter names and initialisation of
`torch.nn.RNN` (stacked, bidirectional, batch_first, dropout between layers), and as an
extension a leak and noise (continuous-time networks, see rnnfast.nn.leaky).

Each (layer, direction) is one call of the functional kernels (rnnfast.functional). The reverse
direction runs the same kernels on the time-reversed sequence (with `lengths`, each sequence is
reversed within its own length, as PyTorch's packed sequences do).
"""
import numpy as np

from rnnfast._kernels.backend import backward_buffers, batch_order, forward_buffers
from rnnfast.functional import NONLINEARITIES, rnn_backward, rnn_forward
from rnnfast.nn.leaky import NoiseStd, draw_noise, kernel_leak, layer_leaks, leaky_passes
from rnnfast.nn.module import Module
from rnnfast.utils.memory import check_allocation
from rnnfast.utils.threads import resolve_n_threads
from rnnfast.utils.validation import (check_bool, check_choice, check_float_dtype, check_int,
                                      check_lengths, check_real, check_shape, check_size,
                                      contiguous, copy_size, float_array, random_generator)

__all__ = ["RNN", "parameter_names"]

PARAMETER_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def parameter_names(layer, direction):
    """The names of one direction's parameters, as torch.nn.RNN names them: kind -> name, e.g.
    {"weight_ih": "weight_ih_l1_reverse", "weight_hh": "weight_hh_l1_reverse", ...} for
    layer 1, direction 1 (the reverse one)."""
    suffix = "_reverse" if direction else ""
    return {kind: f"{kind}_l{layer}{suffix}" for kind in PARAMETER_KINDS}


class _Steps:
    """The time axis of a batch: the reversal a reverse direction reads it in, and where each
    sequence's first and last states are (its own length, or T)."""

    def __init__(self, T, B, lengths):
        self.lengths = lengths
        rows = np.arange(B)
        if lengths is None:
            self._reversed_time = None
            self._last = np.full(B, T - 1)
        else:
            # Sequence b is reversed within its first lengths[b] steps; padding stays put.
            t = np.arange(T)[:, None]
            self._reversed_time = np.where(t < lengths, lengths - 1 - t, t)
            self._last = lengths - 1
        self._rows = rows

    def reverse(self, array):
        """array (T, B, ...) with each sequence's steps in reverse order (an involution)."""
        if self._reversed_time is None:
            return array[::-1]
        return array[self._reversed_time, self._rows]

    def last_states(self, out):
        """Each sequence's state after its last step, from states in time order."""
        return out[self._last, self._rows]

    def first_states(self, out):
        """Each sequence's state at step 0: the reverse direction's final state."""
        return out[0]


class RNN(Module):
    """A multi-layer Elman RNN: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), as torch.nn.RNN.

    Parameters
    ----------
    input_size, hidden_size : int
        D and H.
    num_layers : int
        Stacked layers; layer l > 0 reads the outputs of layer l - 1.
    nonlinearity : {"tanh", "relu"}
    bias : bool
        Whether the layers have ``bias_ih`` and ``bias_hh``.
    batch_first : bool
        Inputs and outputs are (B, T, ...) instead of (T, B, ...).
    dropout : float
        Probability of zeroing each output of every layer but the last, in training mode.
    bidirectional : bool
        Each layer also runs over the reversed sequence; outputs are concatenated (2H).
    dtype : float32 or float64
    seed : int, numpy Generator or None
        Seeds the initialisation and the dropout masks.
    n_threads : int or None
        Passed to the kernels (None: every core).
    leak : float or array_like
        alpha in h_t = (1 - alpha) h_{t-1} + alpha act(a_t), in (0, 1] (beyond torch; 1, the
        default, is torch's RNN): a number, or an array broadcastable to (num_layers, H) (per
        unit: (H,); per layer: (num_layers, 1)); both directions of a layer share it. A
        constant, not a parameter (not in ``state_dict()``); ``leak`` is (num_layers, H).
    noise_std, state_noise_std : float
        sigma of the noise on a_t and on h_t after the leak (0, the default: none): each pass
        draws N(0, 2 sigma^2 / alpha) (Yang et al. 2019) and N(0, 2 alpha sigma^2) (PsychRNN)
        per unit from ``rng`` (rnnfast.nn.leaky), in evaluation mode too (set the attribute
        to 0 to stop it). Gradients treat the draws as constants.

    Parameters are NumPy arrays in ``parameters()``, named as in torch: ``weight_ih_l{k}``
    (H, D or num_directions * H), ``weight_hh_l{k}`` (H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}``
    (H,), with the suffix ``_reverse`` for the reverse direction; all initialised from
    uniform(-1/sqrt(H), 1/sqrt(H)). After ``backward``, ``grads`` holds their gradients under
    the same names. ``rng`` is the layer's numpy Generator (it draws the dropout masks and the
    noise, layer after layer: for each direction its noise on a_t, then on h_t, then the
    layer's dropout mask; save ``rng.bit_generator.state`` to resume a run exactly).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=np.float32,
                 seed=None, n_threads=None, leak=1.0, noise_std=0.0, state_noise_std=0.0):
        self.input_size = check_size(input_size, "input_size")
        self.hidden_size = check_size(hidden_size, "hidden_size")
        self.num_layers = check_size(num_layers, "num_layers")
        self.nonlinearity = check_choice(nonlinearity, "nonlinearity", NONLINEARITIES)
        self.dropout = check_real(dropout, "dropout", 0.0, 1.0)
        self.dtype = check_float_dtype(dtype)
        self.bias = check_bool(bias, "bias")
        self.batch_first = check_bool(batch_first, "batch_first")
        self.bidirectional = check_bool(bidirectional, "bidirectional")
        self.num_directions = 2 if self.bidirectional else 1
        if n_threads is not None:
            resolve_n_threads(n_threads)  # checked now; kept as given (None: every core)
        self.n_threads = n_threads
        self.rng = random_generator(seed)
        self._check_parameter_memory()
        self.leak = layer_leaks(leak, self.num_layers, self.hidden_size, self.dtype)
        self.noise_std = noise_std
        self.state_noise_std = state_noise_std
        self._params = self._initial_parameters()
        self.grads = {}
        self._saved = None  # what backward needs from the last forward

    noise_std, state_noise_std = NoiseStd(), NoiseStd()  # checked when set

    # -- parameters --------------------------------------------------------------------------

    def _layer_input_size(self, layer):
        return self.input_size if layer == 0 else self.hidden_size * self.num_directions

    def _shapes(self):
        H = self.hidden_size
        shapes = {}
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                names = parameter_names(layer, direction)
                shapes[names["weight_ih"]] = (H, self._layer_input_size(layer))
                shapes[names["weight_hh"]] = (H, H)
                if self.bias:
                    shapes[names["bias_ih"]] = (H,)
                    shapes[names["bias_hh"]] = (H,)
        return shapes

    def _check_parameter_memory(self):
        """MemoryError before the parameters are drawn, if they cannot fit (counted without
        listing them: a billion layers must not take a billion steps to refuse)."""
        H, L, directions = self.hidden_size, self.num_layers, self.num_directions
        per_direction = H * (self.input_size + H + 2 * self.bias)  # layer 0
        per_direction += (L - 1) * H * (directions * H + H + 2 * self.bias)  # layers 1..L-1
        largest = (H, max(self.input_size, directions * H if L > 1 else 0, H))
        check_allocation("RNN", [
            ("its parameters (values,)", (directions * per_direction,), self.dtype),
            # Each is drawn in float64, then cast; and each array is a Python object.
            ("the float64 draw of the largest weight (H, max(D, num_directions * H))", largest,
             np.float64),
            ("an array object per parameter (parameters, 128 bytes)", (directions * L * 4, 128),
             np.uint8),
        ])

    def _initial_parameters(self):
        bound = 1 / np.sqrt(self.hidden_size)
        return {name: self.rng.uniform(-bound, bound, shape).astype(self.dtype)
                for name, shape in self._shapes().items()}

    def direction_weights(self, layer, direction=0):
        """The weights one direction of one layer runs with: (W_xh, W_hh, b), the arguments of
        ``rnn_forward``.

        W_xh (H, D or num_directions * H) and W_hh (H, H) are the layer's own arrays
        (``weight_ih_l{layer}``, ``weight_hh_l{layer}``, with "_reverse" for direction 1):
        writing into them changes the layer. b (H,) is the sum bias_ih + bias_hh, a new array,
        or None without bias.
        """
        layer = check_int(layer, "layer", low=0, high=self.num_layers - 1)
        direction = check_int(direction, "direction", low=0, high=self.num_directions - 1)
        return self._weights(layer, direction)

    def _weights(self, layer, direction):
        names = parameter_names(layer, direction)
        b = None
        if self.bias:
            b = self._params[names["bias_ih"]] + self._params[names["bias_hh"]]
        return self._params[names["weight_ih"]], self._params[names["weight_hh"]], b

    # -- forward -----------------------------------------------------------------------------

    def forward(self, x, h0=None, lengths=None):
        """Run the RNN over a batch of sequences.

        Parameters
        ----------
        x : array_like, shape (T, B, D), or (B, T, D) with batch_first
        h0 : array_like, shape (num_layers * num_directions, B, H), or None (zeros)
        lengths : array_like of int, shape (B,), or None
            Variable-length batches without packing: sequence b has lengths[b] real steps
            (1..T). Its outputs past them are zeros and ``h_n`` holds its last real state, as
            with PyTorch's packed sequences; the kernels skip the padding.

        Returns
        -------
        out : ndarray, shape (T, B, num_directions * H), or (B, T, ...) with batch_first
            The last layer's states, both directions concatenated.
        h_n : ndarray, shape (num_layers * num_directions, B, H)
            Each layer's and direction's final state (the reverse direction's is at t = 0).
        """
        # Checked as given (not copied) first: see functional.rnn_forward.
        x_layout = ("B", "T", "D") if self.batch_first else ("T", "B", "D")
        x = float_array(x, "x", x_layout)
        self._check_dtype(x, "x")
        T, B, D = (x.shape[1], x.shape[0], x.shape[2]) if self.batch_first else x.shape
        if D != self.input_size:
            raise ValueError(f"x must have input_size = {self.input_size} features; got {D} "
                             f"(shape {x.shape})")
        states = self.num_layers * self.num_directions
        if h0 is not None:
            h0 = float_array(h0, "h0", ("L", "B", "H"))
            check_shape(h0, "h0", ("num_layers * num_directions", "B", "H"),
                        (states, B, self.hidden_size), "(B from x)")
            self._check_dtype(h0, "h0")
        if lengths is not None:
            lengths = check_lengths(lengths, B, T)
        x_copy = (("a contiguous copy of x (T, B, D)", (T, B, D), self.dtype) if self.batch_first
                  else copy_size(x, "x", x_layout))
        check_allocation("RNN.forward",
                         [x_copy, None if h0 is None else copy_size(h0, "h0", ("L", "B", "H"))]
                         + self._forward_buffers(T, B, h0 is not None, lengths),
                         "split the sequence into chunks or the batch into smaller ones")
        x = contiguous(x.transpose(1, 0, 2) if self.batch_first else x)
        h0 = None if h0 is None else contiguous(h0)
        if lengths is not None:
            lengths = lengths.astype(np.intp)
        steps = _Steps(T, B, lengths)

        layer_input = x
        caches, masks, h_n = [], [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                reverse = direction == 1
                out, cache = self._run_direction(layer_input, None if h0 is None else h0[index],
                                                 layer, direction, steps)
                outputs.append(out)
                caches.append(cache)
                h_n.append(steps.first_states(out) if reverse else steps.last_states(out))
            output = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=2)
            mask = None
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                keep = 1 - self.dropout
                mask = (self.rng.random(output.shape) < keep).astype(self.dtype) / keep
                output = output * mask
            masks.append(mask)
            layer_input = output
        self._saved = (caches, masks, steps, (T, B, D))
        out = layer_input
        if self.batch_first:
            out = np.ascontiguousarray(out.transpose(1, 0, 2))
        return out, np.stack(h_n)

    __call__ = forward

    def _forward_buffers(self, T, B, has_h0, lengths):
        """What a forward pass allocates (for check_allocation): what every pass keeps for
        backward (its states, and act(a_t) if it is leaky), the scratch and noise of one pass,
        and what the layer allocates around them."""
        H, L, directions = self.hidden_size, self.num_layers, self.num_directions
        width = directions * H
        buffers = [("h_n (L * num_directions, B, H)", (L * directions, B, H), self.dtype)]
        noise, state_noise = self.noise_std > 0, self.state_noise_std > 0
        passes = leaky_passes(self.leak, self.input_size, width, directions)
        for (D, leaky), count in passes.items():
            kept, scratch = forward_buffers(T, B, D, H, self.dtype, h0=has_h0,
                                            order=batch_order(lengths), leaky=leaky,
                                            noise=noise, state_noise=state_noise)
            buffers += [(f"{what}, in each of {count} passes", (count,) + shape, dtype)
                        for what, shape, dtype in kept]
        buffers += scratch  # the same for every pass, and one pass runs at a time
        if noise or state_noise:
            buffers.append(("the noise drawn for one pass (noises, T, B, H)",
                            (noise + state_noise, T, B, H), self.dtype))
        if lengths is not None:  # the index that reverses each sequence within its length
            buffers.append(("the time index of each sequence (3, T, B)", (3, T, B), np.intp))
        if self.bidirectional:  # the reversed inputs, the concatenated outputs
            buffers.append(("the time-reversed input of every layer (T, B, D + (L - 1) * 2H)",
                            (T, B, self.input_size + (L - 1) * width), self.dtype))
            buffers.append(("each layer's output (L, T, B, 2H)", (L, T, B, width), self.dtype))
        if self.training and self.dropout > 0 and L > 1:  # mask (drawn in float64), output
            buffers.append(("the dropout masks (L - 1, T, B, num_directions * H)",
                            (L - 1, T, B, width), np.float64))
            buffers.append(("the outputs after dropout (2 * (L - 1), T, B, num_directions * H)",
                            (2 * (L - 1), T, B, width), self.dtype))
        if self.batch_first:
            buffers.append(("out in (B, T, num_directions * H)", (B, T, width), self.dtype))
        return buffers

    def _run_direction(self, layer_input, h0, layer, direction, steps):
        """Run one direction of one layer; returns its states in time order and its cache."""
        reverse = direction == 1
        if reverse:
            layer_input = steps.reverse(layer_input)
        shape = layer_input.shape[:2] + (self.hidden_size,)  # drawn in the direction's order
        noise, state_noise = draw_noise(self.rng, self.leak[layer], self.noise_std,
                                        self.state_noise_std, shape, self.dtype)
        out, cache = rnn_forward(layer_input, h0, *self._weights(layer, direction),
                                 nonlinearity=self.nonlinearity, n_threads=self.n_threads,
                                 lengths=steps.lengths, leak=kernel_leak(self.leak[layer]),
                                 noise=noise, state_noise=state_noise)
        return (steps.reverse(out) if reverse else out), cache

    def direction_runs(self, x, h0=None):
        """Run the layer in evaluation mode (no dropout) and return what each direction of
        each layer ran on, for diagnostics that look at one recurrence at a time.

        Parameters
        ----------
        x, h0
            As in ``forward`` (no ``lengths``).

        Returns
        -------
        list of (layer, direction, args, out), for every layer and direction in order
            ``args`` = (x, h0, W_xh, W_hh, b): the arguments of ``rnn_forward`` that direction
            ran with, its input (T, B, D or num_directions * H) in its own time order (reversed
            for direction 1); ``out`` (T, B, H): its states, in the same order.

        The state kept for ``backward`` and the training mode are left as they were.
        """
        saved, training = self._saved, self.training
        self.training = False
        try:
            self.forward(x, h0)
            caches = self._saved[0]
        finally:
            self._saved, self.training = saved, training
        runs = []
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                cache = caches[layer * self.num_directions + direction]
                b = self._weights(layer, direction)[2]
                runs.append((layer, direction, (cache.x, cache.h0, cache.W_xh, cache.W_hh, b),
                             cache.out))
        return runs

    # -- backward ----------------------------------------------------------------------------

    def backward(self, dout, dh_n=None, *, return_norms=False):
        """Backpropagate through the last forward pass.

        Parameters
        ----------
        dout : array_like, shape of ``out``
            dL/d``out``.
        dh_n : array_like, shape of ``h_n``, or None
            dL/d``h_n`` (for example from the next chunk in truncated BPTT).
        return_norms : bool
            Also return the per-step gradient norms of every layer and direction (see
            ``rnnfast.rnn_backward``); False (the default) costs nothing.

        Returns
        -------
        dx : ndarray, shape of ``x``
        dh0 : ndarray, shape (num_layers * num_directions, B, H)
        norms : ndarray, shape (num_layers, num_directions, T, B), only with return_norms
            ``norms[l, d, t, b]`` = ||dL/dh_t|| for the state of layer l, direction d (0
            forward, 1 reverse) at time t of sequence b: the whole gradient reaching that state
            (from the layer above or the loss, through dropout, and from the state after it in
            the direction's order), before the product with act'. Always in time order: for
            the reverse direction, t is the original time index (each sequence reversed back
            within its own length). Always (T, B), also with ``batch_first``. With ``lengths``,
            0 past a sequence's end. The layer's dtype.

        The parameter gradients are stored in ``grads``, named like the parameters.
        """
        if self._saved is None:
            raise RuntimeError("backward needs a forward pass first")
        return_norms = check_bool(return_norms, "return_norms")
        caches, masks, steps, (T, B, D) = self._saved
        H = self.hidden_size
        width = self.num_directions * H
        dout_layout = ("B", "T", "H*") if self.batch_first else ("T", "B", "H*")
        dout = float_array(dout, "dout", dout_layout)
        check_shape(dout.transpose(1, 0, 2) if self.batch_first else dout, "dout",
                    ("T", "B", "num_directions * H"), (T, B, width), "(the shape of out)")
        states = self.num_layers * self.num_directions
        if dh_n is not None:
            dh_n = float_array(dh_n, "dh_n", ("L", "B", "H"))
            check_shape(dh_n, "dh_n", ("num_layers * num_directions", "B", "H"), (states, B, H),
                        "(the shape of h_n)")
        for name, array in (("dout", dout), ("dh_n", dh_n)):
            if array is not None:
                self._check_dtype(array, name)
        dout_copy = (("a contiguous copy of dout (T, B, num_directions * H)", (T, B, width),
                      self.dtype) if self.batch_first else copy_size(dout, "dout", dout_layout))
        dh_n_copy = None if dh_n is None else copy_size(dh_n, "dh_n", ("L", "B", "H"))
        check_allocation("RNN.backward", [dout_copy, dh_n_copy]
                         + self._backward_buffers(T, B, D, steps.lengths, return_norms),
                         "split the sequence into chunks or the batch into smaller ones")
        dout = contiguous(dout.transpose(1, 0, 2) if self.batch_first else dout)
        dh_n = None if dh_n is None else contiguous(dh_n)

        grads = {}
        dh0 = np.empty((states, B, H), dtype=self.dtype)
        norms = (np.empty((self.num_layers, self.num_directions, T, B), dtype=self.dtype)
                 if return_norms else None)
        d_output = dout
        for layer in reversed(range(self.num_layers)):
            if masks[layer] is not None:
                d_output = d_output * masks[layer]
            d_input = None
            for direction in range(self.num_directions):
                names = parameter_names(layer, direction)
                index = layer * self.num_directions + direction
                d_states = d_output[:, :, direction * H:(direction + 1) * H]
                reverse = direction == 1
                if reverse:
                    d_states = steps.reverse(d_states)
                layer_grads = rnn_backward(d_states, caches[index],
                                           None if dh_n is None else dh_n[index],
                                           n_threads=self.n_threads, return_norms=return_norms)
                if return_norms:
                    layer_grads, layer_norms = layer_grads
                    # The reverse direction ran on reversed sequences: back to time order.
                    norms[layer, direction] = (steps.reverse(layer_norms) if reverse
                                               else layer_norms)
                dx = steps.reverse(layer_grads.dx) if reverse else layer_grads.dx
                d_input = dx if d_input is None else d_input + dx
                dh0[index] = layer_grads.dh0
                grads[names["weight_ih"]] = layer_grads.dW_xh
                grads[names["weight_hh"]] = layer_grads.dW_hh
                if self.bias:  # b = b_ih + b_hh: both receive the gradient of b
                    grads[names["bias_ih"]] = layer_grads.db
                    grads[names["bias_hh"]] = layer_grads.db.copy()
            d_output = d_input
        self.grads = grads
        dx = d_output
        if self.batch_first:
            dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
        if return_norms:
            return np.ascontiguousarray(dx), dh0, norms
        return np.ascontiguousarray(dx), dh0

    def _backward_buffers(self, T, B, D, lengths, return_norms):
        """What a backward pass allocates at its peak (for check_allocation): the gradients of
        the parameters, and the largest layer's gradient buffers (each layer's are freed when
        the next one down starts): each direction's pass, and around them the incoming
        gradient, a reversed dx and the sum of the directions' dx."""
        H, L, directions = self.hidden_size, self.num_layers, self.num_directions
        width = directions * H
        parameters = sum(array.size for array in self._params.values())
        layer_input = D if L == 1 else max(D, width)
        one_pass = backward_buffers(T, B, layer_input, H, self.dtype, order=batch_order(lengths),
                                    leaky=bool(np.any(self.leak != 1)),
                                    return_norms=return_norms)
        buffers = [("the gradients of the parameters", (parameters,), self.dtype),
                   ("dh0 (L * num_directions, B, H)", (L * directions, B, H), self.dtype),
                   ("the incoming gradient, a reversed dx, their sum (T, B, width + 2 * input)",
                    (T, B, width + 2 * layer_input), self.dtype),
                   ("dx (T, B, D)", (T, B, D), self.dtype)]
        buffers += [(f"{what}, for each direction", (directions,) + shape, dtype)
                    for what, shape, dtype in one_pass]
        if return_norms:
            buffers.append(("norms (L, num_directions, T, B)", (L, directions, T, B),
                            self.dtype))
        return buffers
