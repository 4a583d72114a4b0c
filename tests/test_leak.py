"""Leaky (continuous-time) RNNs and noise in the kernels: h_t = (1 - alpha) h_{t-1} +
alpha act(a_t) + e_t with a_t = W_xh x_t + W_hh h_{t-1} + b + n_t, alpha per unit.

Checked against the NumPy reference on every kernel path (both step kernels, both builds, the
threaded small steps), with lengths and per-step norms; against central differences in float64
for every input, and for the noises (n_t enters as b does; the gradient on e_t is the whole
gradient dL/dh_t, whose norm rnn_backward measures); leak 1 against the plain RNN, bit for bit;
1 against 2 and 3 threads. The tolerances are rnn_helpers.TOL's: a leaky pass has no error of
its own beyond the plain one's (it keeps act(a_t) instead of recomputing it from h_t).
"""
import numpy as np
import pytest

import rnnfast
from rnnfast._kernels import backend as _cython_backend
from rnn_helpers import (FD_EPS, FLOAT32_VS_FLOAT64, GRAD_NAMES, LEAK_KINDS, LENGTH_CASES,
                         LENGTH_IDS, SAME_DTYPE_TOL, TOL, assert_close, assert_grads_close,
                         cast_dynamics, make_dynamics, make_problem, numeric_gradient)

SHAPES = [(1, 1, 1, 1), (3, 1, 5, 7), (6, 3, 2, 17), (4, 5, 9, 33), (5, 13, 3, 16),
          (2, 7, 3, 40)]
SHAPE_IDS = ["T{}B{}D{}H{}".format(*s) for s in SHAPES]
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
NOISES = {"no_noise": dict(noise=False, state_noise=False),
          "noises": dict(noise=True, state_noise=True)}


def run(p, dynamics, backend="cython", nonlinearity="tanh", lengths=None, n_threads=None):
    """Forward, then backward with norms: (out, grads, norms)."""
    out, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, backend=backend,
                                     lengths=lengths, n_threads=n_threads, **dynamics)
    grads, norms = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, n_threads=n_threads,
                                        return_norms=True)
    return out, grads, norms


def tolerance(dtype):
    """Tolerances of a result in dtype against the float64 reference."""
    return FLOAT32_VS_FLOAT64 if dtype == np.float32 else SAME_DTYPE_TOL[np.float64]


def assert_results_close(results, expected, tol, has_bias=True):
    (out, grads, norms), (ref_out, ref_grads, ref_norms) = results, expected
    assert_close(out, ref_out, tol["forward"], "out")
    assert_grads_close(grads, ref_grads, tol["grad"], has_bias=has_bias)
    assert_close(norms, ref_norms, tol["grad"], "norms")


def assert_results_equal(results, expected):
    """Bit for bit."""
    (out, grads, norms), (ref_out, ref_grads, ref_norms) = results, expected
    np.testing.assert_array_equal(out, ref_out, "out")
    for name in GRAD_NAMES:
        np.testing.assert_array_equal(getattr(grads, name), getattr(ref_grads, name), name)
    np.testing.assert_array_equal(norms, ref_norms, "norms")


# --------------------------------------------------------------------------------------------
# Against the reference, on every path.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("noises", list(NOISES))
@pytest.mark.parametrize("leak", LEAK_KINDS)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_cython_matches_reference(shape, dtype, nonlinearity, leak, noises, any_path):
    T, B, D, H = shape
    p = make_problem(0, *shape, dtype)
    dynamics = make_dynamics(1, H, T, B, dtype, leak=leak, **NOISES[noises])
    results = run(p, dynamics, nonlinearity=nonlinearity, n_threads=2)
    expected = run(p.astype(np.float64), cast_dynamics(dynamics, np.float64), "numpy",
                   nonlinearity)
    assert results[0].dtype == dtype and results[2].dtype == dtype
    assert_results_close(results, expected, tolerance(dtype))
    same_dtype = run(p, dynamics, "numpy", nonlinearity)
    assert_results_close(results, same_dtype, SAME_DTYPE_TOL[dtype])


