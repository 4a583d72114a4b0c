"""Batches for truncated backpropagation through time over one long token sequence.

The sequence is cut into B equal segments, one per row of the batch. Each row reads its segment
from start to end, ``seq_len`` steps per chunk, so chunk k+1 of a row continues exactly where
chunk k stopped: the model carries its hidden state from one chunk to the next (the state holds
the context), while gradients stop at the chunk boundary. When the segments are used up, an
epoch ends and reading starts again at the segment starts (with a fresh state).

    tokens:  [ segment 0 | segment 1 | ... | segment B-1 ]
    chunk k: rows b = 0..B-1 read tokens[start_b + k*T : start_b + (k+1)*T] (inputs) and the same
             shifted by one (targets)
"""
import numpy as np

from rnnfast.utils.validation import as_int_array, check_int, check_size, unwrap_scalar

__all__ = ["TokenStreams"]


class TokenStreams:
    """B streams reading one token sequence from B offsets, in chunks of ``seq_len`` steps.

    Parameters
    ----------
    tokens : array_like of int, shape (N,)
        The sequence (for a character model, the ids of a text).
    batch_size : int
        B, the number of streams (rows of each chunk). Needs N >= B + 1.
    seq_len : int
        T, the steps per chunk (the truncation length of BPTT). The last chunk of an epoch is
        shorter when the segment length is not a multiple of T.
    """

    def __init__(self, tokens, batch_size, seq_len):
        tokens = as_int_array(tokens, "tokens", ("N",))
        self.batch_size = check_size(batch_size, "batch_size")
        self.seq_len = check_size(seq_len, "seq_len")
        n = tokens.shape[0]
        # Each row predicts segment_len targets; the last target of a row is the first token of
        # the next segment, so rows cover tokens[0:N] without overlap.
        self.segment_len = (n - 1) // self.batch_size
        if self.segment_len < 1:
            raise ValueError(f"tokens must have at least batch_size + 1 = {self.batch_size + 1} "
                             f"elements to fill {self.batch_size} streams; got {n}")
        self.tokens = tokens
        self.starts = np.arange(self.batch_size) * self.segment_len
        self.position = 0  # steps already read by every stream in this epoch
        self.epoch = 0

    def __repr__(self):
        return (f"TokenStreams({self.tokens.shape[0]} tokens, batch_size={self.batch_size}, "
                f"seq_len={self.seq_len}, epoch {self.epoch}, position {self.position}/"
                f"{self.segment_len})")

    @property
    def chunks_per_epoch(self):
        return -(-self.segment_len // self.seq_len)

    def next_chunk(self):
        """The next chunk of every stream.

        Returns
        -------
        inputs, targets : ndarray of int64, shape (T, B)
            targets[t, b] is the token after inputs[t, b].
        starts_epoch : bool
            True for the first chunk of an epoch: the streams jumped back to their starts, so a
            hidden state carried from the previous chunk does not belong to them.
        """
        starts_epoch = self.position == 0
        steps = min(self.seq_len, self.segment_len - self.position)
        index = self.starts[None, :] + self.position + np.arange(steps)[:, None]
        inputs, targets = self.tokens[index], self.tokens[index + 1]
        self.position += steps
        if self.position == self.segment_len:
            self.position = 0
            self.epoch += 1
        return inputs, targets, starts_epoch

    def state_dict(self):
        """Where the streams are (to resume reading exactly there)."""
        return {"position": self.position, "epoch": self.epoch}

    def load_state_dict(self, state):
        """Continue from a ``state_dict()`` of streams over the same tokens and batch size."""
        position, epoch = (_int_entry(state, key) for key in ("position", "epoch"))
        if not 0 <= position < self.segment_len:
            raise ValueError(f"state['position'] must lie in [0, {self.segment_len}) (the "
                             f"segment length); got {position}")
        if epoch < 0:
            raise ValueError(f"state['epoch'] must be >= 0; got {epoch}")
        self.position, self.epoch = position, epoch


def _int_entry(state, key):
    if key not in state:
        raise ValueError(f"state is missing the key {key!r}")
    return check_int(unwrap_scalar(state[key], f"state[{key!r}]"), f"state[{key!r}]")
