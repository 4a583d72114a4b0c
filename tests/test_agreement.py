"""The Cython backend agrees with the NumPy reference, forward and backward, on both step paths."""
import numpy as np
import pytest

import rnnfast
from rnnfast._kernels import backend as _cython_backend
from rnn_helpers import (
    FLOAT32_VS_FLOAT64,
    GRAD_NAMES,
    SAME_DTYPE_TOL,
    assert_close,
    assert_grads_close,
    force_path,
    make_dynamics,
    make_problem,
)

# (T, B, D, H): the edges T=1, B=1, D=1, H=1; hidden sizes that are not multiples of 8 or 16
# (so the small-step kernel's narrower last column block runs) and exactly 16; batch sizes
# below, at and above multiples of 4 (the kernel takes rows four at a time, then one by one).
SHAPES = [(1, 1, 1, 1), (3, 1, 5, 7), (6, 3, 2, 17), (4, 5, 9, 33), (2, 2, 3, 40), (5, 2, 4, 16),
          (3, 8, 5, 24), (2, 7, 3, 9), (3, 2, 9, 4)]  # the last: D > H (dW_xh wider than tall)
SHAPE_IDS = ["T{}B{}D{}H{}".format(*s) for s in SHAPES]
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
NONLINEARITIES = ["tanh", "relu"]


def run(p, nonlinearity, backend):
    """Forward and backward of problem p; returns (out, grads)."""
    out, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, backend=backend)
    return out, rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n)


def check_dtypes_and_shapes(p, out, grads, dtype):
    """Every result has the problem's dtype and its input's shape."""
    T, B, D, H = p.shape
    expected = {"dx": (T, B, D), "dh0": (B, H), "dW_xh": (H, D), "dW_hh": (H, H), "db": (H,)}
    assert out.shape == (T, B, H) and out.dtype == dtype
    for name in GRAD_NAMES:
        g = getattr(grads, name)
        if name == "db" and p.b is None:
            assert g is None
            continue
        assert g.shape == expected[name] and g.dtype == dtype, name


@pytest.mark.parametrize("with_dh_n", [True, False], ids=["dh_n", "no_dh_n"])
@pytest.mark.parametrize("with_h0", [True, False], ids=["h0", "h0_None"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_cython_matches_reference(shape, dtype, nonlinearity, with_bias, with_h0, with_dh_n,
                                  path):
    p = make_problem(0, *shape, dtype, bias=with_bias, h0=with_h0, dh_n=with_dh_n)
    out, grads = run(p, nonlinearity, "cython")
    ref_out, ref_grads = run(p, nonlinearity, "numpy")

    check_dtypes_and_shapes(p, out, grads, dtype)
    check_dtypes_and_shapes(p, ref_out, ref_grads, dtype)
    tol = SAME_DTYPE_TOL[dtype]
    assert_close(out, ref_out, tol["forward"], "out")
    assert_grads_close(grads, ref_grads, tol["grad"], has_bias=with_bias)


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_float32_matches_float64_reference(shape, nonlinearity, backend):
    """float32 results are the float64 ones to float32 accuracy (DESIGN.md's promise)."""
    p32 = make_problem(1, *shape, np.float32)
    p64 = p32.astype(np.float64)  # the same numbers, exactly, in float64
    out, grads = run(p32, nonlinearity, backend)
    ref_out, ref_grads = run(p64, nonlinearity, "numpy")
    assert out.dtype == np.float32
    assert_close(out, ref_out, FLOAT32_VS_FLOAT64["forward"], "out")
    assert_grads_close(grads, ref_grads, FLOAT32_VS_FLOAT64["grad"])


@pytest.mark.parametrize("B", [1, 3])
def test_path_fixture_reaches_the_backend(B, path, monkeypatch):
    """Forward and backward both ask the switch at call time, so the fixture's choice is the
    one that runs, for B = 1 too (this test fails if the switch is bypassed or cached)."""
    switches = _cython_backend.switches
    p = make_problem(2, 2, B, 3, 5)
    passes = switches.passes
    out, cache = rnnfast.rnn_forward(*p.args)
    ran = [switches.last_pass]
    rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n)
    ran.append(switches.last_pass)
    step, build = path.split("-")
    assert switches.passes == passes + 2
    assert ran == [(build, step, 1)] * 2


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)], ids=str)
def test_switch_follows_its_constants(dtype, monkeypatch):
    """Passes of at least large_steps_min_steps steps of more than small_steps_max_batch rows
    of more than small_steps_max_hidden units are large steps, and so are those of two rows of
    two_row_steps_min_hidden to two_row_steps_max_hidden units; single sequences never are."""
    switches = _cython_backend.switches
    use_blas = _cython_backend.use_blas
    most, T = switches.small_steps_max_batch, switches.large_steps_min_steps
    H = switches.small_steps_max_hidden + 1
    assert use_blas(T, most + 1, H, dtype)
    assert not use_blas(T, most, H, dtype)
    assert not use_blas(T - 1, most + 1, H, dtype)  # a short pass
    min_batch = getattr(switches, f"blas_min_batch_{dtype.name}")
    assert use_blas(1, min_batch, H, dtype)  # ... unless its batch is large
    assert not use_blas(1, min_batch - 1, H, dtype)
    assert not use_blas(T, most + 1, H - 1, dtype)  # tiny steps
    assert not use_blas(T, 1, 4096, dtype)
    assert not use_blas(T, 2, 4096, dtype)  # one pass over W_hh per step
    low, high = switches.two_row_steps_min_hidden, switches.two_row_steps_max_hidden
    assert use_blas(T, 2, low, dtype) and use_blas(T, 2, high, dtype)
    assert not use_blas(T, 2, low - 1, dtype) and not use_blas(T, 2, high + 1, dtype)
    assert not use_blas(T - 1, 2, low, dtype)
    assert not use_blas(T, 1, low, dtype) and not use_blas(T, 3, low, dtype)
    monkeypatch.setattr(switches, "small_steps_max_batch", 1)
    assert use_blas(T, 2, H, dtype)


