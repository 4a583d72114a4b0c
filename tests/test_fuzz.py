"""Fuzzing the public API (hypothesis): every call either returns the reference result or raises
a documented error (TypeError, ValueError, MemoryError; RuntimeError for a backward before any
forward) whose message names the argument at fault; none crashes, hangs or returns garbage.

Each example starts from a valid call and then, half of the time, spoils one argument in one way
(the expected error and the names its message may give are then known):

- dtype: integers, bool, float16, complex, object, strings, bytes; the other float width;
- dimensions: one too many or too few, a dimension of size 0, a size that disagrees with another
  argument; ragged nested lists; for integers, values out of range;
- scalars and options: wrong types, out-of-range values, NaN and inf where a number is expected.

Valid calls present every array in a random layout (contiguous, strided, negative strides,
Fortran order, the other byte order, read-only, a zero-stride broadcast, a Python list) and may
hold NaN and inf. Their results must be bit-identical to the same call on contiguous copies, and
agree with the NumPy reference (rnn_forward/rnn_backward with backend="numpy") or a formula
computed here. Huge shapes are zero-stride views of one element: they must raise MemoryError
naming the size before anything is allocated (an address-space limit set around those tests
turns any large allocation into a failure instead of a burden on the machine).

The hypothesis profile is derandomized (the same examples on every run, in CI too), has no
deadline and keeps no example database; the whole file runs in about ten seconds (1760 drawn
examples, and each bug found once more as a plain test at the end).
"""
import contextlib
import math
import resource
import warnings

import numpy as np
import pytest
from hypothesis import assume, event, given, note, settings
from hypothesis import strategies as st

import rnnfast
from rnnfast.train import optim
from rnnfast.utils.memory import memory_limit
from rnnfast.utils.validation import MAX_DIM
from rnn_helpers import (GRAD_NAMES, PATHS, SAME_DTYPE_TOL, assert_close, force_path,
                         make_dynamics, make_problem)


# NaN and inf inputs make NumPy warn (inf - inf, NaN in a matmul): expected here.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def fuzz(max_examples):
    """The profile: reproducible (CI sees the same examples), no deadline, no database."""
    return settings(max_examples=max_examples, derandomize=True, deadline=None, database=None)


FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# Every dtype that is not float32/float64: integers, bool, half, complex, object, strings, bytes.
NON_FLOAT_DTYPES = [np.int8, np.int32, np.int64, np.uint8, np.uint64, np.bool_, np.float16,
                    np.complex64, np.complex128, object, "U8", "S8"]
if np.dtype(np.longdouble) != np.dtype(np.float64):
    NON_FLOAT_DTYPES.append(np.longdouble)
NON_INT_DTYPES = [np.float32, np.float64, np.bool_, np.complex128, object, "U8"]
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
LAYOUTS = ("contiguous", "strided", "reversed", "fortran", "byteswapped", "readonly",
           "broadcast", "list")
NON_FINITE = (np.nan, np.inf, -np.inf)
# Not numbers at all, or numbers of the wrong kind, for scalar arguments.
NOT_INTS = [2.5, 3.0, "3", None, True, [3], np.float64(2.0), 1 + 2j]
NOT_REALS = ["0.5", None, True, [0.5], 1 + 2j, np.array([0.5, 0.5])]


# ---------------------------------------------------------------------------------------------
# Helpers: presenting a valid array in another layout, spoiling one, checking an error.
# ---------------------------------------------------------------------------------------------
def present(a, layout):
    """An array_like with the values of a (a zero-stride broadcast repeats a's first element)."""
    a = np.asarray(a)
    if layout == "strided":  # every second element of a bigger array, along every axis
        big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
        every_other = tuple(slice(None, None, 2) for _ in a.shape)
        big[every_other] = a
        return big[every_other]
    if layout == "reversed":  # every stride negative
        flip = tuple(slice(None, None, -1) for _ in a.shape)
        return a[flip].copy()[flip]
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "byteswapped":
        return a.astype(a.dtype.newbyteorder())
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if layout == "broadcast":
        return np.broadcast_to(a.flat[0], a.shape)
    if layout == "list" and a.dtype in (np.float64, np.int64):  # lists come back as these
        return a.tolist()
    return a


def plain(value):
    """The C-contiguous native-order array a call receives for value (the oracle's input)."""
    if value is None:
        return None
    a = np.asarray(value)
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))


class Lazy:
    """A spoiled value, made only if hypothesis picks it (most examples spoil nothing)."""

    def __init__(self, make):
        self.make = make


def spoilers(a, name, bound, *, float_kind=True):
    """Ways to spoil array argument ``name`` (value a): a list of (label, value, error, names).

    bound maps an axis of a to the names of the other arguments that fix its size (only such
    axes can be mismatched); the error's message must name ``name`` or one of them.
    """
    a = np.asarray(a)
    bad = []
    for dtype in (NON_FLOAT_DTYPES if float_kind else NON_INT_DTYPES):
        bad.append((f"dtype {np.dtype(dtype)}", Lazy(lambda dtype=dtype: a.astype(dtype)),
                    TypeError, {name}))
    bad.append(("one more dimension", Lazy(lambda: a[..., None]), ValueError, {name}))
    bad.append(("one dimension fewer", Lazy(lambda: a[0] if a.ndim > 1 else a[0, ...]),
                ValueError, {name}))
    for axis in range(a.ndim):
        index = tuple(slice(0, 0) if i == axis else slice(None) for i in range(a.ndim))
        bad.append((f"axis {axis} of size 0", Lazy(lambda index=index: a[index]), ValueError,
                    {name}))
    for axis, names in bound.items():
        bigger = Lazy(lambda axis=axis: np.concatenate([a, a.take([0], axis=axis)], axis=axis))
        bad.append((f"axis {axis} one too long", bigger, ValueError, {name} | set(names)))
    if a.ndim >= 2:
        ragged = Lazy(lambda: [a[0].tolist(), a[0].tolist()[:-1] or [[]]])
        bad.append(("a ragged list", ragged, ValueError, {name}))
    return bad


@contextlib.contextmanager
def raises_naming(error, names):
    """The block raises ``error`` (exactly that class or a subclass) naming one of names."""
    with pytest.raises(error) as excinfo:
        yield excinfo
    message = str(excinfo.value)
    assert any(name in message for name in names), (
        f"{error.__name__} message names none of {sorted(names)}: {message!r}")


def spoil_one(data, candidates):
    """None (a valid call) half of the time, else one of candidates, drawn by hypothesis."""
    if not candidates or not data.draw(st.booleans(), label="spoil"):
        return None
    fault = data.draw(st.sampled_from(candidates), label="fault")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # NaN to integers, complex to real
        return tuple(item.make() if isinstance(item, Lazy) else item for item in fault)


def with_non_finite(data, array, label):
    """array, or a copy with a few entries set to NaN / inf / -inf (hypothesis chooses)."""
    if array is None or not data.draw(st.integers(0, 3), label=f"{label} non-finite?") == 0:
        return array
    array = array.copy()
    for _ in range(data.draw(st.integers(1, 2), label=f"{label} how many")):
        index = data.draw(st.integers(0, array.size - 1), label=f"{label} where")
        array.flat[index] = data.draw(st.sampled_from(NON_FINITE), label=f"{label} value")
    return array


def assert_identical(actual, expected, what):
    """Bit-identical (NaN where NaN): the layout of the inputs must not matter at all."""
    if expected is None:
        assert actual is None, what
        return
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    np.testing.assert_array_equal(actual, expected, err_msg=what)


def dims(max_value=5):
    return st.integers(1, max_value)


# ---------------------------------------------------------------------------------------------
# rnn_forward and rnn_backward, both backends, every step path, lengths, n_threads.
# ---------------------------------------------------------------------------------------------
FORWARD_BOUND = {  # axis -> the other arguments that fix its size
    "x": {1: ["h0", "lengths"], 2: ["W_xh"]},
    "W_hh": {1: ["W_hh (square)", "H"]},
    "W_xh": {0: ["W_hh"], 1: ["x", "D"]},
    "h0": {0: ["x"], 1: ["W_hh"]},
    "b": {0: ["W_hh"]},
}
THREADS = [None, 1, 2, 3, 2**40]


