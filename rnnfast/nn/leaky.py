"""The leak and the noise of an RNN's layers: per-layer values for the kernels, and the noise
each pass draws.

A leaky layer steps h_t = (1 - alpha) h_{t-1} + alpha act(a_t) (+ state noise), the Euler step
of the continuous-time network tau dh/dt = -h + act(a) with alpha = dt / tau. Its noise level
sigma is that of the continuous-time network, sqrt(2 tau) sigma xi(t) for white noise xi; one
step of it is a Gaussian whose scale depends on alpha, as in the two codes this follows:

- on the pre-activation a_t (Yang et al. 2019, github.com/gyyang/multitask): standard deviation
  sqrt(2 / alpha) sigma, so that the alpha act(a_t) term of the state receives sqrt(2 alpha)
  sigma (to first order in the noise);
- on the state after the leak (PsychRNN, github.com/murraylab/PsychRNN): standard deviation
  sqrt(2 alpha) sigma.

Both are sqrt(2) sigma for alpha = 1. Per-unit leaks give per-unit scales.
"""
import collections

import numpy as np

from rnnfast.functional import check_leak_values
from rnnfast.utils.validation import check_real


class NoiseStd:
    """A layer's noise level sigma, an attribute checked when set: a finite number >= 0."""

    def __set_name__(self, owner, name):
        self.name, self.slot = name, "_" + name

    def __get__(self, layer, owner=None):
        return self if layer is None else getattr(layer, self.slot)

    def __set__(self, layer, value):
        setattr(layer, self.slot, check_real(value, self.name, low=0))


def layer_leaks(leak, num_layers, hidden_size, dtype):
    """leak (a number, or an array broadcastable to (num_layers, hidden_size)) as an array
    (num_layers, hidden_size) of dtype, read-only (a broadcast view of what was given), every
    value checked to be in (0, 1].

    A 1-D array is per unit and shared by every layer (NumPy's broadcasting); one leak per
    layer is (num_layers, 1).
    """
    try:
        given = np.asarray(leak)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"leak could not be converted to a numeric array: {exc}") from None
    if given.dtype.kind not in "fiu":  # not bool, complex, strings or objects
        raise TypeError(f"leak must be a number or an array of real numbers; got "
                        f"{type(leak).__name__} of dtype {given.dtype}")
    shape, values = (num_layers, hidden_size), given.astype(dtype)
    try:
        array = np.broadcast_to(values, shape)
    except ValueError:
        raise ValueError(f"leak must be a number or an array broadcastable to (num_layers, "
                         f"hidden_size) = {shape}; got shape {given.shape}") from None
    check_leak_values(values, leak if given.ndim == 0 else None)  # as rnn_forward checks it
    return array


def kernel_leak(row):
    """One layer's leak (H,) as rnn_forward takes it: a number when all units share it, else
    a C-contiguous array (H,) (as the compiled entry takes it without a copy)."""
    return float(row[0]) if np.all(row == row[0]) else np.ascontiguousarray(row)


def leaky_passes(leak, input_size, width, num_directions):
    """How many of an RNN's passes (every layer and direction) have each (input size, leaky):
    a Counter, for the layer's memory estimate; leak (num_layers, H) as layer_leaks gives it."""
    leaky = np.any(leak != 1, axis=1)
    passes = collections.Counter({(input_size, bool(leaky[0])): num_directions})
    n_leaky = int(np.count_nonzero(leaky[1:]))
    passes[(width, True)] += num_directions * n_leaky
    passes[(width, False)] += num_directions * (len(leak) - 1 - n_leaky)
    return +passes  # without the zero counts


def draw_noise(rng, row, noise_std, state_noise_std, shape, dtype):
    """(noise, state_noise) for one pass of shape (T, B, H) of a layer with leak row (H,):
    each None for a sigma of 0, else drawn from rng in dtype with the scale of its placement
    (see the top of this module), the pre-activation noise first."""
    draws = [None, None]
    if noise_std == 0 and state_noise_std == 0:
        return tuple(draws)
    alpha = row.astype(np.float64)
    for i, sigma in enumerate((noise_std, state_noise_std)):
        if sigma > 0:
            per_unit = np.sqrt(2 / alpha) if i == 0 else np.sqrt(2 * alpha)
            draws[i] = rng.standard_normal(shape, dtype=dtype)
            draws[i] *= (per_unit * sigma).astype(dtype)
    return tuple(draws)
