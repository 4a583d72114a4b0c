"""`rnnfast.RNN`: the layer, with the semantics, shapes, parameter names and initialisation of
`torch.nn.RNN` (stacked, bidirectional, batch_first, dropout between layers), and as an
extension a leak and noise (continuous-time networks, see rnnfast.nn.leaky).

Each (layer, direction) is one pass of the kernels, the reverse direction on the time-reversed
sequence (with `lengths`, each sequence reversed within its own length, as PyTorch's packed
sequences are). Each call is checked once (rnnfast.nn.rnn_calls); its passes go straight to the
compiled entry (rnnfast._kernels.entry, which checks its arrays again at C level), through
rnnfast.functional only for what that entry does not take (a batch to reorder by length).
Stacks on several cores: rnnfast.nn.wavefront.
"""
import numpy as np

from rnnfast._kernels import entry as _entry
from rnnfast._kernels.backend import batch_order
from rnnfast.functional import NONLINEARITIES, rnn_backward, rnn_forward
from rnnfast.nn import wavefront
from rnnfast.nn.leaky import NoiseStd, kernel_leak, layer_leaks
from rnnfast.nn.module import Module
from rnnfast.nn.rnn_calls import (backward_inputs, check_parameter_memory, direction_noise,
                                  dropout_mask, drops_out, forward_inputs)
from rnnfast.utils.threads import resolve_n_threads
from rnnfast.utils.validation import (check_bool, check_choice, check_float_dtype, check_int,
                                      check_real, check_size, random_generator)

__all__ = ["RNN", "parameter_names"]