@pytest.mark.parametrize("case", LENGTH_CASES, ids=LENGTH_IDS)
@pytest.mark.parametrize("leak", LEAK_KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optional", [(), ("h0", "dh_n", "b")], ids=["all", "none"])
def test_cython_matches_reference_with_lengths(case, dtype, leak, optional, any_path):
    """Sorted and unsorted lengths: a finished sequence keeps its state, its outputs and norms
    are zeros, and dh_n reaches it at its last step."""
    T, B, H, lengths = case
    p = make_problem(7, T, B, 3, H, dtype).without(*optional)
    dynamics = make_dynamics(8, H, T, B, dtype, leak=leak)
    lengths = np.array(lengths)
    results = run(p, dynamics, lengths=lengths, n_threads=2)
    expected = run(p.astype(np.float64), cast_dynamics(dynamics, np.float64), "numpy",
                   lengths=lengths)
    assert_results_close(results, expected, tolerance(dtype), has_bias=p.b is not None)
    out, _, norms = results
    for b, L in enumerate(lengths):
        np.testing.assert_array_equal(out[L:, b], 0)
        np.testing.assert_array_equal(norms[L:, b], 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [1e-3, 0.05, 0.999])
def test_slow_and_nearly_plain_leaks_keep_their_accuracy(alpha, dtype, path):
    """A time constant of 1000 steps, or alpha next to 1: act(a_t) is kept, not recovered from
    (h_t - (1 - alpha) h_{t-1}) / alpha, so there is no cancellation to lose digits to."""
    p = make_problem(9, 40, 3, 4, 24, dtype)
    dynamics = {"leak": np.full(24, alpha, dtype)}
    results = run(p, dynamics, n_threads=2)
    expected = run(p.astype(np.float64), cast_dynamics(dynamics, np.float64), "numpy")
    assert_results_close(results, expected, tolerance(dtype))


# --------------------------------------------------------------------------------------------
# leak = 1 is the plain RNN, bit for bit.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lengths", [None, [2, 5, 1, 4]], ids=["full", "unsorted_lengths"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_leak_one_is_the_plain_rnn_bit_for_bit(dtype, lengths, any_path):
    p = make_problem(10, 5, 4, 3, 21, dtype)
    lengths = None if lengths is None else np.array(lengths)
    plain = run(p, {}, lengths=lengths, n_threads=2)
    for one in (1, 1.0, np.float64(1), np.float32(1), np.ones(21, dtype)):
        assert_results_equal(run(p, {"leak": one}, lengths=lengths, n_threads=2), plain)


@pytest.mark.parametrize("lengths", [None, [3, 5, 1, 5]], ids=["full", "unsorted_lengths"])
@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)], ids=str)
def test_leaky_kernels_at_leak_one_equal_the_plain_kernels(dtype, lengths, any_path):
    """The leaky code itself (act(a_t) kept apart, the carry of the backward pass), run with
    alpha = 1, gives the plain kernels' results bit for bit: (1 - 1) h and (1 - 1) dh add exact
    zeros (rnn_forward sends leak 1 to the plain kernels instead; a state noise, here zeros,
    makes a pass leaky with leak 1)."""
    p = make_problem(11, 5, 4, 3, 37, dtype)
    T, B, D, H = p.shape
    lengths = None if lengths is None else np.array(lengths, np.intp)
    n_threads = 2

    def pass_(state_noise):
        out, cache = _cython_backend.forward(p.x, p.h0, p.W_xh, p.W_hh, p.b, "tanh", n_threads,
                                             lengths, None, None, state_noise)
        assert (cache.leak is None) == (state_noise is None)
        grads, norms = _cython_backend.backward(p.dout, cache, p.dh_n, n_threads, True)
        return out, grads, norms

    plain, leaky = pass_(None), pass_(np.zeros((T, B, H), dtype))
    assert_results_equal(leaky, plain)


# --------------------------------------------------------------------------------------------
# Central differences in float64.
# --------------------------------------------------------------------------------------------
INPUTS = {"x": "dx", "h0": "dh0", "W_xh": "dW_xh", "W_hh": "dW_hh", "b": "db"}


def loss(inputs, dynamics, G, G_n, nonlinearity, backend, lengths=None):
    """L = sum(out * G) + sum(last states * G_n)."""
    out, _ = rnnfast.rnn_forward(inputs["x"], inputs["h0"], inputs["W_xh"], inputs["W_hh"],
                                 inputs["b"], nonlinearity=nonlinearity, backend=backend,
                                 lengths=lengths, **dynamics)
    B = out.shape[1]
    last = np.full(B, out.shape[0] - 1) if lengths is None else lengths - 1
    return np.sum(out * G) + np.sum(out[last, np.arange(B)] * G_n)


def leaky_preactivations(p, dynamics):
    """min |a_t| of a leaky relu pass, computed here from the math: only to check
    that a relu problem keeps away from the kink, never as an oracle."""
    T, B, D, H = p.shape
    alpha = dynamics["leak"]
    h, smallest = p.h0, np.inf
    for t in range(T):
        a = p.x[t] @ p.W_xh.T + h @ p.W_hh.T + p.b + dynamics["noise"][t]
        smallest = min(smallest, np.abs(a).min())
        h = (1 - alpha) * h + alpha * np.maximum(a, 0) + dynamics["state_noise"][t]
    return smallest


