"""rnnfast.reservoir against ReservoirPy (the reference library; the test extra installs it, the
tests skip without it): with a ReservoirPy reservoir's own W, Win, bias and lr, the states are
ReservoirPy's; an ESN predicts what a `Reservoir >> Ridge` model predicts; on Mackey-Glass both
score the same one-step NRMSE."""
import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnfast.reservoir import ESN, Reservoir, Ridge, datasets, nrmse

rpy_nodes = pytest.importorskip("reservoirpy.nodes")

# States: the same float64 arithmetic in another order (and the kernels' tanh, within 2 ulp),
# forgotten at the reservoir's fading memory; ReservoirPy's own states repeat to ~1e-16.
STATES_TOL = 1e-12


def rpy_reservoir(units, D, lr, sr, connectivity, input_connectivity, seed, bias=None, W=None):
    """A ReservoirPy reservoir, initialised on D inputs (its weights drawn; W given, if it is,
    as ReservoirPy takes a matrix)."""
    weights = {} if W is None else {"W": W}
    reservoir = rpy_nodes.Reservoir(units, lr=lr, sr=sr, rc_connectivity=connectivity,
                                    input_connectivity=input_connectivity, input_scaling=0.8,
                                    bias=0.0 if bias is None else bias, seed=seed, **weights)
    reservoir.initialize(np.zeros((1, D)))
    return reservoir


def random_W(rng, units, connectivity):
    """A W for ReservoirPy to take, which its ARPACK call cannot always make for the smallest
    reservoirs (no nonzero entry, or nilpotent): CSR below connectivity 1, else dense, at
    spectral radius 0.9 (or as drawn, if its eigenvalues are all 0)."""
    if connectivity < 1:
        W = scipy.sparse.random_array((units, units), density=connectivity, rng=rng,
                                      format="csr", data_sampler=rng.standard_normal)
    else:
        W = rng.standard_normal((units, units))
    dense = W.toarray() if scipy.sparse.issparse(W) else W
    radius = np.max(np.abs(np.linalg.eigvals(dense)))
    return W * (0.9 / radius) if radius > 1e-12 else W


def ours_from(reservoir):
    return Reservoir.from_weights(reservoir.W, reservoir.Win, reservoir.bias, leak=reservoir.lr)