def draw_rnn_call(data):
    """A valid rnn_forward + rnn_backward call: (problem, options), drawn by hypothesis."""
    T, B, D = (data.draw(dims(), label=label) for label in "TBD")
    H = data.draw(dims(20), label="H")  # past one 16-column block of the small-step kernel
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    p = make_problem(data.draw(st.integers(0, 2**32 - 1), label="seed"), T, B, D, H, dtype,
                     bias=data.draw(st.booleans(), label="bias"),
                     h0=data.draw(st.booleans(), label="h0"),
                     dh_n=data.draw(st.booleans(), label="dh_n"))
    lengths = None
    if data.draw(st.booleans(), label="lengths?"):
        lengths = np.array(data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B),
                                     label="lengths"))
    options = dict(
        nonlinearity=data.draw(st.sampled_from(["tanh", "relu"]), label="nonlinearity"),
        backend=data.draw(st.sampled_from(["cython", "numpy"]), label="backend"),
        n_threads=data.draw(st.sampled_from(THREADS), label="n_threads"),
        lengths=lengths,
    )
    # A leak (a number, or per unit in any layout) and the two noises, or none of them.
    leak = data.draw(st.sampled_from(["none", "number", "per-unit"]), label="leak")
    if leak != "none":
        dynamics = make_dynamics(data.draw(st.integers(0, 2**16), label="leak seed"), H, T, B,
                                 dtype, leak="scalar" if leak == "number" else "per-unit",
                                 noise=data.draw(st.booleans(), label="noise"),
                                 state_noise=data.draw(st.booleans(), label="state_noise"))
        for name, value in dynamics.items():
            if isinstance(value, np.ndarray):
                layouts = [layout for layout in LAYOUTS if layout != "list"]
                value = present(value, data.draw(st.sampled_from(layouts), label=name))
            options[name] = value
    path = data.draw(st.sampled_from(PATHS), label="path")
    return p, options, path


def forward_and_backward(args, dout, dh_n, options, path):
    with pytest.MonkeyPatch.context() as mp:
        force_path(mp, path)
        out, cache = rnnfast.rnn_forward(*args, **options)
        grads = rnnfast.rnn_backward(dout, cache, dh_n=dh_n, n_threads=options["n_threads"])
    return out, grads


@fuzz(200)
@given(data=st.data())
def test_rnn_forward_and_backward(data):
    p, options, path = draw_rnn_call(data)
    names = ("x", "h0", "W_xh", "W_hh", "b")
    values = dict(zip(names, p.args))
    values = {name: with_non_finite(data, value, name) for name, value in values.items()}
    dout, dh_n = with_non_finite(data, p.dout, "dout"), p.dh_n
    if p.x.dtype == np.float32:  # lists would be float64: a mix of dtypes, tested below
        layouts = st.sampled_from([layout for layout in LAYOUTS if layout != "list"])
    else:
        layouts = st.sampled_from(LAYOUTS)
    given_values = {name: None if value is None else present(value, data.draw(layouts,
                                                                               label=name))
                    for name, value in values.items()}
    given_dout = present(dout, data.draw(layouts, label="dout"))
    given_dh_n = None if dh_n is None else present(dh_n, data.draw(layouts, label="dh_n"))

    other = np.float64 if p.x.dtype == np.float32 else np.float32
    candidates = []
    for name, value in values.items():
        bound = dict(FORWARD_BOUND[name])
        if name == "x" and values["h0"] is None and options["lengths"] is None:
            del bound[1]  # nothing else fixes B
        if value is not None:
            candidates += [(name,) + s for s in spoilers(value, name, bound)]
            candidates.append((name, "the other float width", value.astype(other), TypeError,
                               {name}))
    T, B = p.x.shape[:2]
    candidates += [("lengths", "floats", np.full(B, 1.0), TypeError, {"lengths"}),
                   ("lengths", "0", np.zeros(B, int), ValueError, {"lengths"}),
                   ("lengths", "T + 1", np.full(B, T + 1), ValueError, {"lengths"}),
                   ("lengths", "B + 1 of them", np.ones(B + 1, int), ValueError, {"lengths"}),
                   ("lengths", "2-D", np.ones((B, 1), int), ValueError, {"lengths"}),
                   ("n_threads", "0", 0, ValueError, {"n_threads"}),
                   ("n_threads", "a float", 1.5, TypeError, {"n_threads"}),
                   ("n_threads", "a string", "2", TypeError, {"n_threads"}),
                   ("nonlinearity", "unknown", "sigmoid", ValueError, {"nonlinearity"}),
                   ("backend", "unknown", "torch", ValueError, {"backend"})]
    H = p.W_hh.shape[0]
    candidates += [("leak",) + s for s in spoilers(np.full(H, 0.5, p.x.dtype), "leak",
                                                   {0: ["W_hh"]})]
    candidates += [("leak", label, value, error, {"leak"}) for label, value, error in [
        ("0", 0.0, ValueError), ("above 1", 1.5, ValueError), ("NaN", np.nan, ValueError),
        ("-inf", -np.inf, ValueError), ("NaN in one unit", np.r_[np.full(H - 1, 0.5), np.nan]
                                        .astype(p.x.dtype), ValueError),
        ("the other float width", np.full(H, 0.5, other), TypeError),
        ("a string", "0.5", TypeError), ("a bool", True, TypeError), ("None", None, TypeError)]]
    for name in ("noise", "state_noise"):
        candidates += [(name,) + s for s in spoilers(np.ones((T, B, H), p.x.dtype), name,
                                                     {0: ["x"], 1: ["x"], 2: ["W_hh"]})]
        candidates.append((name, "the other float width", np.ones((T, B, H), other), TypeError,
                           {name}))
    candidates += [("need_grad", label, value, TypeError, {"need_grad"})
                   for label, value in [("an int", 1), ("a string", "yes"), ("None", None)]]
    fault = spoil_one(data, candidates)
    if fault is not None:
        name, label, bad, error, named = fault
        note(f"spoiled {name}: {label}")
        args = dict(given_values)
        options = dict(options)
        if name in args:
            args[name] = bad
        else:
            options[name] = bad
        with raises_naming(error, named):
            rnnfast.rnn_forward(*args.values(), **options)
        return

    out, grads = forward_and_backward(given_values.values(), given_dout, given_dh_n,
                                      options, path)
    plain_args = [plain(v) for v in given_values.values()]
    expected_out, expected_grads = forward_and_backward(plain_args, plain(given_dout),
                                                        plain(given_dh_n), options, path)
    reference = forward_and_backward(plain_args, plain(given_dout), plain(given_dh_n),
                                     dict(options, backend="numpy"), path)
    assert_identical(out, expected_out, "out")
    for name in GRAD_NAMES:
        assert_identical(getattr(grads, name), getattr(expected_grads, name), name)
    tol = SAME_DTYPE_TOL[p.x.dtype.type]
    assert_close(out, reference[0], tol["forward"], "out against the reference")
    for name in GRAD_NAMES:
        if getattr(grads, name) is not None:
            assert_close(getattr(grads, name), getattr(reference[1], name), tol["grad"], name)


@fuzz(100)
@given(data=st.data())
def test_rnn_backward_arguments(data):
    p, options, path = draw_rnn_call(data)
    with pytest.MonkeyPatch.context() as mp:
        force_path(mp, path)
        out, cache = rnnfast.rnn_forward(*p.args, **options)
    other = np.float64 if p.x.dtype == np.float32 else np.float32
    candidates = [("dout",) + s for s in spoilers(p.dout, "dout", {0: ["T"], 1: ["B"], 2: ["H"]})]
    candidates.append(("dout", "the other float width", p.dout.astype(other), TypeError,
                       {"dout"}))
    dh_n = p.dh_n if p.dh_n is not None else np.ones(out.shape[1:], p.x.dtype)
    candidates += [("dh_n",) + s for s in spoilers(dh_n, "dh_n", {0: ["B"], 1: ["H"]})]
    candidates += [("n_threads", "negative", -1, ValueError, {"n_threads"}),
                   ("n_threads", "bool", True, TypeError, {"n_threads"})]
    # Caches that rnn_forward did not return: other objects, its fields in a tuple or a dict,
    # the None of a forward pass without need_grad (an RNNCache itself cannot be edited or
    # built by hand: test_the_cache_cannot_be_edited_or_built_by_hand).
    fields = {name: getattr(cache, name) for name in rnnfast.RNNCache.FIELDS}
    for label, bad in [("a tuple", tuple(fields.values())), ("None", None), ("a dict", fields)]:
        candidates.append(("cache", label, bad, TypeError, {"cache"}))
    fault = spoil_one(data, candidates)
    arguments = {"dout": present(p.dout, data.draw(st.sampled_from(LAYOUTS[:-1]), label="dout")),
                 "cache": cache, "dh_n": p.dh_n, "n_threads": options["n_threads"]}
    if fault is None:
        with pytest.MonkeyPatch.context() as mp:
            force_path(mp, path)
            grads = rnnfast.rnn_backward(**arguments)
            expected = rnnfast.rnn_backward(plain(arguments["dout"]), cache, p.dh_n,
                                            n_threads=options["n_threads"])
        for name in GRAD_NAMES:
            assert_identical(getattr(grads, name), getattr(expected, name), name)
        return
    name, label, bad, error, named = fault
    note(f"spoiled {name}: {label}")
    arguments[name] = bad
    with raises_naming(error, named):
        rnnfast.rnn_backward(**arguments)


