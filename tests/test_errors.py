"""Every way to call rnn_forward / rnn_backward wrongly raises the right error, early.

dtype problems raise TypeError, shape and value problems ValueError; each message names the
argument and says what was expected and what was given. The base problem has T=4, B=3, D=2,
H=5, all different, so a message that names a size names one dimension only.
"""
import re

import numpy as np
import pytest

import rnnfast
from rnnfast._kernels import backend as _cython_backend
from rnnfast import reference
from rnn_helpers import make_problem

T, B, D, H = 4, 3, 2, 5
BACKENDS = ["cython", "numpy"]
MODULES = {"cython": _cython_backend, "numpy": reference}


def base(dtype=np.float64):
    """Valid arguments of rnn_forward, as a dict."""
    p = make_problem(40, T, B, D, H, dtype)
    return {"x": p.x, "h0": p.h0, "W_xh": p.W_xh, "W_hh": p.W_hh, "b": p.b}


def forward(args, **kwargs):
    return rnnfast.rnn_forward(args["x"], args["h0"], args["W_xh"], args["W_hh"], args["b"],
                               **kwargs)


def check_message(excinfo, *fragments):
    """Every fragment (an argument name, a shape, a size) appears in the message."""
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ---------------------------------------------------------------------------------------------
# rnn_forward: number of dimensions.
# ---------------------------------------------------------------------------------------------
WRONG_NDIM = [
    ("x", np.ones((B, D))),
    ("x", np.ones((T, B, D, 1))),
    ("h0", np.ones(H)),
    ("h0", np.ones((1, B, H))),
    ("W_xh", np.ones(H * D)),
    ("W_xh", np.ones((1, H, D))),
    ("W_hh", np.ones(H)),
    ("W_hh", np.ones((1, H, H))),
    ("b", np.ones((1, H))),
    ("b", np.float64(1.0)),  # 0-D
]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("name, value", WRONG_NDIM,
                         ids=[f"{n}-{np.ndim(v)}D" for n, v in WRONG_NDIM])
def test_wrong_number_of_dimensions(name, value, backend_name):
    args = base()
    args[name] = value
    with pytest.raises(ValueError, match=rf"^{name} must be") as excinfo:
        forward(args, backend=backend_name)
    expected_ndim = {"x": 3, "h0": 2, "W_xh": 2, "W_hh": 2, "b": 1}[name]
    check_message(excinfo, f"{expected_ndim}-D", f"{np.ndim(value)}-D", str(np.shape(value)))


# ---------------------------------------------------------------------------------------------
# rnn_forward: shapes that do not fit together.
# (argument, wrong shape, the dimension's label, expected size, given size)
# ---------------------------------------------------------------------------------------------
MISMATCHED = [
    ("W_hh", (H, H + 1), "H", H, H + 1),  # not square
    ("W_xh", (H + 1, D), "H", H, H + 1),  # H differs from W_hh's
    ("W_xh", (H, D + 2), "D", D, D + 2),  # D differs from x's
    ("h0", (B + 1, H), "B", B, B + 1),
    ("h0", (B, H - 1), "H", H, H - 1),
    ("b", (H + 3,), "H", H, H + 3),
]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("name, shape, label, want, got", MISMATCHED,
                         ids=[f"{m[0]}-{m[2]}" for m in MISMATCHED])
def test_mismatched_shapes(name, shape, label, want, got, backend_name):
    args = base()
    args[name] = np.ones(shape)
    with pytest.raises(ValueError, match=rf"^{name} must have shape") as excinfo:
        forward(args, backend=backend_name)
    check_message(excinfo, str(shape), f"{label}, is {got}, expected {want}")


def test_mismatch_in_x_is_reported_against_the_weights():
    """x fixes T, B, D; a wrong D in x shows up as W_xh not fitting x, naming both sizes."""
    args = base()
    args["x"] = np.ones((T, B, D + 1))
    with pytest.raises(ValueError, match=r"^W_xh must have shape") as excinfo:
        forward(args)
    check_message(excinfo, f"D, is {D}, expected {D + 1}")


# ---------------------------------------------------------------------------------------------
# rnn_forward: a dimension of size 0.
# ---------------------------------------------------------------------------------------------
ZERO_SIZED = [
    ("x", {"x": np.ones((0, B, D))}, "T"),
    ("x", {"x": np.ones((T, 0, D))}, "B"),
    ("x", {"x": np.ones((T, B, 0)), "W_xh": np.ones((H, 0))}, "D"),
    ("W_hh", {"W_hh": np.ones((0, 0)), "W_xh": np.ones((0, D)), "h0": None, "b": None}, "H"),
    ("h0", {"h0": np.ones((B, 0))}, "H"),
    ("b", {"b": np.ones(0)}, "H"),
]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("name, changes, label", ZERO_SIZED,
                         ids=[f"{z[0]}-{z[2]}=0" for z in ZERO_SIZED])
