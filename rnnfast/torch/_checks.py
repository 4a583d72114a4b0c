"""Checks of the tensors that reach the kernels, and the exceptions they raise.

The kernels run without bounds checks: everything they rely on is checked here first, cheaply
(attribute reads on tensors, no copies). The exceptions are rnnfast's ValueError/TypeError and
also the class torch.nn.RNN raises for the same mistake (RuntimeError for shapes and devices,
ValueError for dtypes), so code written against torch.nn.RNN catches them unchanged.
"""
import numpy as np
import torch

from rnnfast.torch._bridge import MAX_DIM

FLOAT_DTYPES = (torch.float32, torch.float64)
NONLINEARITIES = ("tanh", "relu")

__all__ = ["ShapeError", "DtypeError", "DeviceError", "check_cpu", "check_float",
           "check_layer_inputs", "check_lengths", "NONLINEARITIES"]


class ShapeError(ValueError, RuntimeError):
    """A tensor of the wrong number of dimensions or shape (torch.nn.RNN: RuntimeError)."""


class DtypeError(TypeError, ValueError):
    """A tensor of a dtype the kernels do not compute in, or of another dtype than the
    parameters (torch.nn.RNN: ValueError)."""


class DeviceError(ValueError, RuntimeError):
    """A tensor that is not on the CPU: the kernels are CPU code."""


def check_cpu(tensor, name):
    """Raise DeviceError unless tensor is on the CPU."""
    if not tensor.is_cpu:
        raise DeviceError(
            f"{name} is on {tensor.device}, but rnnfast.torch runs on the CPU only: use "
            f"torch.nn.RNN for {tensor.device.type} tensors, or move them with .cpu()")


def check_float(tensor, name):
    """Raise DtypeError unless tensor is float32 or float64."""
    if tensor.dtype not in FLOAT_DTYPES:
        raise DtypeError(f"{name} must be torch.float32 or torch.float64 (the dtypes rnnfast's "
                         f"kernels compute in); got {tensor.dtype}")


def _check_tensor(value, name, shape, dtype):
    """value is a CPU tensor of ``dtype`` and ``shape`` (a tuple of ints), or raise."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    check_cpu(value, name)
    if value.dtype != dtype:
        raise DtypeError(f"{name} must have the dtype of x, {dtype}; got {value.dtype}")
    if value.shape != shape:
        raise ShapeError(f"{name} must have shape {tuple(shape)}; got {tuple(value.shape)}")


def check_layer_inputs(x, hx, w_ih, w_hh, b_ih, b_hh, lengths, nonlinearity):
    """Check the arguments of the rnnfast::rnn_layer operator; return (T, B, D, H).

    x (T, B, D); hx (num_directions, B, H) or None; w_ih, w_hh: lists of num_directions (1 or
    2) tensors (H, D) and (H, H); b_ih, b_hh: both empty (no bias) or num_directions tensors
    (H,); lengths None or int64 (B,), non-increasing, in 1..T. One float dtype, CPU.
    """
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    check_cpu(x, "x")
    check_float(x, "x")
    if x.dim() != 3:
        raise ShapeError(f"x must be 3-D (T, B, D); got a {x.dim()}-D tensor of shape "
                         f"{tuple(x.shape)}")
    T, B, D = x.shape
    if T * B * D == 0:
        raise ShapeError(f"x must have T, B, D >= 1; got shape {tuple(x.shape)}")
    directions = len(w_ih)
    if directions not in (1, 2) or len(w_hh) != directions:
        raise ValueError(f"w_ih and w_hh must list one tensor per direction (1 or 2), both as "
                         f"many; got {len(w_ih)} and {len(w_hh)}")
    if len(b_ih) != len(b_hh) or len(b_ih) not in (0, directions):
        raise ValueError(f"b_ih and b_hh must both be empty (no bias) or list one tensor per "
                         f"direction ({directions}); got {len(b_ih)} and {len(b_hh)}")
    if not isinstance(w_hh[0], torch.Tensor) or w_hh[0].dim() != 2:
        raise ShapeError("w_hh[0] must be a 2-D tensor (H, H)")
    H = w_hh[0].shape[0]
    if H == 0 or max(T * B, D, H) > MAX_DIM:
        raise ShapeError(f"T * B, D and H must be between 1 and {MAX_DIM}; got T * B = {T * B}, "
                         f"D = {D}, H = {H}")
    for d in range(directions):
        _check_tensor(w_ih[d], f"w_ih[{d}]", (H, D), x.dtype)
        _check_tensor(w_hh[d], f"w_hh[{d}]", (H, H), x.dtype)
        if b_ih:
            _check_tensor(b_ih[d], f"b_ih[{d}]", (H,), x.dtype)
            _check_tensor(b_hh[d], f"b_hh[{d}]", (H,), x.dtype)
    if hx is not None:
        _check_tensor(hx, "hx", (directions, B, H), x.dtype)
    if lengths is not None:
        check_lengths(lengths, B, T)
    return T, B, D, H


def check_lengths(lengths, B, T):
    """lengths is an int64 CPU tensor (B,) of values in 1..T, longest first, or raise."""
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"lengths must be a torch.Tensor; got {type(lengths).__name__}")
    check_cpu(lengths, "lengths")
    if lengths.dtype != torch.int64:
        raise DtypeError(f"lengths must be torch.int64; got {lengths.dtype}")
    if lengths.shape != (B,):
        raise ShapeError(f"lengths must have shape (B,) = ({B},); got {tuple(lengths.shape)}")
    values = lengths.numpy()
    if values[-1] < 1 or values[0] > T or np.any(values[1:] > values[:-1]):
        raise ValueError(f"lengths must be sorted longest first, with values in 1..T = {T}; "
                         f"got {values.tolist()[:20]}")