# ---------------------------------------------------------------------------------------------
# Huge shapes: zero-stride views of one element stand for terabytes.
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def address_space_cap():
    """Cap this process's address space at 4 GB above its current size within the block.

    The calls below must refuse huge requests before allocating; should one get through, NumPy
    then raises its own MemoryError (which the tests reject: it does not say "would allocate")
    instead of the process filling the machine's memory.
    """
    with open("/proc/self/status") as file:
        size_kb = next(int(line.split()[1]) for line in file if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size_kb * 1024 + 4 * 2**30
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


HUGE = [10**6, 2**31 - 1]
SIZES = st.sampled_from([1, 2, 3] + HUGE)
SMALL_BYTES = 64 * 2**20  # calls whose every buffer fits in this are run


def huge_view(shape, dtype=np.float32, value=0.5):
    """A read-only zero-stride view of one element with any shape NumPy can index."""
    elements = math.prod(shape)
    assume(elements * np.dtype(dtype).itemsize < 2**62)  # beyond, NumPy cannot make the view
    return np.broadcast_to(np.asarray(value, dtype), shape)


def expected_outcome(bytes_at_least, bytes_at_most):
    """"memory" when the request surely exceeds this machine, "run" when it is small; calls in
    between (they could run, but would take gigabytes) are not drawn."""
    limit = memory_limit()[0]
    if bytes_at_least > limit:
        event("too big: MemoryError")
        return "memory"
    assume(bytes_at_most <= SMALL_BYTES)
    event("small enough: run")
    return "run"


@contextlib.contextmanager
def raises_memory_error(caller):
    with raises_naming(MemoryError, {f"{caller} would allocate"}), address_space_cap():
        yield


@fuzz(100)
@given(T=SIZES, B=SIZES, D=SIZES, H=SIZES, has_h0=st.booleans(), has_bias=st.booleans())
def test_huge_shapes_in_rnn_forward_fail_before_any_work(T, B, D, H,
                                                         has_h0, has_bias):
    x = huge_view((T, B, D))
    W_xh, W_hh = huge_view((H, D), value=0.01), huge_view((H, H), value=0.01)
    h0 = huge_view((B, H)) if has_h0 else None
    b = huge_view((H,)) if has_bias else None
    if T * B > MAX_DIM:
        with raises_naming(ValueError, {"x has T * B"}), address_space_cap():
            rnnfast.rnn_forward(x, h0, W_xh, W_hh, b)
        return
    # out and the contiguous copies of the views at least; at most twice that, plus the
    # step matrix and the per-step counts.
    least = 4 * (T * B * H + T * B * D + H * H + H * D + (B * H if has_h0 else 0))
    if expected_outcome(least, 2 * least + 4 * H * (H + 16) + 8 * T + 4 * B * H) == "memory":
        with raises_memory_error("rnn_forward"):
            rnnfast.rnn_forward(x, h0, W_xh, W_hh, b)
        return
    with address_space_cap():
        out, cache = rnnfast.rnn_forward(x, h0, W_xh, W_hh, b)  # long but thin: cheap
        grads = rnnfast.rnn_backward(huge_view(out.shape), cache)
    assert out.shape == (T, B, H) and np.all(np.isfinite(out))
    assert grads.dx.shape == (T, B, D) and np.all(np.isfinite(grads.dW_hh))


@fuzz(60)
@given(T=SIZES, B=SIZES, D=st.integers(1, 3), H=st.integers(1, 3), V=SIZES,
       kind=st.sampled_from(["RNN.forward", "Linear.forward", "Embedding.forward",
                             "softmax_cross_entropy"]), bidirectional=st.booleans())
def test_huge_shapes_in_the_layers_fail_before_any_work(T, B, D, H, V,
                                                        kind, bidirectional):
    """A small layer, a huge input (or, for the loss, huge logits)."""
    if kind == "RNN.forward":
        layer = rnnfast.RNN(D, H, bidirectional=bidirectional)
        least = 4 * (T * B * D + T * B * H)
        call = lambda: layer.forward(huge_view((T, B, D)))  # noqa: E731
    elif kind == "Linear.forward":
        layer = rnnfast.Linear(D, H)
        least = 4 * (T * B * D + T * B * H)
        call = lambda: layer.forward(huge_view((T, B, D)))  # noqa: E731
    elif kind == "Embedding.forward":
        layer = rnnfast.Embedding(D, H)
        least = 4 * T * B * H + 8 * T * B
        call = lambda: layer.forward(huge_view((T, B), np.int64, 0))  # noqa: E731
    else:
        least = 2 * 4 * T * B * V
        call = lambda: rnnfast.softmax_cross_entropy(  # noqa: E731
            huge_view((T, B, V)), huge_view((T, B), np.int64, 0))
    if expected_outcome(least, 16 * least + 2**20) == "memory":
        with raises_memory_error(kind):
            call()
    else:
        with address_space_cap():
            call()


@fuzz(60)
@given(D=SIZES, H=SIZES, L=st.sampled_from([1, 2, 10**5, 2**31 - 1]),
       kind=st.sampled_from(["RNN", "Linear", "Embedding"]))
def test_huge_layers_fail_before_any_work(D, H, L, kind):
    """Parameters that cannot fit: the constructor refuses before drawing them."""
    if kind == "RNN":
        least = 4 * (H * (D + H) + (L - 1) * 2 * H * H)  # the weights, layer 0 reads D
        call = lambda: rnnfast.RNN(D, H, num_layers=L)  # noqa: E731
    else:
        L = 1
        least = 4 * D * H
        call = lambda: getattr(rnnfast, kind)(D, H)  # noqa: E731
    if expected_outcome(least, 4 * least + 256 * 4 * L) == "memory":
        with raises_memory_error(kind):
            call()
    else:
        with address_space_cap():
            call()


def test_memory_check_comes_before_the_backend(monkeypatch):
    """Nothing runs for a request that cannot fit: the backend is not even called."""
    def fail(*args):
        raise AssertionError("the backend was called")

    for module in rnnfast.functional.BACKENDS.values():
        monkeypatch.setattr(module, "forward", fail)
    x = np.broadcast_to(np.float32(1), (10**6, 1000, 10))
    W_xh, W_hh = np.ones((800, 10), np.float32), np.broadcast_to(np.float32(0), (800, 800))
    with pytest.raises(MemoryError, match=r"^rnn_forward would allocate 3\.2 TB for the states "
                                          r"h0, h_1\.\.h_T \(T \+ 1, B, H\) = "
                                          r"\(1000001, 1000, 800\) float32"):
        rnnfast.rnn_forward(x, None, W_xh, W_hh, None)


# ---------------------------------------------------------------------------------------------
# rnnfast.RNN: constructor, forward, backward, load_state_dict.
# ---------------------------------------------------------------------------------------------
RNN_ARGUMENTS = {  # name: (valid values, [(invalid value, error)])
    "input_size": ([1, 3, np.int64(2)], [(0, ValueError), (-1, ValueError), (2**31, ValueError)]
                   + [(v, TypeError) for v in NOT_INTS]),
    "hidden_size": ([1, 4, np.int32(5)], [(0, ValueError), (-3, ValueError)]
                    + [(v, TypeError) for v in NOT_INTS]),
    "num_layers": ([1, 2], [(0, ValueError)] + [(v, TypeError) for v in NOT_INTS]),
    "nonlinearity": (["tanh", "relu"], [(v, ValueError) for v in ["sigmoid", "", "TANH", None,
                                                                   1]]),
    "bias": ([True, False, np.bool_(True)], [(v, TypeError) for v in [1, 0, "yes", None]]),
    "batch_first": ([False, True], [(v, TypeError) for v in [1, "no", None]]),
    "dropout": ([0, 0.0, 0.3, np.float32(0.5)],
                [(v, ValueError) for v in [1, 1.0, -0.1, math.nan, math.inf]]
                + [(v, TypeError) for v in NOT_REALS]),
    "bidirectional": ([False, True], [(v, TypeError) for v in [1, "yes", None]]),
    "dtype": ([np.float32, np.float64, "float32", np.dtype("f8"), float],
              [(v, TypeError) for v in [np.int32, "int8", np.float16, complex, object, "nope",
                                        None]]),
    "seed": ([None, 0, 7, np.int64(3), np.random.default_rng(1)],
             [(-1, ValueError)] + [(v, TypeError) for v in [1.5, "a", True, [1]]]),
    "n_threads": ([None, 1, 2, np.int32(3), 2**40],
                  [(0, ValueError), (-2, ValueError)] + [(v, TypeError) for v in
                                                         [1.5, "2", True]]),
}


@fuzz(120)
@given(data=st.data())
def test_rnn_constructor(data):
    kwargs = {name: data.draw(st.sampled_from(valid), label=name)
              for name, (valid, _) in RNN_ARGUMENTS.items()}
    kwargs["seed"] = 0 if isinstance(kwargs["seed"], np.random.Generator) else kwargs["seed"]
    candidates = [(name, value, error) for name, (_, invalid) in RNN_ARGUMENTS.items()
                  for value, error in invalid]
    fault = spoil_one(data, candidates)
    if fault is None:
        rnn = rnnfast.RNN(**kwargs)
        assert rnn.dtype in FLOATS and rnn.input_size == int(kwargs["input_size"])
        H = rnn.hidden_size
        for name, array in rnn.parameters().items():
            assert array.dtype == rnn.dtype and np.all(np.abs(array) <= 1 / np.sqrt(H)), name
        return
    name, value, error = fault
    kwargs[name] = value
    with raises_naming(error, {name}):
        rnnfast.RNN(**kwargs)


def draw_layer(data, dtype=None):
    """A small valid RNN layer and the arguments of one forward + backward call on it."""
    config = dict(
        input_size=data.draw(dims(4), label="D"), hidden_size=data.draw(dims(6), label="H"),
        num_layers=data.draw(dims(2), label="L"),
        nonlinearity=data.draw(st.sampled_from(["tanh", "relu"]), label="nonlinearity"),
        bias=data.draw(st.booleans(), label="bias"),
        batch_first=data.draw(st.booleans(), label="batch_first"),
        dropout=data.draw(st.sampled_from([0.0, 0.4]), label="dropout"),
        bidirectional=data.draw(st.booleans(), label="bidirectional"),
        dtype=dtype or data.draw(st.sampled_from([np.float32, np.float64]), label="dtype"),
        seed=data.draw(st.integers(0, 100), label="seed"),
        n_threads=data.draw(st.sampled_from([None, 1, 2]), label="n_threads"))
    training = data.draw(st.booleans(), label="training")
    T, B = data.draw(dims(), label="T"), data.draw(dims(), label="B")
    D, H, L = config["input_size"], config["hidden_size"], config["num_layers"]
    S, width = L * (2 if config["bidirectional"] else 1), H * (2 if config["bidirectional"] else 1)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="values"))
    shape = (B, T) if config["batch_first"] else (T, B)
    call = dict(
        x=rng.standard_normal(shape + (D,)).astype(config["dtype"]),
        h0=rng.standard_normal((S, B, H)).astype(config["dtype"])
        if data.draw(st.booleans(), label="h0?") else None,
        lengths=np.array(data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B),
                                   label="lengths")) if data.draw(st.booleans()) else None,
        dout=rng.standard_normal(shape + (width,)).astype(config["dtype"]),
        dh_n=rng.standard_normal((S, B, H)).astype(config["dtype"])
        if data.draw(st.booleans(), label="dh_n?") else None)
    return config, training, call


