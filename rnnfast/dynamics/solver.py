"""The batched solver behind find_fixed_points: a second-order method on r(h) = F(h) - h.

Every start runs its own trust-region Newton iteration (Powell's dogleg, the method of MINPACK's
hybrj), and all starts advance together, so each piece is one batched NumPy call: the residuals
and the Jacobian-vector products are GEMMs over all states, the Newton steps one batched LU
solve (LAPACK) of the H x H Jacobians

    J(h) = d r / d h = diag(α) (diag(f'(a)) W_hh - I).

A step is the Newton step -J^-1 r when it fits in the state's trust radius, else a point on the
dogleg path towards the steepest-descent (Cauchy) step of q = ½ ||r||², so q decreases at every
accepted step and the iteration cannot run away where J is nearly singular; near a fixed point
the full Newton step is taken and convergence is quadratic. A start is converged when q < tol,
and retires: later iterations cost only the few still running. ``polish`` then takes the
distinct points found (far fewer than the starts) to rounding level with full Newton steps.

A start whose q stops decreasing without reaching tol is near a stationary point of q where J is
singular: a slow point, or a ghost of one. With ``slow_tol``, such starts are then refined by a
damped Newton iteration on q itself (its exact Hessian, J^T J + W_hh^T diag(α r f''(a)) W_hh),
which converges quadratically to the local minimum of q.

Memory: the H x H matrices are built for at most ``_CHUNK_VALUES / H²`` states at a time.
"""
from typing import NamedTuple

import numpy as np

__all__ = ["solve", "polish", "eigenvalues", "SolverOutcome", "RUNNING", "CONVERGED", "STATIONARY",
           "STALLED", "MAX_ITER"]

RUNNING, CONVERGED, STATIONARY, STALLED, MAX_ITER = 0, 1, 2, 3, 4
_CHUNK_VALUES = 2**20  # values in one chunk's (n, H, H) array: 8 MB in float64
_ACCEPT = 1e-4  # accept a step when it achieves this share of the predicted decrease of q
_STALL_FACTOR = 1e-3  # q must drop by this fraction ...
_STALL_PATIENCE = 20  # ... at least once in this many iterations, else the start has stalled
_STATIONARY_GRADIENT = 1e-10  # ||grad q|| <= this * ||r|| * (1 + ||W_hh||_F): stationary
_POLISH_STEPS = 4  # full Newton steps at most, to take a converged point to rounding level
_ROUNDING_STEP = 1e-15  # a Newton step below this * (1 + ||h||) changes nothing that counts


class SolverOutcome(NamedTuple):
    """Where each start ended: its state (N, H), q (N,), iterations (N,) and status (N,), one of
    CONVERGED (q < tol), STATIONARY (a stationary point of q above tol, found with slow_tol),
    STALLED (q stopped decreasing) or MAX_ITER."""

    states: np.ndarray
    q: np.ndarray
    iterations: np.ndarray
    status: np.ndarray


class _Starts:
    """The state of every start: its point, residual, f'(a), q, trust radius and counters."""

    def __init__(self, step_map, drive, h0):
        self.h = np.array(h0, dtype=np.float64)
        self.r, self.slope = step_map.residual(self.h, drive)
        self.q = _half_square_norm(self.r)
        N, H = self.h.shape
        self.radius = np.maximum(np.sqrt(H), np.linalg.norm(self.h, axis=1))
        self.max_radius = 1e3 * self.radius
        self.iterations = np.zeros(N, dtype=np.int64)
        self.status = np.full(N, RUNNING, dtype=np.int8)
        self.best_q = self.q.copy()
        self.since_best = np.zeros(N, dtype=np.int64)


def _half_square_norm(v):
    return 0.5 * np.einsum("ij,ij->i", v, v)


