"""rnnfast for PyTorch users: ``rnnfast.torch.RNN``, a drop-in ``torch.nn.RNN`` for the CPU.

Importing this package imports torch and registers the operators ``torch.ops.rnnfast.rnn_layer``
and ``torch.ops.rnnfast.rnn_layer_backward`` (rnnfast.torch.ops). ``import rnnfast`` alone never
imports torch.
"""
try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "rnnfast.torch needs PyTorch: pip install 'rnnfast[torch]' (see the README's section "
        "'Use from PyTorch' for the CPU-only build)") from exc

from rnnfast.torch._checks import DeviceError, DtypeError, ShapeError
from rnnfast.torch.module import RNN

__all__ = ["RNN", "ShapeError", "DtypeError", "DeviceError"]
