"""One update of a model's parameters from its gradients, with the checks that keep a run
honest: clip (every entry to a bound, then all gradients to a global norm), make sure that the
loss, the gradient norm and the updated parameters are finite, and step the optimizer.

The TBPTT trainer and the training runs of ``rnnfast.diagnostics`` (the adding problem) share
it, so that both stop at the first NaN or inf with a message that says where it appeared.
"""
import math

import numpy as np

from rnnfast.train.optim import clip_grad_norm, clip_grad_value

__all__ = ["NonFiniteError", "check_loss", "apply_gradients"]


class NonFiniteError(FloatingPointError):
    """Training produced NaN or inf; the message says at which step and in which tensor."""


def check_loss(loss, step, params):
    """Raise NonFiniteError, naming the step and the first non-finite parameter (if any),
    unless the loss is finite."""
    if not math.isfinite(loss):
        raise NonFiniteError(f"step {step}: the loss is {loss} "
                             f"({_first_non_finite(params, 'parameter')})")


def apply_gradients(optimizer, params, grads, step, *, clip_norm=None, clip_value=None):
    """Clip ``grads`` in place, check them, update ``params`` with them and check the result.

    Parameters
    ----------
    optimizer : rnnfast.optim.Optimizer
        Anything with ``step(grads)`` that updates ``params`` in place.
    params : dict of str to ndarray
        The parameters it updates (checked to be finite afterwards).
    grads : dict of str to ndarray
        The gradients of the loss, keyed like the parameters (clipped in place).
    step : int
        The number of this step, for messages.
    clip_norm : float or None
        Scale the gradients so that their global norm is at most this (None: no clipping by
        norm). The norm is computed either way, to catch non-finite gradients.
    clip_value : float or None
        Clip every gradient entry to [-clip_value, clip_value] first (None: off).

    Returns
    -------
    float
        The global norm of the gradients before clipping by norm.

    Raises
    ------
    NonFiniteError
        The gradient norm is NaN or inf (nothing is updated), or the update made a parameter NaN
        or inf (the learning rate is too large).
    """
    # Overflow is checked explicitly, with a message that says where it happened.
    with np.errstate(over="ignore", invalid="ignore"):
        if clip_value is not None:
            clip_grad_value(grads, clip_value)
        norm = clip_grad_norm(grads, math.inf if clip_norm is None else clip_norm)
        if not math.isfinite(norm):
            raise NonFiniteError(f"step {step}: the gradient norm is {norm} "
                                 f"({_first_non_finite(grads, 'gradient')})")
        optimizer.step(grads)
    if not all(np.isfinite(p).all() for p in params.values()):
        raise NonFiniteError(f"step {step}: the optimizer's update overflowed ("
                             f"{_first_non_finite(params, 'parameter')}); the learning rate "
                             f"is too large")
    return norm


def _first_non_finite(arrays, kind):
    for name, array in arrays.items():
        bad = ~np.isfinite(array)
        if bad.any():
            return (f"{kind} {name} has {int(bad.sum())} non-finite entries of {array.size}, "
                    f"first {array.flat[int(np.argmax(bad))]}")
    return f"every {kind} is finite"
