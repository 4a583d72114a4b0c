"""Optimizers and gradient clipping (rnnfast.optim).

Three kinds of evidence: the first steps computed by hand from the published update rules (no
torch needed); several steps against torch.optim / torch.nn.utils on the same values (skipped
without torch); and bit-identical continuation after a state_dict round trip. Then in-place
behaviour, dtypes, and every error path.
"""
import math

import numpy as np
import pytest

from rnnfast.train.optim import SGD, Adagrad, Adam, clip_grad_norm, clip_grad_value
from rnn_helpers import assert_close

# Tolerances (relative, against the largest magnitude, floored at 1: see assert_close).
TOL = {
    # Our formulas in float64 vs the same formulas rearranged by hand: a few roundings per step.
    "hand": 1e-13,
    # vs torch.optim in float64: the same operations in the same order; torch's vectorised CPU
    # kernels may fuse a multiply-add (one rounding instead of two), so a few ulps per step.
    "torch_float64": 1e-12,
    # vs torch.optim in float32: the same, at float32's eps (6e-8), over a few steps.
    "torch_float32": 1e-6,
}
SHAPES = {"weight_ih_l0": (4, 3), "weight_hh_l0": (4, 4), "bias_ih_l0": (4,),
          "bias_hh_l0": (4,)}
N_STEPS = 5


def make_params(seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}


def make_grads(seed, n_steps, dtype=np.float64):
    """n_steps gradient dicts; entries spread over a few orders of magnitude (Adam/Adagrad
    normalise by the gradient's size, so a single scale would hide a wrong denominator)."""
    rng = np.random.default_rng(seed)
    return [{name: (rng.standard_normal(shape) * 10.0 ** rng.uniform(-2, 1, shape)).astype(dtype)
             for name, shape in SHAPES.items()} for _ in range(n_steps)]


def copy(arrays):
    return {name: array.copy() for name, array in arrays.items()}


