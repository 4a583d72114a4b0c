"""rnnfast.reservoir.Ridge against a least-squares oracle, the streaming fit against the one-shot
fit on splits hypothesis draws, and its errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnfast.reservoir import Ridge


def oracle(X, Y, ridge, fit_bias):
    """(coef (O, F), intercept (O,)) by NumPy's least squares (SVD) on the augmented system
    [Xc; sqrt(ridge) I] w = [Yc; 0]: the ridge solution, computed another way (no normal
    equations, so no squared condition number)."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
    mean_x = X.mean(axis=0) if fit_bias else np.zeros(X.shape[1])
    mean_y = Y.mean(axis=0) if fit_bias else np.zeros(Y.shape[1])
    F = X.shape[1]
    A = np.vstack([X - mean_x, np.sqrt(ridge) * np.eye(F)])
    b = np.vstack([Y - mean_y, np.zeros((F, Y.shape[1]))])
    w = np.linalg.lstsq(A, b, rcond=None)[0]
    return w.T, mean_y - mean_x @ w


def problem(rng, N, F, O, offset=0.0):
    """Features with means far from 0 next to their spread (as reservoir states have), and
    targets linear in them plus noise."""
    X = offset + rng.standard_normal((N, F)) * rng.uniform(0.1, 2, F)
    Y = X @ rng.standard_normal((F, O)) + 0.3 + 0.01 * rng.standard_normal((N, O))
    return X, Y


@pytest.mark.parametrize("fit_bias", [True, False])
@pytest.mark.parametrize("ridge", [0.0, 1e-6, 1e-2, 10.0])
def test_the_fit_is_the_least_squares_solution(fit_bias, ridge):
    rng = np.random.default_rng(0)
    X, Y = problem(rng, 300, 12, 3, offset=0.7)
    model = Ridge(ridge, fit_bias=fit_bias).fit(X, Y)
    coef, intercept = oracle(X, Y, ridge, fit_bias)
    np.testing.assert_allclose(model.coef_, coef, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(model.intercept_, intercept, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(model.predict(X), X @ coef.T + intercept, rtol=1e-10,
                               atol=1e-10)
    assert model.coef_.shape == (3, 12) and model.intercept_.shape == (3,)
    assert model.n_samples_ == 300
    if not fit_bias:
        assert np.all(model.intercept_ == 0)


def test_the_bias_is_not_penalised():
    """A huge penalty shrinks the coefficients to 0 and leaves the mean of the targets."""
    rng = np.random.default_rng(1)
    X, Y = problem(rng, 100, 4, 2, offset=3.0)
    model = Ridge(1e12).fit(X, Y)
    assert np.abs(model.coef_).max() < 1e-6
    np.testing.assert_allclose(model.intercept_, Y.mean(axis=0), rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(N=st.integers(2, 200), F=st.integers(1, 9), O=st.integers(1, 3),
       cuts=st.lists(st.floats(0, 1), max_size=6), fit_bias=st.booleans(),
       offset=st.sampled_from([0.0, 0.9, 50.0]), seed=st.integers(0, 2**16))
def test_the_streaming_fit_equals_the_one_shot_fit(N, F, O, cuts, fit_bias, offset, seed):
    rng = np.random.default_rng(seed)
    X, Y = problem(rng, N, F, O, offset)
    one_shot = Ridge(1e-3, fit_bias=fit_bias).fit(X, Y)
    bounds = sorted({0, N, *(int(c * N) for c in cuts)})
    streamed = Ridge(1e-3, fit_bias=fit_bias)
    for start, stop in zip(bounds, bounds[1:]):
        streamed.partial_fit(X[start:stop], Y[start:stop])
    assert streamed.n_samples_ == N
    # The two sum S^T S in different orders: their solutions differ by rounding, amplified by
    # the condition number of the system solved (offset 50 without centring makes it large).
    S = X - X.mean(axis=0) if fit_bias else X
    rounding = 100 * np.finfo(float).eps * np.linalg.cond(S.T @ S + 1e-3 * np.eye(F))
    tolerance = max(1e-10, rounding)
    scale = max(1.0, np.abs(one_shot.coef_).max())
    np.testing.assert_allclose(streamed.coef_, one_shot.coef_, rtol=0, atol=tolerance * scale)
    np.testing.assert_allclose(streamed.predict(X), one_shot.predict(X), rtol=0,
                               atol=10 * tolerance * max(1.0, np.abs(Y).max()))


def test_the_streaming_fit_keeps_its_accuracy_where_raw_sums_cancel():
    """Features with a mean of 1000 and a spread of 1e-3: the centring of S^T S - N m m^T from
    raw sums would lose ~12 of 16 digits; the merged centred sums keep the oracle's answer."""
    rng = np.random.default_rng(2)
    X = 1000.0 + 1e-3 * rng.standard_normal((4000, 3))
    Y = (X - 1000.0) @ np.array([[2.0], [-1.0], [0.5]]) * 1e3
    streamed = Ridge(0.0)
    for chunk in range(0, 4000, 700):
        streamed.partial_fit(X[chunk:chunk + 700], Y[chunk:chunk + 700])
    coef, _ = oracle(X, Y, 0.0, True)
    np.testing.assert_allclose(streamed.coef_, coef, rtol=1e-6)


def test_one_dimensional_targets_give_one_dimensional_predictions():
    rng = np.random.default_rng(3)
    X, Y = problem(rng, 50, 5, 1)
    model = Ridge(1e-4).fit(X, Y[:, 0])
    assert model.predict(X).shape == (50,) and model.coef_.shape == (1, 5)
    np.testing.assert_allclose(model.predict(X), Ridge(1e-4).fit(X, Y).predict(X)[:, 0])
    float32 = model.predict(X.astype(np.float32))
    assert float32.dtype == np.float32


def test_refit_forgets_the_earlier_fit():
    rng = np.random.default_rng(4)
    X, Y = problem(rng, 80, 3, 1)
    model = Ridge(1e-4).fit(2 * X, Y)
    np.testing.assert_allclose(model.fit(X, Y).coef_, Ridge(1e-4).fit(X, Y).coef_)
    assert model.n_samples_ == 80


def test_bad_input_gets_clear_errors():
    X, Y = np.ones((10, 3)), np.ones((10, 2))
    with pytest.raises(ValueError, match="ridge"):
        Ridge(-1.0)
    with pytest.raises(TypeError, match="fit_bias"):
        Ridge(fit_bias=1)
    with pytest.raises(ValueError, match="not fitted"):
        Ridge().predict(X)
    with pytest.raises(ValueError, match="same number of rows"):
        Ridge().fit(X, Y[:5])
    with pytest.raises(ValueError, match="X must be 2-D"):
        Ridge().fit(np.ones(10), Y)
    with pytest.raises(TypeError, match="X must have dtype"):
        Ridge().fit(np.ones((10, 3), dtype=int), Y)
    model = Ridge().fit(X, Y)
    with pytest.raises(ValueError, match="F = 3 columns"):
        model.partial_fit(np.ones((4, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="shape of the targets"):
        model.partial_fit(np.ones((4, 3)), np.ones((4, 1)))
    with pytest.raises(ValueError, match="F = 3 columns"):
        model.predict(np.ones((4, 5)))
    with pytest.raises(np.linalg.LinAlgError, match="use ridge > 0"):
        Ridge(0.0).fit(np.ones((10, 3)), Y).coef_  # constant features, no penalty
    bad = np.ones((10, 3))
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        Ridge().fit(bad, Y).coef_
