"""The adding problem (Hochreiter & Schmidhuber 1997), a model for it, and its training.

At each step the input is a value in U(0, 1) and a marker channel that is 1 at one step in each
half of the sequence; the target is the sum of the two marked values, read by a Linear layer
from the last state and scored by the mean squared error. Always predicting the mean, 1, scores
1/6; a model that keeps only the later, nearer value scores 1/12; a solution scores near 0. To
solve it the gradient has to carry the error back to the first marker, up to T steps: the task
that shows vanishing gradients at work.
"""
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from rnnfast.diagnostics.gradient_flow import spectral_radius
from rnnfast.nn import RNN, Composite, Linear
from rnnfast.train import NonFiniteError, apply_gradients, check_loss, optim

__all__ = ["adding_batch", "recurrent_matrix", "AddingModel", "TrainingOutcome", "train_adding",
           "BASELINE_MSE", "RECENT_ONLY_MSE", "SOLVED_MSE", "ORTHOGONAL", "EVAL_SEQUENCES"]

BASELINE_MSE = 1 / 6  # always predicting E[target] = 1: the variance of the sum of two U(0, 1)
RECENT_ONLY_MSE = 1 / 12  # knowing only the later value: the variance of the earlier one
SOLVED_MSE = 0.01
ORTHOGONAL = "orthogonal"  # the "radius" of an orthogonal W_hh in recurrent_matrix
EVAL_SEQUENCES = 512  # the held-out batch of the final MSE (its standard error is ~5%)


def adding_batch(T, B, rng, dtype=np.float32):
    """B sequences of the adding problem: x (T, B, 2) and the targets (B, 1).

    Channel 0 holds values from U(0, 1); channel 1 is 1 at one step of the first half and one
    of the second half (T >= 2), else 0. The target is the sum of the two marked values.
    """
    half = T // 2
    values = rng.uniform(0.0, 1.0, (T, B))
    first = rng.integers(0, half, B)
    second = rng.integers(half, T, B)
    rows = np.arange(B)
    markers = np.zeros((T, B))
    markers[first, rows] = 1.0
    markers[second, rows] = 1.0
    x = np.stack([values, markers], axis=2)
    y = values[first, rows] + values[second, rows]
    return x.astype(dtype), y[:, None].astype(dtype)


def recurrent_matrix(radius, gaussian):
    """W_hh for a setting: ``gaussian`` scaled to spectral radius ``radius``, or for
    ORTHOGONAL the Q of its QR decomposition with the signs fixed (diag(R) > 0), which makes
    Q uniformly distributed over the orthogonal group when ``gaussian`` has i.i.d. entries."""
    if radius == ORTHOGONAL:
        q, r = np.linalg.qr(gaussian)
        return q * np.where(np.diag(r) < 0, -1.0, 1.0)
    return gaussian * (radius / spectral_radius(gaussian))


class AddingModel(Composite):
    """An RNN(2 -> H) that reads the sequence and a Linear(H -> 1) that reads its last state.

    Parameters
    ----------
    hidden_size : int
    W_hh : array_like, shape (H, H), or None
        The recurrent weights to start from (None: torch's initialisation, as elsewhere).
    dtype : float32 or float64
    seed : int
        Seeds the initial weights of both parts.
    """

    PARTS = ("rnn", "head")

    def __init__(self, hidden_size, W_hh=None, *, dtype=np.float32, seed=0):
        self.rnn = RNN(2, hidden_size, dtype=dtype, seed=np.random.default_rng([seed, 1]))
        if W_hh is not None:
            self.rnn.direction_weights(0)[1][...] = W_hh
        self.head = Linear(hidden_size, 1, dtype=dtype, seed=np.random.default_rng([seed, 2]))

    def astype(self, dtype):
        """A copy with the same weights in another dtype."""
        copy = AddingModel(self.rnn.hidden_size, dtype=dtype)
        copy.load_state_dict(self.state_dict())
        return copy

    def predict(self, x):
        """The predictions (B, 1) for x (T, B, 2), and the RNN's states (T, B, H)."""
        out, _ = self.rnn.forward(x)
        return self.head.forward(out[-1:])[0], out

    def mse(self, x, y):
        """The mean squared error of the predictions for x against y (B, 1), in float64."""
        prediction, _ = self.predict(x)
        return float(np.mean((prediction.astype(np.float64) - y) ** 2))

    def loss_and_backward(self, x, y, return_norms=False):
        """The MSE on the batch (x, y) and its backward pass, which sets ``grads``.

        Returns (loss, out, norms): the RNN's states (T, B, H) and, with ``return_norms``, the
        per-step norms ||dL/dh_t|| of ``RNN.backward`` (1, 1, T, B), else None.
        """
        prediction, out = self.predict(x)
        error = prediction - y
        loss = float(np.mean(error.astype(np.float64) ** 2))
        dlast = self.head.backward((2 * error / error.size)[None].astype(out.dtype))
        dout = np.zeros_like(out)
        dout[-1] = dlast[0]
        result = self.rnn.backward(dout, return_norms=return_norms)
        return loss, out, result[2] if return_norms else None


@dataclass
class TrainingOutcome:
    """A short training run: the MSE on a held-out batch before and after it."""

    mse_before: float
    mse_after: float = math.nan
    losses: list = field(default_factory=list)  # training loss per step
    stopped: Optional[str] = None  # why training stopped early (non-finite values)


def train_adding(model, T, *, steps, batch_size, lr, clip_norm, seed, eval_x=None, eval_y=None):
    """Train ``model`` on fresh batches of the adding problem at span T with Adam, gradients
    clipped to a global norm of ``clip_norm`` (0 or None: no clipping), through the same checked
    update as the TBPTT trainer (``rnnfast.train.apply_gradients``).

    The MSE is measured on the held-out batch (eval_x, eval_y) (default: EVAL_SEQUENCES
    sequences drawn from ``seed``) before and after. A NaN or inf stops the run, saying where
    (``stopped``), and leaves ``mse_after`` NaN.
    """
    if eval_x is None:
        eval_x, eval_y = adding_batch(T, EVAL_SEQUENCES, np.random.default_rng([seed, T, 4]))
    outcome = TrainingOutcome(model.mse(eval_x, eval_y))
    params = model.parameters()
    adam = optim.Adam(params, lr=lr)
    rng = np.random.default_rng([seed, T, 5])
    for step in range(1, steps + 1):
        x, y = adding_batch(T, batch_size, rng)
        loss, _, _ = model.loss_and_backward(x, y)
        try:
            check_loss(loss, step, params)
            apply_gradients(adam, params, model.grads, step, clip_norm=clip_norm or None)
        except NonFiniteError as exc:
            outcome.stopped = f"training stopped at {exc}"
            return outcome
        outcome.losses.append(loss)
    outcome.mse_after = model.mse(eval_x, eval_y)
    return outcome
