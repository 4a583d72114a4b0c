"""rnnfast.diagnostics and `rnnfast diagnose`: Jacobian norms against finite differences and
against an oracle that does not use return_norms, the randomized estimate within its stated
spread, the size of W_hh against NumPy, saturation on constructed states, the shape of the curves
below, at and above radius 1, and the command with and without matplotlib."""
import io
import math
import re
import sys

import numpy as np
import pytest

import rnnfast
from rnnfast import diagnostics, reference
from rnnfast.diagnostics import gradient_flow
from rnnfast.cli import output
from rnnfast.cli.main import main
from rnn_helpers import FD_EPS, TOL, assert_close, make_problem

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _act_derivative(h, nonlinearity):
    return 1 - h * h if nonlinearity == "tanh" else (h > 0).astype(h.dtype)


# --------------------------------------------------------------------------------------------
# Oracles for ||dh_T/dh_t||_F.
# --------------------------------------------------------------------------------------------
def finite_difference_norms(p, nonlinearity):
    """||d out[T-1] / d out[t]||_F by central differences: perturb out[t, b] along each unit
    vector and run the rest of the sequence (steps t+1..T) with rnn_forward from it."""
    out, _ = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity)
    T, B, D, H = p.shape
    norms = np.empty((T, B))
    for t in range(T):
        for b in range(B):
            jacobian = np.empty((H, H))
            for j in range(H):
                def final_state(eps):
                    h = out[t, b].copy()
                    h[j] += eps
                    if t == T - 1:
                        return h
                    tail, _ = rnnfast.rnn_forward(p.x[t + 1:, b:b + 1], h[None], p.W_xh,
                                                  p.W_hh, p.b, nonlinearity=nonlinearity)
                    return tail[-1, 0]
                jacobian[:, j] = (final_state(FD_EPS) - final_state(-FD_EPS)) / (2 * FD_EPS)
            norms[t, b] = np.linalg.norm(jacobian)
    return norms


def tail_backward_norms(p, nonlinearity):
    """The tail trick, on the NumPy reference backend and without return_norms: e_i^T dh_T/dh_t
    is dh0 of a backward pass over steps t+1..T started from h0 = out[t], with dout = 0 and
    dh_n = e_i."""
    out, _ = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, backend="numpy")
    T, B, D, H = p.shape
    norms = np.empty((T, B))
    norms[T - 1] = np.sqrt(H)  # the identity
    eye = np.eye(H)
    for t in range(T - 1):
        for b in range(B):
            x_tail = np.repeat(p.x[t + 1:, b:b + 1], H, axis=1)  # one replica per e_i
            h0 = np.repeat(out[t, b][None], H, axis=0)
            tail, cache = rnnfast.rnn_forward(x_tail, h0, p.W_xh, p.W_hh, p.b,
                                              nonlinearity=nonlinearity, backend="numpy")
            grads = rnnfast.rnn_backward(np.zeros_like(tail), cache, eye)
            norms[t, b] = np.linalg.norm(grads.dh0)
    return norms


def product_jacobians(x, h0, W_xh, W_hh, b, nonlinearity):
    """The Jacobians d out[T-1] / d out[t] themselves, (T, B, H, H), in float64, as the product
    of the one-step Jacobians diag(act'(a_k)) W_hh over the reference's states."""
    x, W_xh, W_hh = (np.asarray(a, dtype=np.float64) for a in (x, W_xh, W_hh))
    h0 = None if h0 is None else np.asarray(h0, dtype=np.float64)
    b = None if b is None else np.asarray(b, dtype=np.float64)
    out, _ = reference.forward(x, h0, W_xh, W_hh, b, nonlinearity)
    T, B, _ = x.shape
    H = W_hh.shape[0]
    jacobians = np.empty((T, B, H, H))
    jacobians[T - 1] = np.eye(H)
    for t in range(T - 2, -1, -1):
        step = _act_derivative(out[t + 1], nonlinearity)[:, :, None] * W_hh  # (B, H, H)
        jacobians[t] = jacobians[t + 1] @ step
    return jacobians