# (T, B, D, H, lengths): the edges, and a batch of two with one sequence ending early.
FD_CASES = [(1, 1, 1, 1, None), (3, 2, 3, 4, None), (3, 2, 3, 4, [3, 1])]


@pytest.mark.parametrize("leak", LEAK_KINDS)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("case", FD_CASES, ids=["T1B1D1H1", "T3B2D3H4", "T3B2D3H4-lengths31"])
def test_gradients_match_central_differences(case, nonlinearity, leak, backend):
    """Every entry of every gradient, with both noises in the pass: they are constants."""
    T, B, D, H, lengths = case
    lengths = None if lengths is None else np.array(lengths)
    p = make_problem(12, T, B, D, H)
    dynamics = make_dynamics(13, H, T, B, leak=leak)
    if nonlinearity == "relu":  # central differences across relu's kink measure nothing
        assert leaky_preactivations(p, dynamics) > 1e-3, "choose another seed"
    inputs = {"x": p.x.copy(), "h0": p.h0.copy(), "W_xh": p.W_xh.copy(), "W_hh": p.W_hh.copy(),
              "b": p.b.copy()}
    _, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, backend=backend,
                                   lengths=lengths, **dynamics)
    grads = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n)
    for name, field in INPUTS.items():
        numeric = numeric_gradient(
            lambda: loss(inputs, dynamics, p.dout, p.dh_n, nonlinearity, backend, lengths),
            inputs[name])
        assert_close(getattr(grads, field), numeric, TOL["finite_difference"], field)


@pytest.mark.parametrize("leak", LEAK_KINDS)
@pytest.mark.parametrize("lengths", [None, [2, 4, 1]], ids=["full", "unsorted_lengths"])
def test_the_noises_have_the_gradients_of_a_bias_and_of_the_state(lengths, leak, backend):
    """The pre-activation noise enters as the bias does: shifting it by eps in unit i at every
    step moves L as b_i would, so the central difference is db_i. The state noise e_t is added
    to h_t: dL/de_t is the whole gradient dL/dh_t, whose norm is rnn_backward's norms[t] (the
    (1 - alpha) dL/dh_{t+1} term included); 0 past a sequence's end, where e_t goes nowhere."""
    T, B, D, H = 4, 3, 2, 5
    lengths = None if lengths is None else np.array(lengths)
    p = make_problem(14, T, B, D, H)
    dynamics = make_dynamics(15, H, T, B, leak=leak)
    inputs = {"x": p.x, "h0": p.h0, "W_xh": p.W_xh, "W_hh": p.W_hh, "b": p.b}
    _, cache = rnnfast.rnn_forward(*p.args, backend=backend, lengths=lengths, **dynamics)
    grads, norms = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, return_norms=True)

    def f():
        return loss(inputs, dynamics, p.dout, p.dh_n, "tanh", backend, lengths)

    shift = np.zeros(H)
    for i in range(H):
        shift[i] = 1
        dynamics["noise"] += FD_EPS * shift
        up = f()
        dynamics["noise"] -= 2 * FD_EPS * shift
        down = f()
        dynamics["noise"] += FD_EPS * shift
        shift[i] = 0
        assert abs((up - down) / (2 * FD_EPS) - grads.db[i]) <= TOL["finite_difference"] * max(
            1, abs(grads.db[i])), i
    dL_dh = numeric_gradient(f, dynamics["state_noise"])
    assert_close(norms, np.linalg.norm(dL_dh, axis=2), TOL["finite_difference"], "norms")


# --------------------------------------------------------------------------------------------
# Threads: the leaky time loops give the same bits on any number of threads.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lengths", [None, [6, 6, 4, 3, 1]], ids=["full", "sorted_lengths"])
@pytest.mark.parametrize("n_threads", [2, 3])
def test_threads_give_the_one_thread_bits(n_threads, lengths, monkeypatch):
    monkeypatch.setattr(_cython_backend.switches, "threads_min_step_flops", 0)
    monkeypatch.setattr(_cython_backend.switches, "cores", n_threads)
    p = make_problem(16, 6, 5, 4, 70, np.float32)
    dynamics = make_dynamics(17, 70, 6, 5, np.float32)
    lengths = None if lengths is None else np.array(lengths)
    one = run(p, dynamics, lengths=lengths, n_threads=1)
    assert _cython_backend.step_plan(6, 5, 70, np.dtype(np.float32), n_threads) == (False,
                                                                                    n_threads)
    assert_results_equal(run(p, dynamics, lengths=lengths, n_threads=n_threads), one)
