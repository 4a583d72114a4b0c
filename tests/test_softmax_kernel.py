"""The softmax cross-entropy kernel (rnnfast/_kernels/softmax_impl.pxi) behind
rnnfast.softmax_cross_entropy: against the NumPy reference (backend="numpy") and float64, on
every build, on one to three threads of the team and every team mode (the same bits), with
masks, row lengths that do not fill its lanes, extreme logits, NaN and infinities; and its
entry's checks.
"""
import numpy as np
import pytest

import rnnfast
from rnnfast._kernels import backend as kernels
from rnn_helpers import TOL, assert_close

SWITCHES = kernels.switches
BUILDS = list(kernels.KERNEL_BUILDS)
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
# (T, B, V): V below, at and across the kernel's 16 lanes; rows enough for the team's ranges.
SHAPES = [(1, 1, 1), (3, 2, 7), (2, 5, 16), (4, 3, 33), (64, 32, 163), (9, 40, 300)]


@pytest.fixture(params=BUILDS)
def build(request, monkeypatch):
    monkeypatch.setattr(SWITCHES, "build", request.param)
    yield kernels.KERNEL_BUILDS[request.param]
    kernels.KERNEL_BUILDS[request.param].reset_team("always")


def problem(seed, T, B, V, dtype, scale=3.0, masked=False):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal((T, B, V))).astype(dtype)
    targets = rng.integers(0, V, (T, B))
    mask = None
    if masked:
        mask = rng.random((T, B)) < 0.7
        mask.flat[0] = True
        targets[~mask] = -5  # padding: never read
    return logits, targets, mask