# --------------------------------------------------------------------------------------------
# jacobian_norms, exact
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_exact_norms_match_finite_differences(nonlinearity):
    p = make_problem(1, 4, 2, 3, 3)
    exact = diagnostics.jacobian_norms(*p.args, nonlinearity=nonlinearity, method="exact")
    assert exact.shape == (4, 2) and exact.dtype == np.float64
    assert_close(exact, finite_difference_norms(p, nonlinearity), TOL["finite_difference"])


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_exact_norms_match_the_tail_trick_on_the_reference_backend(nonlinearity, path):
    """On every path of the Cython backend, against an oracle that needs no return_norms."""
    p = make_problem(2, 6, 3, 2, 5, h0=True)
    exact = diagnostics.jacobian_norms(*p.args, nonlinearity=nonlinearity, method="exact")
    assert_close(exact, tail_backward_norms(p, nonlinearity), TOL["float64"])


@pytest.mark.parametrize("dtype, tol", [(np.float64, TOL["float64"]),
                                        (np.float32, TOL["float32_grad"])])
def test_exact_norms_match_the_product_of_step_jacobians(dtype, tol):
    p = make_problem(3, 7, 2, 3, 4, h0=False).astype(dtype)
    exact = diagnostics.jacobian_norms(*p.args, method="exact")
    expected = np.linalg.norm(product_jacobians(*p.args, "tanh"), axis=(2, 3))
    assert_close(exact, expected, tol)


@pytest.mark.parametrize("T, B, H", [(1, 1, 1), (1, 3, 4), (6, 1, 1), (5, 2, 1), (2, 1, 3)])
@pytest.mark.parametrize("method", ["exact", "probes"])
def test_edge_shapes(T, B, H, method):
    """T = 1 (only lag 0, the identity), B = 1, H = 1 (a product of scalars act'(a_k) w)."""
    p = make_problem(17, T, B, 2, H)
    P = 4000
    norms = diagnostics.jacobian_norms(*p.args, method=method, n_probes=P, seed=0)
    expected = np.linalg.norm(product_jacobians(*p.args, "tanh"), axis=(2, 3))
    # probes: four times the documented worst-case spread (reached for H = 1: one direction)
    tol = TOL["float64"] if method == "exact" else 4 / np.sqrt(2 * P)
    np.testing.assert_allclose(norms, expected, rtol=tol)


def test_chunks_of_the_replicated_batch_give_the_same_norms(monkeypatch):
    p = make_problem(4, 5, 3, 2, 4)
    whole = diagnostics.jacobian_norms(*p.args, method="exact")
    monkeypatch.setattr(gradient_flow, "_CHUNK_VALUES", 5 * 4 * 3)  # 3 replicas per chunk
    assert_close(diagnostics.jacobian_norms(*p.args, method="exact"), whole, TOL["float64"])
    monkeypatch.setattr(gradient_flow, "_CHUNK_VALUES", 1)  # one replica per chunk
    assert_close(diagnostics.jacobian_norms(*p.args, method="exact"), whole, TOL["float64"])