# How many groups of rows a small step's kernels take, each reading W_hh once: natural.h
# (AVX2 builds) 3 rows at a time forward (then 2 or 1), 6 / 3 / the rest backward; the panel
# kernels 6, 4, 2, 1.
GROUPS = {True: {1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 2, 7: 3},
          False: {1: 1, 2: 1, 3: 2, 4: 1, 5: 2, 6: 1, 7: 2}}


@pytest.mark.parametrize("build", list(_cython_backend.KERNEL_BUILDS))
@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)], ids=str)
def test_a_W_hh_beyond_L2_read_more_than_once_a_step_makes_large_steps(build, dtype,
                                                                        monkeypatch):
    """Beyond the L2 cache (l2_cache_bytes), small steps whose kernels read W_hh more than once
    (one group of rows at a time) are large steps, in short passes too; within it, or read
    once, they stay small."""
    switches = _cython_backend.switches
    monkeypatch.setattr(switches, "build", build)
    monkeypatch.setattr(switches, "small_steps_max_batch", 16)  # only the L2 rule left
    monkeypatch.setattr(switches, "two_row_steps_max_hidden", 0)
    natural = switches.natural_steps
    H = 600
    monkeypatch.setattr(switches, "l2_cache_bytes", H * H * dtype.itemsize - 1)
    for B, groups in GROUPS[natural].items():
        assert _cython_backend.use_blas(3, B, H, dtype) == (groups > 1), (build, B)
    monkeypatch.setattr(switches, "l2_cache_bytes", H * H * dtype.itemsize)
    assert not any(_cython_backend.use_blas(3, B, H, dtype) for B in GROUPS[natural])


# Shapes on both sides of the real switch, run without the fixture: whatever use_blas picks.
DEFAULT_SWITCH_SHAPES = [(3, 1, 4, 300), (3, 2, 4, 20), (3, 8, 4, 64), (2, 16, 3, 129),
                         (2, 40, 3, 33), (2, 3, 2, 600)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", DEFAULT_SWITCH_SHAPES,
                         ids=["T{}B{}D{}H{}".format(*s) for s in DEFAULT_SWITCH_SHAPES])
def test_default_switch_matches_reference(shape, dtype):
    p = make_problem(5, *shape, dtype)
    out, grads = run(p, "tanh", "cython")
    ref_out, ref_grads = run(p, "tanh", "numpy")
    tol = SAME_DTYPE_TOL[dtype]
    assert_close(out, ref_out, tol["forward"], "out")
    assert_grads_close(grads, ref_grads, tol["grad"])


# Shapes for determinism: one small, one where BLAS may use several threads per step.
DETERMINISM_SHAPES = [(5, 3, 4, 21), (3, 64, 32, 128)]


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", DETERMINISM_SHAPES,
                         ids=["T{}B{}D{}H{}".format(*s) for s in DETERMINISM_SHAPES])
