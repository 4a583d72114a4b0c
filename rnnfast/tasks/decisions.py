"""Decisions from noisy evidence: perceptual decision making, and its context-dependent version
(Mante, Sussillo, Shenoy & Newsome 2013).

Every trial runs fixation -> stimulus -> delay -> response. Input channel 0 is a fixation cue,
1 until the response period begins: its end is the "go" signal. The output (one channel) must
be 0 during the fixation period and report the choice, +1 or -1, during the response period;
the stimulus and delay periods are masked out (the network may move its output while it
integrates), as is the padding after a trial that ended early.
"""
import dataclasses

import numpy as np

from rnnfast.tasks.trials import (Task, check_levels, check_non_negative, check_periods,
                                  choice_accuracy, during, fixation_cue, signed_choices, timeline)

__all__ = ["PerceptualDecision", "ContextDependentIntegration"]


_PERIODS = ("fixation", "stimulus", "delay", "response")


def _trial_frame(task, batch_size, rng, n_inputs):
    """The timeline of a batch, its input and target arrays, and the mask."""
    T, bounds = timeline(rng, batch_size, [(name, getattr(task, name)) for name in _PERIODS])
    inputs = np.zeros((T, batch_size, n_inputs))
    inputs[:, :, 0] = during(T, (bounds["fixation"][0], bounds["delay"][1]))
    periods = {name: during(T, bound) for name, bound in bounds.items()}
    mask = periods["fixation"] | periods["response"]
    return inputs, np.zeros((T, batch_size, 1)), mask, periods


@dataclasses.dataclass(frozen=True)
class _EvidenceTask(Task):
    """The settings and checks the two decision tasks share."""

    coherences: tuple = (0.05, 0.1, 0.2, 0.4)
    noise: float = 0.5
    fixation: object = 5
    stimulus: object = 20
    delay: object = (5, 15)
    response: object = 5

    def __post_init__(self):
        object.__setattr__(self, "coherences", check_levels(self.coherences, "coherences"))
        object.__setattr__(self, "noise", check_non_negative(self.noise, "noise"))
        check_periods(self, _PERIODS)

    @property
    def output_size(self):
        return 1

    def delay_input(self):
        """The fixation cue alone (the delay: no evidence yet, no go signal)."""
        return fixation_cue(self.input_size)

    def accuracy(self, outputs, batch):
        """The share of trials whose mean output over the response period has the sign of the
        target."""
        return choice_accuracy(outputs, batch)


@dataclasses.dataclass(frozen=True)
class PerceptualDecision(_EvidenceTask):
    """Report the sign of noisy evidence after a delay (a random-dots motion discrimination).

    Parameters
    ----------
    coherences : sequence of float > 0
        The strengths of the evidence: each trial's mean evidence is one of them, with a
        random sign.
    noise : float
        Standard deviation of the Gaussian noise added to the evidence at each step.
    fixation, stimulus, delay, response : int or (low, high)
        Durations in steps (a pair: drawn uniformly for each trial, inclusive). delay may be 0.

    Inputs (T, B, 2): the fixation cue, and the evidence (coherence + noise during the
    stimulus, 0 elsewhere). Targets (T, B, 1): the sign of the coherence during the response
    period, 0 elsewhere.
    """

    name = "decision"

    @property
    def input_size(self):
        return 2

    def _generate(self, batch_size, rng):
        inputs, targets, mask, periods = _trial_frame(self, batch_size, rng, 2)
        coherence = signed_choices(rng, self.coherences, batch_size)
        stimulus = periods["stimulus"]
        inputs[:, :, 1] = stimulus * (coherence + self.noise * rng.standard_normal(
            stimulus.shape))
        targets[:, :, 0] = periods["response"] * np.sign(coherence)
        return inputs, targets, mask


@dataclasses.dataclass(frozen=True)
class ContextDependentIntegration(_EvidenceTask):
    """Integrate one of two noisy streams, chosen by a context cue (Mante et al. 2013).

    Two streams of evidence arrive at once (motion and colour of random dots); a context cue
    says which one counts; the network must report the sign of that one and ignore the other.

    Parameters
    ----------
    coherences : sequence of float > 0
        Each stream's mean is one of them with a random sign, drawn independently.
    noise : float
        Standard deviation of the noise on each stream, per step.
    fixation, stimulus, delay, response : int or (low, high)
        Durations in steps, as in PerceptualDecision.

    Inputs (T, B, 5): the fixation cue; the motion and the colour evidence (during the
    stimulus); the two context cues (one of them 1 through the whole trial). Targets (T, B, 1):
    the sign of the cued stream's coherence during the response period.
    """

    name = "context"

    @property
    def input_size(self):
        return 5

    def delay_input(self):
        """The fixation cue and the first context cue (motion), without evidence."""
        x = super().delay_input()
        x[3] = 1.0
        return x

    def _generate(self, batch_size, rng):
        inputs, targets, mask, periods = _trial_frame(self, batch_size, rng, 5)
        stimulus = periods["stimulus"]
        coherence = np.stack([signed_choices(rng, self.coherences, batch_size)
                              for _ in range(2)])  # (2, B): motion, colour
        for stream in range(2):
            inputs[:, :, 1 + stream] = stimulus * (coherence[stream] + self.noise *
                                                   rng.standard_normal(stimulus.shape))
        context = rng.integers(2, size=batch_size)
        trial = (periods["fixation"] | stimulus | periods["delay"] | periods["response"])
        rows = np.arange(batch_size)
        inputs[:, rows, 3 + context] = trial[:, rows]
        targets[:, :, 0] = periods["response"] * np.sign(coherence[context, rows])
        return inputs, targets, mask
