"""rnnfast.reservoir.datasets against independent solutions (closed form, SciPy's ODE solver, a
loop written from the recurrence) and rnnfast.reservoir.nrmse against its definition."""
import numpy as np
import pytest
import scipy.integrate

from rnnfast.reservoir import datasets, nrmse

A, B_, N = 0.2, 0.1, 10.0


def test_mackey_glass_on_its_first_delay_is_the_closed_form():
    """On [0, tau] the delayed value is the constant history x0: dx/dt = c - b x, solved by
    x(t) = c/b + (x0 - c/b) exp(-b t). RK4's error on it: (b dt)^5 / 120 relative per step,
    170 steps, ~1.4e-10 at most."""
    series = datasets.mackey_glass(18, x0=1.2)[:, 0]
    c = A * 1.2 / (1 + 1.2 ** N)
    t = np.arange(18.0)
    np.testing.assert_allclose(series, c / B_ + (1.2 - c / B_) * np.exp(-B_ * t), rtol=2e-10)


def test_mackey_glass_on_its_second_delay_is_scipys_solution():
    """On [tau, 2 tau] the delayed value is the closed form of the first delay: an ODE with a
    known forcing, solved to 1e-12 by SciPy (DOP853). RK4 with dt = 0.1 and Hermite half
    steps is within 1e-8 of it, and its error falls as dt^4."""
    x0, tau = 1.2, 17.0
    c = A * x0 / (1 + x0 ** N)

    def first(t):
        return c / B_ + (x0 - c / B_) * np.exp(-B_ * t)

    def rate(t, x):
        delayed = first(t - tau)
        return A * delayed / (1 + delayed ** N) - B_ * x

    times = np.arange(17.0, 35.0)
    exact = scipy.integrate.solve_ivp(rate, (17.0, 34.0), [first(17.0)], method="DOP853",
                                      t_eval=times[:-1], rtol=1e-13, atol=1e-13).y[0]
    errors = []
    for dt in (0.2, 0.1, 0.05):
        series = datasets.mackey_glass(34, dt=dt)[17:, 0]
        errors.append(np.abs(series - exact).max())
    assert errors[1] < 1e-8
    assert 10 < errors[0] / errors[1] < 24 and 10 < errors[1] / errors[2] < 24  # ~2^4 = 16


def test_mackey_glass_is_chaotic_on_its_attractor():
    series = datasets.mackey_glass(3000)[500:, 0]
    assert 0.2 < series.min() < 0.5 and 1.2 < series.max() < 1.45  # the tau = 17 attractor
    # Sensitive dependence: a perturbation of 1e-9 in x0 grows by many orders of magnitude.
    other = datasets.mackey_glass(3000, x0=1.2 + 1e-9)[500:, 0]
    assert np.abs(other - series)[-500:].max() > 1e-3
    assert np.array_equal(datasets.mackey_glass(50), datasets.mackey_glass(50))
    sampled = datasets.mackey_glass(20, step=0.5)
    np.testing.assert_allclose(sampled[::2], datasets.mackey_glass(10), rtol=0, atol=1e-14)


def test_narma10_follows_its_recurrence():
    u, y = datasets.narma10(300, seed=4)
    assert u.shape == y.shape == (300, 1) and 0 <= u.min() and u.max() <= 0.5
    u, y = u[:, 0], y[:, 0]
    previous = np.concatenate([[0.0], y])  # previous[t] = y_t, y_0 = 0
    for t in range(300):
        window = previous[max(0, t - 9):t + 1].sum()
        lagged = u[t - 9] if t >= 9 else 0.0
        assert y[t] == pytest.approx(0.3 * previous[t] + 0.05 * previous[t] * window
                                     + 1.5 * lagged * u[t] + 0.1, rel=1e-14)
    again_u, again_y = datasets.narma10(300, seed=4)
    np.testing.assert_array_equal(again_y[:, 0], y)


def test_lorenz_matches_a_fine_runge_kutta_solution():
    series = datasets.lorenz(101, step=0.01)
    assert series.shape == (101, 3)
    state, dt = np.array([1.0, 1.0, 1.0]), 1e-4

    def rates(s):
        return np.array([10 * (s[1] - s[0]), s[0] * (28 - s[2]) - s[1], s[0] * s[1] - 8 / 3 * s[2]])

    reference = [state.copy()]
    for step in range(100 * 100):
        k1 = rates(state)
        k2 = rates(state + dt / 2 * k1)
        k3 = rates(state + dt / 2 * k2)
        k4 = rates(state + dt * k3)
        state = state + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if (step + 1) % 100 == 0:
            reference.append(state.copy())
    np.testing.assert_allclose(series, reference, rtol=1e-8, atol=1e-8)
    assert datasets.lorenz(1).tolist() == [[1.0, 1.0, 1.0]]


def test_nrmse_by_its_definition():
    rng = np.random.default_rng(0)
    y, y_hat = rng.standard_normal((50, 2)), rng.standard_normal((50, 2))
    rmse = np.sqrt(np.mean((y - y_hat) ** 2))
    assert nrmse(y, y_hat) == pytest.approx(rmse / np.std(y))
    assert nrmse(y, y_hat, norm="range") == pytest.approx(rmse / (y.max() - y.min()))
    assert nrmse(y, np.full_like(y, y.mean())) == pytest.approx(1.0)  # predicting the mean
    assert nrmse(y, y) == 0


@pytest.mark.parametrize("call, error, words", [
    (lambda: nrmse([1.0, 2.0], [1.0]), ValueError, "same shape"),
    (lambda: nrmse([1.0, 1.0], [1.0, 2.0]), ValueError, "constant"),
    (lambda: nrmse([1.0, 2.0], [1.0, 2.0], norm="var"), ValueError, "norm"),
    (lambda: datasets.mackey_glass(0), ValueError, "n_timesteps"),
    (lambda: datasets.mackey_glass(10, tau=17.05), ValueError, "tau"),
    (lambda: datasets.mackey_glass(10, step=0.25), ValueError, "step"),
    (lambda: datasets.mackey_glass(10, dt=0), ValueError, "dt"),
    (lambda: datasets.narma10(10, seed=-1), ValueError, "seed"),
    (lambda: datasets.lorenz(10, x0=(1.0, 2.0)), ValueError, "x0"),
    (lambda: datasets.lorenz(10, step=-1.0), ValueError, "step"),
])
def test_bad_arguments_are_refused(call, error, words):
    with pytest.raises(error, match=words):
        call()
