"""``rnnfast.torch.RNN``: a drop-in ``torch.nn.RNN`` for the CPU, on rnnfast's kernels."""
import math
import numbers
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from rnnfast.torch import ops
from rnnfast.torch._checks import (FLOAT_DTYPES, NONLINEARITIES, DeviceError, DtypeError,
                                   ShapeError, check_cpu)
from rnnfast.torch._packing import Packing

__all__ = ["RNN"]


class RNN(nn.Module):
    r"""A multi-layer Elman RNN, ``torch.nn.RNN`` on rnnfast's CPU kernels.

    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu, for every layer
    and direction, exactly as ``torch.nn.RNN``: the same constructor, parameters (names, shapes,
    initialisation: ``torch.manual_seed`` gives both modules the same weights), ``forward``
    for tensors and ``PackedSequence``, dropout between layers in training mode (drawn from
    torch's generator, with the masks ``torch.nn.RNN`` would draw), state dicts that load into
    each other. Each layer is one call of the operator ``torch.ops.rnnfast.rnn_layer``
    (rnnfast.torch.ops), so autograd and ``torch.compile(fullgraph=True)`` work; it is not a
    subclass of ``torch.nn.RNN``, which Dynamo refuses to trace.

    Parameters
    ----------
    input_size, hidden_size : int
        Features of the input (D) and of the hidden state (H).
    num_layers : int
        Stacked layers; layer l > 0 reads the outputs of layer l - 1.
    nonlinearity : {"tanh", "relu"}
    bias : bool
        Whether the layers have ``bias_ih_l{k}`` and ``bias_hh_l{k}``.
    batch_first : bool
        Input and output are (B, T, features) instead of (T, B, features).
    dropout : float in [0, 1]
        Probability of zeroing each output of every layer but the last, in training mode.
    bidirectional : bool
        Each layer also runs over the reversed sequences; outputs are concatenated (2H).
    device : CPU (or "meta"), or None for the default device
    dtype : torch.float32 or torch.float64, or None for the default dtype
    n_threads : int or None, keyword-only
        Threads for the kernels; None (the default) follows ``torch.get_num_threads()`` at
        each call.

    Inputs: ``input`` (T, B, D), (B, T, D) with batch_first, (T, D) unbatched, or a
    ``PackedSequence`` (variable lengths: the kernels run each sequence for its own steps);
    ``hx`` (num_layers * num_directions, B, H), (num_layers * num_directions, H) unbatched,
    or None for zeros. Outputs: ``output`` (T, B, num_directions * H) (the layout of the input;
    a ``PackedSequence`` for one) and ``h_n`` (num_layers * num_directions, B, H).

    Tensors must be on the CPU, float32 or float64 (the parameters' dtype). Double backward
    is not supported.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None,
                 *, n_threads=None):
        super().__init__()
        _check_config(input_size, hidden_size, num_layers, nonlinearity, bias, batch_first,
                      dropout, bidirectional, n_threads)
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout applies between layers, so dropout={dropout} does nothing "
                          f"with num_layers=1", stacklevel=2)
        factory = _factory_kwargs(device, dtype)
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.nonlinearity, self.bias, self.batch_first = nonlinearity, bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        self.proj_size = 0
        self.n_threads = None if n_threads is None else int(n_threads)
        directions = 2 if bidirectional else 1
        self._flat_weights_names, self._all_weights, self._shapes = [], [], {}
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            for suffix in ("", "_reverse")[:directions]:
                shapes = {f"weight_ih_l{layer}{suffix}": (hidden_size, layer_input),
                          f"weight_hh_l{layer}{suffix}": (hidden_size, hidden_size)}
                if bias:
                    shapes[f"bias_ih_l{layer}{suffix}"] = (hidden_size,)
                    shapes[f"bias_hh_l{layer}{suffix}"] = (hidden_size,)
                for name, shape in shapes.items():
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                self._flat_weights_names.extend(shapes)
                self._all_weights.append(list(shapes))
                self._shapes.update(shapes)
        self._layer_names = [sum(self._all_weights[layer * directions:(layer + 1) * directions],
                                 []) for layer in range(num_layers)]
        self.reset_parameters()

    # -- parameters and conversions ----------------------------------------------------------

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def reset_parameters(self):
        """uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, in torch.nn.RNN's order."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    @property
    def all_weights(self):
        """The parameters of each layer and direction, as torch.nn.RNN lists them."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self):
        """Nothing to do (torch.nn.RNN's is for cuDNN); here so that code calling it runs."""

    @classmethod
    def from_torch(cls, module, *, n_threads=None):
        """An rnnfast.torch.RNN with the configuration, parameters and mode of a torch.nn.RNN
        (on the CPU, in the module's dtype)."""
        if not isinstance(module, nn.RNN):
            raise TypeError(f"module must be a torch.nn.RNN; got {type(module).__name__}")
        rnn = cls(module.input_size, module.hidden_size, module.num_layers,
                  module.nonlinearity, module.bias, module.batch_first, module.dropout,
                  module.bidirectional, device="cpu", dtype=module.weight_ih_l0.dtype,
                  n_threads=n_threads)
        rnn.load_state_dict(module.state_dict())
        return rnn.train(module.training)

    def to_torch(self):
        """A torch.nn.RNN with this module's configuration, parameters (copies) and mode."""
        rnn = nn.RNN(self.input_size, self.hidden_size, self.num_layers, self.nonlinearity,
                     self.bias, self.batch_first, self.dropout, self.bidirectional,
                     device=self.weight_ih_l0.device, dtype=self.weight_ih_l0.dtype)
        rnn.load_state_dict(self.state_dict())
        return rnn.train(self.training)

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        for name, default in (("num_layers", 1), ("nonlinearity", "tanh"), ("bias", True),
                              ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False), ("n_threads", None)):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)!r}"
        return text

    # -- forward -----------------------------------------------------------------------------

    def forward(self, input, hx=None):
        """Run the RNN: ``(output, h_n)``, as torch.nn.RNN.forward (see the class)."""
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor or a PackedSequence; got "
                            f"{type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ShapeError(f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor "
                             f"instead")
        batched = input.dim() == 3
        if hx is not None:
            _check_tensor(hx, "hx")
            if hx.dim() != (3 if batched else 2):
                kind = "batched 3-D" if batched else "unbatched 2-D"
                raise ShapeError(f"For {kind} input, hx should also be {3 if batched else 2}-D "
                                 f"but got {hx.dim()}-D tensor")
        if not batched:
            input = input.unsqueeze(0 if self.batch_first else 1)
            hx = None if hx is None else hx.unsqueeze(1)
        x = input.transpose(0, 1) if self.batch_first else input
        output, h_n = self._run(x, hx, None)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not batched:
            return output.squeeze(0 if self.batch_first else 1), h_n.squeeze(1)
        return output, h_n

    def _forward_packed(self, sequence, hx):
        self._check_input(sequence.data, 2)
        packing = Packing(sequence)
        if hx is not None:
            _check_tensor(hx, "hx")
            if hx.dim() != 3:
                raise ShapeError(f"For a PackedSequence input, hx should be 3-D but got "
                                 f"{hx.dim()}-D tensor")
            hx = packing.sort_states(hx)
        output, h_n = self._run(packing.padded(sequence.data), hx, packing)
        return packing.packed_like(output), packing.unsort_states(h_n)

    def _check_input(self, data, dims):
        """data's device, dtype, dims and features, as torch.nn.RNN checks them."""
        _check_tensor(data, "input")
        if data.dim() != dims:
            raise ShapeError(f"input must have {dims} dimensions, got {data.dim()}")
        if data.shape[-1] != self.input_size:
            raise ShapeError(f"input.size(-1) must be equal to input_size. Expected "
                             f"{self.input_size}, got {data.shape[-1]}")
        return data

    def _run(self, x, hx, packing):
        """All layers over time-major x (T, B, D): (output (T, B, W), h_n (L * dirs, B, H))."""
        self._check_input(x, 3)
        T, B, D = x.shape
        dtype = self._check_parameters(x.dtype)
        directions = self.num_directions
        states = self.num_layers * directions
        if hx is not None:
            if hx.dtype != dtype:
                raise DtypeError(f"hx dtype ({hx.dtype}) does not match the input's and "
                                 f"weights' ({dtype})")
            if tuple(hx.shape) != (states, B, self.hidden_size):
                raise ShapeError(f"Expected hidden size {(states, B, self.hidden_size)}, got "
                                 f"{list(hx.shape)}")
        if T * B == 0:
            raise ShapeError(f"input must have at least one step and one sequence; got "
                             f"shape {tuple(x.shape)} (T, B, D)")
        n_threads = 0 if self.n_threads is None else self.n_threads
        lengths = None if packing is None else packing.lengths
        nonlinearity = self.nonlinearity
        layer_input, last_states = x, []
        for layer in range(self.num_layers):
            layer_hx = hx if hx is None or self.num_layers == 1 else \
                hx[layer * directions:(layer + 1) * directions]
            output, h_n = ops.rnn_layer(layer_input, layer_hx, self._layer_parameters(layer),
                                        self.bias, lengths, nonlinearity, n_threads)
            last_states.append(h_n)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                output = (torch.dropout(output, self.dropout, True) if packing is None
                          else packing.dropout(output, self.dropout))
            layer_input = output
        return layer_input, last_states[0] if len(last_states) == 1 else torch.cat(last_states)

    def _layer_parameters(self, layer):
        """One layer's parameters, as the operator's glue takes them: per direction w_ih, w_hh
        and, with bias, b_ih, b_hh."""
        params = self._parameters
        return [params[name] for name in self._layer_names[layer]]

    def _check_parameters(self, input_dtype):
        """Every parameter is a CPU float32/float64 tensor of the input's dtype and of its
        shape (they may have been replaced or converted since construction); returns the
        dtype."""
        params = self._parameters
        dtype = params["weight_ih_l0"].dtype
        for name, shape in self._shapes.items():
            param = params[name]
            if param is None or param.dtype != dtype or not param.is_cpu or param.shape != shape:
                _raise_bad_parameter(name, param, shape, dtype)
        if dtype not in FLOAT_DTYPES:
            raise DtypeError(f"rnnfast.torch.RNN computes in float32 or float64; its parameters "
                             f"are {dtype}: convert the module with .float() or .double()")
        if input_dtype != dtype:
            raise DtypeError(f"RNN input dtype ({input_dtype}) does not match weight dtype "
                             f"({dtype}). Convert input: input.to({dtype}), or convert model: "
                             f"model.to({input_dtype})")
        return dtype