def _chunks(indices, H):
    size = max(1, _CHUNK_VALUES // (H * H))
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def _apply_jacobian(step_map, slope, v):
    """J v for each state (rows of slope and v): α (f'(a) * (W_hh v) - v), one GEMM."""
    return step_map.leak * (slope * (v @ step_map.W_hh.T) - v)


def _apply_jacobian_transpose(step_map, slope, v):
    """J^T v for each state: W_hh^T (α f'(a) v) - α v, one GEMM."""
    alpha = step_map.leak
    return (alpha * slope * v) @ step_map.W_hh - alpha * v


def _solve_each(matrices, rhs):
    """x with matrices[k] @ x[k] = rhs[k]; rows whose matrix is singular are NaN."""
    try:
        return np.linalg.solve(matrices, rhs[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:  # one singular matrix fails the whole batch: solve one by one
        out = np.full(rhs.shape, np.nan)
        for k in range(len(rhs)):
            try:
                out[k] = np.linalg.solve(matrices[k], rhs[k])
            except np.linalg.LinAlgError:
                pass
        return out


def _dogleg(newton, cauchy, gradient, radius):
    """The dogleg step of each state: Newton inside the radius, else towards the Cauchy point.

    newton may hold NaN rows (singular J): those states follow the gradient path alone.
    """
    newton_norm = np.linalg.norm(newton, axis=1)
    cauchy_norm = np.linalg.norm(cauchy, axis=1)
    usable = np.isfinite(newton_norm)
    step = np.where((usable & (newton_norm <= radius))[:, None], newton, 0.0)
    # Outside the radius with the Cauchy point too: the scaled steepest-descent step.
    outside = ~(usable & (newton_norm <= radius)) & (cauchy_norm >= radius)
    gradient_norm = np.linalg.norm(gradient, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(gradient_norm > 0, radius / gradient_norm, 0.0)
    step[outside] = -scale[outside, None] * gradient[outside]
    # The Cauchy point inside the radius but Newton unusable: the Cauchy step.
    step[~usable & ~outside] = cauchy[~usable & ~outside]
    # Between the two: where the segment from the Cauchy point to Newton crosses the radius.
    between = usable & (newton_norm > radius) & (cauchy_norm < radius)
    if between.any():
        c, d = cauchy[between], newton[between] - cauchy[between]
        a = np.einsum("ij,ij->i", d, d)
        b = 2 * np.einsum("ij,ij->i", c, d)
        e = np.einsum("ij,ij->i", c, c) - radius[between] ** 2
        tau = (-b + np.sqrt(np.maximum(b * b - 4 * a * e, 0.0))) / (2 * a)
        step[between] = c + tau[:, None] * d
    return step


def _dogleg_iteration(step_map, drive, s, idx, tol):
    """One trust-region Newton step for the starts idx (a chunk of the running ones)."""
    h, r, slope, q, radius = s.h[idx], s.r[idx], s.slope[idx], s.q[idx], s.radius[idx]
    newton = _solve_each(step_map.residual_jacobian(slope), -r)
    gradient = _apply_jacobian_transpose(step_map, slope, r)  # grad q = J^T r
    Jg = _apply_jacobian(step_map, slope, gradient)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.einsum("ij,ij->i", gradient, gradient) / np.einsum("ij,ij->i", Jg, Jg)
    cauchy = -np.where(np.isfinite(t), t, 0.0)[:, None] * gradient
    step = _dogleg(newton, cauchy, gradient, radius)
    predicted = q - _half_square_norm(r + _apply_jacobian(step_map, slope, step))

    trial = h + step
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        r_trial, slope_trial = step_map.residual(trial, drive)
        q_trial = _half_square_norm(r_trial)
        rho = np.where(predicted > 0, (q - q_trial) / predicted, -1.0)
    accept = np.isfinite(q_trial) & (rho > _ACCEPT)

    step_norm = np.linalg.norm(step, axis=1)
    radius = np.where(rho < 0.25, 0.25 * step_norm, radius)
    grow = (rho > 0.75) & (step_norm >= 0.99 * radius)
    radius = np.where(grow, np.minimum(2 * radius, s.max_radius[idx]), radius)

    kept = idx[accept]
    s.h[kept], s.r[kept], s.slope[kept], s.q[kept] = (trial[accept], r_trial[accept],
                                                      slope_trial[accept], q_trial[accept])
    s.radius[idx] = radius
    s.iterations[idx] += 1

    q = s.q[idx]
    s.status[idx[q < tol]] = CONVERGED
    improved = q < s.best_q[idx] * (1 - _STALL_FACTOR)
    s.best_q[idx] = np.where(improved, q, s.best_q[idx])
    s.since_best[idx] = np.where(improved, 0, s.since_best[idx] + 1)
    tiny = s.radius[idx] <= 1e-14 * (1 + np.linalg.norm(s.h[idx], axis=1))
    stalled = (s.status[idx] == RUNNING) & ((s.since_best[idx] >= _STALL_PATIENCE) | tiny)
    s.status[idx[stalled]] = STALLED


def _minimise_q(step_map, drive, h, max_iter):
    """Damped Newton on q from each state h (n, H) with the exact Hessian of q, to a stationary
    point of q. Returns (states, q, iterations, stationary)."""
    n, H = h.shape
    W = step_map.W_hh
    alpha = step_map.leak
    gradient_scale = _STATIONARY_GRADIENT * (1 + np.linalg.norm(W))
    h = h.copy()
    r, slope = step_map.residual(h, drive)
    q = _half_square_norm(r)
    damping = np.zeros(n)
    iterations = np.zeros(n, dtype=np.int64)
    eye = np.eye(H)

    def stationary_points():
        gradient = _apply_jacobian_transpose(step_map, slope, r)
        return gradient, np.linalg.norm(gradient, axis=1) <= gradient_scale * np.sqrt(2 * q)

    for _ in range(max_iter):
        gradient, stationary = stationary_points()
        todo = np.flatnonzero(~stationary)
        if not todo.size:
            break
        for idx in _chunks(todo, H):
            J = step_map.residual_jacobian(slope[idx])
            hessian = np.matmul(J.transpose(0, 2, 1), J)
            if step_map.nonlinearity == "tanh":  # relu'' = 0: there J^T J is the whole Hessian
                f = h[idx] + r[idx] / alpha
                curvature = alpha * r[idx] * (-2.0 * f * slope[idx])  # α r_i f''(a_i)
                hessian += np.matmul(W.T[None] * curvature[:, None, :], W[None])
            scale = np.abs(np.diagonal(hessian, axis1=1, axis2=2)).max(axis=1) + 1e-300
            step = _solve_each(hessian + (damping[idx] * scale)[:, None, None] * eye,
                               -gradient[idx])
            descent = np.isfinite(step).all(axis=1) & (
                np.einsum("ij,ij->i", step, gradient[idx]) < 0)
            step[~descent] = 0.0
            with np.errstate(over="ignore", invalid="ignore"):
                r_trial, slope_trial = step_map.residual(h[idx] + step, drive)
                q_trial = _half_square_norm(r_trial)
            accept = descent & (q_trial < q[idx])
            kept = idx[accept]
            h[kept] += step[accept]
            r[kept], slope[kept], q[kept] = r_trial[accept], slope_trial[accept], q_trial[accept]
            damping[idx] = np.where(accept, damping[idx] / 4,
                                    np.maximum(4 * damping[idx], 1e-4))
            iterations[idx] += 1
    _, stationary = stationary_points()
    return h, q, iterations, stationary


def polish(step_map, drive, points):
    """Full Newton steps from each converged point (n, H), each kept if it lowers q, until the
    step is at rounding level (or at most _POLISH_STEPS): the points and their q."""
    h = np.array(points, dtype=np.float64)
    r, slope = step_map.residual(h, drive)
    q = _half_square_norm(r)
    for idx in _chunks(np.flatnonzero(q > 0), h.shape[1]):
        for _ in range(_POLISH_STEPS):
            step = _solve_each(step_map.residual_jacobian(slope[idx]), -r[idx])
            step[~np.isfinite(step).all(axis=1)] = 0.0
            r_trial, slope_trial = step_map.residual(h[idx] + step, drive)
            q_trial = _half_square_norm(r_trial)
            better = q_trial < q[idx]
            kept = idx[better]
            h[kept] += step[better]
            r[kept], slope[kept], q[kept] = r_trial[better], slope_trial[better], q_trial[better]
            large = np.linalg.norm(step, axis=1) > _ROUNDING_STEP * (
                1 + np.linalg.norm(h[idx], axis=1))
            idx = idx[better & large & (q[idx] > 0)]
            if not idx.size:
                break
    return h, q


def eigenvalues(step_map, drive, points):
    """The eigenvalues of dF/dh at each point (n, H), by decreasing modulus: (n, H) complex."""
    n, H = points.shape
    values = np.empty((n, H), dtype=complex)
    for idx in _chunks(np.arange(n), H):
        _, slope = step_map.residual(points[idx], drive)
        J = step_map.residual_jacobian(slope)
        J[:, np.arange(H), np.arange(H)] += 1.0  # dF/dh = I + dr/dh
        values[idx] = np.linalg.eigvals(J)
    return np.take_along_axis(values, by_decreasing_modulus(values), axis=1)


def by_decreasing_modulus(values):
    """The order (n, H) that sorts each row of eigenvalues by decreasing modulus."""
    return np.argsort(-np.abs(values), axis=1, kind="stable")


def solve(step_map, drive, h0, *, tol, max_iter, slow_tol=None):
    """Run every start (rows of h0) to a fixed point of step_map with drive W_xh x + b.

    Parameters
    ----------
    step_map : StepMap
    drive : ndarray, shape (H,)
    h0 : ndarray, shape (N, H), float64
    tol : float
        A start has converged when q = ½ ||F(h) - h||² < tol.
    max_iter : int
        Most iterations of the dogleg per start (and of the refinement, with slow_tol).
    slow_tol : float or None
        Refine the starts that stopped above tol to stationary points of q (slow points).

    Returns
    -------
    SolverOutcome
    """
    s = _Starts(step_map, drive, h0)
    H = s.h.shape[1]
    s.status[s.q < tol] = CONVERGED
    for _ in range(max_iter):
        running = np.flatnonzero(s.status == RUNNING)
        if not running.size:
            break
        for idx in _chunks(running, H):
            _dogleg_iteration(step_map, drive, s, idx, tol)
    s.status[s.q < tol] = CONVERGED
    s.status[s.status == RUNNING] = MAX_ITER
    if slow_tol is not None:
        rest = np.flatnonzero(s.status != CONVERGED)
        if rest.size:
            h, q, iterations, stationary = _minimise_q(step_map, drive, s.h[rest], max_iter)
            s.h[rest], s.q[rest] = h, q
            s.iterations[rest] += iterations
            s.status[rest[stationary]] = STATIONARY
            s.status[rest[q < tol]] = CONVERGED
    return SolverOutcome(s.h, s.q, s.iterations, s.status)
