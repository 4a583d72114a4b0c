"""Training a language model with truncated backpropagation through time (TBPTT).

Each step reads the next chunk of every stream (rnnfast.train.streams), runs the model from the state
the previous chunk ended in, and backpropagates through this chunk only: the carried state is a
constant of the step, so the gradient stops at the boundary. Memory and time per step are
bounded by the chunk, however long the stream.
"""
import numpy as np

from rnnfast.nn import softmax_cross_entropy
from rnnfast.train.streams import TokenStreams
from rnnfast.train.update import apply_gradients, check_loss
from rnnfast.utils.allocator import reuse_freed_memory
from rnnfast.utils.threads import blas_threads_at_most
from rnnfast.utils.validation import check_bool

__all__ = ["TBPTTTrainer", "evaluate"]


class TBPTTTrainer:
    """Trains a token model (e.g. CharRNN) on TokenStreams, one chunk per ``step()``.

    Parameters
    ----------
    model : CharRNN
        Anything with forward(ids, h0) -> (logits, h_n), backward(dlogits) -> grads,
        parameters(), initial_state(B), train(mode), eval() and training (an
        ``rnnfast.nn.Composite`` of token layers).
    optimizer : rnnfast.optim.Optimizer
        Built on ``model.parameters()``.
    streams : TokenStreams
    clip_norm : float or None
        Scale the gradients so that their global norm is at most this (None: no clipping by
        norm). The norm is computed either way, to catch non-finite gradients.
    clip_value : float or None
        Clip every gradient entry to [-clip_value, clip_value] (None: off). Applied before
        clipping by norm.
    reuse_memory : bool, default True
        Have the C allocator keep freed blocks for reuse (rnnfast.utils.allocator, glibc
        only; process-wide, up to 64 MiB kept): each step's large arrays then come back
        without page faults (~1000 per step at `rnnfast train`'s defaults, 12% of the step).
    """

    def __init__(self, model, optimizer, streams, *, clip_norm=5.0, clip_value=None,
                 reuse_memory=True):
        if not isinstance(streams, TokenStreams):
            raise TypeError(f"streams must be a TokenStreams; got {type(streams).__name__}")
        if check_bool(reuse_memory, "reuse_memory"):
            reuse_freed_memory()
        self.model = model
        self.optimizer = optimizer
        self.streams = streams
        self.clip_norm = clip_norm
        self.clip_value = clip_value
        self.state = model.initial_state(streams.batch_size)  # carried between chunks
        self.steps = 0
        self.last_grad_norm = None
        self.last_tokens = 0  # targets in the last chunk (the last of an epoch may be short)

    def step(self):
        """Train on the next chunk; returns its mean loss in nats per token.

        Raises
        ------
        NonFiniteError
            The loss or a gradient is NaN or inf (the parameters are left as they were), or
            the update made a parameter NaN or inf.
        """
        inputs, targets, starts_epoch = self.streams.next_chunk()
        if starts_epoch:  # the streams jumped back to their starts: the old context is gone
            self.state = self.model.initial_state(self.streams.batch_size)
        self.model.train()
        step = self.steps + 1
        # The model's threads are its kernels' team (n_threads); BLAS stays on one inside the
        # step: OpenBLAS's pool, woken by a large dot product (the gradient norm), spins for
        # a while on the core the team needs next.
        with blas_threads_at_most(1):
            # Overflow is checked explicitly below, with a message that says where it happened.
            with np.errstate(over="ignore", invalid="ignore"):
                logits, h_n = self.model.forward(inputs, self.state)
                loss, dlogits = softmax_cross_entropy(logits, targets,
                                                      n_threads=_threads_of(self.model))
                check_loss(loss, step, self.model.parameters())
                grads = self.model.backward(dlogits)
            norm = apply_gradients(self.optimizer, self.model.parameters(), grads, step,
                                   clip_norm=self.clip_norm, clip_value=self.clip_value)
        self.state = h_n
        self.steps = step
        self.last_grad_norm = norm
        self.last_tokens = targets.size
        return loss

    def state_dict(self):
        """Everything besides the model and the optimizer that a resumed run needs."""
        return {"steps": self.steps, "state": self.state.copy(), **{
            f"streams.{key}": value for key, value in self.streams.state_dict().items()}}

    def load_state_dict(self, state):
        """Continue from ``state_dict()`` (the same model shape and streams)."""
        carried = np.asarray(state["state"])
        expected = self.model.initial_state(self.streams.batch_size)
        if carried.shape != expected.shape:
            raise ValueError(f"the carried state must have shape (num_layers, B, H) = "
                             f"{expected.shape}; got {carried.shape}")
        self.streams.load_state_dict({key[len("streams."):]: value for key, value in state.items()
                                      if key.startswith("streams.")})
        self.steps = int(state["steps"])
        self.state = carried.astype(expected.dtype)


def evaluate(model, tokens, *, batch_size=16, seq_len=256):
    """Mean cross-entropy of the next token over ``tokens``, in nats per token.

    The tokens are read as ``batch_size`` streams (each starting from a zero state, its state
    carried across chunks), in evaluation mode (no dropout); every token but the first of each
    stream is predicted once.
    """
    streams = TokenStreams(tokens, min(batch_size, len(tokens) - 1), seq_len)
    was_training = model.training
    model.eval()
    try:
        state, total, count = model.initial_state(streams.batch_size), 0.0, 0
        for _ in range(streams.chunks_per_epoch):
            inputs, targets, _ = streams.next_chunk()
            logits, state = model.forward(inputs, state)
            loss, _ = softmax_cross_entropy(logits, targets, n_threads=_threads_of(model))
            total += loss * targets.size
            count += targets.size
    finally:
        model.train(was_training)
    return total / count


def _threads_of(model):
    """The threads of the model's kernels, for the loss's rows (one if the model does not say)."""
    return getattr(model, "n_threads", 1)

