"""What every task shares: the batch it generates, its settings, and the timing of its trials.

A task generates batches of independent trials, time-major like the rest of the package:

    inputs (T, B, D)    what the network reads at each step
    targets (T, B, O)   what its linear readout should output
    mask (T, B)         True at the steps that count in the loss (masked_mse) and the accuracy

Trials of the decision tasks are sequences of periods (fixation, stimulus, delay, response...)
whose durations may vary from trial to trial; every trial of a batch is padded to the longest,
with the padding masked out.
"""
import dataclasses
import math
import numbers
from typing import ClassVar, NamedTuple

import numpy as np

from rnnfast.utils.validation import check_float_dtype, check_size, random_generator

__all__ = ["TaskBatch", "Task"]


class TaskBatch(NamedTuple):
    """One batch of trials: inputs (T, B, D), targets (T, B, O), mask (T, B) bool."""

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray


class Task:
    """A task: settings as dataclass fields, checked on construction; ``batch`` draws trials.

    Subclasses are frozen dataclasses that set ``name`` and implement ``input_size``,
    ``output_size``, ``_generate(batch_size, rng)`` -> (inputs, targets, mask) in float64,
    ``accuracy`` and ``delay_input``.
    """

    name: ClassVar[str] = ""

    def delay_input(self):
        """The input between stimuli, while the network holds what it must remember: the
        constant input whose fixed points are its memories. (D,) float64."""
        return np.zeros(self.input_size)

    def settings(self):
        """The task's settings (its fields) as a dict of plain values: ``type(task)(**s)``
        rebuilds it (checkpoints keep it as JSON)."""
        return {field.name: _plain(getattr(self, field.name))
                for field in dataclasses.fields(self)}

    def batch(self, batch_size, seed=None, dtype=np.float32):
        """B independent trials.

        Parameters
        ----------
        batch_size : int
            B.
        seed : int, numpy Generator or None
            The same seed gives the same batch; a Generator is advanced (successive calls give
            fresh trials).
        dtype : float32 or float64
            Of inputs and targets.

        Returns
        -------
        TaskBatch
        """
        batch_size = check_size(batch_size, "batch_size")
        dtype = check_float_dtype(dtype)
        inputs, targets, mask = self._generate(batch_size, random_generator(seed))
        return TaskBatch(inputs.astype(dtype), targets.astype(dtype), mask)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


# -- checks of settings -----------------------------------------------------------------------

def check_probability(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}")
    return float(value)


def check_non_negative(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            0 <= value < math.inf):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)


def check_levels(values, name):
    """A non-empty sequence of finite numbers > 0 (the coherences), as a tuple of floats."""
    try:
        levels = tuple(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of numbers > 0; got {values!r}") from None
    if not levels or any(isinstance(v, bool) or not isinstance(v, numbers.Real)
                         or not 0 < v < math.inf for v in levels):
        raise ValueError(f"{name} must be a non-empty sequence of finite numbers > 0; got "
                         f"{values!r}")
    return tuple(float(v) for v in levels)


def check_duration(value, name, minimum=1):
    """A number of steps: an int, or (low, high) for a duration drawn uniformly from low..high
    (inclusive) for each trial. Returned as an int or a tuple of two ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (low, high); got {value!r}")
        low, high = (_steps(v, name, minimum) for v in value)
        if low > high:
            raise ValueError(f"{name} = {value!r}: low must not exceed high")
        return (low, high)
    return _steps(value, name, minimum)


def check_periods(task, names):
    """Check (and normalise, on the frozen dataclass task) the durations of its periods: each
    at least one step, except a "delay", which may be 0."""
    for name in names:
        minimum = 0 if name == "delay" else 1
        object.__setattr__(task, name, check_duration(getattr(task, name), name, minimum))


def _steps(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} (or a pair of them); got "
                         f"{value!r}")
    return int(value)


# -- timing of trials -------------------------------------------------------------------------

def timeline(rng, batch_size, periods):
    """Where each period of each trial starts and ends.

    Parameters
    ----------
    periods : list of (name, duration)
        In order; a duration is an int or (low, high) (drawn per trial).

    Returns
    -------
    T : int
        The longest trial.
    bounds : dict of name -> (start, end), each (B,) ints: the period is start <= t < end.
    """
    start = np.zeros(batch_size, dtype=np.int64)
    bounds = {}
    for name, duration in periods:
        if isinstance(duration, tuple):
            length = rng.integers(duration[0], duration[1] + 1, batch_size)
        else:
            length = np.full(batch_size, duration, dtype=np.int64)
        bounds[name] = (start, start + length)
        start = start + length
    return int(start.max()), bounds


def during(T, bound):
    """(T, B) bool: the steps inside a period's (start, end)."""
    t = np.arange(T)[:, None]
    start, end = bound
    return (t >= start) & (t < end)


def signed_choices(rng, levels, batch_size):
    """One of the levels with a random sign, for each trial: (B,) floats, never 0."""
    magnitude = np.asarray(levels)[rng.integers(len(levels), size=batch_size)]
    return magnitude * rng.choice([-1.0, 1.0], size=batch_size)


def fixation_cue(input_size):
    """The input with only channel 0, the fixation cue, on: (D,) float64."""
    x = np.zeros(input_size)
    x[0] = 1.0
    return x


def choice_accuracy(outputs, batch):
    """The share of trials whose mean output over their response steps (mask & target != 0)
    has the sign of the target there. outputs (T, B, 1)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.shape != batch.targets.shape:
        raise ValueError(f"outputs must have the shape of the batch's targets, "
                         f"{batch.targets.shape}; got {outputs.shape}")
    response = batch.mask & (batch.targets[:, :, 0] != 0)
    steps = np.maximum(response.sum(axis=0), 1)
    mean = (outputs[:, :, 0] * response).sum(axis=0) / steps
    target = np.sign((batch.targets[:, :, 0] * response).sum(axis=0))
    return float(np.mean(np.sign(mean) == target))
