"""Training a TaskRNN on a task: fresh trials every step, backprop through each whole trial.

Unlike language modelling (rnnfast.train.TBPTTTrainer), trials are independent and short: every
step draws a new batch from the task, runs the network from a zero state over the whole trial,
and backpropagates through all of it. The optimizers, the gradient clipping and the checks for
NaN and inf are rnnfast.train's.
"""
import numpy as np

from rnnfast.nn.losses import masked_mse
from rnnfast.tasks.trials import Task
from rnnfast.train.optim import Optimizer
from rnnfast.train.update import apply_gradients, check_loss
from rnnfast.utils.validation import check_size, random_generator

__all__ = ["TaskTrainer", "evaluate_task"]


class TaskTrainer:
    """Trains a model (TaskRNN) on a task, one batch of fresh trials per ``step()``.

    Parameters
    ----------
    model : TaskRNN
        Anything with forward(inputs) -> (outputs, states), backward(doutputs) -> grads,
        parameters() and dtype.
    task : Task
    optimizer : rnnfast.optim.Optimizer
        Built on ``model.parameters()``.
    batch_size : int
        Trials per step.
    clip_norm : float or None
        Scale the gradients so that their global norm is at most this (None: no clipping; the
        norm is computed either way, to catch non-finite gradients).
    seed : int, numpy Generator or None
        Seeds the trials drawn.
    """

    def __init__(self, model, task, optimizer, *, batch_size=64, clip_norm=1.0, seed=None):
        if not isinstance(task, Task):
            raise TypeError(f"task must be an rnnfast.tasks task; got {type(task).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an rnnfast.optim optimizer; got "
                            f"{type(optimizer).__name__}")
        self.model = model
        self.task = task
        self.optimizer = optimizer
        self.batch_size = check_size(batch_size, "batch_size")
        self.clip_norm = clip_norm
        self.rng = random_generator(seed)
        self.steps = 0
        self.last_grad_norm = None

    def step(self):
        """Train on one batch of new trials; returns its loss (the masked MSE).

        Raises
        ------
        NonFiniteError
            The loss or a gradient is NaN or inf (the parameters are left as they were), or
            the update made a parameter NaN or inf.
        """
        batch = self.task.batch(self.batch_size, self.rng, dtype=self.model.dtype)
        step = self.steps + 1
        params = self.model.parameters()
        # Overflow is checked explicitly, with a message that says where it happened.
        with np.errstate(over="ignore", invalid="ignore"):
            outputs, _ = self.model.forward(batch.inputs)
            loss, doutputs = masked_mse(outputs, batch.targets, batch.mask)
            check_loss(loss, step, params)
            grads = self.model.backward(doutputs)
        self.last_grad_norm = apply_gradients(self.optimizer, params, grads, step,
                                              clip_norm=self.clip_norm)
        self.steps = step
        return loss


def evaluate_task(model, task, batch):
    """(loss, accuracy) of the model on a batch of the task's trials (``task.batch(...)``)."""
    outputs, _ = model.forward(batch.inputs)
    loss, _ = masked_mse(outputs, batch.targets, batch.mask)
    return loss, task.accuracy(outputs, batch)
