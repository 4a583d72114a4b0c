"""find_fixed_points: the fixed points (and, on request, slow points) of an RNN, linearised.

Sussillo & Barak (2013), "Opening the black box": with its input held constant, a trained RNN is
an autonomous map h -> F(h); its fixed points (F(h*) = h*) and the eigenvalues of the Jacobian
dF/dh there show how it stores memories (stable points), decides (saddles between them) and
oscillates (complex pairs). Starting from many states the network visits, each start is run to
a fixed point by a batched second-order solver (rnnfast.dynamics.solver); the points reached
are merged within a tolerance and classified by the eigenvalues of the Jacobian.
"""
import math
import numbers
from dataclasses import dataclass
from typing import Optional

import numpy as np

from rnnfast.dynamics import solver
from rnnfast.dynamics.step_map import StepMap
from rnnfast.dynamics.systems import as_step_map
from rnnfast.utils.threads import blas_threads_at_most, resolve_n_threads
from rnnfast.utils.validation import as_float_array, check_allocation, check_shape, check_size

__all__ = ["FixedPoints", "find_fixed_points"]


@dataclass
class FixedPoints:
    """The distinct fixed points (and slow points) found, each linearised.

    K points, from N initial states, H units. Points are ordered: fixed points before slow
    points, then by the number of unstable directions (stable points first), then by how many
    starts reached them.

    Attributes
    ----------
    points : ndarray, shape (K, H)
        The states h*, each taken to rounding level by Newton steps from the best (smallest q)
        of the starts that reached it.
    q : ndarray, shape (K,)
        q(h*) = ½ ||F(h*) - h*||².
    eigenvalues : ndarray, shape (K, H), complex
        The eigenvalues of the Jacobian dF/dh at each point, by decreasing modulus.
    stable : ndarray, shape (K,), bool
        Every |λ| < 1: perturbations decay (an attractor of the discrete map).
    unstable_dims : ndarray, shape (K,), int
        How many eigenvalues have |λ| > 1.
    slow : ndarray, shape (K,), bool
        A slow point: a local minimum of q above ``tol`` (only with ``slow_tol``).
    counts : ndarray, shape (K,), int
        How many initial states reached each point.
    assignment : ndarray, shape (N,), int
        For each initial state, the index of the point it reached, or -1 when it reached none.
    unconverged : ndarray, shape (M,), int
        The initial states (indices) that reached no point within ``max_iter`` (or stopped at
        a stationary point of q that is not kept), not mixed into ``points``.
    unconverged_states, unconverged_q : ndarray, shapes (M, H) and (M,)
        Where those searches stopped, and q there.
    iterations : ndarray, shape (N,), int
        Solver iterations each start took.
    inputs : ndarray, shape (D,), or None
        The constant input of the search.
    step_map : StepMap
        The map F that was searched.
    """

    points: np.ndarray
    q: np.ndarray
    eigenvalues: np.ndarray
    stable: np.ndarray
    unstable_dims: np.ndarray
    slow: np.ndarray
    counts: np.ndarray
    assignment: np.ndarray
    unconverged: np.ndarray
    unconverged_states: np.ndarray
    unconverged_q: np.ndarray
    iterations: np.ndarray
    inputs: Optional[np.ndarray]
    step_map: StepMap

    def __len__(self):
        return len(self.points)

    @property
    def saddle(self):
        """(K,) bool: unstable along some directions (|λ| > 1), stable along others (|λ| < 1)."""
        stable_dims = np.sum(np.abs(self.eigenvalues) < 1, axis=1)
        return (self.unstable_dims > 0) & (stable_dims > 0)

    def jacobians(self):
        """dF/dh at every point: (K, H, H)."""
        return self.step_map.jacobian(self.points, self.inputs)

    def eig(self):
        """Eigenvalues (K, H) and right eigenvectors (K, H, H) of the Jacobian at every point,
        ordered as ``eigenvalues`` (by decreasing modulus): column j of ``vectors[k]`` belongs
        to ``values[k, j]``."""
        values, vectors = np.linalg.eig(self.jacobians())
        order = solver.by_decreasing_modulus(values)
        return (np.take_along_axis(values, order, axis=1),
                np.take_along_axis(vectors, order[:, None, :], axis=2))


def _positive(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            0 < value < math.inf):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


def _merge(points, order, merge_tol):
    """Labels (N,) grouping points whose max-abs distance to a group's first member (in
    ``order``) is at most merge_tol; each group's first member is its representative.
    Returns (labels, representatives)."""
    labels = np.full(len(points), -1)
    representatives = np.empty_like(points)
    chosen = []
    for i in order:
        if chosen:
            distance = np.abs(representatives[:len(chosen)] - points[i]).max(axis=1)
            nearest = int(np.argmin(distance))
            if distance[nearest] <= merge_tol:
                labels[i] = nearest
                continue
        labels[i] = len(chosen)
        representatives[len(chosen)] = points[i]
        chosen.append(i)
    return labels, np.array(chosen, dtype=np.intp)