def test_norms_do_not_underflow_when_squared_in_float32():
    """Norms near 1e-25 square to 1e-50, below float32's range: the sum is kept in float64."""
    H = 3
    W_hh = np.diag([0.01, 0.01, 0.01]).astype(np.float32)
    x = np.zeros((14, 1, 1), dtype=np.float32)
    W_xh = np.zeros((H, 1), dtype=np.float32)
    norms = diagnostics.jacobian_norms(x, None, W_xh, W_hh, None, method="exact")
    expected = np.sqrt(H) * 0.01 ** np.arange(13, -1, -1.0)  # 1.7e-26 at lag 13
    np.testing.assert_allclose(norms[:, 0], expected, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# jacobian_norms, probes and "auto"
# --------------------------------------------------------------------------------------------
def test_probe_estimate_is_within_its_stated_spread():
    """With P Gaussian probes the mean of ||v^T J||^2 has relative standard deviation
    sqrt(2 sum s^4 / (sum s^2)^2 / P) (s: singular values of J): the norm, its square root, has
    about half that. Four of those standard deviations, for a fixed seed, bound the error."""
    p = make_problem(5, 8, 2, 3, 6)
    P = 2000
    estimate = diagnostics.jacobian_norms(*p.args, method="probes", n_probes=P, seed=0)
    jacobians = product_jacobians(*p.args, "tanh")
    exact = np.linalg.norm(jacobians, axis=(2, 3))
    s = np.linalg.svd(jacobians, compute_uv=False)  # (T, B, H)
    spread = np.sqrt(2 * np.sum(s**4, axis=2) / np.sum(s**2, axis=2) ** 2 / P) / 2
    assert spread.max() <= 1 / np.sqrt(2 * P) + 1e-12  # the documented worst case
    relative_error = np.abs(estimate / exact - 1)
    assert np.all(relative_error <= 4 * spread), (relative_error / spread).max()
    assert relative_error.max() > 0  # an estimate, not the exact value


def test_probe_estimates_are_unbiased_on_average_over_seeds():
    """The mean of the squared estimates over many seeds approaches ||J||_F^2 (Hutchinson)."""
    p = make_problem(6, 5, 1, 2, 5)
    exact = diagnostics.jacobian_norms(*p.args, method="exact")
    squares = np.mean([diagnostics.jacobian_norms(*p.args, method="probes", n_probes=8,
                                                  seed=seed) ** 2 for seed in range(300)],
                      axis=0)
    # 300 * 8 probes: relative standard deviation of the mean square <= sqrt(2 / 2400) = 0.029.
    np.testing.assert_allclose(squares, exact**2, rtol=4 * np.sqrt(2 / 2400))


def test_probes_follow_the_seed():
    p = make_problem(7, 4, 2, 2, 6)
    first = diagnostics.jacobian_norms(*p.args, method="probes", n_probes=3, seed=1)
    np.testing.assert_array_equal(
        first, diagnostics.jacobian_norms(*p.args, method="probes", n_probes=3, seed=1))
    assert not np.array_equal(
        first, diagnostics.jacobian_norms(*p.args, method="probes", n_probes=3, seed=2))


def test_auto_is_exact_for_small_problems_and_probes_for_large_ones():
    resolve = diagnostics.resolve_jacobian_method
    assert resolve("auto", 1000, 64, 16, 32, n_probes=32) == "exact"  # H <= n_probes
    assert resolve("auto", 100, 8, 64, 64, n_probes=32) == "exact"  # 2.7e8 <= 2**30
    assert resolve("auto", 100, 8, 64, 256, n_probes=32) == "probes"  # 1.1e10
    assert resolve("probes", 2, 1, 1, 2, n_probes=32) == "probes"
    assert resolve("exact", 100, 8, 64, 256, n_probes=32) == "exact"
    p = make_problem(8, 5, 2, 3, 4)
    assert_close(diagnostics.jacobian_norms(*p.args),
                 diagnostics.jacobian_norms(*p.args, method="exact"), 0.0)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"method": "svd"}, ValueError, "method must be one of 'auto', 'exact', 'probes'"),
    ({"n_probes": 0}, ValueError, "n_probes must be an integer from 1 to"),
    ({"n_probes": 2.5}, TypeError, "n_probes must be an int"),
    ({"nonlinearity": "sigmoid"}, ValueError, "nonlinearity must be one of"),
])
def test_jacobian_norms_rejects_bad_options(kwargs, error, match):
    p = make_problem(9, 3, 1, 2, 2)
    with pytest.raises(error, match=match):
        diagnostics.jacobian_norms(*p.args, **kwargs)


def test_jacobian_norms_rejects_bad_arrays_naming_them():
    p = make_problem(10, 3, 2, 2, 3)
    with pytest.raises(ValueError, match=r"W_hh must have shape \(H, H\)"):
        diagnostics.jacobian_norms(p.x, p.h0, p.W_xh, p.W_hh[:, :2], p.b)
    with pytest.raises(ValueError, match=r"h0 must have shape \(B, H\) = \(2, 3\)"):
        diagnostics.jacobian_norms(p.x, p.h0[:1], p.W_xh, p.W_hh, p.b)
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        diagnostics.jacobian_norms(p.x.astype(int), p.h0, p.W_xh, p.W_hh, p.b)
    with pytest.raises(TypeError, match="all arrays must share one dtype"):
        diagnostics.jacobian_norms(p.x.astype(np.float32), p.h0, p.W_xh, p.W_hh, p.b)


