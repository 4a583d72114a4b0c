"""Training: optimizers and gradient clipping (optim), token streams for truncated BPTT
(streams), the TBPTT trainer (trainer) and atomic checkpoints (checkpoint)."""
from rnnfast.train import checkpoint, optim
from rnnfast.train.streams import TokenStreams
from rnnfast.train.trainer import NonFiniteError, TBPTTTrainer, evaluate

__all__ = ["optim", "checkpoint", "TokenStreams", "TBPTTTrainer", "NonFiniteError", "evaluate"]