def run_layer(config, training, call):
    rnn = rnnfast.RNN(**config).train(training)
    out, h_n = rnn.forward(call["x"], call["h0"], lengths=call["lengths"])
    dx, dh0 = rnn.backward(call["dout"], call["dh_n"])
    return (out, h_n, dx, dh0), rnn.grads


@fuzz(100)
@given(data=st.data())
def test_rnn_forward_and_backward_calls(data):
    config, training, call = draw_layer(data)
    dtype = np.dtype(config["dtype"])
    layouts = st.sampled_from(LAYOUTS if dtype == np.float64 else LAYOUTS[:-1])
    given_call = {name: present(value, data.draw(layouts, label=name))
                  if name != "lengths" and value is not None else value
                  for name, value in call.items()}
    given_call["x"] = with_non_finite(data, plain(given_call["x"]), "x")
    B = call["dout"].shape[0 if config["batch_first"] else 1]
    batch_axis = 0 if config["batch_first"] else 1
    states = (config["num_layers"] * (2 if config["bidirectional"] else 1), B,
              config["hidden_size"])
    candidates = []
    x_bound = {2: ["input_size"]}
    if call["h0"] is not None or call["lengths"] is not None:
        x_bound[batch_axis] = ["h0", "lengths"]
    h0_bound = {0: ["num_directions"], 1: ["B"], 2: ["H"]}
    for name, bound in (("x", x_bound), ("h0", h0_bound)):
        value = call[name] if call[name] is not None else np.ones(states, dtype)
        candidates += [("forward", name, *s) for s in spoilers(value, name, bound)]
    other = np.float64 if dtype == np.float32 else np.float32
    candidates += [("forward", "x", "the other float width", call["x"].astype(other),
                    TypeError, {"x"}),
                   ("forward", "lengths", "floats", np.ones(B), TypeError, {"lengths"}),
                   ("forward", "lengths", "0", np.zeros(B, int), ValueError, {"lengths"}),
                   ("forward", "lengths", "B + 1", np.ones(B + 1, int), ValueError,
                    {"lengths"})]
    out_bound = {0: ["T", "B"], 1: ["T", "B"], 2: ["num_directions * H"]}
    candidates += [("backward", "dout", *s) for s in spoilers(call["dout"], "dout", out_bound)]
    dh_n = call["dh_n"] if call["dh_n"] is not None else np.ones(states, dtype)
    candidates += [("backward", "dh_n", *s)
                   for s in spoilers(dh_n, "dh_n", {0: ["h_n"], 1: ["h_n"], 2: ["h_n"]})]
    fault = spoil_one(data, candidates)
    if fault is not None:
        when, name, label, bad, error, named = fault
        note(f"spoiled {name}: {label}")
        rnn = rnnfast.RNN(**config).train(training)
        if when == "backward":
            rnn.forward(call["x"], call["h0"], lengths=call["lengths"])
        args = dict(call, **{name: bad})
        with raises_naming(error, named):
            if when == "forward":
                rnn.forward(args["x"], args["h0"], lengths=args["lengths"])
            else:
                rnn.backward(args["dout"], args["dh_n"])
        return

    results, grads = run_layer(config, training, given_call)
    expected, expected_grads = run_layer(config, training, {name: plain(value) for name, value
                                                            in given_call.items()})
    for name, actual, wanted in zip(("out", "h_n", "dx", "dh0"), results, expected):
        assert_identical(actual, wanted, name)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        assert_identical(grads[name], expected_grads[name], name)
    if config["num_layers"] == 1 and not config["bidirectional"]:
        check_layer_against_the_reference(config, given_call, results, grads)


def check_layer_against_the_reference(config, call, results, grads):
    """One layer, one direction: the layer is rnn_forward/rnn_backward on the NumPy reference
    (time-major, with b = b_ih + b_hh)."""
    rnn = rnnfast.RNN(**config)
    params = rnn.parameters()
    to_time_major = (lambda a: None if a is None else np.swapaxes(plain(a), 0, 1)) \
        if config["batch_first"] else plain
    b = params["bias_ih_l0"] + params["bias_hh_l0"] if config["bias"] else None
    h0 = None if call["h0"] is None else plain(call["h0"])[0]
    out, cache = rnnfast.rnn_forward(to_time_major(call["x"]), h0, params["weight_ih_l0"],
                                     params["weight_hh_l0"], b,
                                     nonlinearity=config["nonlinearity"], backend="numpy",
                                     lengths=call["lengths"])
    dh_n = None if call["dh_n"] is None else plain(call["dh_n"])[0]
    reference = rnnfast.rnn_backward(to_time_major(call["dout"]), cache, dh_n)
    tol = SAME_DTYPE_TOL[np.dtype(config["dtype"]).type]
    assert_close(to_time_major(results[0]), out, tol["forward"], "out")
    assert_close(to_time_major(results[2]), reference.dx, tol["grad"], "dx")
    assert_close(results[3][0], reference.dh0, tol["grad"], "dh0")
    assert_close(grads["weight_hh_l0"], reference.dW_hh, tol["grad"], "weight_hh_l0")
    assert_close(grads["weight_ih_l0"], reference.dW_xh, tol["grad"], "weight_ih_l0")


