"""The classic series of reservoir computing: Mackey-Glass, NARMA-10 and Lorenz, as seeded,
deterministic generators returning time-major (T, features) float64 arrays."""
import math

import numpy as np
import scipy.integrate

from rnnfast.utils.validation import check_int, check_real, random_generator

__all__ = ["mackey_glass", "narma10", "lorenz"]


def _steps(length, dt, name):
    """length / dt as an int, or ValueError if it is not one (to 1e-9)."""
    steps = round(length / dt)
    if steps < 1 or abs(steps * dt - length) > 1e-9 * max(1.0, length):
        raise ValueError(f"{name} = {length:g} must be a whole number of integration steps "
                         f"dt = {dt:g}")
    return steps


def mackey_glass(n_timesteps, *, tau=17.0, a=0.2, b=0.1, n=10.0, x0=1.2, step=1.0, dt=0.1):
    """The Mackey-Glass series: the delay differential equation

        dx/dt = a x(t - tau) / (1 + x(t - tau)^n) - b x(t)

    (Mackey and Glass 1977; chaotic for tau = 17, the usual benchmark), sampled every ``step``
    time units from t = 0, with the constant history x(t) = x0 for t <= 0.

    Integrated with the classical fourth-order Runge-Kutta method at step ``dt`` (tau and step
    must be whole numbers of it): the delayed value at a step's start and end is on the grid,
    at its middle it is the cubic Hermite interpolant of the solution (x and dx/dt at the two
    grid points, exact to fourth order), so the scheme keeps its fourth order (the tests check
    it against the closed-form solution on [0, tau] and an ODE solver on [tau, 2 tau]).
    ReservoirPy's ``mackey_glass`` takes one step per sample (h = 1) with the delayed value held
    at its grid value over the step, from a random history; its series and this one are
    different samples of the same attractor.

    Returns
    -------
    ndarray, shape (n_timesteps, 1)
        x(0), x(step), x(2 step), ...
    """
    n_timesteps = check_int(n_timesteps, "n_timesteps", low=1)
    tau = check_real(tau, "tau", low=0.0, include_low=False)
    dt = check_real(dt, "dt", low=0.0, include_low=False)
    step = check_real(step, "step", low=0.0, include_low=False)
    a, b, n, x0 = (check_real(value, name) for value, name in ((a, "a"), (b, "b"), (n, "n"),
                                                              (x0, "x0")))
    delay, every = _steps(tau, dt, "tau"), _steps(step, dt, "step")
    grid = (n_timesteps - 1) * every + 1

    def rate(x, delayed):
        return a * delayed / (1.0 + delayed ** n) - b * x

    # Grid point k (t = k dt) is at index k + delay; x and dx/dt of the history are x0 and 0.
    xs = [x0] * delay + [x0]
    rates = [0.0] * delay + [rate(x0, x0)]
    half, sixth = dt / 2, dt / 6
    x = x0
    for k in range(grid - 1):
        start = k  # index of grid point k - delay
        d0, d1 = xs[start], xs[start + 1]
        r0, r1 = (0.0, 0.0) if start < delay else (rates[start], rates[start + 1])
        middle = (d0 + d1) / 2 + dt * (r0 - r1) / 8  # cubic Hermite at the half step
        k1 = rate(x, d0)
        k2 = rate(x + half * k1, middle)
        k3 = rate(x + half * k2, middle)
        k4 = rate(x + dt * k3, d1)
        x = x + sixth * (k1 + 2 * k2 + 2 * k3 + k4)
        xs.append(x)
        rates.append(rate(x, xs[k + 1]))  # grid point k + 1's delayed value: index k + 1
    return np.array(xs[delay::every], dtype=np.float64).reshape(-1, 1)


def narma10(n_timesteps, *, seed=None):
    """The NARMA-10 task (Atiya and Parlos 2000): inputs u_t uniform in [0, 0.5] and

        y_{t+1} = 0.3 y_t + 0.05 y_t (y_t + ... + y_{t-9}) + 1.5 u_{t-9} u_t + 0.1

    from y = 0 before the first step (and u = 0 before the first input).

    Returns
    -------
    u : ndarray, shape (n_timesteps, 1)
    y : ndarray, shape (n_timesteps, 1)
        y[t] = y_{t+1}, which depends on u[0..t]: the target of the state after input u[t]
        (the system's memory is 10 steps).
    """
    n_timesteps = check_int(n_timesteps, "n_timesteps", low=1)
    rng = random_generator(seed)
    u = rng.uniform(0.0, 0.5, n_timesteps)
    y = np.zeros(n_timesteps + 1)  # y[t] = y_t; y_0 = 0
    for t in range(n_timesteps):
        history = y[max(0, t - 9):t + 1].sum()
        lagged = u[t - 9] if t >= 9 else 0.0
        y[t + 1] = 0.3 * y[t] + 0.05 * y[t] * history + 1.5 * lagged * u[t] + 0.1
    return u.reshape(-1, 1), y[1:].reshape(-1, 1)


def lorenz(n_timesteps, *, step=0.03, sigma=10.0, rho=28.0, beta=8.0 / 3.0, x0=(1.0, 1.0, 1.0)):
    """The Lorenz (1963) system dx/dt = sigma (y - x), dy/dt = x (rho - z) - y,
    dz/dt = x y - beta z from x0, sampled every ``step`` from t = 0 (ReservoirPy's defaults),
    integrated by SciPy's DOP853 (8th-order Runge-Kutta) to a relative and absolute tolerance
    of 1e-10.

    Returns
    -------
    ndarray, shape (n_timesteps, 3)
        (x, y, z) at t = 0, step, 2 step, ...
    """
    n_timesteps = check_int(n_timesteps, "n_timesteps", low=1)
    step = check_real(step, "step", low=0.0, include_low=False)
    sigma, rho, beta = (check_real(v, name) for v, name in ((sigma, "sigma"), (rho, "rho"),
                                                            (beta, "beta")))
    start = np.asarray(x0, dtype=np.float64)
    if start.shape != (3,) or not np.all(np.isfinite(start)):
        raise ValueError(f"x0 must be 3 finite numbers (x, y, z); got {x0!r}")

    def rates(_, state):
        x, y, z = state
        return [sigma * (y - x), x * (rho - z) - y, x * y - beta * z]

    times = np.arange(n_timesteps) * step
    if n_timesteps == 1:
        return start.reshape(1, 3)
    solution = scipy.integrate.solve_ivp(rates, (0.0, times[-1]), start, method="DOP853",
                                         t_eval=times, rtol=1e-10, atol=1e-10)
    if not solution.success or not math.isfinite(float(solution.y.sum())):
        raise ValueError(f"the Lorenz system could not be integrated: {solution.message}")
    return np.ascontiguousarray(solution.y.T)
