"""Property-based tests (hypothesis): small random shapes, edges included, every option.

Shapes are drawn in 1..12 per dimension (H in 1..20), so T=1, B=1, D=1, H=1, partial and whole
column blocks and partial groups of four rows all come up; hypothesis shrinks a failure to the
smallest shape that shows it.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import rnnfast
from rnn_helpers import (
    PATHS,
    SAME_DTYPE_TOL,
    assert_close,
    assert_grads_close,
    force_path,
    make_problem,
)

dims = st.integers(min_value=1, max_value=12)
# H reaches past 16, a full column block of the small-step kernel in float32 (two in float64).
hidden = st.integers(min_value=1, max_value=20)
dtypes = st.sampled_from([np.float32, np.float64])
nonlinearities = st.sampled_from(["tanh", "relu"])
paths = st.sampled_from(PATHS)
# Modest budgets, no deadline: the whole file runs in a few seconds and timing never matters.
SETTINGS = settings(max_examples=60, deadline=None)


def run(p, nonlinearity, backend):
    out, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, backend=backend)
    return out, rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n)


@SETTINGS
@given(T=dims, B=dims, D=dims, H=hidden, dtype=dtypes, nonlinearity=nonlinearities, path=paths,
       bias=st.booleans(), h0=st.booleans(), dh_n=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_cython_agrees_with_reference(T, B, D, H, dtype, nonlinearity, path, bias, h0, dh_n,
                                      seed):
    p = make_problem(seed, T, B, D, H, dtype, bias=bias, h0=h0, dh_n=dh_n)
    with pytest.MonkeyPatch.context() as mp:
        force_path(mp, path)
        out, grads = run(p, nonlinearity, "cython")
    ref_out, ref_grads = run(p, nonlinearity, "numpy")
    tol = SAME_DTYPE_TOL[np.dtype(dtype).type]
    assert_close(out, ref_out, tol["forward"], "out")
    assert_grads_close(grads, ref_grads, tol["grad"], has_bias=bias)


@st.composite
def leaks(draw, H, dtype):
    """The leak keyword of a leaky call, or none: a number or one per unit, in [2^-10, 1]
    (a time constant of up to 1024 steps; 1 itself among them)."""
    alpha = st.floats(2**-10, 1, width=32)  # exactly representable in float32 and float64
    kind = draw(st.sampled_from(["none", "scalar", "per-unit"]))
    dynamics = {}
    if kind == "scalar":
        dynamics["leak"] = draw(alpha)
    elif kind == "per-unit":
        dynamics["leak"] = draw(hnp.arrays(dtype, H, elements=alpha))
    return dynamics


@SETTINGS
@given(T=dims, B=dims, D=dims, H=hidden, dtype=dtypes, nonlinearity=nonlinearities, path=paths,
       bias=st.booleans(), h0=st.booleans(), dh_n=st.booleans(), noise=st.booleans(),
       state_noise=st.booleans(), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_leaky_cython_agrees_with_reference(T, B, D, H, dtype, nonlinearity, path, bias, h0,
                                            dh_n, noise, state_noise, seed, data):
    """A leak (none, one for every unit or one per unit), the two noises, lengths or none, and
    the per-step norms."""
    p = make_problem(seed, T, B, D, H, dtype, bias=bias, h0=h0, dh_n=dh_n)
    dynamics = data.draw(leaks(H, dtype), label="leak")
    rng = np.random.default_rng(seed)
    for name, present in (("noise", noise), ("state_noise", state_noise)):
        if present:
            dynamics[name] = (0.3 * rng.standard_normal((T, B, H))).astype(dtype)
    lengths = data.draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B),
                        label="lengths")
    lengths = None if lengths is None else np.array(lengths)
    results = {}
    for backend in ("cython", "numpy"):
        with pytest.MonkeyPatch.context() as mp:
            force_path(mp, path)
            out, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity,
                                             backend=backend, lengths=lengths, **dynamics)
            results[backend] = out, rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n,
                                                         return_norms=True)
    tol = SAME_DTYPE_TOL[np.dtype(dtype).type]
    (out, (grads, norms)), (ref_out, (ref_grads, ref_norms)) = results["cython"], results["numpy"]
    assert_close(out, ref_out, tol["forward"], "out")
    assert_grads_close(grads, ref_grads, tol["grad"], has_bias=bias)
    assert_close(norms, ref_norms, tol["grad"], "norms")


@st.composite
def drawn_problems(draw):
    """Tiny problems whose entries hypothesis draws itself (zeros, signs, repeated values).

    Magnitudes stay <= 2 so that tanh is not fully saturated and the scale of assert_close
    stays of order 1.
    """
    T, B, D, H = (draw(st.integers(1, 5)) for _ in range(4))
    dtype = draw(dtypes)
    elements = st.floats(-2, 2, width=32)  # exactly representable in float32 and float64

    def arr(shape):
        return draw(hnp.arrays(dtype, shape, elements=elements))

    x, h0, W_xh, W_hh, b = arr((T, B, D)), arr((B, H)), arr((H, D)), arr((H, H)), arr((H,))
    dout, dh_n = arr((T, B, H)), arr((B, H))
    # Keep the recurrence from growing: scale W_hh by 1/H (exact enough, and still any sign).
    W_hh = (W_hh / H).astype(dtype)
    return x, h0, W_xh, W_hh, b, dout, dh_n


@SETTINGS
@given(problem=drawn_problems(), nonlinearity=nonlinearities, path=paths)
def test_cython_agrees_with_reference_on_drawn_values(problem, nonlinearity, path):
    x, h0, W_xh, W_hh, b, dout, dh_n = problem
    results = {}
    for backend in ("cython", "numpy"):
        with pytest.MonkeyPatch.context() as mp:
            force_path(mp, path)
            out, cache = rnnfast.rnn_forward(x, h0, W_xh, W_hh, b, nonlinearity=nonlinearity,
                                             backend=backend)
            results[backend] = out, rnnfast.rnn_backward(dout, cache, dh_n=dh_n)
    tol = SAME_DTYPE_TOL[x.dtype.type]
    (out, grads), (ref_out, ref_grads) = results["cython"], results["numpy"]
    assert_close(out, ref_out, tol["forward"], "out")
    assert_grads_close(grads, ref_grads, tol["grad"])


@SETTINGS
@given(T=st.integers(2, 10), B=dims, D=dims, H=dims, nonlinearity=nonlinearities, path=paths,
       backend=st.sampled_from(["cython", "numpy"]), data=st.data())
def test_chunked_sequence_equals_whole(T, B, D, H, nonlinearity, path, backend, data):
    """Truncated BPTT is exact when the chunks pass h and dh along: the second chunk starts
    from the first one's final state, and the first chunk's backward receives the second
    one's dh0 as dh_n. Outputs concatenate; dx concatenates; weight gradients add up."""
    k = data.draw(st.integers(1, T - 1), label="split")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    p = make_problem(seed, T, B, D, H)
    kw = dict(nonlinearity=nonlinearity, backend=backend)
    with pytest.MonkeyPatch.context() as mp:
        force_path(mp, path)
        out, cache = rnnfast.rnn_forward(*p.args, **kw)
        whole = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n)

        out1, cache1 = rnnfast.rnn_forward(p.x[:k], p.h0, p.W_xh, p.W_hh, p.b, **kw)
        out2, cache2 = rnnfast.rnn_forward(p.x[k:], out1[-1], p.W_xh, p.W_hh, p.b, **kw)
        second = rnnfast.rnn_backward(p.dout[k:], cache2, dh_n=p.dh_n)
        first = rnnfast.rnn_backward(p.dout[:k], cache1, dh_n=second.dh0)

    tol = SAME_DTYPE_TOL[np.float64]
    assert_close(np.concatenate([out1, out2]), out, tol["forward"], "out")
    assert_close(np.concatenate([first.dx, second.dx]), whole.dx, tol["grad"], "dx")
    assert_close(first.dh0, whole.dh0, tol["grad"], "dh0")
    for name in ("dW_xh", "dW_hh", "db"):
        assert_close(getattr(first, name) + getattr(second, name), getattr(whole, name),
                     tol["grad"], name)


@SETTINGS
@given(T=dims, B=dims, D=dims, H=dims, path=paths, seed=st.integers(0, 2**32 - 1))
def test_outputs_stay_in_the_activations_range(T, B, D, H, path, seed):
    """tanh states lie in [-1, 1], relu states are >= 0, for any inputs (here scaled up 10x
    so that tanh saturates)."""
    p = make_problem(seed, T, B, D, H)
    with pytest.MonkeyPatch.context() as mp:
        force_path(mp, path)
        out_tanh, _ = rnnfast.rnn_forward(10 * p.x, p.h0, p.W_xh, p.W_hh, p.b)
        out_relu, _ = rnnfast.rnn_forward(p.x, p.h0, p.W_xh, p.W_hh, p.b, nonlinearity="relu")
    assert np.all(np.abs(out_tanh) <= 1)
    assert np.all(out_relu >= 0)
