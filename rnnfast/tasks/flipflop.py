"""The N-bit flip-flop (Sussillo & Barak 2013): remember the sign of the last pulse on each of N
channels.

Each input channel is mostly 0, with pulses of +1 or -1 at random times; the output of each
channel must hold the sign of that channel's last pulse until the next one. A network that
solves it has 2^N stable states, one per memory (the corners of a cube), with saddle points
between neighbouring corners along which a pulse moves the state from one memory to the next.
"""
import dataclasses

import numpy as np

from rnnfast.tasks.trials import Task, check_probability
from rnnfast.utils.validation import check_size

__all__ = ["FlipFlop"]


@dataclasses.dataclass(frozen=True)
class FlipFlop(Task):
    """The N-bit flip-flop.

    Parameters
    ----------
    n_bits : int
        N: input and output channels.
    steps : int
        T, steps per trial.
    p_pulse : float
        Probability of a pulse at each step on each channel (its sign is + or - with equal
        probability). Every channel also has a pulse at step 0, so every target is defined.

    Inputs (T, B, N) in {-1, 0, 1}; targets (T, B, N) in {-1, 1}; the mask is all True.
    """

    n_bits: int = 3
    steps: int = 64
    p_pulse: float = 0.05
    name = "flipflop"

    def __post_init__(self):
        object.__setattr__(self, "n_bits", check_size(self.n_bits, "n_bits"))
        object.__setattr__(self, "steps", check_size(self.steps, "steps"))
        object.__setattr__(self, "p_pulse", check_probability(self.p_pulse, "p_pulse"))

    @property
    def input_size(self):
        return self.n_bits

    @property
    def output_size(self):
        return self.n_bits

    def _generate(self, batch_size, rng):
        shape = (self.steps, batch_size, self.n_bits)
        pulses = rng.random(shape) < self.p_pulse
        pulses[0] = True
        signs = rng.choice([-1.0, 1.0], size=shape)
        inputs = np.where(pulses, signs, 0.0)
        # The time of each channel's latest pulse so far, then the sign it had.
        t = np.arange(self.steps)[:, None, None]
        latest = np.maximum.accumulate(np.where(pulses, t, 0), axis=0)
        targets = np.take_along_axis(signs, latest, axis=0)
        return inputs, targets, np.ones(shape[:2], dtype=bool)

    def accuracy(self, outputs, batch):
        """The share of (step, trial, bit) whose output has the target's sign."""
        outputs = np.asarray(outputs)
        if outputs.shape != batch.targets.shape:
            raise ValueError(f"outputs must have the shape of the batch's targets, "
                             f"{batch.targets.shape}; got {outputs.shape}")
        right = np.sign(outputs) == batch.targets
        return float(right[batch.mask].mean())
