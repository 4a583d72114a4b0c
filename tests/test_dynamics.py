"""rnnfast.dynamics: fixed points of systems whose fixed points are known exactly, eigenvalues
against finite differences, the systems it accepts, slow points, and what it refuses."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import brentq, minimize_scalar

import rnnfast
from rnnfast.charlm import CharRNN
from rnnfast.diagnostics import layer_states
from rnnfast.dynamics import (StepMap, as_step_map, find_fixed_points, principal_components,
                              sample_states)

POSITION_TOL = 1e-10


def _roots_1d(w, b, nonlinearity="tanh"):
    """Every root of h = f(w h + b): for tanh (all roots lie in (-1, 1)) by bracketing sign
    changes of h - tanh(w h + b) on a fine grid, then Brent's method; for relu with w < 1 and
    b > 0, the one root b / (1 - w)."""
    if nonlinearity == "relu":
        assert w < 1 and b > 0
        return np.array([b / (1 - w)])
    g = lambda h: h - np.tanh(w * h + b)  # noqa: E731
    grid = np.linspace(-1.5, 1.5, 30001)
    values = np.array([g(h) for h in grid])
    roots = [grid[i] for i in np.flatnonzero(values == 0)]
    for i in np.flatnonzero(values[:-1] * values[1:] < 0):
        roots.append(brentq(g, grid[i], grid[i + 1], xtol=1e-15, rtol=1e-15))
    return np.array(sorted(roots))


def _match(found, expected):
    """The largest max-abs distance from each expected point to the nearest found one, and
    whether the matching is one-to-one."""
    distance = np.abs(found[:, None, :] - expected[None, :, :]).max(axis=2)
    nearest = distance.argmin(axis=0)
    return distance.min(axis=0).max(), len(set(nearest)) == len(expected) == len(found)


def _grid_starts(H, n_per_axis=5, spread=1.2):
    axis = np.linspace(-spread, spread, n_per_axis)
    return np.array(list(itertools.product(axis, repeat=H)))


# --------------------------------------------------------------------------------------------
# Systems whose fixed points are known exactly
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("leak", [1.0, 0.3, "per-unit"])
def test_scaled_identity_has_3_to_the_H_points_of_which_2_to_the_H_stable(leak):
    w, H = 1.7, 3
    alpha = np.array([0.2, 0.5, 1.0]) if leak == "per-unit" else leak
    fp = find_fixed_points(StepMap(w * np.eye(H), leak=alpha), _grid_starts(H))
    s = _roots_1d(w, 0.0)[-1]
    expected = np.array(list(itertools.product([-s, 0.0, s], repeat=H)))
    distance, one_to_one = _match(fp.points, expected)
    assert one_to_one and distance < POSITION_TOL
    assert len(fp) == 27 and fp.stable.sum() == 8 and len(fp.unconverged) == 0
    # Unstable along every unit at 0 (slope w > 1), stable along the others (w (1 - s²) < 1).
    np.testing.assert_array_equal(fp.unstable_dims, np.sum(np.abs(fp.points) < 1e-6, axis=1))
    np.testing.assert_array_equal(fp.stable, fp.unstable_dims == 0)
    np.testing.assert_array_equal(fp.saddle, (fp.unstable_dims > 0) & (fp.unstable_dims < H))
    # dF/dh is diagonal: 1 - α + α w f'(a) per unit.
    a = np.broadcast_to(alpha, (H,))
    exact = 1 - a + a * w * (1 - fp.points ** 2)
    np.testing.assert_allclose(np.sort(fp.eigenvalues.real, axis=1), np.sort(exact, axis=1),
                               atol=1e-12)
    assert np.all(fp.eigenvalues.imag == 0)
    assert fp.counts.sum() == len(_grid_starts(H))


def test_scaled_identity_below_one_has_only_the_origin():
    fp = find_fixed_points(StepMap(0.8 * np.eye(4)), _grid_starts(4, 3))
    assert len(fp) == 1 and fp.stable[0] and np.abs(fp.points[0]).max() < POSITION_TOL
    np.testing.assert_allclose(fp.eigenvalues[0], 0.8, atol=1e-14)


def test_stability_is_decided_at_the_unit_circle_exactly():
    """At the origin of diag(w) the eigenvalues are the w_i: 0.995 is stable, 1.005 is not."""
    fp = find_fixed_points(StepMap(np.diag([0.995, 1.005, -0.5])), np.zeros((1, 3)))
    assert len(fp) == 1 and fp.unstable_dims[0] == 1 and fp.saddle[0] and not fp.stable[0]
    np.testing.assert_allclose(fp.eigenvalues[0], [1.005, 0.995, -0.5], atol=1e-15)
    fp = find_fixed_points(StepMap(np.diag([0.995, -0.5])), np.zeros((1, 2)))
    assert fp.stable[0] and fp.unstable_dims[0] == 0 and not fp.saddle[0]


@settings(max_examples=15, deadline=None)
@given(H=st.integers(1, 4), seed=st.integers(0, 2**16),
       leak=st.sampled_from([1.0, 0.25]), nonlinearity=st.sampled_from(["tanh", "relu"]))
def test_diagonal_systems_with_bias_are_the_products_of_their_units(H, seed, leak,
                                                                    nonlinearity):
    """With W_hh diagonal, unit i solves h = f(w_i h + b_i) on its own: the fixed points are
    every combination of the units' roots, each stable exactly when every unit's slope is."""
    rng = np.random.default_rng(seed)
    if nonlinearity == "tanh":
        w, b = rng.uniform(0.3, 3.0, H), rng.uniform(-0.4, 0.4, H)
    else:  # h = relu(w h + b) with w < 1, b > 0 has the single root b / (1 - w)
        w, b = rng.uniform(-0.9, 0.9, H), rng.uniform(0.05, 0.5, H)
    roots = [_roots_1d(w[i], b[i], nonlinearity) for i in range(H)]
    expected = np.array(list(itertools.product(*roots)))
    fp = find_fixed_points(StepMap(np.diag(w), b=b, leak=leak, nonlinearity=nonlinearity),
                           _grid_starts(H, 7 if H < 4 else 5, 1.2 if nonlinearity == "tanh"
                                        else 3.0))
    distance, one_to_one = _match(fp.points, expected)
    assert one_to_one and distance < POSITION_TOL
    slope = w * (1 - expected ** 2) if nonlinearity == "tanh" else w * (
        w * expected + b > 0)
    stable = np.all(np.abs(1 - leak + leak * slope) < 1, axis=1)
    order = np.abs(fp.points[:, None, :] - expected[None]).max(axis=2).argmin(axis=1)
    np.testing.assert_array_equal(fp.stable, stable[order])


@pytest.mark.parametrize("leak", [1.0, 0.4])
@pytest.mark.parametrize("radius, theta", [(1.5, np.pi / 2), (0.9, 0.7), (1.2, 2.5)])
def test_a_rotation_block_has_the_origin_with_its_complex_eigenvalues(radius, theta, leak):
    """W_hh = blockdiag(r R(θ), w, c): the rotation block's only fixed point is its origin
    (h = tanh(r R h) has no other for θ = π/2, nor for r < 1), where dF/dh = W_hh, so its
    eigenvalues are 1 - α + α r e^{±iθ}; the 1-D blocks multiply the count by their roots."""
    c, s = np.cos(theta), np.sin(theta)
    w = 2.0
    W = np.zeros((4, 4))
    W[:2, :2] = radius * np.array([[c, -s], [s, c]])
    W[2, 2], W[3, 3] = w, 0.5
    fp = find_fixed_points(StepMap(W, leak=leak), _grid_starts(4, 4, 0.9))
    rotation_points = fp.points[:, :2]
    if radius < 1 or np.isclose(theta, np.pi / 2):
        assert np.abs(rotation_points).max() < POSITION_TOL
        assert len(fp) == 3  # the w = 2 unit: -s, 0, s
    origin = np.argmin(np.abs(fp.points).max(axis=1))
    expected = np.concatenate([1 - leak + leak * radius * np.exp([1j * theta, -1j * theta]),
                               [1 - leak + leak * w, 1 - leak + leak * 0.5]])
    got = fp.eigenvalues[origin]
    assert np.abs(np.sort_complex(got) - np.sort_complex(expected)).max() < 1e-12


def test_a_system_without_fixed_points_reports_every_start_as_not_converged():
    """h = relu(2 h + 1) has no solution (h >= 0 would need h = -1): nothing is mixed in."""
    starts = np.random.default_rng(0).uniform(-2, 2, (40, 2))
    fp = find_fixed_points(StepMap(2 * np.eye(2), b=np.ones(2), nonlinearity="relu"), starts,
                           max_iter=30)
    assert len(fp) == 0 and fp.points.shape == (0, 2) and fp.eigenvalues.shape == (0, 2)
    np.testing.assert_array_equal(fp.unconverged, np.arange(40))
    assert np.all(fp.assignment == -1) and np.all(fp.unconverged_q > 1e-12)
    assert fp.unconverged_states.shape == (40, 2)


def test_starts_stopped_early_are_reported_with_where_they_stopped():
    m = StepMap(1.7 * np.eye(2))
    starts = np.array([[0.9, -0.9], [5.0, 5.0], [0.97, 0.3]])
    fp = find_fixed_points(m, starts, max_iter=1)
    full = find_fixed_points(m, starts)
    assert len(full.unconverged) == 0
    assert len(fp.unconverged) >= 1
    np.testing.assert_array_equal(np.sort(np.concatenate([fp.unconverged,
                                                          np.flatnonzero(fp.assignment >= 0)])),
                                  np.arange(3))
    residual = m(fp.unconverged_states) - fp.unconverged_states
    np.testing.assert_allclose(fp.unconverged_q, 0.5 * np.sum(residual ** 2, axis=1),
                               rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Slow points
# --------------------------------------------------------------------------------------------
def test_slow_points_are_the_local_minima_of_q_when_asked_for():
    """h = tanh(w h + b) just past a saddle-node bifurcation: the pair of roots near the knee
    has vanished, leaving a ghost, a local minimum of q > 0, beside the one remaining root."""
    w, b = 1.5, 0.3  # the knee closes at b ~ 0.2
    q = lambda h: 0.5 * (np.tanh(w * h + b) - h) ** 2  # noqa: E731
    ghost = minimize_scalar(q, bracket=(-0.9, -0.6, -0.2), tol=1e-12).x
    assert q(ghost) > 1e-6
    m = StepMap(np.array([[w]]), b=np.array([b]))
    starts = np.linspace(-1, 1, 21)[:, None]
    fixed_only = find_fixed_points(m, starts)
    assert not fixed_only.slow.any()
    assert len(fixed_only.unconverged) > 0  # the starts caught by the ghost are not mixed in
    with_slow = find_fixed_points(m, starts, slow_tol=1e-2)
    slow = with_slow.points[with_slow.slow]
    assert slow.shape == (1, 1) and abs(slow[0, 0] - ghost) < 1e-7
    assert with_slow.q[with_slow.slow][0] == pytest.approx(q(ghost), rel=1e-9)
    assert len(with_slow.unconverged) < len(fixed_only.unconverged)
    roots = _roots_1d(w, b)
    assert len(roots) == 1 and np.any(np.abs(with_slow.points[~with_slow.slow] - roots) < 1e-10)


# --------------------------------------------------------------------------------------------
# The Jacobian and its eigenvalues against finite differences
# --------------------------------------------------------------------------------------------
def _finite_difference_jacobian(m, h, x, eps=1e-6):
    J = np.empty((len(h), len(h)))
    for j in range(len(h)):
        e = np.zeros(len(h))
        e[j] = eps
        J[:, j] = (m(h + e, x) - m(h - e, x)) / (2 * eps)
    return J


@pytest.mark.parametrize("nonlinearity, leak", [("tanh", 1.0), ("tanh", "per-unit"),
                                                ("relu", 0.5)])
def test_eigenvalues_match_a_finite_difference_jacobian_of_one_step(nonlinearity, leak):
    rng = np.random.default_rng(3)
    H, D = 8, 3
    W = 1.6 * rng.standard_normal((H, H)) / np.sqrt(H)
    W_xh, b = rng.standard_normal((H, D)), 0.1 * rng.standard_normal(H)
    alpha = rng.uniform(0.2, 1.0, H) if leak == "per-unit" else leak
    m = StepMap(W, W_xh, b, leak=alpha, nonlinearity=nonlinearity)
    x = 0.3 * rng.standard_normal(D)
    trajectory = m.run(np.broadcast_to(x, (40, 16, D)).copy(),
                       rng.uniform(-1, 1, (16, H)))
    fp = find_fixed_points(m, sample_states(trajectory, 200, noise=0.5, seed=0), x)
    assert len(fp) >= 1
    for k in range(len(fp)):
        J = _finite_difference_jacobian(m, fp.points[k], x)
        np.testing.assert_allclose(fp.jacobians()[k], J, atol=1e-8)
        fd = np.linalg.eigvals(J)
        assert np.abs(np.sort_complex(fp.eigenvalues[k]) - np.sort_complex(fd)).max() < 1e-6
        np.testing.assert_allclose(m(fp.points[k], x), fp.points[k], atol=1e-12)
    values, vectors = fp.eig()
    np.testing.assert_allclose(values, fp.eigenvalues, atol=1e-10)
    for k in range(len(fp)):
        np.testing.assert_allclose(fp.jacobians()[k] @ vectors[k], vectors[k] * values[k],
                                   atol=1e-10)


# --------------------------------------------------------------------------------------------
# The systems it accepts
# --------------------------------------------------------------------------------------------
LAYER_SETTINGS = [{}, {"nonlinearity": "relu"}, {"bias": False}, {"leak": 0.3},
                  {"leak": np.linspace(0.2, 1.0, 5)}]


@pytest.mark.parametrize("settings_", LAYER_SETTINGS)
def test_the_step_map_of_a_layer_runs_as_the_layer(settings_):
    rnn = rnnfast.RNN(3, 5, dtype=np.float64, seed=0, **settings_)
    x = np.random.default_rng(1).standard_normal((7, 2, 3))
    h0 = np.random.default_rng(2).uniform(-1, 1, (2, 5))
    out, _ = rnn.forward(x, h0[None])
    np.testing.assert_allclose(as_step_map(rnn).run(x, h0), out, atol=1e-13)


def test_every_layer_and_direction_of_a_stacked_bidirectional_rnn():
    rnn = rnnfast.RNN(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    rnn.eval()
    x = np.random.default_rng(1).standard_normal((6, 2, 3))
    states = layer_states(rnn, x)  # (L, directions, T, B, H), time order
    layer_input = {0: x, 1: np.concatenate([states[0, 0], states[0, 1]], axis=2)}
    for layer, direction in itertools.product(range(2), range(2)):
        m = as_step_map(rnn, layer=layer, direction=direction)
        inputs = layer_input[layer][::-1] if direction else layer_input[layer]
        run = m.run(np.ascontiguousarray(inputs))
        np.testing.assert_allclose(run[::-1] if direction else run, states[layer, direction],
                                   atol=1e-13)
    fp = find_fixed_points(rnn, states[1, 1, -1], np.zeros(8), layer=1, direction=1)
    assert fp.step_map.input_size == 8 and len(fp.unconverged) == 0


def test_a_char_model_is_searched_at_a_character_embedding():
    model = CharRNN(12, hidden_size=6, embedding_dim=4, dtype=np.float64, seed=0)
    x = model.embedding.weight[3]
    starts = np.random.default_rng(0).uniform(-1, 1, (20, 6))
    fp = find_fixed_points(model, starts, x)
    assert len(fp) >= 1 and fp.step_map.input_size == 4
    np.testing.assert_allclose(fp.points, find_fixed_points(model.rnn, starts, x).points)
    # Reading character 3 over and over, the model's state settles on a stable point.
    _, h_n = model.rnn.forward(model.embedding.forward(np.full((300, 1), 3)))
    if fp.stable.any():
        assert np.abs(fp.points[fp.stable] - h_n[0, 0]).max(axis=1).min() < 1e-8


def test_merging_counts_and_assignment():
    m = StepMap(1.7 * np.eye(2))
    starts = np.repeat(np.array([[0.8, 0.8], [-0.8, 0.9], [0.05, 0.9]]), [5, 3, 2], axis=0)
    fp = find_fixed_points(m, starts)
    assert len(fp) == 3 and sorted(fp.counts) == [2, 3, 5]
    assert fp.counts.sum() == 10
    for i, k in enumerate(fp.assignment):
        assert np.sign(fp.points[k]).tolist() == np.sign(np.round(starts[i], 0)).tolist() or \
            np.abs(fp.points[k][0]) < 1e-12
    # Stable points come first, then by the number of unstable directions.
    assert list(fp.unstable_dims) == sorted(fp.unstable_dims)
    wide = find_fixed_points(m, starts, merge_tol=10.0)
    assert len(wide) == 1 and wide.counts[0] == 10


def test_results_do_not_depend_on_the_thread_count_beyond_rounding():
    rng = np.random.default_rng(0)
    H = 24
    m = StepMap(1.5 * rng.standard_normal((H, H)) / np.sqrt(H), b=0.1 * rng.standard_normal(H))
    starts = rng.uniform(-1, 1, (300, H))
    one = find_fixed_points(m, starts, n_threads=1)
    two = find_fixed_points(m, starts, n_threads=2)
    assert len(one) == len(two)
    distance, one_to_one = _match(two.points, one.points)
    assert one_to_one and distance < 1e-10


# --------------------------------------------------------------------------------------------
# Helpers: sampling states, principal components
# --------------------------------------------------------------------------------------------
def test_sample_states_draws_visited_states_and_adds_noise():
    trajectories = np.arange(4 * 3 * 2, dtype=np.float64).reshape(4, 3, 2)
    drawn = sample_states(trajectories, 12, seed=0)
    rows = {tuple(r) for r in trajectories.reshape(-1, 2)}
    assert len({tuple(r) for r in drawn}) == 12 and all(tuple(r) in rows for r in drawn)
    np.testing.assert_array_equal(drawn, sample_states(trajectories, 12, seed=0))
    mask = np.zeros((4, 3), dtype=bool)
    mask[2, 1] = True
    np.testing.assert_array_equal(sample_states(trajectories, 5, mask=mask, seed=1),
                                  np.tile(trajectories[2, 1], (5, 1)))
    noisy = sample_states(np.zeros((50, 40, 3)), 20000, noise=0.5, seed=2)
    assert noisy.std() == pytest.approx(0.5, rel=0.02) and abs(noisy.mean()) < 0.01


def test_principal_components_are_those_of_the_covariance():
    rng = np.random.default_rng(0)
    states = rng.standard_normal((200, 5)) @ np.diag([5.0, 3.0, 1.0, 0.5, 0.1]) + 7
    p = principal_components(states.reshape(20, 10, 5), 3)
    values, vectors = np.linalg.eigh(np.cov(states.T, bias=True))
    for j in range(3):
        assert abs(abs(p.components[j] @ vectors[:, -1 - j]) - 1) < 1e-10
    np.testing.assert_allclose(p.explained, values[::-1][:3] / values.sum(), rtol=1e-10)
    np.testing.assert_allclose(p.project(p.mean), 0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# What it refuses
# --------------------------------------------------------------------------------------------
GOOD = StepMap(np.eye(2), np.ones((2, 1)))


@pytest.mark.parametrize("call, error, message", [
    (lambda: find_fixed_points("rnn", np.zeros((1, 2))), TypeError, "system must be"),
    (lambda: find_fixed_points(GOOD, np.zeros((1, 3))), ValueError, "initial_states"),
    (lambda: find_fixed_points(GOOD, np.zeros(2)), ValueError, "2-D"),
    (lambda: find_fixed_points(GOOD, np.full((1, 2), np.nan)), ValueError, "finite"),
    (lambda: find_fixed_points(GOOD, np.zeros((1, 2)), np.zeros(2)), ValueError, "inputs"),
    (lambda: find_fixed_points(GOOD, np.zeros((1, 2)), tol=0), ValueError, "tol"),
    (lambda: find_fixed_points(GOOD, np.zeros((1, 2)), max_iter=0), ValueError, "max_iter"),
    (lambda: find_fixed_points(GOOD, np.zeros((1, 2)), slow_tol=1e-13), ValueError,
     "slow_tol"),
    (lambda: find_fixed_points(GOOD, np.zeros((1, 2)), merge_tol=-1), ValueError, "merge_tol"),
    (lambda: find_fixed_points(GOOD, np.zeros((1, 2)), layer=1), ValueError, "StepMap"),
    (lambda: find_fixed_points(rnnfast.RNN(2, 2), np.zeros((1, 2)), layer=1), ValueError,
     "layer"),
    (lambda: find_fixed_points(rnnfast.RNN(2, 2), np.zeros((1, 2)), direction=1), ValueError,
     "direction"),
    (lambda: find_fixed_points(GOOD, np.zeros((1, 2)), n_threads=0), ValueError, "n_threads"),
    (lambda: StepMap(np.ones((2, 3))), ValueError, "W_hh"),
    (lambda: StepMap(np.eye(2), np.ones((3, 1))), ValueError, "W_xh"),
    (lambda: StepMap(np.eye(2), b=np.ones(3)), ValueError, "b"),
    (lambda: StepMap(np.eye(2), leak=0), ValueError, "leak"),
    (lambda: StepMap(np.eye(2), leak=[0.5, 1.5]), ValueError, "leak"),
    (lambda: StepMap(np.eye(2), leak=True), TypeError, "leak"),
    (lambda: StepMap(np.eye(2), nonlinearity="sigmoid"), ValueError, "nonlinearity"),
    (lambda: StepMap([[np.inf]]), ValueError, "finite"),
    (lambda: StepMap(np.eye(2)).drive(np.ones(1)), ValueError, "no input weights"),
    (lambda: sample_states(np.zeros((2, 2)), 3), ValueError, "trajectories"),
    (lambda: sample_states(np.zeros((2, 2, 2)), 3, noise=-1), ValueError, "noise"),
    (lambda: sample_states(np.zeros((2, 2, 2)), 3, mask=np.zeros((2, 2))), ValueError,
     "mask"),
    (lambda: sample_states(np.zeros((2, 2, 2)), 3, mask=np.ones((2, 3))), ValueError, "mask"),
])
def test_bad_arguments_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