@pytest.mark.parametrize("masked", [False, True], ids=["all", "masked"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}V{}".format(*s))
def test_the_kernel_agrees_with_the_reference_and_float64(shape, dtype, masked, build):
    logits, targets, mask = problem(1, *shape, dtype, masked=masked)
    loss, dlogits = rnnfast.softmax_cross_entropy(logits, targets, mask, n_threads=1)
    ref_loss, ref_dlogits = rnnfast.softmax_cross_entropy(logits, targets, mask,
                                                         backend="numpy")
    exact_loss, exact_dlogits = rnnfast.softmax_cross_entropy(
        logits.astype(np.float64), targets, mask, backend="numpy")
    assert dlogits.dtype == dtype and dlogits.shape == logits.shape
    tol = TOL["float64"] if dtype == np.float64 else TOL["float32_forward"]
    assert_close(loss, ref_loss, tol, "loss")
    assert_close(dlogits, ref_dlogits, tol, "dlogits")
    assert_close(loss, exact_loss, tol, "loss vs float64")
    assert_close(dlogits, exact_dlogits, tol, "dlogits vs float64")
    if mask is not None:
        assert np.all(dlogits[~mask] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_thread_count_and_team_mode_gives_the_same_bits(dtype, build, monkeypatch):
    """Rows in ranges on 2 and 3 threads (more than the machine's cores allowed for), on the
    team, alone or as its timings decide: each row the bits of one thread."""
    logits, targets, mask = problem(2, 64, 40, 101, dtype, masked=True)
    expected = rnnfast.softmax_cross_entropy(logits, targets, mask, n_threads=1)
    for n_threads in (2, 3):
        monkeypatch.setattr(SWITCHES, "cores", n_threads)
        for mode in ("always", "never", "adapt"):
            build.reset_team(mode)
            for _ in range(3):
                loss, dlogits = rnnfast.softmax_cross_entropy(logits, targets, mask,
                                                              n_threads=n_threads)
                assert loss == expected[0]
                np.testing.assert_array_equal(dlogits, expected[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_exponential_holds_over_the_whole_range(dtype, build):
    """Shifted logits from 0 down past the exponential's underflow (and -inf): the softmax
    against float64's, relative to each entry's own size where it is a normal number."""
    V = 400
    low = -100.0 if dtype == np.float32 else -800.0
    logits = np.concatenate([np.linspace(0, low, V - 1), [-np.inf]]).astype(dtype)
    logits = logits.reshape(1, 1, V)
    targets = np.zeros((1, 1), dtype=np.int64)
    _, dlogits = rnnfast.softmax_cross_entropy(logits, targets, n_threads=1)
    softmax = dlogits[0, 0].astype(np.float64)
    softmax[0] += 1  # the target's -1 taken off again
    exact = np.exp(logits[0, 0].astype(np.float64))
    exact /= exact.sum()
    tiny = np.finfo(dtype).tiny
    normal = exact > 4 * tiny
    relative = np.abs(softmax[normal] - exact[normal]) / exact[normal]
    assert relative.max() <= 8 * np.finfo(dtype).eps
    assert np.all(np.abs(softmax[~normal]) <= 4 * tiny)
    assert softmax[-1] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_logits_nan_and_infinities_as_the_reference(dtype, build):
    """A huge logit is fine (the maximum is subtracted); a row with NaN, +inf or only -inf is
    NaN in its loss and its gradient, as NumPy's; the other rows are unaffected."""
    logits, targets, _ = problem(3, 1, 5, 20, dtype)
    logits[0, 0, 3] = np.finfo(dtype).max / 2
    logits[0, 0, 4] = -np.inf
    logits[0, 1, 7] = np.nan
    logits[0, 2, 2] = np.inf
    logits[0, 3, :] = -np.inf
    with np.errstate(invalid="ignore"):
        loss, dlogits = rnnfast.softmax_cross_entropy(logits, targets, n_threads=1)
        _, ref = rnnfast.softmax_cross_entropy(logits, targets, backend="numpy")
    assert np.isnan(loss)
    np.testing.assert_array_equal(np.isnan(dlogits), np.isnan(ref))
    assert np.isnan(dlogits[0, 1:4]).all() and np.isfinite(dlogits[0, [0, 4]]).all()
    tol = TOL["float64"] if dtype == np.float64 else TOL["float32_forward"]
    assert_close(dlogits[0, [0, 4]], ref[0, [0, 4]], tol, "finite rows")


def test_the_kernel_needs_no_copy_of_a_view_and_keeps_the_inputs():
    """A non-contiguous, other-byte-order view of logits gives the contiguous copy's results,
    and neither logits nor targets are modified."""
    logits, targets, _ = problem(4, 6, 4, 9, np.float64)
    view = logits.astype(">f8")[:, ::-1][:, ::-1]
    before = logits.copy(), targets.copy()
    got = rnnfast.softmax_cross_entropy(view, targets)
    want = rnnfast.softmax_cross_entropy(logits, targets)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(logits, before[0])
    np.testing.assert_array_equal(targets, before[1])


def test_bad_backend_and_threads_are_named():
    logits, targets, _ = problem(5, 2, 2, 3, np.float32)
    with pytest.raises(ValueError, match="backend must be 'cython' or 'numpy'; got 'c'"):
        rnnfast.softmax_cross_entropy(logits, targets, backend="c")
    with pytest.raises(ValueError, match="n_threads"):
        rnnfast.softmax_cross_entropy(logits, targets, n_threads=0)
    with pytest.raises(TypeError, match="n_threads"):
        rnnfast.softmax_cross_entropy(logits, targets, n_threads=1.5)


def entry_arguments(rows=4, V=5, dtype=np.float32):
    rng = np.random.default_rng(6)
    return {"logits": rng.standard_normal((rows, V)).astype(dtype),
            "targets": rng.integers(0, V, rows).astype(np.intp), "mask": None,
            "dlogits": np.empty((rows, V), dtype), "nll": np.empty(rows), "scale": 1 / rows,
            "n_threads": 1}


@pytest.mark.parametrize("name, bad, error, fragment", [
    ("logits", [[1.0]], TypeError, "logits must be a NumPy array"),
    ("logits", np.zeros((4, 5), np.int32), TypeError, "logits must be float32 or float64"),
    ("logits", np.zeros((4, 10), np.float32)[:, ::2], ValueError, "C-contiguous 2-D"),
    ("dlogits", np.empty((4, 5), np.float64), ValueError, "one shape and dtype"),
    ("dlogits", np.empty((4, 6), np.float32), ValueError, "one shape and dtype"),
    ("targets", np.zeros(4, np.int32), ValueError, "targets must be a C-contiguous intp"),
    ("targets", np.zeros(3, np.intp), ValueError, "targets must be a C-contiguous intp"),
    ("targets", np.array([0, 1, 5, 2], np.intp), ValueError, r"targets\[2\] = 5 is out of"),
    ("targets", np.array([0, -1, 0, 2], np.intp), ValueError, r"targets\[1\] = -1 is out of"),
    ("nll", np.empty(4, np.float32), ValueError, "nll must be a C-contiguous float64"),
    ("mask", np.ones(4, np.int8), ValueError, "mask must be None or a C-contiguous bool"),
    ("n_threads", 0, ValueError, "n_threads must be None or a positive int"),
])
def test_the_entry_checks_what_the_kernel_trusts(name, bad, error, fragment):
    arguments = entry_arguments()
    arguments[name] = bad
    with pytest.raises(error, match=fragment):
        kernels.softmax_cross_entropy(**arguments)


def test_the_entry_refuses_read_only_or_overlapping_outputs():
    arguments = entry_arguments()
    arguments["nll"].flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        kernels.softmax_cross_entropy(**arguments)
    arguments = entry_arguments()
    arguments["dlogits"] = arguments["logits"]
    with pytest.raises(ValueError, match="must not overlap"):
        kernels.softmax_cross_entropy(**arguments)


def test_a_masked_row_may_hold_any_target():
    arguments = entry_arguments()
    arguments["mask"] = np.array([True, False, True, True])
    arguments["targets"][1] = 10**9
    kernels.softmax_cross_entropy(**arguments)
    assert np.all(arguments["dlogits"][1] == 0) and arguments["nll"][1] == 0