PARAMETER_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def parameter_names(layer, direction):
    """The names of one direction's parameters, as torch.nn.RNN names them: kind -> name, e.g.
    {"weight_ih": "weight_ih_l1_reverse", "weight_hh": "weight_hh_l1_reverse", ...} for
    layer 1, direction 1 (the reverse one)."""
    suffix = "_reverse" if direction else ""
    return {kind: f"{kind}_l{layer}{suffix}" for kind in PARAMETER_KINDS}


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
        Passed to the kernels (None: every core). With two or more, a stack of
        unidirectional layers at small batches also runs its layers side by side, one core
        each, time cut into chunks (rnnfast.nn.wavefront), where that pays and has been
        faster for the kind of call (results then equal the one-thread ones up to rounding).
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
        check_parameter_memory(self)
        self._fitted = {}  # the kinds of call whose memory was checked (rnn_calls)
        self.leak = leak
        self.noise_std = noise_std
        self.state_noise_std = state_noise_std
        self._params = self._initial_parameters()
        self._names = [[parameter_names(layer, direction)
                        for direction in range(self.num_directions)]
                       for layer in range(self.num_layers)]
        self._bias_sums = {}  # (layer, direction) -> the (H,) buffer b_ih + b_hh goes to
        self._wavefront_timings = {}  # kind of call -> seconds sequential, on the wavefront
        self._side_by_side = False  # whether the last forward ran each layer's directions so
        self.grads = {}
        self._saved = None  # what backward needs from the last forward

    noise_std, state_noise_std = NoiseStd(), NoiseStd()  # checked when set
    _sequential_only = False  # True: never on the wavefront (direction_runs reads each pass)

    @property
    def leak(self):
        """The leak of every unit of every layer, (num_layers, H), read-only."""
        return self._leak

    @leak.setter
    def leak(self, leak):
        self._leak = layer_leaks(leak, self.num_layers, self.hidden_size, self.dtype)
        self._kernel_leaks = [kernel_leak(row) for row in self._leak]  # as the passes take it
        self._fitted.clear()  # the memory of leaky passes differs

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

    def _pass_weights(self, layer, direction):
        """(W_xh, W_hh, b) of a pass: the layer's arrays, and b summed now (an optimizer may
        have updated the biases in place since the last pass) into a buffer kept for it."""
        names, params = self._names[layer][direction], self._params
        b = None
        if self.bias:
            b = self._bias_sums.get((layer, direction))
            if b is None:
                b = self._bias_sums[layer, direction] = np.empty(self.hidden_size, self.dtype)
            np.add(params[names["bias_ih"]], params[names["bias_hh"]], out=b)
        return params[names["weight_ih"]], params[names["weight_hh"]], b

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
        x, h0, steps = forward_inputs(self, x, h0, lengths)
        # The last pass's buffers go back to the allocator before this pass takes its own
        # (which then are the same, still in cache, call after call).
        self._saved = None
        plan = None
        if self.num_layers > 1 or self.bidirectional:
            plan = wavefront.plan(self, x.shape[0], x.shape[1], steps)
        if plan is None:
            out, h_n = self._sequential_forward(x, h0, steps)
        else:  # the layers side by side on several cores, where that is faster
            out, h_n = wavefront.run_forward(self, x, h0, steps, plan)
        if self.batch_first:
            out = np.ascontiguousarray(out.transpose(1, 0, 2))
        return out, h_n

    __call__ = forward

    def _sequential_forward(self, x, h0, steps, side_by_side=False):
        """The layers one after the other, each direction one pass (side_by_side: the two
        directions of a layer at once, on two threads): (out (T, B, width), h_n); what
        backward needs in ``_saved``."""
        T, B, D = x.shape
        H, directions = self.hidden_size, self.num_directions
        n_threads = 1 if side_by_side else self.n_threads
        layer_input = x
        caches, masks = [], []
        h_n = np.empty((self.num_layers * directions, B, H), self.dtype)
        for layer in range(self.num_layers):
            if directions == 1:  # the common case, in as few calls as it takes
                out, cache = self._forward_pass(
                    layer_input, None if h0 is None else h0[layer],
                    self._pass_weights(layer, 0), layer, steps.lengths,
                    *direction_noise(self, layer, (T, B, H)), n_threads)
                caches.append(cache)
                h_n[layer] = steps.last_states(out)
                outputs = [out]
            else:
                outputs = self._layer_directions(layer_input, h0, layer, steps, side_by_side,
                                                 n_threads, caches, h_n)
            output = outputs[0] if directions == 1 else np.concatenate(outputs, axis=2)
            mask = None
            if drops_out(self, layer):
                mask = dropout_mask(self, output.shape)
                output = output * mask
            masks.append(mask)
            layer_input = output
        self._saved, self._side_by_side = (caches, masks, steps, (T, B, D)), side_by_side
        return layer_input, h_n

    def _layer_directions(self, layer_input, h0, layer, steps, side_by_side, n_threads, caches,
                          h_n):
        """Both directions of a layer (side_by_side: at once, on two threads), their caches
        appended to caches and their final states written to h_n: their states in time
        order."""
        T, B, _ = layer_input.shape
        noises = [direction_noise(self, layer, (T, B, self.hidden_size)) for _ in range(2)]

        def run(direction):
            index = 2 * layer + direction
            return self._run_direction(layer_input, None if h0 is None else h0[index], layer,
                                       direction, steps, *noises[direction], n_threads)

        outputs = []
        for direction, (out, cache) in enumerate(wavefront.each_direction(run, 2,
                                                                          side_by_side)):
            outputs.append(out)
            caches.append(cache)
            h_n[2 * layer + direction] = (steps.first_states(out) if direction
                                          else steps.last_states(out))
        return outputs

    def _run_direction(self, layer_input, h0, layer, direction, steps, noise, state_noise,
                       n_threads):
        """Run one direction of one layer; returns its states in time order and its cache."""
        reverse = direction == 1
        if reverse:
            layer_input = np.ascontiguousarray(steps.reverse(layer_input))
        out, cache = self._forward_pass(layer_input, h0, self._pass_weights(layer, direction),
                                        layer, steps.lengths, noise, state_noise, n_threads)
        return (steps.reverse(out) if reverse else out), cache

    def _forward_pass(self, x, h0, weights, layer, lengths, noise, state_noise, n_threads):
        """rnn_forward of one direction of one layer on checked arrays, with its weights
        (W_xh, W_hh, b): (out, cache). The compiled entry takes them as they are; what it
        leaves (a batch to sort by length) goes through rnnfast.functional."""
        W_xh, W_hh, b = weights
        leak = self._kernel_leaks[layer]
        result = _entry.forward(x, h0, W_xh, W_hh, b, self.nonlinearity, "cython", n_threads,
                                lengths, leak, noise, state_noise, True)
        if result is None:
            result = rnn_forward(x, h0, W_xh, W_hh, b, nonlinearity=self.nonlinearity,
                                 n_threads=n_threads, lengths=lengths, leak=leak, noise=noise,
                                 state_noise=state_noise)
        return result

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
        saved, side_by_side, training = self._saved, self._side_by_side, self.training
        self.training, self._sequential_only = False, True
        try:
            self.forward(x, h0)
            caches = self._saved[0]
        finally:
            self._saved, self._side_by_side, self.training = saved, side_by_side, training
            del self._sequential_only
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
        if isinstance(self._saved, wavefront.WavefrontPass):
            return self._wavefront_backward(dout, dh_n, return_norms)
        caches, masks, steps, (T, B, D) = self._saved
        dout, dh_n, return_norms = backward_inputs(self, dout, dh_n, return_norms, T, B, D,
                                                   batch_order(steps.lengths))
        self.grads = {}  # the last gradients' buffers back to the allocator first, as above
        H, states = self.hidden_size, self.num_layers * self.num_directions
        grads = {}
        dh0 = np.empty((states, B, H), dtype=self.dtype)
        norms = (np.empty((self.num_layers, self.num_directions, T, B), dtype=self.dtype)
                 if return_norms else None)
        n_threads = 1 if self._side_by_side else self.n_threads
        d_output = dout
        for layer in reversed(range(self.num_layers)):
            if masks[layer] is not None:
                d_output = d_output * masks[layer]
            if self.num_directions == 1:  # the common case, in as few calls as it takes
                passes = [self._backward_pass(d_output, caches[layer],
                                              None if dh_n is None else dh_n[layer],
                                              return_norms, n_threads)]
            else:
                passes = self._layer_directions_backward(d_output, dh_n, layer, caches, steps,
                                                         return_norms, n_threads)
            d_input = None
            for direction, layer_grads in enumerate(passes):
                names = self._names[layer][direction]
                index = layer * self.num_directions + direction
                reverse = direction == 1
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
        dx = d_output  # the kernel's, or a sum of the directions': C-contiguous
        if self.batch_first:
            dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
        if return_norms:
            return dx, dh0, norms
        return dx, dh0

    def _layer_directions_backward(self, d_output, dh_n, layer, caches, steps, return_norms,
                                   n_threads):
        """The backward passes of both directions of a layer (side by side on two threads
        when the forward pass ran them so), from d_output (T, B, 2H) in time order."""
        H = self.hidden_size

        def run(direction):
            index = 2 * layer + direction
            d_states = d_output[:, :, direction * H:(direction + 1) * H]
            d_states = np.ascontiguousarray(steps.reverse(d_states) if direction else d_states)
            return self._backward_pass(d_states, caches[index],
                                       None if dh_n is None else dh_n[index], return_norms,
                                       n_threads)

        return wavefront.each_direction(run, 2, self._side_by_side)

    def _wavefront_backward(self, dout, dh_n, return_norms):
        """backward of a forward pass that ran on the wavefront."""
        saved = self._saved
        T, B, D = saved.shape
        dout, dh_n, return_norms = backward_inputs(self, dout, dh_n, return_norms, T, B, D,
                                                   batch_order(saved.steps.lengths))
        dx, dh0, self.grads, norms = wavefront.backward(self, saved, dout, dh_n, return_norms)
        if self.batch_first:
            dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
        return (dx, dh0, norms) if return_norms else (dx, dh0)

    @staticmethod
    def _backward_pass(dout, cache, dh_n, return_norms, n_threads):
        """rnn_backward of one direction's pass on checked arrays: straight to the compiled
        entry, or through rnnfast.functional for what it leaves (a reordered batch)."""
        result = _entry.backward(dout, cache, dh_n, n_threads, return_norms)
        if result is None:
            result = rnn_backward(dout, cache, dh_n, n_threads=n_threads,
                                  return_norms=return_norms)
        return result
