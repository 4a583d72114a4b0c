"""What rnn_forward and rnn_backward accept, what they leave alone, and NaN / inf handling.

Layouts (read-only, strided, Fortran order, lists) must give exactly what contiguous copies
give; inputs are never written; out is read-only; non-finite values propagate like the reference.
"""
import numpy as np
import pytest

import rnnfast
from rnn_helpers import GRAD_NAMES, SAME_DTYPE_TOL, assert_close, make_problem

DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
INPUT_NAMES = ("x", "h0", "W_xh", "W_hh", "b")


def run(x, h0, W_xh, W_hh, b, dout, dh_n, backend, nonlinearity="tanh"):
    out, cache = rnnfast.rnn_forward(x, h0, W_xh, W_hh, b, nonlinearity=nonlinearity,
                                     backend=backend)
    return out, rnnfast.rnn_backward(dout, cache, dh_n=dh_n)


def run_problem(p, backend, nonlinearity="tanh"):
    return run(*p.args, p.dout, p.dh_n, backend, nonlinearity)


def assert_identical(result, expected):
    """Bit-identical outputs and gradients: the layout of an input must not matter at all."""
    (out, grads), (ref_out, ref_grads) = result, expected
    np.testing.assert_array_equal(out, ref_out)
    for name in GRAD_NAMES:
        np.testing.assert_array_equal(getattr(grads, name), getattr(ref_grads, name), name)


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def strided(a, rng):
    """The same values as `a`, as a non-contiguous view of a bigger array (every 2nd element
    along each axis, with a random sign of stride per axis)."""
    flips = tuple(slice(None, None, -1) if rng.random() < 0.5 else slice(None) for _ in a.shape)
    big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
    big[tuple(slice(None, None, 2) for _ in a.shape)] = a[flips]
    view = big[tuple(slice(None, None, 2) for _ in a.shape)][flips]
    assert not view.flags.c_contiguous or view.size == 1
    return view


def transposed_view(a):
    """The same values as `a`, as the transpose of a C-contiguous array (so F-ordered)."""
    return np.ascontiguousarray(a.T).T


def negative_strides(a):
    """The same values as `a`, as a reversed view of reversed copies (all strides negative)."""
    flip = tuple(slice(None, None, -1) for _ in a.shape)
    return a[flip].copy()[flip]


def fortran(a):
    return np.asfortranarray(a)


def as_list(a):
    return a.tolist()


LAYOUTS = {
    "read_only": lambda a, rng: read_only(a),
    "strided": strided,
    "transposed": lambda a, rng: transposed_view(a),
    "negative_strides": lambda a, rng: negative_strides(a),
    "fortran": lambda a, rng: fortran(a),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_give_the_contiguous_results(layout, dtype, backend):
    p = make_problem(30, 4, 3, 5, 6, dtype)
    expected = run_problem(p, backend)
    rng = np.random.default_rng(0)
    arrays = [LAYOUTS[layout](a, rng) for a in (*p.args, p.dout, p.dh_n)]
    for a, original in zip(arrays, (*p.args, p.dout, p.dh_n)):
        np.testing.assert_array_equal(a, original)  # same values, other layout
    assert_identical(run(*arrays, backend), expected)


def test_python_lists_are_accepted(backend):
    """Lists become float64 arrays: the float64 results, exactly."""
    p = make_problem(31, 3, 2, 4, 5)
    expected = run_problem(p, backend)
    lists = [a.tolist() for a in (*p.args, p.dout, p.dh_n)]
    assert_identical(run(*lists, backend), expected)


def test_mixed_lists_and_float64_arrays(backend):
    p = make_problem(32, 3, 2, 4, 5)
    x, h0, W_xh, W_hh, b = p.args
    expected = run_problem(p, backend)
    assert_identical(run(x.tolist(), h0, W_xh.tolist(), W_hh, b.tolist(), p.dout.tolist(),
                         p.dh_n, backend), expected)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_are_not_modified(dtype, backend, nonlinearity):
    p = make_problem(33, 4, 3, 5, 20, dtype)
    arrays = {"x": p.x, "h0": p.h0, "W_xh": p.W_xh, "W_hh": p.W_hh, "b": p.b, "dout": p.dout,
              "dh_n": p.dh_n}
    copies = {k: v.copy() for k, v in arrays.items()}
    out, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, backend=backend)
    out_copy = out.copy()
    rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n)
    rnnfast.rnn_backward(p.dout, cache)
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, copies[name], err_msg=name)
    np.testing.assert_array_equal(out, out_copy, err_msg="out changed during backward")


def test_out_is_read_only(backend):
    p = make_problem(34, 2, 2, 3, 4)
    out, _ = rnnfast.rnn_forward(*p.args, backend=backend)
    assert not out.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        out[0, 0, 0] = 1.0


def test_gradients_are_fresh_writable_arrays(backend):
    """The caller owns the gradients: writable, and not views of each other or of inputs."""
    p = make_problem(35, 3, 2, 3, 4)
    out, cache = rnnfast.rnn_forward(*p.args, backend=backend)
    grads = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n)
    arrays = [out, *p.args, p.dout, p.dh_n, *grads]
    for name, g in zip(GRAD_NAMES, grads):
        assert g.flags.writeable, name
        others = [a for a in arrays if a is not g]
        assert not any(np.shares_memory(g, a) for a in others), name