# --------------------------------------------------------------------------------------------
# The curves: below, at and above radius 1, in the near-linear regime
# --------------------------------------------------------------------------------------------
def _curve(W_hh, T=12, input_scale=1e-6):
    """||dh_T/dh_t||_F / sqrt(H) by lag (lag 0 first) on tiny inputs: tanh' ~ 1 everywhere, so
    the Jacobian at lag k is ~W_hh^k."""
    H = W_hh.shape[0]
    rng = np.random.default_rng(0)
    x = input_scale * rng.standard_normal((T, 2, 3))
    W_xh = rng.standard_normal((H, 3))
    norms = diagnostics.jacobian_norms(x, None, W_xh, W_hh, None, method="exact")
    return norms[::-1].mean(axis=1) / np.sqrt(H)


@pytest.fixture(scope="module")
def gaussian():
    return np.random.default_rng(11).standard_normal((8, 8))


def test_curve_decays_below_radius_1(gaussian):
    curve = _curve(diagnostics.recurrent_matrix(0.5, gaussian))
    assert np.all(np.diff(curve[2:]) < 0)  # falls at every lag after the first few
    assert curve[-1] < 0.5 ** 11 * 10  # ||W^k||_F / sqrt(H) tracks the radius^k
    assert curve[-1] < 1e-2


def test_curve_grows_above_radius_1(gaussian):
    curve = _curve(diagnostics.recurrent_matrix(1.5, gaussian))
    # ||W^k||_F / sqrt(H) >= ||W^k||_2 / sqrt(H) >= rho^k / sqrt(H): growth beats sqrt(H)
    assert curve[-1] >= 1.5 ** 11 / np.sqrt(8) * 0.99
    assert curve[-1] > 10 * curve[0]


def test_curve_is_flat_for_an_orthogonal_matrix(gaussian):
    curve = _curve(diagnostics.recurrent_matrix("orthogonal", gaussian))
    np.testing.assert_allclose(curve, 1.0, rtol=1e-6)


def test_saturated_units_shrink_the_curve_even_for_an_orthogonal_matrix(gaussian):
    """Large inputs push tanh towards +-1, where tanh' is small: the gradient then vanishes
    with an orthogonal W_hh too (what initialisation alone does not fix)."""
    curve = _curve(diagnostics.recurrent_matrix("orthogonal", gaussian), input_scale=10.0)
    assert curve[-1] < 1e-3


def test_recurrent_matrix_has_the_radius_asked_for(gaussian):
    for radius in (0.5, 1.0, 1.5):
        W = diagnostics.recurrent_matrix(radius, gaussian)
        assert diagnostics.spectral_radius(W) == pytest.approx(radius, rel=1e-12)
    Q = diagnostics.recurrent_matrix("orthogonal", gaussian)
    np.testing.assert_allclose(Q.T @ Q, np.eye(8), atol=1e-12)
    assert np.all(np.diag(Q.T @ gaussian) > 0)  # the sign fix: R = Q^T G has a positive diagonal


# --------------------------------------------------------------------------------------------
# The size of W_hh
# --------------------------------------------------------------------------------------------
def test_spectral_radius_and_largest_singular_value_match_numpy():
    W = np.random.default_rng(12).standard_normal((30, 30))
    assert diagnostics.spectral_radius(W) == pytest.approx(np.abs(np.linalg.eigvals(W)).max(),
                                                           rel=1e-12)
    assert diagnostics.largest_singular_value(W) == pytest.approx(
        np.linalg.svd(W, compute_uv=False)[0], rel=1e-12)
    assert diagnostics.largest_singular_value(W) >= diagnostics.spectral_radius(W)
    W32 = W.astype(np.float32)
    assert diagnostics.spectral_radius(W32) == pytest.approx(
        np.abs(np.linalg.eigvals(W32.astype(np.float64))).max(), rel=1e-12)


