"""Initial states for the fixed-point search, drawn from the states a network visits."""
import math
import numbers

import numpy as np

from rnnfast.utils.validation import (as_float_array, check_shape, check_size,
                                      random_generator)

__all__ = ["sample_states"]


def sample_states(trajectories, n, *, noise=0.0, mask=None, seed=None):
    """Draw n states from trajectories, optionally with Gaussian noise added.

    The fixed points that matter are those near where the network runs, so the searches start
    from states it visits (as Sussillo & Barak and FixedPointFinder do); noise spreads them
    out, so that the searches also reach the unstable points between the visited regions.

    Parameters
    ----------
    trajectories : array_like, shape (T, B, H)
        Hidden states, time-major (``out`` of an RNN's forward pass).
    n : int
        How many states to draw: without replacement when at most the number of (valid) steps,
        with replacement beyond.
    noise : float
        Standard deviation of i.i.d. Gaussian noise added to each coordinate (0: none).
    mask : array_like, shape (T, B), or None
        True (or 1) at the steps to draw from (for example those inside the trials).
    seed : int, numpy Generator or None

    Returns
    -------
    ndarray, shape (n, H), float64
    """
    states = as_float_array(trajectories, "trajectories", ("T", "B", "H"))
    T, B, H = states.shape
    n = check_size(n, "n")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not (
            0 <= noise < math.inf):
        raise ValueError(f"noise must be a finite number >= 0; got {noise!r}")
    rng = random_generator(seed)
    flat = states.reshape(T * B, H)
    if mask is None:
        rows = np.arange(T * B)
    else:
        valid = np.asarray(mask)
        if valid.dtype.kind not in "biuf":
            raise TypeError(f"mask must be bool (or 0/1 numbers); got dtype {valid.dtype}")
        if valid.ndim != 2:
            raise ValueError(f"mask must be 2-D with shape (T, B); got shape {valid.shape}")
        check_shape(valid, "mask", ("T", "B"), (T, B), "(T, B from trajectories)")
        rows = np.flatnonzero(valid.reshape(-1) != 0)
        if not rows.size:
            raise ValueError("mask must leave at least one step to draw from; it is all False")
    picked = rng.choice(rows, size=n, replace=n > rows.size)
    sample = flat[picked].astype(np.float64)
    if noise:
        sample += noise * rng.standard_normal(sample.shape)
    return sample