def test_zero_sized_dimension(name, changes, label, backend_name):
    args = base()
    args.update(changes)
    with pytest.raises(ValueError, match=rf"^{name} has {label} = 0"):
        forward(args, backend=backend_name)


@pytest.mark.parametrize("name, changes, label", [
    ("x", {"x": np.broadcast_to(1.0, (2**31, B, D))}, "T"),
    ("x", {"x": np.broadcast_to(1.0, (T, B, 2**31)), "W_xh": np.ones((H, 1))}, "D"),
    ("b", {"b": np.broadcast_to(1.0, (2**31,))}, "H"),
], ids=["x-T", "x-D", "b-H"])
def test_dimension_beyond_a_blas_int(name, changes, label):
    """Sizes are passed to BLAS as 32-bit ints. (Zero-stride views: nothing big is allocated,
    and the check must come before any copy.)"""
    args = base()
    args.update(changes)
    with pytest.raises(ValueError, match=rf"^{name} has {label} = {2**31} .*largest supported"):
        forward(args)


# ---------------------------------------------------------------------------------------------
# rnn_forward: dtypes.
# ---------------------------------------------------------------------------------------------
BAD_DTYPES = [np.int32, np.int64, np.bool_, np.complex64, np.complex128, np.float16, object]
if np.dtype(np.longdouble) != np.dtype(np.float64):
    BAD_DTYPES.append(np.longdouble)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["x", "h0", "W_xh", "W_hh", "b"])
def test_non_floating_dtype(name, dtype, backend_name):
    args = base()
    args[name] = args[name].astype(dtype)
    with pytest.raises(TypeError, match=rf"^{name} must have dtype float32 or float64") as ei:
        forward(args, backend=backend_name)
    check_message(ei, str(np.dtype(dtype)))


@pytest.mark.parametrize("value", [
    pytest.param("abc", id="str"),
    pytest.param([["a", "b"]], id="list_of_str"),
    pytest.param([[1, 2], [3, 4]], id="list_of_int"),
    pytest.param([[True, False]], id="list_of_bool"),
    pytest.param(np.array([["1.0", "2.0"]]), id="str_array"),
    pytest.param(np.array([[b"1", b"2"]]), id="bytes_array"),
])
def test_non_floating_values(value):
    args = base()
    args["W_hh"] = value
    with pytest.raises(TypeError, match=r"^W_hh must have dtype float32 or float64"):
        forward(args)


def test_ragged_list_is_a_value_error():
    args = base()
    args["x"] = [[[1.0, 2.0]], [[1.0]]]
    with pytest.raises(ValueError, match=r"^x could not be converted"):
        forward(args)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("odd_one", ["x", "h0", "W_xh", "W_hh", "b"])
@pytest.mark.parametrize("dtype, other", [(np.float64, np.float32), (np.float32, np.float64)],
                         ids=["float64_among_float32", "float32_among_float64"])
def test_mixed_dtypes(odd_one, dtype, other, backend_name):
    args = base(other)
    args[odd_one] = args[odd_one].astype(dtype)
    with pytest.raises(TypeError, match=r"share one dtype") as excinfo:
        forward(args, backend=backend_name)
    check_message(excinfo, f"{odd_one} is {np.dtype(dtype)}", f"is {np.dtype(other)}")


def test_list_among_float32_arrays_is_a_mixed_dtype():
    """Lists become float64: with float32 arrays that is a mix, not a silent cast."""
    args = base(np.float32)
    args["b"] = args["b"].tolist()
    with pytest.raises(TypeError, match=r"b is float64"):
        forward(args)


# ---------------------------------------------------------------------------------------------
# rnn_forward: choices.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["sigmoid", "Tanh", "", None, 1, ("tanh",)],
                         ids=["sigmoid", "Tanh", "empty", "None", "int", "tuple"])
def test_unknown_nonlinearity_lists_the_choices(value):
    with pytest.raises(ValueError, match=r"^nonlinearity must be one of") as excinfo:
        forward(base(), nonlinearity=value)
    check_message(excinfo, "'tanh'", "'relu'", repr(value))


@pytest.mark.parametrize("value", ["torch", "Cython", "", None, 0],
                         ids=["torch", "Cython", "empty", "None", "int"])