@settings(max_examples=25, deadline=None)
@given(units=st.integers(1, 80), D=st.integers(1, 3), B=st.integers(1, 4),
       T=st.integers(1, 60), connectivity=st.sampled_from([0.05, 0.1, 0.3, 1.0]),
       input_connectivity=st.sampled_from([0.1, 0.5, 1.0]),
       leak=st.one_of(st.floats(0.05, 1.0), st.just("per unit")),
       with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_the_states_are_reservoirpys(units, D, B, T, connectivity, input_connectivity, leak,
                                     with_bias, seed):
    rng = np.random.default_rng(seed)
    lr = rng.uniform(0.05, 1.0, units) if leak == "per unit" else leak
    bias = rng.uniform(-0.5, 0.5, units) if with_bias else None
    theirs = rpy_reservoir(units, D, lr, 0.9, connectivity, input_connectivity, seed, bias,
                           W=random_W(rng, units, connectivity))
    u = rng.standard_normal((B, T, D))  # ReservoirPy's layout: series first
    expected = theirs.run(u) if B > 1 else theirs.run(u[0])[None]
    ours = ours_from(theirs)
    if scipy.sparse.issparse(theirs.W):
        assert scipy.sparse.issparse(ours.W)  # kept sparse, run on the sparse step
    states = ours.run(np.ascontiguousarray(u.transpose(1, 0, 2)))  # (T, B, D)
    np.testing.assert_allclose(states.transpose(1, 0, 2), expected, rtol=0, atol=STATES_TOL)
    if B == 1:  # one series, as ReservoirPy takes it
        np.testing.assert_allclose(ours.run(u[0]), expected[0], rtol=0, atol=STATES_TOL)


def test_a_long_run_stays_on_reservoirpys_states():
    theirs = rpy_reservoir(300, 1, 0.3, 0.9, 0.1, 0.1, 7)
    u = np.sin(np.arange(5000) / 7.0)[:, None]
    np.testing.assert_allclose(ours_from(theirs).run(u), theirs.run(u), rtol=0,
                               atol=STATES_TOL)


def _mackey_glass_split(n_train, n_test):
    series = datasets.mackey_glass(n_train + n_test + 301)[300:]
    u, y = series[:-1], series[1:]
    return u[:n_train], y[:n_train], u[n_train:], y[n_train:]


@pytest.mark.parametrize("ridge", [1e-4, 1e-6])
def test_an_esn_predicts_what_a_reservoirpy_model_predicts(ridge):
    u_train, y_train, u_test, y_test = _mackey_glass_split(1500, 500)
    reservoir = rpy_reservoir(150, 1, 0.3, 1.25, 0.1, 0.1, 3)
    readout = rpy_nodes.Ridge(ridge=ridge)
    model = reservoir >> readout
    model.fit(u_train, y_train, warmup=100)
    expected = model.run(u_test)  # continues from the state training left
    esn = ESN(ours_from(reservoir), ridge=ridge).fit(u_train, y_train, warmup=100)
    predicted = esn.predict(u_test)
    # The readouts agree to the conditioning of the fit: ReservoirPy centres its raw sums,
    # which costs it more digits than the merged centred sums (test_reservoir_ridge.py), so
    # the tolerance is its error, measured against a least-squares oracle (~1e-10 at
    # ridge 1e-4, ~1e-8 at 1e-6 on these states).
    tolerance = {1e-4: 1e-9, 1e-6: 1e-7}[ridge]
    np.testing.assert_allclose(predicted, expected, rtol=0, atol=tolerance)
    np.testing.assert_allclose(esn.state, reservoir.state["out"], rtol=0, atol=STATES_TOL)


def test_the_mackey_glass_one_step_nrmse_is_reservoirpys():
    u_train, y_train, u_test, y_test = _mackey_glass_split(2000, 1000)
    reservoir = rpy_reservoir(200, 1, 0.3, 1.25, 0.1, 0.1, 11)
    model = reservoir >> rpy_nodes.Ridge(ridge=1e-6)
    model.fit(u_train, y_train, warmup=100)
    theirs = model.run(u_test)
    ours = ESN(ours_from(reservoir), ridge=1e-6).fit(u_train, y_train, warmup=100)
    predicted = ours.predict(u_test)
    from reservoirpy.observables import nrmse as rpy_nrmse

    for norm, rpy_norm in (("range", "minmax"),):
        assert nrmse(y_test, predicted, norm) == pytest.approx(
            rpy_nrmse(y_test, theirs, norm=rpy_norm), rel=1e-5)
    assert nrmse(y_test, predicted, "range") < 1e-2  # it did learn the series


def test_a_batched_fit_is_reservoirpys_fit_on_a_list_of_series():
    """B series fitted side by side: each from a zero state, warm-up dropped from each, as
    ReservoirPy fits a list of series."""
    rng = np.random.default_rng(5)
    reservoir = rpy_reservoir(60, 2, 0.5, 0.9, 0.2, 0.5, 5)
    u = rng.standard_normal((3, 200, 2))
    y = np.stack([np.roll(series[:, :1], 1, axis=0) for series in u])
    readout = rpy_nodes.Ridge(ridge=1e-3)
    (reservoir >> readout).fit(list(u), list(y), warmup=20)
    esn = ESN(ours_from(rpy_reservoir(60, 2, 0.5, 0.9, 0.2, 0.5, 5)), ridge=Ridge(1e-3))
    esn.fit(u.transpose(1, 0, 2), y.transpose(1, 0, 2), warmup=20)
    np.testing.assert_allclose(esn.readout.coef_, readout.Wout.T, rtol=0, atol=1e-9)
    np.testing.assert_allclose(esn.readout.intercept_, np.ravel(readout.bias), rtol=0,
                               atol=1e-9)