SETTINGS = [
    (SGD, {"lr": 0.1}),
    (SGD, {"lr": 0.1, "weight_decay": 0.05}),
    (SGD, {"lr": 0.1, "momentum": 0.9}),
    (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (SGD, {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.1}),
    (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    (Adagrad, {}),
    (Adagrad, {"lr": 0.1, "initial_accumulator_value": 0.5}),
    (Adagrad, {"lr": 0.1, "eps": 1e-6, "weight_decay": 0.1}),
    (Adam, {}),
    (Adam, {"lr": 0.01, "betas": (0.5, 0.9)}),
    (Adam, {"lr": 0.01, "weight_decay": 0.1}),
    (Adam, {"lr": 0.01, "betas": (0.0, 0.99), "eps": 1e-6}),
]
SETTING_IDS = [f"{cls.__name__}-" + ("-".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
               for cls, kw in SETTINGS]


# ---------------------------------------------------------------------------------------------
# The first steps, by hand (no torch).
# ---------------------------------------------------------------------------------------------
def test_sgd_plain_and_weight_decay_by_hand():
    p0 = make_params(1)
    g1, g2 = make_grads(2, 2)
    params = copy(p0)
    opt = SGD(params, lr=0.1, weight_decay=0.05)
    opt.step(g1)
    p1 = {n: p0[n] - 0.1 * (g1[n] + 0.05 * p0[n]) for n in p0}
    opt.step(g2)
    for n in p0:
        p2 = p1[n] - 0.1 * (g2[n] + 0.05 * p1[n])
        assert_close(params[n], p2, TOL["hand"], n)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_by_hand(nesterov):
    # The buffer starts as the first gradient (not as (1 - momentum) times it, not as zero).
    lr, mu = 0.1, 0.9
    p0 = make_params(3)
    g1, g2 = make_grads(4, 2)
    params = copy(p0)
    opt = SGD(params, lr=lr, momentum=mu, nesterov=nesterov)
    opt.step(g1)
    for n in p0:
        u1 = g1[n] + mu * g1[n] if nesterov else g1[n]
        assert_close(params[n], p0[n] - lr * u1, TOL["hand"], n)
    opt.step(g2)
    for n in p0:
        b2 = mu * g1[n] + g2[n]
        u1 = g1[n] + mu * g1[n] if nesterov else g1[n]
        u2 = g2[n] + mu * b2 if nesterov else b2
        assert_close(params[n], p0[n] - lr * u1 - lr * u2, TOL["hand"], n)
        assert_close(opt.state_dict()[f"momentum_buffer/{n}"], b2, TOL["hand"], n)


def test_adagrad_by_hand():
    lr, eps, s0 = 0.1, 1e-10, 0.5
    p0 = make_params(5)
    g1, g2 = make_grads(6, 2)
    params = copy(p0)
    opt = Adagrad(params, lr=lr, initial_accumulator_value=s0)
    opt.step(g1)
    opt.step(g2)
    for n in p0:
        s1 = s0 + g1[n] ** 2
        s2 = s1 + g2[n] ** 2
        expected = p0[n] - lr * g1[n] / (np.sqrt(s1) + eps) - lr * g2[n] / (np.sqrt(s2) + eps)
        assert_close(params[n], expected, TOL["hand"], n)
        assert_close(opt.state_dict()[f"sum/{n}"], s2, TOL["hand"], n)


def test_adam_by_hand():
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-8
    p0 = make_params(7)
    g1, g2 = make_grads(8, 2)
    params = copy(p0)
    opt = Adam(params, lr=lr, betas=(b1, b2), eps=eps)
    opt.step(g1)
    for n in p0:
        # Bias correction makes the first step m_hat = g, v_hat = g^2: a step of lr * sign(g)
        # whatever the gradient's scale (shrunk by eps only where |g| is tiny).
        step1 = lr * g1[n] / (np.abs(g1[n]) + eps)
        assert_close(params[n], p0[n] - step1, TOL["hand"], n)
        assert np.all(np.abs(p0[n] - params[n]) <= lr)
    opt.step(g2)
    for n in p0:
        m = b1 * (1 - b1) * g1[n] + (1 - b1) * g2[n]
        v = b2 * (1 - b2) * g1[n] ** 2 + (1 - b2) * g2[n] ** 2
        m_hat, v_hat = m / (1 - b1 ** 2), v / (1 - b2 ** 2)
        step1 = lr * g1[n] / (np.abs(g1[n]) + eps)
        expected = p0[n] - step1 - lr * m_hat / (np.sqrt(v_hat) + eps)
        assert_close(params[n], expected, TOL["hand"], n)
        state = opt.state_dict()
        assert_close(state[f"exp_avg/{n}"], m, TOL["hand"], n)
        assert_close(state[f"exp_avg_sq/{n}"], v, TOL["hand"], n)


def test_adam_weight_decay_is_l2_added_to_the_gradient():
    # Adam, not AdamW: the decay goes through the moments (first step: a step of lr * sign(d)).
    lr, wd = 0.01, 0.5
    p0 = make_params(9)
    (g1,) = make_grads(10, 1)
    params = copy(p0)
    Adam(params, lr=lr, weight_decay=wd).step(g1)
    for n in p0:
        d = g1[n] + wd * p0[n]
        assert_close(params[n], p0[n] - lr * d / (np.abs(d) + 1e-8), TOL["hand"], n)


def test_defaults_are_torchs():
    params = make_params(11)
    assert SGD(params, lr=0.1).hyperparameters == {
        "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False}
    assert Adagrad(params).hyperparameters == {
        "lr": 0.01, "eps": 1e-10, "initial_accumulator_value": 0.0, "weight_decay": 0.0}
    assert Adam(params).hyperparameters == {
        "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
    assert Adam(params).betas == (0.9, 0.999)


# ---------------------------------------------------------------------------------------------
# Against torch.optim.
# ---------------------------------------------------------------------------------------------
TORCH_BUFFERS = {SGD: ("momentum_buffer",), Adagrad: ("sum",), Adam: ("exp_avg", "exp_avg_sq")}


def run_torch(torch, cls, kwargs, params, grads):
    """Run torch's optimizer of the same name; return its final parameters and state."""
    tensors = {n: torch.tensor(a, requires_grad=True) for n, a in params.items()}
    opt = getattr(torch.optim, cls.__name__)(list(tensors.values()), foreach=False, **kwargs)
    for g in grads:
        for n, t in tensors.items():
            t.grad = torch.from_numpy(g[n].copy())
        opt.step()
    final = {n: t.detach().numpy() for n, t in tensors.items()}
    state = {f"{buffer}/{n}": opt.state[t][buffer].numpy()
             for n, t in tensors.items() for buffer in TORCH_BUFFERS[cls]
             if buffer in opt.state[t]}
    return final, state


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls, kwargs", SETTINGS, ids=SETTING_IDS)
def test_against_torch(cls, kwargs, dtype):
    torch = pytest.importorskip("torch")
    p0 = make_params(20, dtype)
    grads = make_grads(21, N_STEPS, dtype)
    expected, torch_state = run_torch(torch, cls, kwargs, p0, grads)
    params = copy(p0)
    opt = cls(params, **kwargs)
    for g in grads:
        opt.step(g)
    tol = TOL["torch_float64"] if dtype == np.float64 else TOL["torch_float32"]
    for n in params:
        assert params[n].dtype == dtype
        assert_close(params[n], expected[n], tol, n)
    state = opt.state_dict()
    assert set(torch_state) <= set(state)
    for key, value in torch_state.items():
        assert state[key].dtype == dtype
        assert_close(state[key], value, tol, key)


# ---------------------------------------------------------------------------------------------
# Adam's compiled pass against its NumPy update: the same bits.
# ---------------------------------------------------------------------------------------------
ADAM_CASES = [  # 1 - beta1 below and above 0.5 (two forms of the first moment), beta1 = 0, decay
    {"lr": 3e-3}, {"lr": 0.01, "betas": (0.3, 0.9)}, {"lr": 0.01, "betas": (0.0, 0.99)},
    {"lr": 0.01, "weight_decay": 0.1}, {"lr": 0.02, "betas": (0.4, 0.95), "weight_decay": 0.3,
                                        "eps": 1e-6}]


@pytest.mark.parametrize("size", [1, 3, 8, 17, 1000])  # the vector loops' tails
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=str)
def test_adams_compiled_pass_gives_the_numpy_updates_bits(kwargs, dtype, size):
    """The same steps on contiguous parameters (the compiled pass) and on strided views of the
    same values (the NumPy update): parameters and moments identical after every step."""
    rng = np.random.default_rng(size)
    start = rng.standard_normal(size).astype(dtype)
    flat = start.copy()
    strided = np.zeros(2 * size, dtype)[::2]
    strided[...] = start
    fast, slow = Adam({"w": flat}, **kwargs), Adam({"w": strided}, **kwargs)
    for step in range(4):
        # gradients over many orders of magnitude, zeros among them (sqrt(v) = 0: eps alone)
        grad = (rng.standard_normal(size) * 10.0 ** rng.uniform(-9, 3, size)).astype(dtype)
        grad[rng.random(size) < 0.1] = 0
        fast.step({"w": grad})
        slow.step({"w": grad})
        np.testing.assert_array_equal(flat, strided, err_msg=f"step {step + 1}")
    fast_state, slow_state = fast.state_dict(), slow.state_dict()
    for key in ("exp_avg/w", "exp_avg_sq/w"):
        np.testing.assert_array_equal(fast_state[key], slow_state[key], err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_direct_call_matches_adam_update_numpy(dtype):
    """The kernel itself against the reference function, on a (T, B, H)-like 3-D parameter."""
    from rnnfast.train.optim._adam import adam_update
    from rnnfast.train.optim.rules import adam_update_numpy

    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal((5, 4, 33)).astype(dtype) for _ in range(4)]
    arrays[3] = np.abs(arrays[3])  # the second moment is never negative
    mine, reference = [a.copy() for a in arrays], [a.copy() for a in arrays]
    hyper = {"lr": 0.05, "beta1": 0.8, "beta2": 0.99, "eps": 1e-7, "weight_decay": 0.02}
    step = 3
    adam_update(*(a.reshape(-1) for a in mine), 1.0 - hyper["beta1"], hyper["beta2"],
                hyper["weight_decay"], (1.0 - hyper["beta2"] ** step) ** 0.5, hyper["eps"],
                hyper["lr"] / (1.0 - hyper["beta1"] ** step))
    adam_update_numpy(*reference, step, **hyper)
    for name, a, b in zip(("param", "grad", "exp_avg", "exp_avg_sq"), mine, reference):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_adam_with_a_gradient_that_is_a_view_of_the_parameter():
    """A gradient sharing the parameter's memory takes the NumPy update (the compiled pass
    reads and writes element by element): the result is NumPy's."""
    param = np.linspace(-1, 1, 12)
    expected = param.copy()
    Adam({"w": expected}, lr=0.1).step({"w": expected.copy()})
    Adam({"w": param}, lr=0.1).step({"w": param})
    np.testing.assert_array_equal(param, expected)


# ---------------------------------------------------------------------------------------------
# State dicts.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("through_npz", [False, True], ids=["dict", "npz"])
@pytest.mark.parametrize("cls, kwargs", SETTINGS, ids=SETTING_IDS)
def test_state_dict_round_trip_is_bit_identical(cls, kwargs, through_npz, tmp_path):
    grads = make_grads(31, 6)
    params_a = make_params(30)
    opt_a = cls(params_a, **kwargs)
    for g in grads[:3]:
        opt_a.step(g)
    state = opt_a.state_dict()
    if through_npz:
        np.savez(tmp_path / "optim.npz", **state)
        with np.load(tmp_path / "optim.npz") as loaded:
            state = dict(loaded)
    # B starts from A's parameters with other hyperparameters: loading restores A's.
    params_b = copy(params_a)
    opt_b = cls(params_b, lr=0.5) if cls is SGD else cls(params_b)
    opt_b.load_state_dict(state)
    assert opt_b.step_count == 3
    assert opt_b.hyperparameters == opt_a.hyperparameters
    for g in grads[3:]:
        opt_a.step(g)
        opt_b.step(g)
    for n in params_a:
        np.testing.assert_array_equal(params_b[n], params_a[n], err_msg=n)
    final_a, final_b = opt_a.state_dict(), opt_b.state_dict()
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        np.testing.assert_array_equal(final_b[key], final_a[key], err_msg=key)


def test_state_dict_contents_and_copies():
    params = make_params(32)
    opt = Adam(params, lr=0.01)
    (g,) = make_grads(33, 1)
    opt.step(g)
    state = opt.state_dict()
    expected_keys = {"optimizer", "step", "lr", "beta1", "beta2", "eps", "weight_decay"}
    expected_keys |= {f"{b}/{n}" for n in SHAPES for b in ("exp_avg", "exp_avg_sq")}
    assert set(state) == expected_keys
    assert state["optimizer"] == "Adam" and state["step"] == 1 and state["lr"] == 0.01
    saved = copy({k: v for k, v in state.items() if isinstance(v, np.ndarray)})
    opt.step(g)  # a later step must not change a state already returned
    for key, value in saved.items():
        np.testing.assert_array_equal(state[key], value)
    # SGD without momentum keeps no buffer; with momentum, one per parameter.
    assert set(SGD(params, lr=0.1).state_dict()) == {"optimizer", "step", "lr", "momentum",
                                                     "weight_decay", "nesterov"}
    assert sum(k.startswith("momentum_buffer/")
               for k in SGD(params, lr=0.1, momentum=0.9).state_dict()) == len(SHAPES)


def test_load_casts_buffers_to_the_parameter_dtype_and_copies_them():
    params64 = make_params(34)
    opt64 = Adagrad(params64, lr=0.1)
    opt64.step(make_grads(35, 1)[0])
    state = opt64.state_dict()
    params32 = make_params(34, np.float32)
    opt32 = Adagrad(params32)
    opt32.load_state_dict(state)
    loaded = opt32.state_dict()
    assert all(loaded[f"sum/{n}"].dtype == np.float32 for n in SHAPES)
    state["sum/bias_ih_l0"][...] = 1e9  # the optimizer holds its own copy...
    assert not np.any(opt32.state_dict()["sum/bias_ih_l0"] == 1e9)
    state = opt64.state_dict()
    opt64_copy = Adagrad(make_params(34))
    opt64_copy.load_state_dict(state)
    state["sum/bias_ih_l0"][...] = 1e9  # ...also when no cast is needed
    assert not np.any(opt64_copy.state_dict()["sum/bias_ih_l0"] == 1e9)


# ---------------------------------------------------------------------------------------------
# In place, dtypes, the learning rate.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, kwargs", SETTINGS, ids=SETTING_IDS)
def test_updates_the_callers_arrays_in_place_and_keeps_grads(cls, kwargs, dtype):
    params = make_params(40, dtype)
    layer = dict(params)  # another holder of the same arrays, as a layer would be
    before = copy(params)
    grads = make_grads(41, 2, dtype)
    grads_before = [copy(g) for g in grads]
    opt = cls(params, **kwargs)
    for g in grads:
        opt.step(g)
    for n in params:
        assert layer[n] is params[n] and opt.params[n] is params[n]
        assert params[n].dtype == dtype
        assert not np.array_equal(layer[n], before[n]), n
    for g, g0 in zip(grads, grads_before):
        for n in g:
            np.testing.assert_array_equal(g[n], g0[n], err_msg=f"gradient {n} was modified")


def test_params_dict_is_copied_and_non_contiguous_arrays_work():
    base = np.zeros((4, 6))
    view = base[:, ::2]  # a strided view: the update must reach base
    params = {"w": view}
    opt = SGD(params, lr=1.0)
    params["extra"] = np.zeros(3)  # later changes to the caller's dict are not seen
    opt.step({"w": np.ones((4, 3))})
    np.testing.assert_array_equal(base[:, ::2], -1.0)
    np.testing.assert_array_equal(base[:, 1::2], 0.0)
    assert list(opt.params) == ["w"]


def test_lr_can_be_changed_between_steps():
    params = {"w": np.zeros(3)}
    opt = SGD(params, lr=0.1)
    opt.step({"w": np.ones(3)})
    opt.lr = 0.5
    opt.step({"w": np.ones(3)})
    np.testing.assert_allclose(params["w"], -0.6, rtol=1e-15)
    assert opt.lr == 0.5 and opt.state_dict()["lr"] == 0.5
    with pytest.raises(ValueError, match="lr"):
        opt.lr = 0.0
    with pytest.raises(TypeError, match="lr"):
        opt.lr = "0.1"
    assert opt.lr == 0.5


# ---------------------------------------------------------------------------------------------
# Errors: construction.
# ---------------------------------------------------------------------------------------------
BAD_HYPERPARAMETERS = [
    (SGD, {"lr": 0.0}, ValueError, "lr"),
    (SGD, {"lr": -0.1}, ValueError, "lr"),
    (SGD, {"lr": math.nan}, ValueError, "lr"),
    (SGD, {"lr": math.inf}, ValueError, "lr"),
    (SGD, {"lr": "0.1"}, TypeError, "lr"),
    (SGD, {"lr": True}, TypeError, "lr"),
    (SGD, {"lr": 0.1, "momentum": -0.5}, ValueError, "momentum"),
    (SGD, {"lr": 0.1, "weight_decay": -1e-4}, ValueError, "weight_decay"),
    (SGD, {"lr": 0.1, "nesterov": True}, ValueError, "nesterov"),
    (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": 1}, TypeError, "nesterov"),
    (Adagrad, {"lr": 0.0}, ValueError, "lr"),
    (Adagrad, {"eps": 0.0}, ValueError, "eps"),
    (Adagrad, {"initial_accumulator_value": -1.0}, ValueError, "initial_accumulator_value"),
    (Adagrad, {"weight_decay": math.nan}, ValueError, "weight_decay"),
    (Adam, {"lr": -1.0}, ValueError, "lr"),
    (Adam, {"betas": (1.0, 0.999)}, ValueError, "betas[0]"),
    (Adam, {"betas": (0.9, -0.1)}, ValueError, "betas[1]"),
    (Adam, {"betas": (0.9, math.nan)}, ValueError, "betas[1]"),
    (Adam, {"betas": (0.9,)}, TypeError, "betas"),
    (Adam, {"betas": 0.9}, TypeError, "betas"),
    (Adam, {"eps": -1e-8}, ValueError, "eps"),
    (Adam, {"weight_decay": -0.1}, ValueError, "weight_decay"),
]


@pytest.mark.parametrize("cls, kwargs, error, fragment", BAD_HYPERPARAMETERS,
                         ids=[f"{c.__name__}-{kw}" for c, kw, _, _ in BAD_HYPERPARAMETERS])
def test_bad_hyperparameters(cls, kwargs, error, fragment):
    with pytest.raises(error) as excinfo:
        cls(make_params(50), **kwargs)
    assert fragment in str(excinfo.value)


def read_only(array):
    array.flags.writeable = False
    return array


shared = np.zeros((3, 3))
BAD_PARAMS = [
    ([np.zeros(3)], TypeError, "params must be a dict"),
    ({}, ValueError, "params is empty"),
    ({0: np.zeros(3)}, TypeError, "str"),
    ({"w": [0.0, 1.0]}, TypeError, "params['w'] must be a NumPy array"),
    ({"w": np.zeros(3, dtype=np.int64)}, TypeError, "params['w'] must have dtype float32"),
    ({"w": np.zeros(3, dtype=np.float16)}, TypeError, "float16"),
    ({"w": read_only(np.zeros(3))}, ValueError, "params['w'] is read-only"),
    ({"a": shared, "b": shared}, ValueError, "params['a'] and params['b'] share memory"),
    ({"a": shared[0], "b": shared[:, 0]}, ValueError, "share memory"),
]


@pytest.mark.parametrize("params, error, fragment", BAD_PARAMS,
                         ids=[str(i) for i in range(len(BAD_PARAMS))])
def test_bad_params(params, error, fragment):
    with pytest.raises(error) as excinfo:
        SGD(params, lr=0.1)
    assert fragment in str(excinfo.value)


def test_separate_views_of_one_buffer_are_accepted():
    flat = np.zeros(10)
    params = {"a": flat[:4], "b": flat[4:]}
    SGD(params, lr=1.0).step({"a": np.ones(4), "b": 2 * np.ones(6)})
    np.testing.assert_array_equal(flat, [-1.0] * 4 + [-2.0] * 6)


# ---------------------------------------------------------------------------------------------
# Errors: step.
# ---------------------------------------------------------------------------------------------
def test_step_key_errors_name_missing_and_extra_keys():
    params = make_params(60)
    opt = Adam(params)
    grads = make_grads(61, 1)[0]
    del grads["bias_hh_l0"]
    grads["weight_ho"] = np.zeros(3)
    with pytest.raises(ValueError) as excinfo:
        opt.step(grads)
    message = str(excinfo.value)
    assert "missing: ['bias_hh_l0']" in message and "unexpected: ['weight_ho']" in message
    with pytest.raises(TypeError, match="grads must be a dict"):
        opt.step(list(grads.values()))


@pytest.mark.parametrize("bad, error, fragments", [
    (np.zeros((4, 4), np.float32), TypeError, ["grads['weight_hh_l0']", "float64", "float32"]),
    (np.zeros((4, 4), np.int64), TypeError, ["grads['weight_hh_l0']", "int64"]),
    (np.zeros((4, 3)), ValueError, ["grads['weight_hh_l0']", "(4, 4)", "(4, 3)"]),
    (np.zeros(16), ValueError, ["grads['weight_hh_l0']", "(4, 4)", "(16,)"]),
])
@pytest.mark.parametrize("cls", [SGD, Adagrad, Adam])
def test_step_bad_gradient_changes_nothing(cls, bad, error, fragments):
    params = make_params(62)
    before = copy(params)
    opt = cls(params, lr=0.1, **({"momentum": 0.9} if cls is SGD else {}))
    state_before = opt.state_dict()
    grads = make_grads(63, 1)[0]
    grads["weight_hh_l0"] = bad  # the second key: the first must not have been updated
    with pytest.raises(error) as excinfo:
        opt.step(grads)
    for fragment in fragments:
        assert fragment in str(excinfo.value)
    for n in params:
        np.testing.assert_array_equal(params[n], before[n])
    assert opt.step_count == 0
    for key, value in opt.state_dict().items():
        np.testing.assert_array_equal(value, state_before[key])


def test_step_accepts_array_likes_of_the_right_dtype():
    params = {"w": np.zeros(2)}
    SGD(params, lr=1.0).step({"w": [1.0, 2.0]})
    np.testing.assert_array_equal(params["w"], [-1.0, -2.0])


# ---------------------------------------------------------------------------------------------
# Errors: load_state_dict.
# ---------------------------------------------------------------------------------------------
def adam_state():
    opt = Adam(make_params(70), lr=0.01)
    opt.step(make_grads(71, 1)[0])
    return opt.state_dict()


def edit(state, **changes):
    state = dict(state)
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


def _bad_states():
    s = adam_state()
    return [
        ("other optimizer", edit(s, optimizer="SGD"), ValueError, "'Adam'"),
        ("no optimizer", edit(s, optimizer=None), ValueError, "state['optimizer']"),
        ("missing lr", edit(s, lr=None), ValueError, "['lr']"),
        ("missing buffer", edit(s, **{"exp_avg/bias_ih_l0": None}), ValueError,
         "missing: ['exp_avg/bias_ih_l0']"),
        ("extra buffer", edit(s, **{"exp_avg/weight_ho": np.zeros(3)}), ValueError,
         "unexpected: ['exp_avg/weight_ho']"),
        ("wrong shape", edit(s, **{"exp_avg_sq/weight_ih_l0": np.zeros((3, 4))}), ValueError,
         "state['exp_avg_sq/weight_ih_l0'] must have shape (4, 3); got (3, 4)"),
        ("int buffer", edit(s, **{"exp_avg/bias_ih_l0": np.zeros(4, np.int64)}), TypeError,
         "state['exp_avg/bias_ih_l0'] must hold floating-point numbers"),
        ("negative step", edit(s, step=-1), ValueError, "state['step']"),
        ("float step", edit(s, step=1.5), TypeError, "state['step']"),
        ("array step", edit(s, step=np.array([1, 2])), TypeError, "state['step']"),
        ("bad lr", edit(s, lr=-1.0), ValueError, "state: lr"),
        ("bad beta", edit(s, beta2=np.array(1.0)), ValueError, "beta2"),
        ("not a dict", list(s.items()), TypeError, "state must be a dict"),
    ]


@pytest.mark.parametrize("case", range(13))
def test_bad_state_is_rejected_and_changes_nothing(case):
    label, state, error, fragment = _bad_states()[case]
    params = make_params(72)
    opt = Adam(params, lr=0.02)
    before = opt.state_dict()
    with pytest.raises(error) as excinfo:
        opt.load_state_dict(state)
    assert fragment in str(excinfo.value), label
    after = opt.state_dict()
    assert after.keys() == before.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=label)


def test_sgd_state_follows_the_loaded_momentum():
    # A momentum-free state has no buffers: it loads into an SGD built with momentum, which
    # then runs without momentum, as the saved one did.
    params = {"w": np.zeros(2)}
    state = SGD({"w": np.zeros(2)}, lr=0.1).state_dict()
    opt = SGD(params, lr=0.1, momentum=0.9)
    opt.load_state_dict(state)
    opt.step({"w": np.ones(2)})
    opt.step({"w": np.ones(2)})
    np.testing.assert_allclose(params["w"], -0.2, rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# Clipping.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_value(dtype):
    grads = make_grads(80, 1, dtype)[0]
    grads["bias_ih_l0"][0] = np.nan
    original = copy(grads)
    arrays = dict(grads)
    assert clip_grad_value(grads, 0.5) is None
    for n in grads:
        assert grads[n] is arrays[n] and grads[n].dtype == dtype
        expected = np.where(original[n] > 0.5, 0.5, np.where(original[n] < -0.5, -0.5,
                                                             original[n]))
        np.testing.assert_array_equal(grads[n], expected.astype(dtype), err_msg=n)
    assert np.isnan(grads["bias_ih_l0"][0])
    assert np.any(np.abs(original["weight_hh_l0"]) > 0.5)  # the test clips something


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_norm", [0.3, 1e3, math.inf])
def test_clip_grad_norm_formula(max_norm, dtype):
    grads = make_grads(81, 1, dtype)[0]
    original = copy(grads)
    everything = np.concatenate([g.ravel().astype(np.float64) for g in original.values()])
    norm = np.sqrt(np.sum(everything ** 2))
    total = clip_grad_norm(grads, max_norm)
    assert isinstance(total, float)
    assert total == pytest.approx(norm, rel=1e-14)
    if max_norm < norm:
        coef = max_norm / (norm + 1e-6)
        for n in grads:
            assert grads[n].dtype == dtype
            rtol = 1e-15 if dtype == np.float64 else 1e-7
            np.testing.assert_allclose(grads[n], original[n] * coef, rtol=rtol)
        clipped = np.concatenate([g.ravel().astype(np.float64) for g in grads.values()])
        assert np.sqrt(np.sum(clipped ** 2)) <= max_norm * (1 + 1e-6)
    else:  # nothing to clip: the gradients are untouched, bit for bit
        for n in grads:
            np.testing.assert_array_equal(grads[n], original[n])


def test_clip_grad_norm_edges():
    assert clip_grad_norm({}, 1.0) == 0.0
    zeros = {"w": np.zeros(3)}
    assert clip_grad_norm(zeros, 1.0) == 0.0
    np.testing.assert_array_equal(zeros["w"], 0.0)
    # Non-finite norms: torch's behaviour (error_if_nonfinite=False).
    grads = {"a": np.array([1.0, np.inf]), "b": np.array([2.0])}
    assert clip_grad_norm(grads, 1.0) == math.inf
    np.testing.assert_array_equal(grads["a"], [0.0, np.nan])
    np.testing.assert_array_equal(grads["b"], [0.0])
    grads = {"a": np.array([1.0, np.nan]), "b": np.array([2.0])}
    assert math.isnan(clip_grad_norm(grads, 1.0))
    assert np.all(np.isnan(grads["a"])) and np.all(np.isnan(grads["b"]))


def _torch_grads(torch, grads):
    tensors = []
    for g in grads.values():
        t = torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True)
        t.grad = torch.from_numpy(g.copy())
        tensors.append(t)
    return tensors


CLIP_CASES = {
    "finite": None,
    "inf": ("weight_hh_l0", (1, 2), np.inf),
    "nan": ("bias_ih_l0", (3,), np.nan),
}


@pytest.mark.parametrize("case", list(CLIP_CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_norm", [0.3, 1e3, math.inf])
def test_clipping_against_torch(max_norm, dtype, case):
    torch = pytest.importorskip("torch")
    grads = make_grads(82, 1, dtype)[0]
    if CLIP_CASES[case] is not None:
        name, index, value = CLIP_CASES[case]
        grads[name][index] = value
    tol = TOL["torch_float64"] if dtype == np.float64 else TOL["torch_float32"]

    by_value = copy(grads)
    tensors = _torch_grads(torch, by_value)
    torch.nn.utils.clip_grad_value_(tensors, 0.5)
    clip_grad_value(by_value, 0.5)
    for g, t in zip(by_value.values(), tensors):
        np.testing.assert_array_equal(g, t.grad.numpy())

    by_norm = copy(grads)
    tensors = _torch_grads(torch, by_norm)
    expected_norm = float(torch.nn.utils.clip_grad_norm_(tensors, max_norm, foreach=False))
    total = clip_grad_norm(by_norm, max_norm)
    if math.isfinite(expected_norm):
        assert total == pytest.approx(expected_norm, rel=tol)
    else:
        assert math.isnan(total) == math.isnan(expected_norm) and (
            math.isnan(total) or total == expected_norm)
    for (n, g), t in zip(by_norm.items(), tensors):
        assert g.dtype == dtype
        assert_close(g, t.grad.numpy(), tol, n)


BAD_CLIPS = [
    (clip_grad_value, [np.zeros(3)], 1.0, TypeError, "grads must be a dict"),
    (clip_grad_value, {"w": [1.0, 2.0]}, 1.0, TypeError, "grads['w'] must be a NumPy array"),
    (clip_grad_value, {"w": np.zeros(3, np.int32)}, 1.0, TypeError, "grads['w'] must have dtype"),
    (clip_grad_value, {"w": read_only(np.zeros(3))}, 1.0, ValueError, "grads['w'] is read-only"),
    (clip_grad_value, {"w": np.zeros(3)}, 0.0, ValueError, "clip_value"),
    (clip_grad_value, {"w": np.zeros(3)}, -1.0, ValueError, "clip_value"),
    (clip_grad_value, {"w": np.zeros(3)}, math.nan, ValueError, "clip_value"),
    (clip_grad_value, {"w": np.zeros(3)}, "1", TypeError, "clip_value"),
    (clip_grad_norm, (np.zeros(3),), 1.0, TypeError, "grads must be a dict"),
    (clip_grad_norm, {"w": np.zeros(3, np.int32)}, 1.0, TypeError, "grads['w'] must have dtype"),
    (clip_grad_norm, {"w": read_only(np.zeros(3))}, 1.0, ValueError, "grads['w'] is read-only"),
    (clip_grad_norm, {"w": np.zeros(3)}, 0.0, ValueError, "max_norm"),
    (clip_grad_norm, {"w": np.zeros(3)}, -math.inf, ValueError, "max_norm"),
    (clip_grad_norm, {"w": np.zeros(3)}, None, TypeError, "max_norm"),
]


@pytest.mark.parametrize("function, grads, bound, error, fragment", BAD_CLIPS,
                         ids=[f"{f.__name__}-{i}" for i, (f, *_) in enumerate(BAD_CLIPS)])
def test_clipping_errors(function, grads, bound, error, fragment):
    with pytest.raises(error) as excinfo:
        function(grads, bound)
    assert fragment in str(excinfo.value)