def test_spectral_radius_and_singular_value_on_known_matrices():
    angle = 0.3
    rotation = 0.7 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    assert diagnostics.spectral_radius(rotation) == pytest.approx(0.7, rel=1e-14)
    assert diagnostics.largest_singular_value(rotation) == pytest.approx(0.7, rel=1e-14)
    nilpotent = np.array([[0.0, 2.0], [0.0, 0.0]])  # W^2 = 0: no long-run growth at all
    assert diagnostics.spectral_radius(nilpotent) == 0.0
    assert diagnostics.largest_singular_value(nilpotent) == pytest.approx(2.0)


@pytest.mark.parametrize("function", [diagnostics.spectral_radius,
                                      diagnostics.largest_singular_value])
def test_matrix_measures_reject_bad_input(function):
    with pytest.raises(ValueError, match=r"W_hh must have shape \(H, H\).*\(square\)"):
        function(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="W_hh must be 2-D"):
        function(np.zeros(3))
    with pytest.raises(TypeError, match="W_hh must have dtype float32 or float64"):
        function(np.eye(3, dtype=int))
    with pytest.raises(ValueError, match="W_hh must be finite"):
        function(np.array([[np.nan]]))


# --------------------------------------------------------------------------------------------
# Saturation
# --------------------------------------------------------------------------------------------
def test_saturation_of_tanh_counts_units_beyond_0_99():
    out = np.array([[[0.0, 0.99, -0.995, 1.0], [0.5, -0.999, 0.2, 0.1]],
                    [[0.98, -0.98, 0.0, 0.0], [1.0, 1.0, 1.0, -1.0]]])  # (T=2, B=2, H=4)
    np.testing.assert_array_equal(diagnostics.saturation(out), [3 / 8, 4 / 8])
    np.testing.assert_array_equal(diagnostics.saturation(out, per_sequence=True),
                                  [[2 / 4, 1 / 4], [0.0, 1.0]])


def test_saturation_of_relu_counts_zero_units():
    out = np.array([[[0.0, 2.0, 0.0]], [[1e-30, 0.0, 3.0]]], dtype=np.float32)  # (2, 1, 3)
    np.testing.assert_allclose(diagnostics.saturation(out, "relu"), [2 / 3, 1 / 3])
    np.testing.assert_allclose(diagnostics.saturation(out, "relu", per_sequence=True),
                               [[2 / 3], [1 / 3]])


def test_saturation_of_real_states():
    p = make_problem(13, 6, 3, 2, 5)
    out, _ = rnnfast.rnn_forward(10 * p.x, p.h0, p.W_xh, p.W_hh, p.b)
    expected = (np.abs(out) > 0.99).mean(axis=(1, 2))
    np.testing.assert_array_equal(diagnostics.saturation(out), expected)
    assert 0 < expected.mean() < 1


def test_saturation_rejects_bad_input():
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        diagnostics.saturation(np.zeros((2, 2, 2)), "sigmoid")
    with pytest.raises(ValueError, match=r"out must be 3-D with shape \(T, B, H\)"):
        diagnostics.saturation(np.zeros((2, 2)))


# --------------------------------------------------------------------------------------------
# The layers of an RNN
# --------------------------------------------------------------------------------------------
def test_layer_states_are_the_layers_states_in_time_order():
    rnn = rnnfast.RNN(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0).eval()
    x = np.random.default_rng(14).standard_normal((5, 2, 3))
    h0 = np.random.default_rng(15).standard_normal((4, 2, 4))
    states = diagnostics.layer_states(rnn, x, h0)
    assert states.shape == (2, 2, 5, 2, 4)
    out, h_n = rnn.forward(x, h0)
    assert_close(np.concatenate([states[1, 0], states[1, 1]], axis=2), out, TOL["float64"])
    assert_close(states[:, 0, -1], h_n[0::2], TOL["float64"])  # forward: the last step
    assert_close(states[:, 1, 0], h_n[1::2], TOL["float64"])  # reverse: the first step


