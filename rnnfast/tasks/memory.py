"""Delayed match-to-sample: hold a stimulus through a delay, then say whether a second one is
the same (a working-memory task of the primate prefrontal literature; neurogym's
DelayMatchSample).

A trial runs fixation -> sample -> delay -> test -> response. Input channel 0 is the fixation
cue (1 until the response period); channels 1..n show one of n stimuli (one-hot, plus noise)
during the sample and the test periods. The output must be 0 during fixation and, during the
response period, +1 if the test stimulus was the sample and -1 if not; the sample, delay and
test periods are masked out.
"""
import dataclasses

import numpy as np

from rnnfast.tasks.trials import (Task, check_non_negative, check_periods, check_probability,
                                  choice_accuracy, during, fixation_cue, timeline)
from rnnfast.utils.validation import check_size

__all__ = ["DelayedMatchToSample"]

_PERIODS = ("fixation", "sample", "delay", "test", "response")


@dataclasses.dataclass(frozen=True)
class DelayedMatchToSample(Task):
    """Delayed match-to-sample.

    Parameters
    ----------
    n_stimuli : int
        How many distinct stimuli (at least 2).
    p_match : float
        Probability that the test stimulus is the sample; otherwise it is one of the others.
    noise : float
        Standard deviation of the Gaussian noise on the stimulus channels while they are shown.
    fixation, sample, delay, test, response : int or (low, high)
        Durations in steps (a pair: drawn for each trial, inclusive). delay may be 0.

    Inputs (T, B, 1 + n_stimuli); targets (T, B, 1): +1 (match) or -1 (non-match) during the
    response period, 0 elsewhere.
    """

    n_stimuli: int = 2
    p_match: float = 0.5
    noise: float = 0.1
    fixation: object = 5
    sample: object = 10
    delay: object = (10, 20)
    test: object = 10
    response: object = 5
    name = "match"

    def __post_init__(self):
        n = check_size(self.n_stimuli, "n_stimuli")
        if n < 2:
            raise ValueError(f"n_stimuli must be at least 2; got {n}")
        object.__setattr__(self, "n_stimuli", n)
        object.__setattr__(self, "p_match", check_probability(self.p_match, "p_match"))
        object.__setattr__(self, "noise", check_non_negative(self.noise, "noise"))
        check_periods(self, _PERIODS)

    @property
    def input_size(self):
        return 1 + self.n_stimuli

    @property
    def output_size(self):
        return 1

    def delay_input(self):
        """The fixation cue alone (the delay between the sample and the test)."""
        return fixation_cue(self.input_size)

    def _generate(self, batch_size, rng):
        T, bounds = timeline(rng, batch_size, [(name, getattr(self, name)) for name in _PERIODS])
        periods = {name: during(T, bound) for name, bound in bounds.items()}
        inputs = np.zeros((T, batch_size, self.input_size))
        inputs[:, :, 0] = during(T, (bounds["fixation"][0], bounds["test"][1]))
        sample = rng.integers(self.n_stimuli, size=batch_size)
        match = rng.random(batch_size) < self.p_match
        # A non-match test is one of the other n - 1 stimuli, each as likely.
        other = (sample + 1 + rng.integers(self.n_stimuli - 1, size=batch_size)) % self.n_stimuli
        test = np.where(match, sample, other)
        rows = np.arange(batch_size)
        for period, stimulus in (("sample", sample), ("test", test)):
            shown = periods[period]
            inputs[:, rows, 1 + stimulus] += shown[:, rows]
            inputs[:, :, 1:] += (shown[:, :, None] * self.noise
                                 * rng.standard_normal((T, batch_size, self.n_stimuli)))
        targets = (periods["response"] * np.where(match, 1.0, -1.0))[:, :, None]
        mask = periods["fixation"] | periods["response"]
        return inputs, targets, mask

    def accuracy(self, outputs, batch):
        """The share of trials whose mean output over the response period has the right sign."""
        return choice_accuracy(outputs, batch)
