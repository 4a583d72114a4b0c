"""The leak and noise at the API: rnn_forward's forward pass without gradient storage
(need_grad=False), its checks of leak, noise and state_noise, and the RNN layer's leak,
noise_std and state_noise_std (the noise scales of Yang et al. 2019 and PsychRNN, seeded)."""
import copy
import tracemalloc

import numpy as np
import pytest

import rnnfast
from rnnfast import RNN
from rnnfast._kernels import backend as _cython_backend
from rnn_helpers import FD_EPS, GRAD_NAMES, LEAK_KINDS, TOL, make_dynamics, make_problem

DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
DYNAMICS = {"plain": dict(leak=None, noise=False, state_noise=False),
            "scalar_leak": dict(leak="scalar", noise=False, state_noise=False),
            "per_unit_leak_noises": dict(leak="per-unit", noise=True, state_noise=True),
            "state_noise_alone": dict(leak=None, noise=False, state_noise=True)}


# --------------------------------------------------------------------------------------------
# The forward pass without gradient storage.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lengths", [None, [2, 6, 1, 4, 6]], ids=["full", "unsorted_lengths"])
@pytest.mark.parametrize("kind", list(DYNAMICS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_need_grad_false_gives_the_same_states_and_keeps_nothing(dtype, kind, lengths,
                                                                 any_path):
    p = make_problem(20, 6, 5, 3, 19, dtype)
    dynamics = make_dynamics(21, 19, 6, 5, dtype, **DYNAMICS[kind])
    lengths = None if lengths is None else np.array(lengths)
    kwargs = dict(lengths=lengths, n_threads=2, **dynamics)
    out, cache = rnnfast.rnn_forward(*p.args, **kwargs)
    states, nothing = rnnfast.rnn_forward(*p.args, need_grad=False, **kwargs)
    np.testing.assert_array_equal(states, out)
    assert nothing is None and cache is not None
    assert states.flags.writeable and not out.flags.writeable  # no cache holds it
    with pytest.raises(TypeError, match=r"^cache must be the RNNCache .*got NoneType "
                                        r"\(rnn_forward returns None with need_grad=False\)"):
        rnnfast.rnn_backward(p.dout, nothing)


@pytest.mark.parametrize("leak", [None, "per-unit"])
def test_need_grad_false_allocates_no_state_sized_scratch(leak):
    """A long single series: beyond out (T, B, H), only O(B * H + H * H) scratch; a leaky pass
    keeps act(a_t) in one step's buffer instead of T."""
    T, B, D, H = 2000, 1, 3, 40
    p = make_problem(22, T, B, D, H, h0=False)
    dynamics = make_dynamics(23, H, T, B, leak=leak, noise=False, state_noise=False)
    rnnfast.rnn_forward(*p.args, n_threads=1, need_grad=False, **dynamics)  # warm up
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        states, _ = rnnfast.rnn_forward(*p.args, n_threads=1, need_grad=False, **dynamics)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    scratch = 8 * (H * (H + 16) + 2 * B * H + T)  # the step matrix, act and h0, the counts
    assert peak <= states.nbytes + scratch + 64 * 1024, peak - states.nbytes


def test_need_grad_must_be_a_bool():
    p = make_problem(24, 2, 1, 2, 3)
    for bad in (0, 1, "no", None, np.array(True)):
        with pytest.raises(TypeError, match="^need_grad must be a bool"):
            rnnfast.rnn_forward(*p.args, need_grad=bad)


# --------------------------------------------------------------------------------------------
# Bad leak, noise, state_noise.
# --------------------------------------------------------------------------------------------
T, B, D, H = 4, 3, 2, 5
BAD_LEAKS = [
    (0, ValueError, r"^leak must be in \(0, 1\], the weight of act\(a_t\) in each step; got 0"),
    (-0.5, ValueError, r"^leak must be in \(0, 1\].*got -0\.5"),
    (1.5, ValueError, r"^leak must be in \(0, 1\].*got 1\.5"),
    (np.nan, ValueError, r"^leak must be in \(0, 1\].*got nan"),
    (np.inf, ValueError, r"^leak must be in \(0, 1\].*got inf"),
    (np.array([0.5, 0.5, 0.0, 0.5, 0.5]), ValueError, r"^leak must be in \(0, 1\].*got 0\.0 "
                                                      r"\(unit 2\)"),
    (np.array([0.5, 0.5, 0.5, 0.5, np.nan]), ValueError, r"got nan \(unit 4\)"),
    (np.full(H + 1, 0.5), ValueError, r"^leak must have shape \(H\) = \(5,\) \(H from W_hh\)"),
    (np.full((1, H), 0.5), ValueError, r"^leak must be 1-D with shape \(H\)"),
    (np.array(0.5), ValueError, r"^leak must be 1-D with shape \(H\)"),
    (np.full(H, 0.5, np.float32), TypeError, r"^leak must have the dtype of the other arrays, "
                                             r"float64, or be a number; got float32"),
    (np.ones(H, int), TypeError, r"^leak must have dtype float32 or float64; got int"),
    (True, TypeError, r"^leak must have dtype float32 or float64; got bool"),
    (0.5 + 0j, TypeError, r"^leak must have dtype float32 or float64; got complex128"),
    ("0.5", TypeError, r"^leak must have dtype float32 or float64; got <U3"),
    (None, TypeError, r"^leak must have dtype float32 or float64; got object"),
]


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("leak, error, message", BAD_LEAKS,
                         ids=[f"{i}-{error.__name__}" for i, (_, error, _) in enumerate(BAD_LEAKS)])
def test_bad_leak_is_refused_before_any_work(leak, error, message, backend, monkeypatch):
    p = make_problem(25, T, B, D, H)
    monkeypatch.setattr(rnnfast.functional.BACKENDS[backend], "forward", None)  # not reached
    with pytest.raises(error, match=message):
        rnnfast.rnn_forward(*p.args, backend=backend, leak=leak)


def test_a_leak_that_rounds_to_zero_in_float32_is_refused():
    p = make_problem(25, T, B, D, H, np.float32)
    rnnfast.rnn_forward(*p.astype(np.float64).args, leak=1e-50)  # a float64 number
    with pytest.raises(ValueError, match=r"^leak must be in \(0, 1\].*got 1e-50 \(as the "
                                         r"computation's dtype\)"):
        rnnfast.rnn_forward(*p.args, leak=1e-50)


BAD_NOISES = [
    (np.ones((T, B, H + 1)), ValueError, r"must have shape \(T, B, H\) = \(4, 3, 5\) \(T and B "
                                         r"from x, H from W_hh\); got \(4, 3, 6\)"),
    (np.ones((T + 1, B, H)), ValueError, r"dimension 0, T, is 5, expected 4"),
    (np.ones((B, H)), ValueError, r"must be 3-D with shape \(T, B, H\)"),
    (np.ones((T, B, H), np.float32), TypeError, r"must have the dtype of x, float64; got float32"),
    (np.ones((T, B, H), int), TypeError, r"must have dtype float32 or float64; got int"),
    (np.ones((T, 0, H)), ValueError, r"has B = 0"),
]


@pytest.mark.parametrize("name", ["noise", "state_noise"])
@pytest.mark.parametrize("value, error, message", BAD_NOISES,
                         ids=[f"{i}-{e.__name__}" for i, (_, e, _) in enumerate(BAD_NOISES)])
def test_bad_noise_is_refused_before_any_work(name, value, error, message, monkeypatch):
    p = make_problem(26, T, B, D, H)
    monkeypatch.setattr(_cython_backend, "forward", None)
    with pytest.raises(error, match=f"^{name} {message}" if message[0] != "d" else message):
        rnnfast.rnn_forward(*p.args, leak=0.5, **{name: value})


def test_noises_in_any_layout_give_the_contiguous_results():
    p = make_problem(27, T, B, D, H)
    dynamics = make_dynamics(28, H, T, B)
    out, cache = rnnfast.rnn_forward(*p.args, **dynamics)
    expected = rnnfast.rnn_backward(p.dout, cache)
    strided = {k: v for k, v in dynamics.items()}
    for name in ("noise", "state_noise"):
        big = np.zeros((T, B, 2 * H))
        big[:, :, ::2] = dynamics[name]
        strided[name] = big[:, :, ::2]
    strided["leak"] = dynamics["leak"].astype(">f8")  # the other byte order
    out2, cache2 = rnnfast.rnn_forward(*p.args, **strided)
    np.testing.assert_array_equal(out2, out)
    for name, g, e in zip(GRAD_NAMES, rnnfast.rnn_backward(p.dout, cache2), expected):
        np.testing.assert_array_equal(g, e, err_msg=name)


# --------------------------------------------------------------------------------------------
# The layer.
# --------------------------------------------------------------------------------------------
def layer_and_input(seed=0, **kwargs):
    rnn = RNN(3, 6, num_layers=2, bidirectional=True, dtype=np.float64, seed=seed, **kwargs)
    x = np.random.default_rng(seed + 1).standard_normal((5, 4, 3))
    return rnn, x


def test_layer_leak_one_is_torchs_rnn_bit_for_bit():
    plain, x = layer_and_input()
    for one in (1, 1.0, np.ones(6), np.ones((2, 1))):
        leaky, _ = layer_and_input(leak=one)
        for a, b in zip(plain.forward(x, lengths=[5, 2, 4, 1]),
                        leaky.forward(x, lengths=[5, 2, 4, 1])):
            np.testing.assert_array_equal(a, b)
        G = np.ones((5, 4, 12))
        for a, b in zip(plain.backward(G), leaky.backward(G)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("leak", [0.3, np.linspace(0.1, 1, 6), [[0.2], [0.7]]],
                         ids=["number", "per_unit", "per_layer"])
def test_layer_runs_each_layer_with_its_leak(leak):
    """Each layer and direction is rnn_forward with that layer's leak (both directions of a
    layer share it), layer l > 0 reading layer l - 1's outputs."""
    rnn, x = layer_and_input(leak=leak)
    out, h_n = rnn.forward(x)
    alphas = np.broadcast_to(np.asarray(leak, np.float64), (2, 6))
    layer_input = x
    for layer in range(2):
        outputs = []
        for suffix, reverse in (("", False), ("_reverse", True)):
            params = rnn.parameters()
            args = (layer_input[::-1] if reverse else layer_input, None,
                    params[f"weight_ih_l{layer}{suffix}"], params[f"weight_hh_l{layer}{suffix}"],
                    params[f"bias_ih_l{layer}{suffix}"] + params[f"bias_hh_l{layer}{suffix}"])
            states, _ = rnnfast.rnn_forward(*args, leak=alphas[layer])
            outputs.append(states[::-1] if reverse else states)
        layer_input = np.concatenate(outputs, axis=2)
    np.testing.assert_array_equal(out, layer_input)
    assert rnn.leak.shape == (2, 6) and not rnn.leak.flags.writeable
    assert "leak" not in " ".join(rnn.state_dict())


def test_leaky_noisy_layer_gradients_match_central_differences():
    """Along a random direction of every parameter and x; the noise, drawn from the layer's
    generator, is the same in every pass (the generator's state is restored before each)."""
    rnn, x = layer_and_input(seed=3, leak=[[0.3], [0.8]], noise_std=0.2, state_noise_std=0.1)
    start = copy.deepcopy(rnn.rng.bit_generator.state)
    G = np.random.default_rng(4).standard_normal((5, 4, 12))

    def loss(x_value):
        rnn.rng.bit_generator.state = copy.deepcopy(start)
        return np.sum(rnn.forward(x_value)[0] * G)

    loss(x)
    dx, _ = rnn.backward(G)
    rng = np.random.default_rng(5)
    V = {name: rng.standard_normal(p.shape) for name, p in rnn.parameters().items()}
    V_x = rng.standard_normal(x.shape)
    analytic = np.sum(dx * V_x) + sum(np.sum(rnn.grads[name] * V[name]) for name in V)
    saved = {name: p.copy() for name, p in rnn.parameters().items()}
    values = []
    for sign in (1, -1):
        for name, p in rnn.parameters().items():
            p[...] = saved[name] + sign * FD_EPS * V[name]
        values.append(loss(x + sign * FD_EPS * V_x))
    numeric = (values[0] - values[1]) / (2 * FD_EPS)
    assert abs(analytic - numeric) <= TOL["finite_difference"] * max(1, abs(analytic))


@pytest.mark.parametrize("leak", LEAK_KINDS)
def test_layer_noise_follows_its_stated_scales_and_seed(leak):
    """The layer draws, for each layer and direction, N(0, 1) * sqrt(2 / alpha) sigma for a_t,
    then N(0, 1) * sqrt(2 alpha) sigma for h_t, from its generator: the same call of
    rnn_forward with those draws gives its outputs exactly."""
    H = 6
    alpha = 0.4 if leak == "scalar" else np.linspace(0.05, 1, H)
    rnn = RNN(3, H, dtype=np.float32, seed=6, leak=alpha, noise_std=0.3, state_noise_std=0.2)
    x = np.random.default_rng(7).standard_normal((5, 4, 3)).astype(np.float32)
    draws = np.random.Generator(copy.deepcopy(rnn.rng.bit_generator))
    out, _ = rnn.forward(x)
    alpha32 = np.broadcast_to(np.float32(alpha), H).astype(np.float64)
    noise = draws.standard_normal((5, 4, H), dtype=np.float32)
    noise *= (np.sqrt(2 / alpha32) * 0.3).astype(np.float32)
    state_noise = draws.standard_normal((5, 4, H), dtype=np.float32)
    state_noise *= (np.sqrt(2 * alpha32) * 0.2).astype(np.float32)
    p = rnn.parameters()
    expected, _ = rnnfast.rnn_forward(x, None, p["weight_ih_l0"], p["weight_hh_l0"],
                                      p["bias_ih_l0"] + p["bias_hh_l0"],
                                      leak=np.float32(alpha) if leak == "scalar"
                                      else alpha.astype(np.float32),
                                      noise=noise, state_noise=state_noise)
    np.testing.assert_array_equal(out, expected)
    again = RNN(3, H, dtype=np.float32, seed=6, leak=alpha, noise_std=0.3, state_noise_std=0.2)
    np.testing.assert_array_equal(again.forward(x)[0], out)  # the seed fixes the noise
    assert not np.array_equal(rnn.forward(x)[0], out)  # and each pass draws anew
    rnn.eval()
    assert not np.array_equal(rnn.forward(x)[0], out)  # in evaluation mode too
    rnn.noise_std = rnn.state_noise_std = 0
    np.testing.assert_array_equal(rnn.forward(x)[0], rnn.forward(x)[0])


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(leak=0), ValueError, r"^leak must be in \(0, 1\]"),
    (dict(leak=[0.5, 1.2, 0.5, 0.5]), ValueError, r"^leak must be in \(0, 1\].*got 1\.2"),
    (dict(leak=np.full((3, 4), 0.5)), ValueError, r"^leak must be a number or an array "
                                                  r"broadcastable to \(num_layers, hidden_size\) "
                                                  r"= \(2, 4\); got shape \(3, 4\)"),
    (dict(leak=True), TypeError, r"^leak must be a number or an array of real numbers"),
    (dict(leak="0.5"), TypeError, r"^leak must be a number or an array of real numbers"),
    (dict(leak=[[0.5], [0.5, 0.4]]), ValueError, r"^leak could not be converted"),
    (dict(noise_std=-0.1), ValueError, r"^noise_std must be a finite number >= 0; got -0\.1"),
    (dict(state_noise_std=np.nan), ValueError, r"^state_noise_std must be a finite number"),
    (dict(noise_std=np.inf), ValueError, r"^noise_std must be a finite number"),
    (dict(noise_std="0.1"), TypeError, r"^noise_std must be a real number; got str"),
    (dict(state_noise_std=True), TypeError, r"^state_noise_std must be a real number; got bool"),
])
def test_layer_refuses_bad_leak_and_noise(kwargs, error, message):
    with pytest.raises(error, match=message):
        RNN(3, 4, num_layers=2, **kwargs)
    rnn = RNN(3, 4)
    for name in ("noise_std", "state_noise_std"):
        if name in kwargs:
            with pytest.raises(error, match=message):
                setattr(rnn, name, kwargs[name])