def find_fixed_points(system, initial_states, inputs=None, *, tol=1e-12, max_iter=100,
                      slow_tol=None, merge_tol=1e-6, layer=0, direction=0, n_threads=None):
    """The fixed points of an RNN under a constant input, found from many initial states.

    Each start is run to a point h* with F(h*) = h* by a second-order method on F(h) - h
    (trust-region Newton, all starts batched: see rnnfast.dynamics.solver), typically in a few
    to a few tens of iterations; the points reached are merged and linearised.

    Parameters
    ----------
    system : StepMap, rnnfast.RNN, or a model with an ``rnn`` (CharRNN, TaskRNN)
        The map F(h) = (1 - α) h + α f(W_hh h + W_xh x + b); for an RNN, that of one layer and
        direction (see ``as_step_map``).
    initial_states : array_like, shape (N, H)
        Where the searches start: states the network visits (``sample_states`` draws them from
        trajectories), perhaps with noise added.
    inputs : array_like, shape (D,), or None
        The constant input x during the search; None means zero.
    tol : float
        A start has converged when q = ½ ||F(h) - h||² < tol (the criterion of Golub &
        Sussillo's FixedPointFinder, tol_q); Newton steps then take each distinct point to
        rounding level.
    max_iter : int
        Most solver iterations per start.
    slow_tol : float or None
        Also return slow points: local minima of q at which tol <= q < slow_tol (None: fixed
        points only). The starts that stop above tol are then refined by Newton's method on q.
    merge_tol : float
        Points whose coordinates all differ by at most this are one point.
    layer, direction : int
        For an RNN: which layer, and 0 forward / 1 reverse.
    n_threads : int or None
        Threads for BLAS and LAPACK (None: every core).

    Returns
    -------
    FixedPoints

    Raises
    ------
    TypeError, ValueError
        A system, an argument or a shape that does not fit; non-finite states or inputs.
    """
    step_map = as_step_map(system, layer=layer, direction=direction)
    H = step_map.hidden_size
    states = as_float_array(initial_states, "initial_states", ("N", "H"))
    check_shape(states, "initial_states", ("N", "H"), (states.shape[0], H), "(H of the system)")
    if not np.isfinite(states).all():
        raise ValueError("initial_states must be finite; it has NaN or inf entries")
    tol = _positive(tol, "tol")
    max_iter = check_size(max_iter, "max_iter")
    if slow_tol is not None and _positive(slow_tol, "slow_tol") <= tol:
        raise ValueError(f"slow_tol must be larger than tol = {tol:g}; got {slow_tol!r}")
    if isinstance(merge_tol, bool) or not isinstance(merge_tol, numbers.Real) or not (
            0 <= merge_tol < math.inf):
        raise ValueError(f"merge_tol must be a finite number >= 0; got {merge_tol!r}")
    n_threads = resolve_n_threads(n_threads)
    drive = step_map.drive(inputs)
    N = states.shape[0]
    check_allocation("find_fixed_points", [
        ("the solver's arrays for every start (12, N, H)", (12, N, H), np.float64)],
        "pass fewer initial states at a time")

    with blas_threads_at_most(n_threads):
        outcome = solver.solve(step_map, drive, states.astype(np.float64), tol=tol,
                               max_iter=max_iter, slow_tol=slow_tol)
        found = outcome.status == solver.CONVERGED
        if slow_tol is not None:
            found |= (outcome.status == solver.STATIONARY) & (outcome.q < slow_tol)
        candidates = np.flatnonzero(found)
        labels, chosen = _merge(outcome.states[candidates],
                                np.argsort(outcome.q[candidates], kind="stable"), merge_tol)
        points, q = outcome.states[candidates[chosen]], outcome.q[candidates[chosen]]
        # The distinct fixed points (not the slow ones) to rounding level; points that were
        # apart only by the looseness of tol may meet there: merged again.
        slow = q >= tol
        points[~slow], q[~slow] = solver.polish(step_map, drive, points[~slow])
        again, kept = _merge(points, np.lexsort((q, slow)), merge_tol)
        labels, points, q, slow = again[labels], points[kept], q[kept], slow[kept]
        eigenvalues = solver.eigenvalues(step_map, drive, points)
    modulus = np.abs(eigenvalues)
    unstable_dims = np.sum(modulus > 1, axis=1)
    counts = np.bincount(labels, minlength=len(points))
    order = np.lexsort((-counts, unstable_dims, slow))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))

    assignment = np.full(N, -1)
    assignment[candidates] = rank[labels]
    unconverged = np.flatnonzero(assignment < 0)
    return FixedPoints(
        points=points[order], q=q[order], eigenvalues=eigenvalues[order],
        stable=modulus[order].max(axis=1, initial=0.0) < 1, unstable_dims=unstable_dims[order],
        slow=slow[order], counts=counts[order], assignment=assignment, unconverged=unconverged,
        unconverged_states=outcome.states[unconverged], unconverged_q=outcome.q[unconverged],
        iterations=outcome.iterations, step_map=step_map,
        inputs=None if inputs is None else np.asarray(inputs, dtype=np.float64))