def test_unknown_backend_lists_the_choices(value):
    with pytest.raises(ValueError, match=r"^backend must be one of") as excinfo:
        forward(base(), backend=value)
    check_message(excinfo, "'cython'", "'numpy'", repr(value))


def test_options_are_keyword_only():
    args = base()
    with pytest.raises(TypeError):
        rnnfast.rnn_forward(args["x"], args["h0"], args["W_xh"], args["W_hh"], args["b"], "relu")


# ---------------------------------------------------------------------------------------------
# rnn_backward: dout, dh_n and cache that do not fit.
# ---------------------------------------------------------------------------------------------
@pytest.fixture(params=BACKENDS)
def cache64(request):
    """A float64 cache from each backend."""
    _, cache = forward(base(), backend=request.param)
    return cache


BAD_DOUT = [
    ("T", np.ones((T + 1, B, H)), f"T, is {T + 1}, expected {T}"),
    ("B", np.ones((T, B - 1, H)), f"B, is {B - 1}, expected {B}"),
    ("H", np.ones((T, B, H + 2)), f"H, is {H + 2}, expected {H}"),
]


@pytest.mark.parametrize("label, dout, fragment", BAD_DOUT, ids=[d[0] for d in BAD_DOUT])
def test_dout_of_the_wrong_shape(cache64, label, dout, fragment):
    with pytest.raises(ValueError, match=r"^dout must have shape") as excinfo:
        rnnfast.rnn_backward(dout, cache64)
    check_message(excinfo, str((T, B, H)), str(dout.shape), fragment)


@pytest.mark.parametrize("dout", [np.ones((B, H)), np.ones((T, B, H, 1)), np.ones(H)],
                         ids=["2D", "4D", "1D"])
def test_dout_of_the_wrong_ndim(cache64, dout):
    with pytest.raises(ValueError, match=r"^dout must be 3-D"):
        rnnfast.rnn_backward(dout, cache64)


def test_dout_with_a_zero_dimension(cache64):
    with pytest.raises(ValueError, match=r"^dout has B = 0"):
        rnnfast.rnn_backward(np.ones((T, 0, H)), cache64)


BAD_DH_N = [
    ("B", np.ones((B + 1, H)), f"B, is {B + 1}, expected {B}"),
    ("H", np.ones((B, H - 1)), f"H, is {H - 1}, expected {H}"),
]


@pytest.mark.parametrize("label, dh_n, fragment", BAD_DH_N, ids=[d[0] for d in BAD_DH_N])
def test_dh_n_of_the_wrong_shape(cache64, label, dh_n, fragment):
    with pytest.raises(ValueError, match=r"^dh_n must have shape") as excinfo:
        rnnfast.rnn_backward(np.ones((T, B, H)), cache64, dh_n=dh_n)
    check_message(excinfo, str((B, H)), str(dh_n.shape), fragment)


@pytest.mark.parametrize("dh_n", [np.ones(H), np.ones((T, B, H))], ids=["1D", "3D"])
def test_dh_n_of_the_wrong_ndim(cache64, dh_n):
    with pytest.raises(ValueError, match=r"^dh_n must be 2-D"):
        rnnfast.rnn_backward(np.ones((T, B, H)), cache64, dh_n=dh_n)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("forward_dtype, wrong", [(np.float64, np.float32),
                                                  (np.float32, np.float64)],
                         ids=["float32_into_float64", "float64_into_float32"])
@pytest.mark.parametrize("name", ["dout", "dh_n"])
def test_gradient_of_another_float_dtype(name, forward_dtype, wrong, backend_name):
    _, cache = forward(base(forward_dtype), backend=backend_name)
    grads = {"dout": np.ones((T, B, H), forward_dtype), "dh_n": np.ones((B, H), forward_dtype)}
    grads[name] = grads[name].astype(wrong)
    with pytest.raises(TypeError, match=rf"^{name} must have the dtype of the forward pass"
                       ) as excinfo:
        rnnfast.rnn_backward(grads["dout"], cache, dh_n=grads["dh_n"])
    check_message(excinfo, str(np.dtype(forward_dtype)), str(np.dtype(wrong)))


@pytest.mark.parametrize("dtype", [np.int64, np.complex128, np.float16, np.bool_, object],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["dout", "dh_n"])
def test_gradient_of_a_non_floating_dtype(cache64, name, dtype):
    grads = {"dout": np.ones((T, B, H)), "dh_n": np.ones((B, H))}
    grads[name] = grads[name].astype(dtype)
    with pytest.raises(TypeError, match=rf"^{name} must have dtype float32 or float64"):
        rnnfast.rnn_backward(grads["dout"], cache64, dh_n=grads["dh_n"])


