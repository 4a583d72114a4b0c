"""rnnfast.reservoir.ESN: fit, predict and generate against the same steps done by hand with
the reservoir's run and the readout; the state it keeps between calls; streaming; errors."""
import numpy as np
import pytest

from rnnfast.reservoir import ESN, Reservoir, Ridge, esn as esn_module


def series(T=600, B=None, seed=0):
    """A smooth input series and its next value as the target: (u, y), (T, 1) or (T, B, 1)."""
    rng = np.random.default_rng(seed)
    shape = (T + 1, 1) if B is None else (T + 1, B, 1)
    phase = rng.uniform(0, 6, () if B is None else (B, 1))
    t = np.arange(T + 1).reshape((-1,) + (1,) * (len(shape) - 1))
    x = np.sin(t / 5.0 + phase) * np.cos(t / 23.0) + 0.01 * rng.standard_normal(shape)
    return x[:-1], x[1:]


def noisy_series(T=600, B=None, seed=0):
    """A noise input and a target that needs memory of it (u_{t-2} u_t): states driven by
    noise are far from collinear, so the readout is well conditioned and streaming and
    one-shot fits agree to rounding (smooth inputs give near-collinear states, whose readouts
    agree only to the condition number times eps)."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-1, 1, (T, 1) if B is None else (T, B, 1))
    y = u * np.roll(u, 2, axis=0)
    return u, y


def make_esn(ridge=1e-5, units=60, seed=1):
    return ESN(Reservoir(units, spectral_radius=0.9, leak=0.4, seed=seed), ridge=ridge)


def test_fit_and_predict_are_the_reservoirs_states_and_the_readout():
    u, y = noisy_series()
    esn = make_esn().fit(u[:400], y[:400], warmup=50)
    predicted = esn.predict(u[400:])
    states = esn.reservoir.run(u)  # the whole series from zeros, by hand
    readout = Ridge(1e-5).fit(states[50:400], y[50:400])
    np.testing.assert_allclose(esn.readout.coef_, readout.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(predicted, readout.predict(states[400:]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(esn.state, states[-1], rtol=0, atol=1e-15)


def test_predict_continues_from_the_state_the_last_call_left():
    u, y = series()
    esn = make_esn().fit(u[:300], y[:300])
    whole = esn.predict(u[300:])
    esn.fit(u[:300], y[:300])
    parts = np.concatenate([esn.predict(u[300:450]), esn.predict(u[450:])])
    np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-13)  # BLAS rounds by row count
    esn.reset()
    assert esn.state is None
    fresh = esn.predict(u[300:])  # from zeros: the first steps differ
    assert np.abs(fresh[:5] - whole[:5]).max() > 1e-3


def test_fitting_chunk_by_chunk_equals_one_fit():
    u, y = noisy_series(T=900)
    one = make_esn().fit(u, y, warmup=30)
    chunked = make_esn().fit(u[:250], y[:250], warmup=30)
    chunked.partial_fit(u[250:600], y[250:600]).partial_fit(u[600:], y[600:])
    # The predictions, not the coefficients: these states are nearly collinear (the readout's
    # condition number is ~1e8), so coefficients that fit equally well differ by ~1e-8.
    states = one.reservoir.run(u)
    np.testing.assert_allclose(chunked.readout.predict(states), one.readout.predict(states),
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(chunked.state, one.state, rtol=0, atol=1e-15)
    assert chunked.readout.n_samples_ == one.readout.n_samples_ == 870


def test_long_series_run_in_chunks_inside(monkeypatch):
    u, y = noisy_series(T=500, B=3)
    whole = make_esn().fit(u, y, warmup=40)
    expected = whole.predict(u)
    monkeypatch.setattr(esn_module, "CHUNK_STATES", 37 * 3 * 60)  # 37 steps a chunk
    chunked = make_esn().fit(u, y, warmup=40)
    np.testing.assert_allclose(chunked.predict(u), expected, rtol=0, atol=1e-10)


def test_a_batch_of_series_trains_one_readout_on_all_of_them():
    u, y = noisy_series(T=300, B=4)
    esn = make_esn().fit(u, y, warmup=20)
    states = esn.reservoir.run(u)
    readout = Ridge(1e-5).fit(states[20:].reshape(-1, 60), y[20:].reshape(-1, 1))
    np.testing.assert_allclose(esn.readout.coef_, readout.coef_, rtol=1e-10, atol=1e-12)
    assert esn.state.shape == (4, 60)
    assert esn.predict(u[:7]).shape == (7, 4, 1)


def test_generate_feeds_each_output_back_as_the_next_input():
    u, y = series()
    esn = make_esn().fit(u[:400], y[:400], warmup=50)
    last = esn.predict(u[400:500])[-1]
    start = esn.state
    generated = esn.generate(30)
    assert generated.shape == (30, 1)
    np.testing.assert_allclose(generated[0], last, rtol=0, atol=1e-15)  # y_{T+1}
    h, by_hand = start, []
    for _ in range(30):
        output = esn.readout.predict(h[None])[0]
        by_hand.append(output)
        h = esn.reservoir.run(output[None], h0=h)[0]
    np.testing.assert_allclose(generated, by_hand, rtol=0, atol=1e-12)
    np.testing.assert_allclose(esn.state, h, rtol=0, atol=1e-12)


def test_two_generate_calls_continue_each_other():
    u, y = series()
    esn = make_esn().fit(u[:400], y[:400])
    start = esn.state
    whole = esn.generate(20)
    esn.state = start
    np.testing.assert_array_equal(np.concatenate([esn.generate(8), esn.generate(12)]), whole)


def test_generate_continues_a_smooth_series():
    """Closed loop, the ESN keeps following a series it has learnt to predict a step ahead."""
    u, y = series(T=1500, seed=3)
    esn = ESN(Reservoir(200, spectral_radius=1.0, leak=0.5, seed=2), ridge=1e-8)
    esn.fit(u[:1400], y[:1400], warmup=100)
    generated = esn.generate(20)
    assert np.abs(generated - u[1400:1420]).max() < 0.05


def test_the_state_can_be_set_and_is_checked():
    u, y = series(T=100)
    esn = make_esn().fit(u, y)
    esn.state = np.zeros(60)
    np.testing.assert_array_equal(esn.state, np.zeros(60))
    with pytest.raises(ValueError, match="state"):
        esn.state = np.zeros(59)
    esn.state = np.zeros((2, 60))
    with pytest.raises(ValueError, match="state holds 2 series"):
        esn.predict(u)


def test_bad_input_gets_clear_errors():
    u, y = series(T=100)
    with pytest.raises(TypeError, match="reservoir"):
        ESN("reservoir")
    with pytest.raises(TypeError, match="ridge"):
        ESN(Reservoir(10, seed=0), ridge="small")
    esn = make_esn()
    with pytest.raises(ValueError, match="not fitted"):
        esn.predict(u)
    with pytest.raises(ValueError, match="not fitted"):
        esn.generate(3)
    with pytest.raises(ValueError, match="warmup"):
        esn.fit(u, y, warmup=100)
    with pytest.raises(ValueError, match="steps"):
        esn.fit(u, y[:50])
    with pytest.raises(ValueError, match="y must be 2-D"):
        esn.fit(u, y[:, 0])
    with pytest.raises(ValueError, match="u must be 2-D"):
        esn.fit(u[:, 0], y)
    esn.fit(u, np.hstack([y, y]))
    with pytest.raises(ValueError, match="2 outputs"):
        esn.generate(3)
    with pytest.raises(ValueError, match="n_steps"):
        make_esn().fit(u, y).generate(0)