def test_repeated_calls_are_bit_identical(shape, dtype, nonlinearity, path):
    p = make_problem(3, *shape, dtype)
    first_out, first = run(p, nonlinearity, "cython")
    for _ in range(3):
        out, grads = run(p, nonlinearity, "cython")
        np.testing.assert_array_equal(out, first_out)
        for name in GRAD_NAMES:
            np.testing.assert_array_equal(getattr(grads, name), getattr(first, name),
                                          err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_and_two_blas_threads_agree(dtype, path):
    """Results do not depend on the thread count beyond rounding (DESIGN.md, Threads)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    p = make_problem(4, 3, 64, 32, 128, dtype)
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        out1, grads1 = run(p, "tanh", "cython")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        out2, grads2 = run(p, "tanh", "cython")
    tol = SAME_DTYPE_TOL[dtype]
    assert_close(out2, out1, tol["forward"], "out")
    assert_grads_close(grads2, grads1, tol["grad"])


@pytest.mark.parametrize("where", ["kernel", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 2, 3, 5), (4, 3, 2, 17), (3, 5, 6, 33)],
                         ids=lambda s: "T{}B{}D{}H{}".format(*s))
def test_weight_gradients_agree_wherever_they_are_computed(shape, dtype, where, path,
                                                           monkeypatch):
    """dW_xh and dW_hh come from the kernel's BLAS for small problems and from NumPy's for
    large ones (switches.numpy_weight_grads_min_flops); both agree with the reference."""
    monkeypatch.setattr(_cython_backend.switches, "numpy_weight_grads_min_flops",
                        0 if where == "numpy" else 2**62)
    for h0 in (True, False):
        p = make_problem(6, *shape, dtype, h0=h0)
        out, grads = run(p, "tanh", "cython")
        ref_out, ref_grads = run(p, "tanh", "numpy")
        assert_grads_close(grads, ref_grads, SAME_DTYPE_TOL[dtype]["grad"])


# Wide steps on the small-step kernel (which the switch sends B <= 3 of any width): several
# full blocks of W_hh's rows (dot, forward) and of its columns (axpy, backward: twelve vectors
# for one row of X, six for two, four for three), then the narrower ones and the masked last
# vector; on one thread and on the team.
WIDE_SHAPES = [(3, B, 5, H) for B in (1, 2, 3) for H in (130, 250, 330)]
# and with products beyond own_products_max_macs: the projection and dx on BLAS
WIDE_SHAPES += [(4, 2, 40, 130), (3, 1, 64, 250), (2, 3, 33, 200)]


@pytest.mark.parametrize("build", list(_cython_backend.KERNEL_BUILDS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", WIDE_SHAPES, ids=["T{}B{}D{}H{}".format(*s) for s in WIDE_SHAPES])
def test_small_steps_on_wide_steps_match_reference(shape, dtype, build, monkeypatch):
    force_path(monkeypatch, f"small-{build}")
    p = make_problem(2, *shape, dtype)
    ref_out, ref_grads = run(p, "tanh", "numpy")
    tol = SAME_DTYPE_TOL[dtype]
    for threads in (1, 2):
        out, cache = rnnfast.rnn_forward(*p.args, n_threads=threads)
        grads = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, n_threads=threads)
        assert _cython_backend.switches.last_pass[:2] == (build, "small")
        assert_close(out, ref_out, tol["forward"], f"out, {threads} threads")
        assert_grads_close(grads, ref_grads, tol["grad"])


# Shapes whose small steps cover every kind of block both ways: 8-row and 4-row dot blocks and
# single rows (forward), full, narrower and masked column blocks (backward).
ALTERNATE_SHAPES = [(5, 1, 3, 100), (4, 2, 5, 130), (3, 3, 4, 257), (6, 1, 2, 13)]


@pytest.mark.parametrize("build", list(_cython_backend.KERNEL_BUILDS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ALTERNATE_SHAPES,
                         ids=["T{}B{}D{}H{}".format(*s) for s in ALTERNATE_SHAPES])
def test_small_steps_alternating_through_W_hh_give_the_same_bits(shape, dtype, build,
                                                                  monkeypatch):
    """Beyond the L2 cache, every other small step goes through W_hh's blocks the other way
    (alternate_steps): the same blocks, so the same bits as one order, leaky with noise and
    ragged lengths too."""
    force_path(monkeypatch, f"small-{build}")
    switches = _cython_backend.switches
    p = make_problem(3, *shape, dtype)
    T, B, D, H = shape
    lengths = np.random.default_rng(3).integers(1, T + 1, B)
    lengths[0] = T
    dynamics = make_dynamics(3, H, T, B, dtype)

    def both(**kwargs):
        out, cache = rnnfast.rnn_forward(*p.args, n_threads=1, **kwargs)
        return out, rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, n_threads=1)

    for kwargs in ({}, {"lengths": lengths, **dynamics}):
        monkeypatch.setattr(switches, "l2_cache_bytes", 1 << 40)
        one_way = both(**kwargs)
        monkeypatch.setattr(switches, "l2_cache_bytes", 1)
        alternating = both(**kwargs)
        np.testing.assert_array_equal(alternating[0], one_way[0])
        for got, want in zip(alternating[1], one_way[1]):
            np.testing.assert_array_equal(got, want)
    ref_out, ref_grads = run(p, "tanh", "numpy")
    tol = SAME_DTYPE_TOL[dtype]
    out, grads = both()
    assert_close(out, ref_out, tol["forward"], "out")
    assert_grads_close(grads, ref_grads, tol["grad"])


def _off_the_lines(W, offset):
    """W copied to `offset` bytes past a 64-byte boundary: rows off the cache lines."""
    buffer = np.empty(W.nbytes + 128, np.uint8)
    start = (-buffer.ctypes.data) % 64 + offset
    moved = buffer[start:start + W.nbytes].view(W.dtype).reshape(W.shape)
    moved[...] = W
    return moved


# Shapes of every kind of small-step block (see ALTERNATE_SHAPES), with rows of W_hh of a
# multiple of 64 bytes (H = 32, 64) or not, and groups of six rows and more.
ALIGN_SHAPES = ALTERNATE_SHAPES + [(4, 7, 3, 64), (3, 13, 2, 32), (5, 2, 4, 47)]


@pytest.mark.parametrize("offset", [0, 16, 40])
@pytest.mark.parametrize("build", list(_cython_backend.KERNEL_BUILDS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ALIGN_SHAPES,
                         ids=["T{}B{}D{}H{}".format(*s) for s in ALIGN_SHAPES])
def test_small_steps_on_a_copy_of_W_hh_on_cache_lines_give_the_same_bits(shape, dtype, build,
                                                                         offset, monkeypatch):
    """Small steps read W_hh from a copy whose rows start on cache lines (align_steps): the same
    operations on the same values, so the same bits as on W_hh itself wherever it starts,
    leaky with noise and ragged lengths too; and on the team, which reads it while it runs
    the steps alone (the test's team mode "never") and W_hh as it is while it shares them
    ("always")."""
    force_path(monkeypatch, f"small-{build}")
    team_builds = _cython_backend.KERNEL_BUILDS
    switches = _cython_backend.switches
    monkeypatch.setattr(switches, "threads_min_step_flops", 0)
    p = make_problem(4, *shape, dtype)
    T, B, D, H = shape
    W_hh = _off_the_lines(p.W_hh, offset)
    args = (p.x, p.h0, p.W_xh, W_hh, p.b)
    lengths = np.random.default_rng(4).integers(1, T + 1, B)
    lengths[0] = T
    dynamics = make_dynamics(4, H, T, B, dtype)

    def both(threads, **kwargs):
        out, cache = rnnfast.rnn_forward(*args, n_threads=threads, **kwargs)
        return out, rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, n_threads=threads)

    for kwargs in ({}, {"lengths": lengths, **dynamics}):
        monkeypatch.setattr(switches, "align_steps_min_steps", 1 << 40)
        assert not _cython_backend.align_small_steps(T, H, dtype)
        as_given = both(1, **kwargs)
        monkeypatch.setattr(switches, "align_steps_min_steps", 1)
        monkeypatch.setattr(switches, "l1_cache_bytes", 0)
        assert _cython_backend.align_small_steps(T, H, dtype)
        aligned = both(1, **kwargs)
        on_the_team = both(2, **kwargs)  # the steps' column blocks (conftest: always)
        assert switches.last_pass[1:] == ("small", 2)
        team_builds[build].reset_team("never")
        try:
            alone_on_the_team = both(2, **kwargs)
        finally:
            team_builds[build].reset_team("always")
        for got in (aligned, on_the_team, alone_on_the_team):
            np.testing.assert_array_equal(got[0], as_given[0])
            for got_grad, want in zip(got[1], as_given[1]):
                np.testing.assert_array_equal(got_grad, want)
    ref_out, ref_grads = run(p, "tanh", "numpy")
    tol = SAME_DTYPE_TOL[dtype]
    out, grads = both(1)
    assert_close(out, ref_out, tol["forward"], "out")
    assert_grads_close(grads, ref_grads, tol["grad"])


@pytest.mark.parametrize("T, H, dtype, expected", [
    (100, 128, np.float32, True),  # 64 KiB: beyond L1, within L2
    (100, 48, np.float32, True),  # 9 KiB: the copy fits L1
    (100, 100, np.float32, False),  # 39 KiB padded to 44: it would push W_hh out of L1
    (4, 128, np.float32, False),  # too short a pass to repay the copy
    (100, 1024, np.float32, False),  # 4 MiB: beyond L2
    (100, 72, np.float64, False), (100, 128, np.float64, True)])
def test_the_copy_of_W_hh_on_cache_lines_where_it_pays(T, H, dtype, expected, monkeypatch):
    """The rule as measured (switches.pxi), on a core of 48 KiB of L1 and 2 MiB of L2."""
    switches = _cython_backend.switches
    monkeypatch.setattr(switches, "l1_cache_bytes", 48 << 10)
    monkeypatch.setattr(switches, "l2_cache_bytes", 2 << 20)
    assert _cython_backend.align_small_steps(T, H, dtype) == expected


# T >= 10 and T * B >= H / 8: passes from which the forward steps run on W_hh^T.
TRANSPOSED_SHAPES = [(13, 1, 3, 100), (11, 2, 5, 130), (11, 3, 4, 257), (12, 1, 2, 13),
                     (10, 7, 3, 64), (10, 13, 2, 32), (10, 2, 4, 47), (10, 4, 1, 8)]


@pytest.mark.parametrize("T, B, H, expected", [
    (13, 1, 100, True), (9, 1, 72, False),  # from 10 steps
    (12, 2, 512, False), (32, 2, 512, True), (40, 1, 512, False),  # and T * B >= H / 8
    (100, 1, 1024, False)])  # 4 MiB float32: beyond L2
def test_the_forward_steps_on_W_hh_transposed_where_they_pay(T, B, H, expected, monkeypatch):
    """The rule as measured (switches.pxi), on a core of 2 MiB of L2, in a build whose small
    steps read W_hh as it is (the panel builds pack it in every pass anyway)."""
    switches = _cython_backend.switches
    monkeypatch.setattr(switches, "l2_cache_bytes", 2 << 20)
    expected = expected and switches.natural_steps
    assert _cython_backend.transposed_small_steps(T, B, H, np.float32) == expected


@pytest.mark.parametrize("build", list(_cython_backend.KERNEL_BUILDS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", TRANSPOSED_SHAPES,
                         ids=["T{}B{}D{}H{}".format(*s) for s in TRANSPOSED_SHAPES])
def test_forward_small_steps_on_W_hh_transposed_match_the_reference(shape, dtype, build,
                                                                   monkeypatch):
    """Long enough forward passes run their small steps on W_hh^T as the backward's run on W_hh
    (transposed_steps): each h_t's sums then go over j in order, another rounding than the dot
    products' lanes, so: close to the reference (plain, and leaky with noise and ragged
    lengths), the same bits on one thread and on the team, and close to the steps on W_hh."""
    force_path(monkeypatch, f"small-{build}")
    switches = _cython_backend.switches
    monkeypatch.setattr(switches, "threads_min_step_flops", 0)
    p = make_problem(5, *shape, dtype)
    T, B, D, H = shape
    lengths = np.random.default_rng(5).integers(1, T + 1, B)
    lengths[0] = T
    dynamics = make_dynamics(5, H, T, B, dtype)
    tol = SAME_DTYPE_TOL[dtype]
    natural = switches.natural_steps

    def both(threads, **kwargs):
        out, cache = rnnfast.rnn_forward(*p.args, n_threads=threads, **kwargs)
        return out, rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, n_threads=threads)

    for kwargs in ({}, {"lengths": lengths, **dynamics}):
        out, cache = rnnfast.rnn_forward(*p.args, backend="numpy", **kwargs)
        ref = out, rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n)
        monkeypatch.setattr(switches, "transposed_steps_min_steps", 1 << 40)
        on_W_hh = both(1, **kwargs)
        monkeypatch.setattr(switches, "transposed_steps_min_steps", 10)
        assert _cython_backend.transposed_small_steps(T, B, H, dtype) == natural
        one, two = both(1, **kwargs), both(2, **kwargs)
        assert switches.last_pass[1:] == ("small", 2)
        np.testing.assert_array_equal(two[0], one[0])
        for got, want in zip(two[1], one[1]):
            np.testing.assert_array_equal(got, want)
        for got in (one, on_W_hh):
            assert_close(got[0], ref[0], tol["forward"], "out")
            assert_grads_close(got[1], ref[1], tol["grad"])
        if not natural:  # the panel builds have one layout only
            np.testing.assert_array_equal(one[0], on_W_hh[0])
