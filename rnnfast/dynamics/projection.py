"""Principal components: the few directions of state space along which the states vary most,
in which trajectories and fixed points are drawn."""
from typing import NamedTuple

import numpy as np

from rnnfast.utils.validation import as_float_array, check_size

__all__ = ["principal_components", "Projection"]


class Projection(NamedTuple):
    """The mean (H,), the components (k, H) (orthonormal rows, by decreasing variance) and the
    share of the variance each explains (k,). ``project(states)`` gives coordinates (..., k)."""

    mean: np.ndarray
    components: np.ndarray
    explained: np.ndarray

    def project(self, states):
        return (np.asarray(states, dtype=np.float64) - self.mean) @ self.components.T


def principal_components(states, n_components=3):
    """The top principal components of a set of states.

    Parameters
    ----------
    states : array_like, shape (..., H)
        Any number of states (for example trajectories (T, B, H)), flattened to rows.
    n_components : int
        k, at most H (fewer are returned when there are fewer states than that).

    Returns
    -------
    Projection
    """
    array = np.asarray(states)
    if array.ndim < 1:
        raise ValueError("states must have at least one dimension (H)")
    rows = as_float_array(array.reshape(-1, array.shape[-1]), "states", ("N", "H"))
    k = check_size(n_components, "n_components")
    rows = rows.astype(np.float64)
    mean = rows.mean(axis=0)
    _, singular, vt = np.linalg.svd(rows - mean, full_matrices=False)
    variance = singular ** 2
    total = variance.sum()
    k = min(k, vt.shape[0])
    explained = variance[:k] / total if total > 0 else np.zeros(k)
    return Projection(mean, vt[:k], explained)