def test_layer_jacobian_norms_are_each_directions_own_recurrence():
    rnn = rnnfast.RNN(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    x = np.random.default_rng(16).standard_normal((6, 2, 3))
    norms = diagnostics.layer_jacobian_norms(rnn, x)
    assert norms.shape == (2, 2, 6, 2)
    params = rnn.parameters()

    def bias(suffix):
        return params[f"bias_ih_l{suffix}"] + params[f"bias_hh_l{suffix}"]

    forward0 = diagnostics.jacobian_norms(x, None, params["weight_ih_l0"],
                                          params["weight_hh_l0"], bias("0"), method="exact")
    reverse0 = diagnostics.jacobian_norms(x[::-1], None, params["weight_ih_l0_reverse"],
                                          params["weight_hh_l0_reverse"], bias("0_reverse"),
                                          method="exact")[::-1]
    assert_close(norms[0, 0], forward0, TOL["float64"])
    assert_close(norms[0, 1], reverse0, TOL["float64"])  # its last state is at t = 0
    np.testing.assert_allclose(norms[:, 0, -1], 2.0)  # lag 0: the identity, sqrt(4)
    np.testing.assert_allclose(norms[:, 1, 0], 2.0)
    layer1_input = np.concatenate(list(diagnostics.layer_states(rnn, x)[0]), axis=2)
    forward1 = diagnostics.jacobian_norms(layer1_input, None, params["weight_ih_l1"],
                                          params["weight_hh_l1"], bias("1"), method="exact")
    assert_close(norms[1, 0], forward1, TOL["float64"])


def test_layer_functions_check_their_arguments():
    rnn = rnnfast.RNN(3, 4, dtype=np.float64)
    with pytest.raises(TypeError, match="rnn must be an rnnfast.RNN"):
        diagnostics.layer_states("rnn", np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match="x must have input_size = 3 features; got 2"):
        diagnostics.layer_jacobian_norms(rnn, np.zeros((2, 1, 2)))
    with pytest.raises(TypeError, match="x must have the layer's dtype, float64"):
        diagnostics.layer_states(rnn, np.zeros((2, 1, 3), dtype=np.float32))


# --------------------------------------------------------------------------------------------
# rnnfast diagnose
# --------------------------------------------------------------------------------------------
def test_adding_batch_marks_one_step_in_each_half_and_sums_them():
    x, y = diagnostics.adding_batch(10, 500, np.random.default_rng(0))
    assert x.shape == (10, 500, 2) and y.shape == (500, 1) and x.dtype == np.float32
    markers = x[:, :, 1]
    assert np.all(markers.sum(axis=0) == 2)
    assert np.all(markers[:5].sum(axis=0) == 1) and np.all(markers[5:].sum(axis=0) == 1)
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * markers).sum(axis=0), rtol=1e-6)
    _, y = diagnostics.adding_batch(7, 20000, np.random.default_rng(1))
    # Predicting 1 scores 1/6 (the variance of a sum of two U(0, 1)); standard error ~0.0015.
    assert np.mean((y - 1) ** 2) == pytest.approx(diagnostics.BASELINE_MSE, abs=0.006)


def test_sparkline_heights_follow_the_log_of_the_values():
    line = output.sparkline([1.0, 1e-1, 1e-2, 1e-4, 0.0, np.nan], -4.0, 0.0)
    assert line == "█▇▅▁ ?"
    assert output.sparkline(10.0 ** -np.arange(200), -10, 0, width=50) == \
        output.sparkline(10.0 ** -np.arange(200)[np.round(np.linspace(0, 199, 50)).astype(int)],
                         -10, 0)
    assert len(output.sparkline(np.ones(200), 0, 0)) == output.CHART_WIDTH
    assert output.log_range([np.array([1e-40, 1.0, 0.0])]) == (-output.CHART_DECADES, 0.0)