@fuzz(100)
@given(data=st.data())
def test_load_state_dict(data):
    """RNN, Linear, Embedding: a bad state dict raises naming the key, and loads nothing; a good
    one (any layout, any real dtype, cast) loads exactly its values."""
    kind = data.draw(st.sampled_from(["RNN", "Linear", "Embedding"]), label="kind")
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    if kind == "RNN":
        layer = rnnfast.RNN(2, 3, num_layers=data.draw(dims(2)), dtype=dtype,
                            bidirectional=data.draw(st.booleans()), bias=data.draw(st.booleans()),
                            seed=0)
    elif kind == "Linear":
        layer = rnnfast.Linear(2, 3, bias=data.draw(st.booleans()), dtype=dtype, seed=0)
    else:
        layer = rnnfast.Embedding(4, 3, dtype=dtype, seed=0)
    before = layer.state_dict()
    rng = np.random.default_rng(data.draw(st.integers(0, 100)))
    state = {name: present(rng.standard_normal(a.shape).astype(dtype),
                           data.draw(st.sampled_from(LAYOUTS), label=name))
             for name, a in before.items()}
    key = data.draw(st.sampled_from(sorted(state)), label="key")
    # Every layer casts any real dtype, as torch's load_state_dict does; others are TypeErrors.
    bad_dtype = TypeError
    candidates = [("missing", lambda s: {k: v for k, v in s.items() if k != key}, ValueError),
                  ("unexpected", lambda s: dict(s, extra=np.zeros(1)), ValueError),
                  ("shape", lambda s: dict(s, **{key: np.zeros((7,))}), ValueError),
                  ("complex", lambda s: dict(s, **{key: plain(s[key]).astype(complex)}),
                   bad_dtype),
                  ("bool", lambda s: dict(s, **{key: plain(s[key]) > 0}), bad_dtype),
                  ("object", lambda s: dict(s, **{key: plain(s[key]).astype(object)}),
                   bad_dtype),
                  ("str", lambda s: dict(s, **{key: plain(s[key]).astype(str)}), bad_dtype),
                  ("None", lambda s: dict(s, **{key: None}), (TypeError, ValueError)),
                  ("a list instead", lambda s: list(s.values()), TypeError),
                  ("None instead", lambda s: None, TypeError)]
    fault = spoil_one(data, candidates)
    if fault is None:
        if data.draw(st.booleans(), label="integers"):
            state[key] = plain(state[key]).round().astype(np.int16)
        layer.load_state_dict(state)
        for name, array in layer.state_dict().items():
            np.testing.assert_array_equal(array, plain(state[name]).astype(dtype), name)
        return
    label, spoil, error = fault
    note(f"spoiled: {label} ({key})")
    names = {"state_dict", key}
    with raises_naming(error, names):
        layer.load_state_dict(spoil(state))
    for name, array in layer.state_dict().items():  # nothing loaded
        np.testing.assert_array_equal(array, before[name], name)


# ---------------------------------------------------------------------------------------------
# Linear, Embedding, softmax_cross_entropy.
# ---------------------------------------------------------------------------------------------
SIZE_ARGUMENTS = [(0, ValueError), (-1, ValueError), (2**31, ValueError)] + \
    [(v, TypeError) for v in NOT_INTS]
PART_ARGUMENTS = {
    "Linear": {"in_features": ([1, 3, np.int64(2)], SIZE_ARGUMENTS),
               "out_features": ([1, 4], SIZE_ARGUMENTS),
               "bias": ([True, False], [(v, TypeError) for v in [1, "yes", None]]),
               "dtype": ([np.float32, "float64"], [(v, TypeError) for v in
                                                   [np.int64, np.float16, complex, None, "x"]]),
               "seed": ([None, 3, np.random.default_rng(0)],
                        [(-5, ValueError)] + [(v, TypeError) for v in [2.5, "1", False]])},
    "Embedding": {"num_embeddings": ([1, 5], SIZE_ARGUMENTS),
                  "embedding_dim": ([1, 3], SIZE_ARGUMENTS),
                  "dtype": ([np.float64, np.dtype("f4")], [(v, TypeError) for v in
                                                          [np.int8, bool, object, None]]),
                  "seed": ([None, 0], [(-1, ValueError), (1.0, TypeError)])},
}


@fuzz(100)
@given(data=st.data(), kind=st.sampled_from(["Linear", "Embedding"]))
def test_part_constructors(data, kind):
    arguments = PART_ARGUMENTS[kind]
    kwargs = {name: data.draw(st.sampled_from(valid), label=name)
              for name, (valid, _) in arguments.items()}
    fault = spoil_one(data, [(name, value, error) for name, (_, invalid) in arguments.items()
                             for value, error in invalid])
    if fault is None:
        part = getattr(rnnfast, kind)(**kwargs)
        assert part.weight.dtype in FLOATS and np.all(np.isfinite(part.weight))
        return
    name, value, error = fault
    with raises_naming(error, {name}):
        getattr(rnnfast, kind)(**dict(kwargs, **{name: value}))