def _check_tensor(value, name):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    check_cpu(value, name)


def _raise_bad_parameter(name, param, shape, dtype):
    if param is None:
        raise ValueError(f"parameter {name} is None; rnnfast.torch.RNN needs all its "
                         f"parameters")
    check_cpu(param, f"parameter {name}")
    if param.dtype != dtype:
        raise DtypeError(f"parameter {name} is {param.dtype}, but weight_ih_l0 is {dtype}: "
                         f"all parameters must share one dtype")
    raise ShapeError(f"parameter {name} must have shape {shape}; got {tuple(param.shape)}")


def _factory_kwargs(device, dtype):
    """device and dtype for the parameters: the CPU (or meta), float32 or float64."""
    device = torch.get_default_device() if device is None else torch.device(device)
    if device.type not in ("cpu", "meta"):
        raise DeviceError(f"rnnfast.torch.RNN runs on the CPU only; got device={device}: use "
                          f"torch.nn.RNN on {device.type}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if dtype not in FLOAT_DTYPES:
        raise DtypeError(f"dtype must be torch.float32 or torch.float64 (the dtypes rnnfast's "
                         f"kernels compute in); got {dtype}")
    return {"device": device, "dtype": dtype}


def _check_config(input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, dropout,
                  bidirectional, n_threads):
    """torch.nn.RNN's checks of its constructor's arguments, with its exception types."""
    if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or \
            not 0 <= dropout <= 1:
        raise ValueError(f"dropout should be a number in range [0, 1] representing the "
                         f"probability of an element being zeroed; got {dropout!r}")
    for name, value in (("bias", bias), ("batch_first", batch_first),
                        ("bidirectional", bidirectional)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("num_layers", num_layers)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be greater than zero")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or "
                         f"'relu'.")
    if n_threads is not None and (isinstance(n_threads, bool)
                                  or not isinstance(n_threads, (int, np.integer))
                                  or n_threads < 1):
        raise ValueError(f"n_threads must be a positive int or None; got {n_threads!r}")
