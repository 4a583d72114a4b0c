"""Training: optimizers and gradient clipping (optim), one checked update of the parameters
(update), token streams for truncated BPTT (streams), the TBPTT trainer (trainer) and atomic
checkpoints (checkpoint)."""
from rnnfast.train import checkpoint, optim
from rnnfast.train.checkpoint import CheckpointError
from rnnfast.train.streams import TokenStreams
from rnnfast.train.trainer import TBPTTTrainer, evaluate
from rnnfast.train.update import NonFiniteError, apply_gradients, check_loss

__all__ = ["optim", "checkpoint", "CheckpointError", "TokenStreams", "TBPTTTrainer", "evaluate",
           "NonFiniteError", "apply_gradients", "check_loss"]