@fuzz(120)
@given(data=st.data())
def test_linear_forward_and_backward(data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    T, B, H, O = (data.draw(dims(), label=label) for label in "TBHO")
    linear = rnnfast.Linear(H, O, bias=data.draw(st.booleans()), dtype=dtype, seed=1)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    h = with_non_finite(data, rng.standard_normal((T, B, H)).astype(dtype), "h")
    dy = rng.standard_normal((T, B, O)).astype(dtype)
    layouts = st.sampled_from(LAYOUTS if dtype == np.float64 else LAYOUTS[:-1])
    h_given, dy_given = present(h, data.draw(layouts)), present(dy, data.draw(layouts))
    other = np.float64 if dtype == np.float32 else np.float32
    candidates = [("forward", "h") + s for s in spoilers(h, "h", {2: ["in_features"]})]
    candidates += [("backward", "dy") + s
                   for s in spoilers(dy, "dy", {0: ["T"], 1: ["B"], 2: ["out_features"]})]
    candidates += [("forward", "h", "other float", h.astype(other), TypeError, {"h"}),
                   ("backward", "dy", "other float", dy.astype(other), TypeError, {"dy"}),
                   ("backward first", "dy", "no forward", dy, RuntimeError, {"forward"})]
    fault = spoil_one(data, candidates)
    if fault is not None:
        when, name, label, bad, error, named = fault
        note(f"spoiled {name}: {label}")
        with raises_naming(error, named):
            if when == "forward":
                linear.forward(bad)
            elif when == "backward":
                linear.forward(h)
                linear.backward(bad)
            else:
                rnnfast.Linear(H, O).backward(bad)
        return
    y = linear.forward(h_given)
    dh = linear.backward(dy_given)
    twin = rnnfast.Linear(H, O, bias=linear.bias is not None, dtype=dtype, seed=1)
    assert_identical(y, twin.forward(plain(h_given)), "y")
    assert_identical(dh, twin.backward(plain(dy_given)), "dh")
    for name in twin.grads:
        assert_identical(linear.grads[name], twin.grads[name], name)
    # The formula, in float64.
    h64, dy64 = plain(h_given).astype(np.float64), plain(dy_given).astype(np.float64)
    W = linear.weight.astype(np.float64)
    expected_y = np.einsum("tbh,oh->tbo", h64, W)
    if linear.bias is not None:
        expected_y += linear.bias
    tol = 1e-10 if dtype == np.float64 else 1e-5
    assert_close(y, expected_y, tol, "y")
    assert_close(dh, np.einsum("tbo,oh->tbh", dy64, W), tol, "dh")


@fuzz(120)
@given(data=st.data())
def test_embedding_forward_and_backward(data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    T, B, V, E = (data.draw(dims(), label=label) for label in "TBVE")
    embedding = rnnfast.Embedding(V, E, dtype=dtype, seed=2)
    id_dtype = data.draw(st.sampled_from(INT_DTYPES), label="id dtype")
    ids = np.array(data.draw(st.lists(st.integers(0, V - 1), min_size=T * B, max_size=T * B)),
                   dtype=id_dtype).reshape(T, B)
    dout = np.random.default_rng(data.draw(st.integers(0, 99))).standard_normal((T, B, E))
    dout = dout.astype(dtype)
    ids_given = present(ids, data.draw(st.sampled_from(LAYOUTS), label="ids layout"))
    dout_given = present(dout, data.draw(st.sampled_from(LAYOUTS[:-1]), label="dout layout"))
    candidates = [("forward", "ids") + s
                  for s in spoilers(ids, "ids", {}, float_kind=False)]
    candidates += [("forward", "ids", "negative", np.full((T, B), -1), ValueError, {"ids"}),
                   ("forward", "ids", "V", np.full((T, B), V, np.uint64), ValueError, {"ids"}),
                   ("forward", "ids", "2**64 - 1", np.full((T, B), 2**64 - 1, np.uint64),
                    ValueError, {"ids"})]
    candidates += [("backward", "dout") + s
                   for s in spoilers(dout, "dout", {0: ["T"], 1: ["B"], 2: ["embedding_dim"]})]
    fault = spoil_one(data, candidates)
    if fault is not None:
        when, name, label, bad, error, named = fault
        note(f"spoiled {name}: {label}")
        with raises_naming(error, named):
            if when == "forward":
                embedding.forward(bad)
            else:
                embedding.forward(ids)
                embedding.backward(bad)
        return
    out = embedding.forward(ids_given)
    embedding.backward(dout_given)
    assert_identical(out, embedding.weight[plain(ids_given).astype(np.intp)], "out")
    expected = np.zeros_like(embedding.weight)
    np.add.at(expected, plain(ids_given).astype(np.intp).ravel(), plain(dout_given).reshape(-1, E))
    assert_identical(embedding.grads["weight"], expected, "grads['weight']")


def cross_entropy_formula(logits, targets, mask):
    """Mean -log softmax(logits)[target] over unmasked positions, and its gradient, in float64
    (log-sum-exp with the row maximum subtracted)."""
    logits = logits.astype(np.float64)
    T, B, V = logits.shape
    mask = np.ones((T, B), bool) if mask is None else mask
    count = mask.sum()
    top = logits.max(axis=2, keepdims=True)
    exp = np.exp(logits - top)
    lse = (np.log(exp.sum(axis=2, keepdims=True)) + top)[..., 0]
    picked = np.take_along_axis(logits, np.where(mask, targets, 0)[..., None].astype(np.intp),
                                axis=2)[..., 0]
    loss = np.sum(np.where(mask, lse - picked, 0)) / count
    grad = exp / exp.sum(axis=2, keepdims=True)
    grad[np.arange(T)[:, None], np.arange(B), np.where(mask, targets, 0).astype(np.intp)] -= 1
    return loss, np.where(mask[..., None], grad / count, 0)


@fuzz(120)
@given(data=st.data())
def test_softmax_cross_entropy(data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    T, B, V = (data.draw(dims(), label=label) for label in "TBV")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    scale = data.draw(st.sampled_from([1, 30, 1e4]), label="scale")  # large logits too
    logits = with_non_finite(data, (scale * rng.standard_normal((T, B, V))).astype(dtype),
                             "logits")
    targets = rng.integers(0, V, (T, B)).astype(data.draw(st.sampled_from(INT_DTYPES)))
    mask = None
    if data.draw(st.booleans(), label="mask?"):
        mask = rng.random((T, B)) < 0.7
        mask.flat[0] = True  # at least one position counts
        targets[~mask] = rng.integers(-5, V + 5, int((~mask).sum()))  # ignored padding
        mask = mask.astype(data.draw(st.sampled_from([bool, np.int8, np.float32, np.uint64])))
    layouts = st.sampled_from(LAYOUTS)
    given_args = {"logits": present(logits, data.draw(layouts, label="logits")),
                  "targets": present(targets, data.draw(layouts, label="targets")),
                  "mask": None if mask is None else present(mask, data.draw(layouts, label="m"))}
    mask_ok = np.ones((T, B), bool) if mask is None else plain(given_args["mask"]) != 0
    candidates = [("logits",) + s for s in spoilers(logits, "logits", {0: ["targets"],
                                                                        1: ["targets"]})]
    candidates += [("targets",) + s for s in spoilers(targets, "targets",
                                                       {0: ["logits"], 1: ["logits"]},
                                                       float_kind=False)]
    candidates += [("targets", "= V", np.full((T, B), V), ValueError, {"targets"}),
                   ("targets", "negative", np.full((T, B), -1), ValueError, {"targets"}),
                   ("mask", "all masked", np.zeros((T, B), bool), ValueError, {"mask"}),
                   ("mask", "a 2", np.full((T, B), 2), ValueError, {"mask"}),
                   ("mask", "NaN", np.full((T, B), np.nan), ValueError, {"mask"}),
                   ("mask", "strings", np.full((T, B), "1"), TypeError, {"mask"}),
                   ("mask", "complex", np.ones((T, B), complex), TypeError, {"mask"}),
                   ("mask", "1-D", np.ones(T * B, bool), ValueError, {"mask"}),
                   ("mask", "shape", np.ones((T, B + 1), bool), ValueError, {"mask"})]
    fault = spoil_one(data, candidates)
    if fault is not None:
        name, label, bad, error, named = fault
        note(f"spoiled {name}: {label}")
        with raises_naming(error, named):
            rnnfast.softmax_cross_entropy(**dict(given_args, **{name: bad}))
        return
    loss, dlogits = rnnfast.softmax_cross_entropy(**given_args)
    expected_loss, expected_grad = cross_entropy_formula(
        plain(given_args["logits"]), plain(given_args["targets"]), mask_ok)
    same = rnnfast.softmax_cross_entropy(*(plain(v) for v in given_args.values()))
    assert isinstance(loss, float) and dlogits.dtype == dtype and dlogits.shape == (T, B, V)
    assert (loss, dlogits.tobytes()) == (same[0], same[1].tobytes()) or (
        math.isnan(loss) and math.isnan(same[0]) and dlogits.tobytes() == same[1].tobytes())
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert_close(np.float64(loss), expected_loss, tol, "loss")
    assert_close(dlogits, expected_grad, tol, "dlogits")


# ---------------------------------------------------------------------------------------------
# rnnfast.optim: constructors, step, state dicts, clipping.
# ---------------------------------------------------------------------------------------------
POSITIVE = ([1e-3, 0.5, np.float32(0.1), 3], [(v, ValueError) for v in [0, -1.0, math.nan,
                                                                      math.inf]]
            + [(v, TypeError) for v in NOT_REALS])
NON_NEGATIVE = ([0, 0.0, 0.01], [(v, ValueError) for v in [-0.1, math.nan, math.inf]]
                + [(v, TypeError) for v in NOT_REALS])
OPTIMIZERS = {  # class: {argument: (valid values, [(invalid value, error)])}
    optim.SGD: {"lr": POSITIVE, "momentum": ([0.0, 0.9], NON_NEGATIVE[1]),
                "weight_decay": NON_NEGATIVE,
                "nesterov": ([False], [(v, TypeError) for v in [1, "yes", None]])},
    optim.Adagrad: {"lr": POSITIVE, "eps": ([1e-10, 1e-3], POSITIVE[1]),
                    "initial_accumulator_value": NON_NEGATIVE, "weight_decay": NON_NEGATIVE},
    optim.Adam: {"lr": POSITIVE, "eps": ([1e-8], POSITIVE[1]), "weight_decay": NON_NEGATIVE,
                 "betas": ([(0.9, 0.999), (0.0, 0.5), [0.5, 0.9], np.array([0.8, 0.9])],
                           [((1.0, 0.9), ValueError), ((0.9, -0.1), ValueError),
                            ((math.nan, 0.9), ValueError), ((0.9,), TypeError),
                            ((0.9, 0.9, 0.9), TypeError), (0.9, TypeError), ("ab", TypeError),
                            (("0.9", 0.9), TypeError), (None, TypeError)])},
}
ARGUMENT_NAMES = {"betas": {"betas", "beta1", "beta2"}}


def make_params(data, dtype):
    rng = np.random.default_rng(data.draw(st.integers(0, 99), label="params"))
    shapes = data.draw(st.lists(st.lists(dims(4), min_size=1, max_size=3), min_size=1,
                                max_size=3), label="shapes")
    return {f"p{i}": rng.standard_normal(shape).astype(dtype) for i, shape in enumerate(shapes)}


def param_spoilers(params):
    """Ways to spoil a params dict: (label, params, error, names)."""
    name, first = next(iter(params.items()))
    read_only = first.copy()
    read_only.flags.writeable = False
    aliased = np.lib.stride_tricks.as_strided(first, shape=(3,) + first.shape,
                                              strides=(0,) + first.strides)
    return [("a list", list(params.values()), TypeError, {"params"}),
            ("empty", {}, ValueError, {"params"}),
            ("int key", dict(params, **{}) | {1: first.copy()}, TypeError, {"params"}),
            ("a list value", dict(params, **{name: first.tolist()}), TypeError, {name}),
            ("ints", dict(params, **{name: first.astype(np.int64)}), TypeError, {name}),
            ("float16", dict(params, **{name: first.astype(np.float16)}), TypeError, {name}),
            ("complex", dict(params, **{name: first.astype(complex)}), TypeError, {name}),
            ("byteswapped", dict(params, **{name: first.astype(first.dtype.newbyteorder())}),
             TypeError, {name}),
            ("read-only", dict(params, **{name: read_only}), ValueError, {name}),
            ("a broadcast", dict(params, **{name: np.broadcast_to(first, (2,) + first.shape)}),
             ValueError, {name}),
            ("aliased elements", dict(params, **{name: aliased}), ValueError, {name}),
            ("shared with another", dict(params, shared=first), ValueError, {name, "shared"})]


@fuzz(120)
@given(data=st.data(), cls=st.sampled_from(list(OPTIMIZERS)))
def test_optimizer_constructors(data, cls):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    params = make_params(data, dtype)
    arguments = OPTIMIZERS[cls]
    kwargs = {name: data.draw(st.sampled_from(valid), label=name)
              for name, (valid, _) in arguments.items()}
    candidates = [(name, value, error, ARGUMENT_NAMES.get(name, {name}))
                  for name, (_, invalid) in arguments.items() for value, error in invalid]
    candidates += [("params", value, error, names)
                   for _, value, error, names in param_spoilers(params)]
    if cls is optim.SGD:
        candidates.append(("nesterov", True, ValueError, {"nesterov"}))  # needs momentum > 0
    fault = spoil_one(data, candidates)
    if fault is None:
        opt = cls(params, **kwargs)
        assert opt.step_count == 0 and set(opt.params) == set(params)
        return
    name, value, error, names = fault
    note(f"spoiled {name}: {value!r}")
    if name == "params":
        params = value
    else:
        kwargs[name] = value
    with raises_naming(error, names):
        cls(params, **kwargs)


def first_step(cls, hyper, param, grad):
    """One step of cls from a fresh state, from the update rules, in float64."""
    p, g = param.astype(np.float64), grad.astype(np.float64)
    d = g + hyper.get("weight_decay", 0.0) * p
    if cls is optim.SGD:
        return p - hyper["lr"] * d * (1 + hyper.get("momentum", 0.0) * hyper.get("nesterov", 0))
    if cls is optim.Adagrad:
        total = hyper.get("initial_accumulator_value", 0.0) + d * d
        return p - hyper["lr"] * d / (np.sqrt(total) + hyper.get("eps", 1e-10))
    beta1, beta2 = hyper.get("betas", (0.9, 0.999))
    m, v = (1 - beta1) * d, (1 - beta2) * d * d
    denominator = np.sqrt(v) / np.sqrt(1 - beta2) + hyper.get("eps", 1e-8)
    return p - hyper["lr"] / (1 - beta1) * m / denominator


@fuzz(120)
@given(data=st.data(), cls=st.sampled_from(list(OPTIMIZERS)))
def test_optimizer_step(data, cls):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    params = make_params(data, dtype)
    hyper = {"lr": data.draw(st.sampled_from([0.5, 1e-2]), label="lr")}
    if cls is optim.SGD:
        hyper.update(momentum=data.draw(st.sampled_from([0.0, 0.9])), nesterov=False)
        hyper["nesterov"] = hyper["momentum"] > 0 and data.draw(st.booleans(), label="nesterov")
    hyper["weight_decay"] = data.draw(st.sampled_from([0.0, 0.1]), label="weight_decay")
    rng = np.random.default_rng(data.draw(st.integers(0, 99), label="grads"))
    grads = {name: with_non_finite(data, rng.standard_normal(p.shape).astype(dtype), name)
             for name, p in params.items()}
    given_grads = {name: present(g, data.draw(st.sampled_from(LAYOUTS), label=f"{name} layout"))
                   for name, g in grads.items()}
    name, grad = next(iter(grads.items()))
    other = np.float64 if dtype == np.float32 else np.float32
    candidates = [("not a dict", list(grads.values()), TypeError, {"grads"}),
                  ("missing", {k: v for k, v in grads.items() if k != name}, ValueError,
                   {name}),
                  ("unexpected", dict(grads, extra=grad), ValueError, {"extra"}),
                  ("other float", dict(grads, **{name: grad.astype(other)}), TypeError, {name}),
                  ("ints", dict(grads, **{name: grad.astype(int)}), TypeError, {name}),
                  ("complex", dict(grads, **{name: grad.astype(complex)}), TypeError, {name}),
                  ("object", dict(grads, **{name: grad.astype(object)}), TypeError, {name}),
                  ("shape", dict(grads, **{name: grad[..., None]}), ValueError, {name}),
                  ("ragged", dict(grads, **{name: [[1.0], [1.0, 2.0]]}), TypeError, {name}),
                  ("None", dict(grads, **{name: None}), TypeError, {name})]
    opt = cls(params, **hyper)
    before = {k: v.copy() for k, v in params.items()}
    fault = spoil_one(data, candidates)
    if fault is not None:
        label, bad, error, names = fault
        note(f"spoiled grads: {label}")
        with raises_naming(error, names):
            opt.step(bad)
        assert opt.step_count == 0  # nothing updated
        for k, v in params.items():
            assert_identical(v, before[k], k)
        return
    opt.step(given_grads)
    twin_params = {k: v.copy() for k, v in before.items()}
    cls(twin_params, **hyper).step({k: plain(v) for k, v in given_grads.items()})
    expected = {k: first_step(cls, hyper, before[k], plain(given_grads[k]))
                for k in params}
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for k, v in params.items():
        assert_identical(v, twin_params[k], k)
        assert_close(v, expected[k], tol, k)


@fuzz(100)
@given(data=st.data(), cls=st.sampled_from(list(OPTIMIZERS)))
def test_optimizer_load_state_dict(data, cls):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    params = make_params(data, dtype)
    hyper = {"lr": 0.1, "momentum": 0.9} if cls is optim.SGD else {"lr": 0.1}
    source = cls({k: v.copy() for k, v in params.items()}, **hyper)
    source.step({k: np.ones_like(v) for k, v in params.items()})
    state = source.state_dict()
    if data.draw(st.booleans(), label="as np.load gives it"):
        state = {k: np.asarray(v) for k, v in state.items()}  # 0-d arrays for the scalars
    buffer = next(k for k in state if "/" in k)
    scalar = data.draw(st.sampled_from([k for k in state if "/" not in k and k != "optimizer"]))
    candidates = [("not a dict", list(state.items()), TypeError, {"state"}),
                  ("another optimizer", dict(state, optimizer="RMSprop"), ValueError,
                   {"optimizer"}),
                  ("missing scalar", {k: v for k, v in state.items() if k != scalar},
                   ValueError, {scalar}),
                  ("missing buffer", {k: v for k, v in state.items() if k != buffer},
                   ValueError, {buffer}),
                  ("extra", dict(state, **{"exp_avg/nope": np.zeros(1)}), ValueError,
                   {"nope"}),
                  ("negative step", dict(state, step=-1), ValueError, {"step"}),
                  ("float step", dict(state, step=1.5), TypeError, {"step"}),
                  ("bool step", dict(state, step=True), TypeError, {"step"}),
                  ("array step", dict(state, step=np.array([1, 2])), TypeError, {"step"}),
                  ("bad lr", dict(state, lr=-1.0), ValueError, {"lr"}),
                  ("string lr", dict(state, lr="0.1"), TypeError, {"lr"}),
                  ("buffer shape", dict(state, **{buffer: np.zeros(7)}), ValueError, {buffer}),
                  ("buffer ints", dict(state, **{buffer: np.zeros(state[buffer].shape, int)}),
                   TypeError, {buffer}),
                  ("buffer strings", dict(state, **{buffer: np.full(state[buffer].shape, "a")}),
                   TypeError, {buffer})]
    target = cls(params, **hyper)
    before = target.state_dict()
    fault = spoil_one(data, candidates)
    if fault is None:
        layout = data.draw(st.sampled_from(LAYOUTS[:-1]), label="buffer layout")
        state = {k: present(v, layout) if "/" in k else v for k, v in state.items()}
        target.load_state_dict(state)
        for k, v in target.state_dict().items():
            if "/" in k:
                assert_identical(v, plain(state[k]).astype(dtype), k)
            else:
                assert v == np.asarray(state[k]).item(), k
        return
    label, bad, error, names = fault
    note(f"spoiled state: {label}")
    with raises_naming(error, names):
        target.load_state_dict(bad)
    after = target.state_dict()  # nothing changed
    assert after.keys() == before.keys()
    for k in after:
        assert_identical(np.asarray(after[k]), np.asarray(before[k]), k)


@fuzz(120)
@given(data=st.data(), function=st.sampled_from(["clip_grad_value", "clip_grad_norm"]))
def test_gradient_clipping(data, function):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    grads = {k: with_non_finite(data, 3 * v, k) for k, v in make_params(data, dtype).items()}
    bound = data.draw(st.sampled_from([0.5, 2, np.float32(10.0), math.inf]), label="bound")
    # Writable views in place of some gradients: the clipping must reach their base arrays.
    bases = {}
    for k, g in list(grads.items()):
        layout = data.draw(st.sampled_from(["contiguous", "strided", "reversed", "fortran"]),
                           label=f"{k} layout")
        grads[k] = present(g, layout)
        bases[k] = g.astype(np.float64)
    name = next(iter(grads))
    bound_name = "clip_value" if function == "clip_grad_value" else "max_norm"
    read_only = grads[name].copy()
    read_only.flags.writeable = False
    aliased = np.lib.stride_tricks.as_strided(np.ones(1, dtype), shape=(3, 3), strides=(0, 0))
    candidates = [(bound_name, value, error, {bound_name})
                  for value, error in [(0, ValueError), (-1.0, ValueError),
                                       (math.nan, ValueError), ("1", TypeError),
                                       (None, TypeError), (True, TypeError)]]
    candidates += [("grads", value, error, {"grads"} | names) for value, error, names in [
        (list(grads.values()), TypeError, set()),
        (dict(grads, **{name: read_only}), ValueError, {name}),
        (dict(grads, **{name: grads[name].astype(np.int32)}), TypeError, {name}),
        (dict(grads, **{name: grads[name].tolist()}), TypeError, {name}),
        (dict(grads, **{name: aliased}), ValueError, {name})]]
    fault = spoil_one(data, candidates)
    clip = getattr(optim, function)
    if fault is not None:
        argument, value, error, names = fault
        note(f"spoiled {argument}: {value!r}")
        arguments = {"grads": grads, bound_name: bound, argument: value}
        snapshot = {k: np.array(v, copy=True) for k, v in grads.items()}
        with raises_naming(error, names | {function}):
            clip(arguments["grads"], arguments[bound_name])
        for k, v in grads.items():  # nothing clipped
            assert_identical(v, snapshot[k], k)
        return
    result = clip(grads, bound)
    if function == "clip_grad_value":
        assert result is None
        for k, v in grads.items():
            assert_identical(v, np.clip(bases[k], -bound, bound).astype(dtype), k)
        return
    norm = math.sqrt(sum(float(np.sum(b * b)) for b in bases.values()))
    coef = float(bound) / (norm + 1e-6)
    assert result == pytest.approx(norm, rel=1e-12, nan_ok=True)
    for k, v in grads.items():
        expected = bases[k] if coef >= 1 else (bases[k].astype(dtype) * dtype(coef))
        assert_close(v, np.asarray(expected, np.float64), 1e-6 if dtype == np.float32
                     else 1e-14, k)


# ---------------------------------------------------------------------------------------------
# What the fuzzing found, each case once, so that none depends on hypothesis drawing it.
# ---------------------------------------------------------------------------------------------
def _edited_cache(**fields):
    p = make_problem(0, 3, 2, 4, 5, np.float32)
    out, cache = rnnfast.rnn_forward(*p.args)
    return lambda: [setattr(cache, name, value) for name, value in fields.items()]


def _aliased(shape=(3, 3)):
    return np.lib.stride_tricks.as_strided(np.ones(1), shape=shape, strides=(0,) * len(shape))


FOUND = {
    # Constructors: huge sizes gave NumPy's "array is too big" ValueError (or, for many
    # layers, an empty MemoryError after minutes); unclear or missing checks of the options.
    "RNN of huge sizes": (lambda: rnnfast.RNN(2**31 - 1, 2**31 - 1), MemoryError,
                          "RNN would allocate"),
    "RNN of 2**31 - 1 layers": (lambda: rnnfast.RNN(1, 1, num_layers=2**31 - 1), MemoryError,
                                "RNN would allocate"),
    "Linear of huge sizes": (lambda: rnnfast.Linear(2**31 - 1, 2**31 - 1), MemoryError,
                             "Linear would allocate"),
    "Embedding of huge sizes": (lambda: rnnfast.Embedding(2**31 - 1, 2**31 - 1), MemoryError,
                                "Embedding would allocate"),
    "a negative seed": (lambda: rnnfast.RNN(3, 4, seed=-1), ValueError, "seed"),
    "a string seed": (lambda: rnnfast.RNN(3, 4, seed="a"), TypeError, "seed"),
    "a string dropout": (lambda: rnnfast.RNN(3, 4, dropout="0.5"), TypeError, "dropout"),
    "a string n_threads, at construction": (lambda: rnnfast.RNN(3, 4, n_threads="2"), TypeError,
                                            "n_threads"),
    "bidirectional=1": (lambda: rnnfast.RNN(3, 4, bidirectional=1), TypeError, "bidirectional"),
    "dtype=None (np.dtype(None) is float64)": (lambda: rnnfast.Linear(3, 4, dtype=None),
                                               TypeError, "dtype"),
    # RNN.load_state_dict cast complex (dropping the imaginary part), strings and objects, and
    # loaded the parameters before a bad one; a non-mapping failed inside.
    "complex weights": (lambda: rnnfast.RNN(2, 3).load_state_dict(
        {k: v + 1j for k, v in rnnfast.RNN(2, 3).state_dict().items()}), TypeError,
        "weight_ih_l0"),
    "a state dict that is an int": (lambda: rnnfast.RNN(2, 3).load_state_dict(3), TypeError,
                                    "state_dict"),
    # Huge inputs (zero-stride views): NumPy's MemoryError naming no argument, or copies of
    # tens of gigabytes before the check of T * B or the shapes.
    "huge logits": (lambda: rnnfast.softmax_cross_entropy(
        np.broadcast_to(np.float32(0), (10**6, 10**6, 2)), np.broadcast_to(0, (10**6, 10**6))),
        MemoryError, "softmax_cross_entropy would allocate"),
    "huge ids": (lambda: rnnfast.Embedding(3, 2).forward(np.broadcast_to(0, (10**6, 10**6))),
                 MemoryError, "Embedding.forward would allocate"),
    "a huge x with a wrong W_xh": (lambda: rnnfast.rnn_forward(
        np.broadcast_to(np.float32(1), (10**5, 10**4, 3)), None, np.ones((2, 4), np.float32),
        np.ones((2, 2), np.float32), None), ValueError, "W_xh"),
    "T * B over 2**31 - 1 in a view": (lambda: rnnfast.rnn_forward(
        np.broadcast_to(np.float32(1), (2**30, 4, 1)), None, np.ones((1, 1), np.float32),
        np.ones((1, 1), np.float32), None), ValueError, "T * B"),
    # Caches edited by hand reached the kernels: NumPy and Cython errors naming no argument,
    # an AttributeError, and for consistent dtypes no error at all (the kernels trust shapes).
    "a cache with a longer x": (_edited_cache(x=np.ones((4, 2, 4), np.float32)),
                                AttributeError, "'x'"),
    "a cache with an unknown backend": (_edited_cache(backend="torch"), AttributeError,
                                        "'backend'"),
    "a cache with other saved data": (_edited_cache(saved="anything"), AttributeError,
                                      "'saved'"),
    # Arrays whose elements share memory were updated once per alias.
    "params with aliased elements": (lambda: optim.SGD({"w": _aliased()}, lr=0.1), ValueError,
                                     "params['w']"),
    "gradients with aliased elements": (lambda: optim.clip_grad_norm({"g": _aliased()}, 1.0),
                                        ValueError, "grads['g']"),
}


@pytest.mark.parametrize("case", list(FOUND))
def test_what_the_fuzzing_found(case):
    call, error, fragment = FOUND[case]
    with raises_naming(error, {fragment}), address_space_cap():
        call()


def test_what_the_fuzzing_found_to_be_valid():
    """Values that were refused and are fine: a NumPy float dropout, gradients and state
    dicts in the other byte order."""
    assert rnnfast.RNN(3, 4, dropout=np.float32(0.5)).dropout == 0.5
    params = {"w": np.zeros(3, np.float32)}
    optim.SGD(params, lr=1.0).step({"w": np.ones(3, ">f4")})
    assert np.array_equal(params["w"], -np.ones(3, np.float32))
    linear = rnnfast.Linear(2, 3, seed=0)
    state = {k: v.astype(v.dtype.newbyteorder()) for k, v in linear.state_dict().items()}
    linear.load_state_dict(state)
    # A leak given with x in the other byte order was cast to that order (the kernels refuse
    # such arrays), and a per-unit leak of the native order was refused as another dtype.
    p = make_problem(0, 3, 2, 4, 5, np.float32)
    swapped = p.x.astype(p.x.dtype.newbyteorder())
    for leak in (0.5, np.full(5, 0.5, np.float32)):
        expected, _ = rnnfast.rnn_forward(*p.args, leak=leak)
        out, _ = rnnfast.rnn_forward(swapped, *p.args[1:], leak=leak)
        assert_identical(out, expected, "out")