def _without_matplotlib(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` then raises ImportError


QUICK = ["diagnose", "--quick"]


def test_diagnose_quick_without_matplotlib_prints_tables_and_a_chart(monkeypatch, capsys):
    _without_matplotlib(monkeypatch)
    assert main(QUICK) == 0
    printed = capsys.readouterr().out
    for label in ("radius 0.5", "radius 1", "radius 1.5", "orthogonal"):
        assert printed.count(label) >= 4  # two tables, a chart, the learning table
    assert "|J| lag 1" in printed and "|g| lag 1" in printed and "T = 30" in printed
    assert "█" in printed and "▁" in printed
    assert 'pip install "rnnfast[plot]"' in printed


def test_diagnose_png_without_matplotlib_is_an_error_before_any_work(monkeypatch, capsys,
                                                                     tmp_path):
    _without_matplotlib(monkeypatch)
    png = tmp_path / "flow.png"
    assert main(QUICK + ["--png", str(png)]) == 2
    captured = capsys.readouterr()
    assert "--png needs matplotlib" in captured.err and "rnnfast[plot]" in captured.err
    assert captured.out == "" and not png.exists()


def test_diagnose_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "flow.png"
    assert main(QUICK + ["--spans", "6,12", "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert f"wrote {png}" in capsys.readouterr().out


def test_diagnose_with_matplotlib_and_no_png_says_how_to_get_one(capsys):
    pytest.importorskip("matplotlib")
    assert main(QUICK + ["--spans", "6", "--steps", "0"]) == 0
    printed = capsys.readouterr().out
    assert "add --png PATH" in printed and "pip install" not in printed


def test_diagnose_chart_falls_back_to_ascii(monkeypatch, capsys):
    _without_matplotlib(monkeypatch)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    assert output.chart_bars() == output.ASCII_BARS
    assert main(QUICK + ["--spans", "6", "--steps", "0"]) == 0  # nothing unencodable printed


@pytest.fixture(scope="module")
def char_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    text = folder / "text.txt"
    text.write_text("def f(x):\n    return x + 1\n" * 40, encoding="utf-8")
    path = folder / "model.npz"
    code = main(["train", str(text), "--steps", "3", "--hidden-size", "8", "--layers", "2",
                 "--embedding-size", "4", "--seq-len", "8", "--batch-size", "2",
                 "--sample-length", "5", "--checkpoint", str(path)])
    assert code == 0
    return path, text


def test_diagnose_a_checkpoint(char_checkpoint, capsys, tmp_path):
    path, text = char_checkpoint
    capsys.readouterr()
    from rnnfast.charlm.model import load_model
    model, _ = load_model(path)
    args = ["diagnose", "--checkpoint", str(path), "--spans", "20", "--text", str(text)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    rows = [line.split() for line in printed.splitlines() if line.startswith("  layer ")]
    for layer in range(2):
        W_hh = model.rnn.parameters()[f"weight_hh_l{layer}"]
        row = next(r for r in rows if r[1] == str(layer))  # the first table: layer, rho, sigma
        assert row[2] == f"{diagnostics.spectral_radius(W_hh):.3g}"
        assert row[3] == f"{diagnostics.largest_singular_value(W_hh):.3g}"
    assert "saturation per step" in printed
    assert re.search(r"\|J\| lag 1 .* 10 +19 +per step", printed)  # lags up to T - 1 = 19
    assert "characters the vocabulary lacks" not in printed  # the text is the training text


def test_diagnose_a_checkpoint_writes_a_png(char_checkpoint, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path, text = char_checkpoint
    png = tmp_path / "model.png"
    assert main(["diagnose", "--checkpoint", str(path), "--spans", "20", "--text", str(text),
                 "--png", str(png)]) == 0
    assert f"wrote {png}" in capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG_SIGNATURE


def test_diagnose_a_checkpoint_on_text_it_partly_knows(char_checkpoint, capsys, monkeypatch,
                                                       tmp_path):
    _without_matplotlib(monkeypatch)
    path, _ = char_checkpoint
    other = tmp_path / "other.txt"
    other.write_text("return x + 1 # ü\n" * 10, encoding="utf-8")  # '#', 'ü' are unknown
    assert main(["diagnose", "--checkpoint", str(path), "--spans", "10", "--text",
                 str(other)]) == 0
    assert "20 characters the vocabulary lacks skipped" in capsys.readouterr().out


def test_diagnose_a_checkpoint_on_text_it_does_not_know_uses_its_own(char_checkpoint, capsys,
                                                                      monkeypatch, tmp_path):
    _without_matplotlib(monkeypatch)
    path, _ = char_checkpoint
    other = tmp_path / "other.txt"
    other.write_text("€" * 50, encoding="utf-8")
    assert main(["diagnose", "--checkpoint", str(path), "--spans", "5", "--text",
                 str(other)]) == 0
    printed = capsys.readouterr().out
    assert "from text generated by the model itself" in printed
    assert "fewer than 6 characters of the text are in the vocabulary" in printed


@pytest.mark.parametrize("argv, message", [
    (["--radii", "0.5,-1"], "a spectral radius must be a finite number > 0; got -1"),
    (["--radii", "0.5,big"], "expected comma-separated spectral radii"),
    (["--radii", "inf"], "a spectral radius must be a finite number > 0"),
    (["--spans", "1,10"], "every span must be at least 2"),
    (["--spans", "10,x"], "expected comma-separated whole numbers"),
    (["--hidden-size", "0"], "--hidden-size: expected an integer >= 1; got '0'"),
    (["--steps", "-1"], "--steps: expected an integer >= 0; got '-1'"),
])
def test_diagnose_rejects_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["diagnose"] + argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_diagnose_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nothing.npz"
    assert main(["diagnose", "--checkpoint", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "rnnfast diagnose: error" in err and "does not exist" in err and str(missing) in err


def test_diagnose_unreadable_text_and_png_folder_are_clear_errors(char_checkpoint, tmp_path,
                                                                  capsys):
    path, _ = char_checkpoint
    assert main(["diagnose", "--checkpoint", str(path), "--text",
                 str(tmp_path / "none.txt")]) == 2
    assert "cannot read --text" in capsys.readouterr().err
    pytest.importorskip("matplotlib")
    assert main(QUICK + ["--png", str(tmp_path / "no" / "such" / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_training_on_the_adding_problem_learns_the_short_span():
    """The learning half of `rnnfast diagnose` works: at T = 6, 600 steps beat the baseline of
    predicting the mean by far (0.006 with this seed, 0.016 at worst over three seeds; the
    longer spans are what fail)."""
    model = diagnostics.AddingModel(8, diagnostics.recurrent_matrix(
        "orthogonal", np.random.default_rng(0).standard_normal((8, 8))), seed=0)
    outcome = diagnostics.train_adding(model, 6, steps=600, batch_size=16, lr=1e-2,
                                       clip_norm=1.0, seed=0)
    assert outcome.stopped is None and len(outcome.losses) == 600
    assert outcome.mse_after < diagnostics.BASELINE_MSE / 5 < outcome.mse_before


def test_training_on_the_adding_problem_stops_at_the_first_non_finite_value():
    """The same checked update as the TBPTT trainer: a learning rate that overflows the
    parameters stops the run at that step, saying so, with no MSE after it."""
    model = diagnostics.AddingModel(4, seed=0)
    outcome = diagnostics.train_adding(model, 6, steps=5, batch_size=4, lr=1e38, clip_norm=0,
                                       seed=0)
    assert outcome.stopped.startswith("training stopped at step 1: the optimizer's update "
                                      "overflowed")
    assert outcome.losses == [] and math.isnan(outcome.mse_after)
    assert math.isfinite(outcome.mse_before)


def test_the_experiment_measures_every_setting_at_every_span():
    settings = {"spans": (4, 6), "radii": (0.5, "orthogonal"), "hidden_size": 3, "steps": 2,
                "batch_size": 2}
    runs = []
    experiment = diagnostics.run_adding_experiment(settings, seed=1,
                                                   on_run=lambda r, T: runs.append((r, T)))
    assert runs == [(0.5, 4), (0.5, 6), ("orthogonal", 4), ("orthogonal", 6)]
    assert set(experiment.outcomes) == set(runs) and set(experiment.curves) == {0.5, "orthogonal"}
    curves = experiment.curves[0.5]
    assert len(curves.jacobian) == len(curves.gradient) == 6  # lags 0..5 at the longest span
    assert curves.jacobian[0] == pytest.approx(1.0) and curves.gradient[0] == 1.0  # lag 0
    assert curves.radius == pytest.approx(0.5, rel=1e-6)  # float32 weights measured in float64
    for outcome in experiment.outcomes.values():
        assert outcome.stopped is None and len(outcome.losses) == 2
        assert math.isfinite(outcome.radius_after) and outcome.per_step_after > 0