def test_grads_is_the_named_tuple_in_its_documented_order(backend):
    p = make_problem(38, 2, 3, 4, 5)
    _, cache = rnnfast.rnn_forward(*p.args, backend=backend)
    grads = rnnfast.rnn_backward(p.dout, cache)
    assert isinstance(grads, rnnfast.RNNGrads)
    assert grads._fields == GRAD_NAMES
    dx, dh0, dW_xh, dW_hh, db = grads
    assert (dx.shape, dh0.shape, dW_xh.shape, dW_hh.shape, db.shape) == (
        (2, 3, 4), (3, 5), (5, 4), (5, 5), (5,))


# ---------------------------------------------------------------------------------------------
# NaN and inf: the Cython backend must put them where the reference does, and not crash or hang.
# ---------------------------------------------------------------------------------------------
# (name of the array, index, value). Indices are inside every shape used below.
POISONS = [
    ("x", (1, 0, 2), np.nan),
    ("x", (0, 1, 0), np.inf),
    ("x", (2, 2, 1), -np.inf),
    ("h0", (1, 3), np.nan),
    ("h0", (0, 0), np.inf),
    ("W_xh", (3, 1), np.nan),
    ("W_xh", (0, 4), -np.inf),
    ("W_hh", (2, 5), np.nan),
    ("W_hh", (4, 4), np.inf),
    ("b", (6,), np.nan),
    ("b", (1,), -np.inf),
    ("dout", (2, 1, 3), np.nan),
    ("dout", (0, 2, 0), np.inf),
    ("dh_n", (1, 1), np.nan),
    ("dh_n", (2, 6), -np.inf),
]
# Each poison with h0 given and with h0 = None (the latter makes no sense for a poisoned h0).
POISON_CASES = [
    pytest.param(name, index, value, with_h0,
                 id=f"{name}{list(index)}={value}-{'h0' if with_h0 else 'h0_None'}")
    for name, index, value in POISONS
    for with_h0 in (True, False)
    if with_h0 or name != "h0"
]


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, index, value, with_h0", POISON_CASES)
def test_nonfinite_values_propagate_like_the_reference(name, index, value, with_h0, dtype,
                                                       nonlinearity, path):
    p = make_problem(36, 3, 3, 5, 20, dtype)
    arrays = {"x": p.x, "h0": p.h0, "W_xh": p.W_xh, "W_hh": p.W_hh, "b": p.b, "dout": p.dout,
              "dh_n": p.dh_n}
    arrays = {k: v.copy() for k, v in arrays.items()}
    arrays[name][index] = value
    if not with_h0:
        arrays["h0"] = None
    args = [arrays[k] for k in ("x", "h0", "W_xh", "W_hh", "b", "dout", "dh_n")]
    with np.errstate(all="ignore"):  # the reference's NumPy warns about inf - inf etc.
        out, grads = run(*args, "cython", nonlinearity)
        ref_out, ref_grads = run(*args, "numpy", nonlinearity)

    tol = SAME_DTYPE_TOL[dtype]
    assert_close(out, ref_out, tol["forward"], "out")
    for field in GRAD_NAMES:
        assert_close(getattr(grads, field), getattr(ref_grads, field), tol["grad"], field)
    if np.isnan(value):  # a NaN always reaches some result (an inf may saturate away)
        assert any(np.isnan(a).any() for a in (out, *grads))


@pytest.mark.parametrize("nonlinearity, value, expected",
                         [("tanh", np.inf, 1.0), ("tanh", -np.inf, -1.0),
                          ("relu", np.inf, np.inf), ("relu", -np.inf, 0.0)])
def test_infinite_bias_saturates_its_unit(backend, nonlinearity, value, expected):
    """b_i = +-inf pins unit i at act(+-inf) on every step; the other units stay finite
    unless they read an infinite h (relu), which is the reference's business above."""
    p = make_problem(37, 4, 2, 3, 5)
    b = p.b.copy()
    b[2] = value
    with np.errstate(all="ignore"):
        out, _ = rnnfast.rnn_forward(p.x, p.h0, p.W_xh, p.W_hh, b, nonlinearity=nonlinearity,
                                     backend=backend)
    np.testing.assert_array_equal(out[:, :, 2], np.full((4, 2), expected))


def test_infinite_gradient_with_h0_none_gives_nan_dW_hh_like_the_reference(backend):
    """The smallest case of the h0=None mismatch above, checked against the math directly.

    With h0 = None the reference takes h0 = zeros, so dW_hh = sum_t da_t h_{t-1}^T includes
    da_1 * 0, and da_1 = inf makes it inf * 0 = NaN (IEEE). The contract is "NaN/inf propagate
    exactly as in the reference", so the Cython backend must give NaN too.
    """
    x, W = np.ones((1, 1, 1)), np.ones((1, 1))
    _, cache = rnnfast.rnn_forward(x, None, W, W, None, backend=backend)
    with np.errstate(all="ignore"):
        grads = rnnfast.rnn_backward(np.full((1, 1, 1), np.inf), cache)
    assert np.isnan(grads.dW_hh).all()