@pytest.mark.parametrize("cache", [None, (), {}, "cache", np.ones((T, B, H))],
                         ids=["None", "tuple", "dict", "str", "array"])
def test_cache_of_the_wrong_type(cache):
    with pytest.raises(TypeError, match=r"^cache must be the RNNCache"):
        rnnfast.rnn_backward(np.ones((T, B, H)), cache)


def test_the_cache_cannot_be_edited_or_built_by_hand(cache64):
    """The kernels trust the arrays in a cache: no field can be replaced or deleted, no cache
    built from parts (nor an instance of a subclass) reaches them, and the cache still gives
    its gradients after every refused edit."""
    dout = np.ones((T, B, H))
    expected = rnnfast.rnn_backward(dout, cache64)
    names = rnnfast.RNNCache.FIELDS
    for name in names:  # (the wording of the message depends on the Python version)
        with pytest.raises(AttributeError, match=f"'{name}'"):
            setattr(cache64, name, None)
        with pytest.raises(AttributeError, match=f"'{name}'"):
            delattr(cache64, name)
        with pytest.raises(AttributeError):  # no new attributes either
            setattr(cache64, name + "_edited", None)
    fields = [getattr(cache64, name) for name in names]
    with pytest.raises(TypeError, match=r"^an RNNCache is made by rnn_forward only"):
        rnnfast.RNNCache(*fields)

    class Forged(rnnfast.RNNCache):
        __slots__ = ()

        def __init__(self):
            pass

    with pytest.raises(TypeError, match=r"^cache must be the RNNCache returned by rnn_forward; "
                                        r"got Forged"):
        rnnfast.rnn_backward(dout, Forged())
    for name, g, e in zip(rnnfast.RNNGrads._fields, rnnfast.rnn_backward(dout, cache64),
                          expected):
        np.testing.assert_array_equal(g, e, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Failures happen before any work, and leave nothing behind.
# ---------------------------------------------------------------------------------------------
def forbid(monkeypatch, backend, function):
    """Make the backend's `function` fail the test if it is ever reached."""
    def reached(*args, **kwargs):
        pytest.fail(f"{backend}.{function} ran although the call was invalid")

    monkeypatch.setattr(MODULES[backend], function, reached)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("name, shape, label, want, got", MISMATCHED,
                         ids=[f"{m[0]}-{m[2]}" for m in MISMATCHED])
def test_invalid_forward_raises_before_the_backend_runs(name, shape, label, want, got,
                                                        backend_name, monkeypatch):
    forbid(monkeypatch, backend_name, "forward")
    args = base()
    args[name] = np.ones(shape)
    with pytest.raises(ValueError, match=name):
        forward(args, backend=backend_name)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("bad", ["dh_n_shape", "dh_n_dtype", "dout_shape", "dout_dtype"])
def test_invalid_backward_raises_before_the_backend_runs(bad, backend_name, monkeypatch):
    p = make_problem(41, T, B, D, H)
    out, cache = rnnfast.rnn_forward(*p.args, backend=backend_name)
    expected = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n)
    out_before = out.copy()

    dout, dh_n = p.dout, p.dh_n
    if bad == "dh_n_shape":
        dh_n = np.ones((B, H + 1))
    elif bad == "dh_n_dtype":
        dh_n = p.dh_n.astype(np.float32)
    elif bad == "dout_shape":
        dout = np.ones((T, B, H + 1))
    else:
        dout = p.dout.astype(np.float32)
    with monkeypatch.context() as mp:
        forbid(mp, backend_name, "backward")
        name = "dh_n" if bad.startswith("dh_n") else "dout"
        with pytest.raises((ValueError, TypeError), match=rf"^{name} must"):
            rnnfast.rnn_backward(dout, cache, dh_n=dh_n)

    # Nothing was left behind: the cache still gives the same gradients, out is unchanged.
    np.testing.assert_array_equal(out, out_before)
    again = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n)
    for name, g, e in zip(rnnfast.RNNGrads._fields, again, expected):
        np.testing.assert_array_equal(g, e, err_msg=name)


def test_message_names_the_first_bad_dimension_only():
    """A shape wrong in two dimensions is reported at the first, without ambiguity."""
    args = base()
    args["h0"] = np.ones((B + 1, H + 1))
    with pytest.raises(ValueError, match=re.escape(f"B, is {B + 1}, expected {B}")):
        forward(args)
