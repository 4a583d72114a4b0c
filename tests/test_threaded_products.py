"""Large steps on our GEMM shared among the thread team, and a pass's products (the input
projection, dx, the weight gradients and db) shared among it as row ranges.

Both must give the bits of one thread doing the same work: the GEMM's time loop for any
thread count (each element is init + its products in k order, whoever computes its panel);
the products for any team mode at a given thread count (the ranges depend on n_threads, not
on who runs them). And both must agree with the NumPy reference: on panel and row-range
edges, with a leak, noise and ragged lengths.
"""
import numpy as np
import pytest

import rnnfast
from rnnfast._kernels import backend as _cython_backend
from rnn_helpers import (FLOAT32_VS_FLOAT64, SAME_DTYPE_TOL, assert_close, assert_grads_close,
                         make_dynamics, make_problem)

SWITCHES = _cython_backend.switches
BUILDS = list(_cython_backend.KERNEL_BUILDS)
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
# (T, B, D, H): one panel, a partial last panel, panels that do not split evenly among the
# tasks, B across a tile of rows; H = 257 and 300 leave a panel narrower than a vector.
GEMM_SHAPES = [(3, 13, 2, 7), (3, 33, 3, 40), (2, 12, 2, 100), (4, 65, 3, 257),
               (3, 33, 4, 300),
               # few rows across many panels, in column ranges
               (3, 4, 2, 257), (2, 2, 3, 100)]
MODES = ("always", "never", "adapt")


def shape_id(shape):
    return "T{}B{}D{}H{}".format(*shape)


@pytest.fixture(params=BUILDS)
def build(request, monkeypatch):
    monkeypatch.setattr(SWITCHES, "build", request.param)
    yield _cython_backend.KERNEL_BUILDS[request.param]
    _cython_backend.KERNEL_BUILDS[request.param].reset_team("always")


def run(p, n_threads, lengths=None, backend="cython", **dynamics):
    """Forward, then backward without norms (the threaded GEMM's loop): (out, grads)."""
    out, cache = rnnfast.rnn_forward(*p.args, lengths=lengths, n_threads=n_threads,
                                     backend=backend, **dynamics)
    return out, rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, n_threads=n_threads)


def assert_identical(results, expected):
    out, grads = results
    np.testing.assert_array_equal(out, expected[0])
    for got, want in zip(grads, expected[1]):
        np.testing.assert_array_equal(got, want)


def ragged_lengths(seed, T, B):
    lengths = np.random.default_rng(seed).integers(1, T + 1, B)
    lengths[B // 2] = T
    return lengths


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=shape_id)
def test_gemm_steps_on_the_team_give_the_bits_of_one_thread(shape, dtype, build, monkeypatch):
    """Every step on our GEMM, shared among 2 and 3 threads (more than the machine's cores
    allowed for), on every team mode, leaky with both noises and ragged lengths: forward and
    gradients bit for bit those of one thread (the products kept in one call each)."""
    T, B, D, H = shape
    monkeypatch.setattr(SWITCHES, "forced_step", "gemm")
    monkeypatch.setattr(SWITCHES, "threads_min_step_flops", 0)
    monkeypatch.setattr(SWITCHES, "threads_min_product_flops", 1 << 60)
    p = make_problem(21, *shape).astype(dtype)
    lengths = ragged_lengths(21, T, B)
    dynamics = make_dynamics(21, H, T, B, dtype)
    expected = run(p, 1, lengths, **dynamics)
    for n_threads in (2, 3):
        monkeypatch.setattr(SWITCHES, "cores", n_threads)
        for mode in MODES:
            build.reset_team(mode)
            assert_identical(run(p, n_threads, lengths, **dynamics), expected)
            assert SWITCHES.last_pass == (SWITCHES.build, "gemm", n_threads)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=shape_id)
def test_gemm_steps_on_the_team_match_the_reference(shape, dtype, nonlinearity, build,
                                                    monkeypatch):
    """The plain RNN (no leak) on the team's GEMM steps against the NumPy reference."""
    monkeypatch.setattr(SWITCHES, "forced_step", "gemm")
    monkeypatch.setattr(SWITCHES, "threads_min_step_flops", 0)
    monkeypatch.setattr(SWITCHES, "cores", 2)
    build.reset_team("always")
    p = make_problem(22, *shape)
    out, cache = rnnfast.rnn_forward(*p.astype(dtype).args, nonlinearity=nonlinearity,
                                     n_threads=2)
    grads = rnnfast.rnn_backward(p.dout.astype(dtype), cache, dh_n=p.dh_n.astype(dtype),
                                 n_threads=2)
    assert SWITCHES.last_pass[1:] == ("gemm", 2)
    ref_out, ref_cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity,
                                             backend="numpy")
    ref_grads = rnnfast.rnn_backward(p.dout, ref_cache, dh_n=p.dh_n)
    tol = FLOAT32_VS_FLOAT64 if dtype == np.float32 else SAME_DTYPE_TOL[np.float64]
    assert_close(out, ref_out, tol["forward"], "out")
    assert_grads_close(grads, ref_grads, tol["grad"])


def test_norms_keep_the_gemm_steps_on_one_thread_with_the_same_gradients(build, monkeypatch):
    """A backward pass that measures the norms sums each row whole, on one thread; its
    gradients are those of the threaded pass without norms, bit for bit."""
    monkeypatch.setattr(SWITCHES, "forced_step", "gemm")
    monkeypatch.setattr(SWITCHES, "threads_min_step_flops", 0)
    monkeypatch.setattr(SWITCHES, "cores", 2)
    build.reset_team("always")
    p = make_problem(23, 4, 33, 3, 300, np.float32)
    _, cache = rnnfast.rnn_forward(*p.args, n_threads=2)
    grads, norms = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, n_threads=2,
                                        return_norms=True)
    plain = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, n_threads=2)
    for got, want in zip(grads, plain):
        np.testing.assert_array_equal(got, want)
    assert np.all(norms > 0)


# (T, B, D, H): row counts T * B that do not split evenly into ranges of 16 rows, and hidden
# sizes below, at and above one range; B = 4 runs the small steps (and, in the builds that read
# W as it is, the products on the step kernels), B = 33 BLAS or the GEMM.
PRODUCT_SHAPES = [(5, 4, 3, 20), (7, 4, 40, 33), (3, 33, 5, 17), (9, 33, 70, 64),
                  (2, 40, 3, 260)]


@pytest.mark.parametrize("own_gemm_products", [True, False], ids=["our-gemm", "blas"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", PRODUCT_SHAPES, ids=shape_id)
def test_shared_products_match_the_reference_on_every_team_mode(shape, dtype,
                                                                own_gemm_products, build,
                                                                monkeypatch):
    """The products in row ranges on 2 and 3 threads of the team (from any size; on our GEMM
    over W_xh in panels, or each range on BLAS), and dW_hh, dW_xh in ranges of their rows,
    one per thread, with a leak, noise
    and ragged lengths: against the reference, and bit for bit alike on every team mode."""
    T, B, D, H = shape
    monkeypatch.setattr(SWITCHES, "threads_min_product_flops", 0)
    monkeypatch.setattr(SWITCHES, "own_gemm_products", own_gemm_products)
    p = make_problem(24, *shape)
    lengths = ragged_lengths(24, T, B)
    dynamics = make_dynamics(24, H, T, B)
    reference = run(p, 1, lengths, backend="numpy", **dynamics)
    cast = p.astype(dtype)
    cast_dynamics = {k: v.astype(dtype) if isinstance(v, np.ndarray) else v
                     for k, v in dynamics.items()}
    tol = FLOAT32_VS_FLOAT64 if dtype == np.float32 else SAME_DTYPE_TOL[np.float64]
    for n_threads in (2, 3):
        monkeypatch.setattr(SWITCHES, "cores", n_threads)
        results = []
        for mode in MODES:
            build.reset_team(mode)
            results.append(run(cast, n_threads, lengths, **cast_dynamics))
        for other in results[1:]:
            assert_identical(other, results[0])
        out, grads = results[0]
        assert_close(out, reference[0], tol["forward"], "out")
        assert_grads_close(grads, reference[1], tol["grad"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [s for s in PRODUCT_SHAPES if s[1] >= 32], ids=shape_id)
def test_products_on_our_gemm_give_the_same_bits_on_any_thread_count(shape, dtype, build,
                                                                     monkeypatch):
    """On our GEMM each element of the projection and of dx is computed the same way whatever
    the row range: 2 and 3 threads (other ranges) give identical states, dx, dh0 and db. The
    weight gradients are one BLAS call per thread's range of their rows, which may round
    otherwise on another count: they agree to rounding."""
    T, B, D, H = shape
    monkeypatch.setattr(SWITCHES, "threads_min_product_flops", 0)
    p = make_problem(27, *shape).astype(dtype)
    lengths = ragged_lengths(27, T, B)
    results = {}
    for n_threads in (2, 3):
        monkeypatch.setattr(SWITCHES, "cores", n_threads)
        build.reset_team("always")
        results[n_threads] = run(p, n_threads, lengths)
    (out2, grads2), (out3, grads3) = results[2], results[3]
    np.testing.assert_array_equal(out3, out2)
    for name in ("dx", "dh0", "db"):
        np.testing.assert_array_equal(getattr(grads3, name), getattr(grads2, name))
    tol = SAME_DTYPE_TOL[np.dtype(dtype).type]["grad"]
    for name in ("dW_xh", "dW_hh"):
        assert_close(getattr(grads3, name), getattr(grads2, name), tol, name)


def test_shared_products_without_bias(build, monkeypatch):
    """Row ranges of the weight gradients without db, against the same pass in one call
    each."""
    monkeypatch.setattr(SWITCHES, "threads_min_product_flops", 0)
    monkeypatch.setattr(SWITCHES, "cores", 2)
    build.reset_team("always")
    p = make_problem(25, 6, 33, 9, 40, np.float64, bias=False)
    shared = run(p, 2)
    monkeypatch.setattr(SWITCHES, "threads_min_product_flops", 1 << 60)
    whole = run(p, 2)
    assert shared[1].db is None and whole[1].db is None
    assert_close(shared[0], whole[0], 1e-13, "out")
    assert_grads_close(shared[1], whole[1], 1e-12, has_bias=False)


@pytest.mark.parametrize("rows_needed, shared", [(10**9, False), (0, True)],
                         ids=["few-rows", "enough-rows"])
def test_a_large_w_xh_is_shared_only_from_enough_rows(rows_needed, shared, build, monkeypatch):
    """A W_xh beyond gemm_products_max_bytes keeps its products in one call (the bits of one
    thread) below blas_products_min_rows rows, and from there shares them on BLAS, whose
    ranges agree with the one-thread pass to rounding."""
    monkeypatch.setattr(SWITCHES, "threads_min_product_flops", 0)
    monkeypatch.setattr(SWITCHES, "gemm_products_max_bytes", 0)
    monkeypatch.setattr(SWITCHES, "blas_products_min_rows", rows_needed)
    monkeypatch.setattr(SWITCHES, "cores", 2)
    build.reset_team("always")
    p = make_problem(28, 9, 33, 70, 64, np.float64)
    one, two = run(p, 1), run(p, 2)
    if not shared:
        assert_identical(two, one)
    else:
        assert_close(two[0], one[0], 1e-13, "out")
        assert_grads_close(two[1], one[1], 1e-12)


def test_products_stay_in_one_call_below_the_threshold(monkeypatch):
    """Small passes keep their products in one call (and their bits) on any thread count."""
    monkeypatch.setattr(SWITCHES, "cores", 2)
    p = make_problem(26, 3, 2, 4, 8, np.float32)
    assert_identical(run(p, 2), run(p, 1))


def make_operands(seed, m, n, k, trans_a, trans_b, dtype):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b, (a.T if trans_a else a) @ (b.T if trans_b else b)


@pytest.mark.parametrize("split_columns", [False, True], ids=["rows", "columns"])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True),
                                              (True, True)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (37, 5, 3), (200, 163, 70), (16, 300, 33),
                                     (300, 17, 1)])
def test_team_matmul_matches_numpy_on_every_team_mode(m, n, k, dtype, trans_a, trans_b,
                                                      split_columns, build, monkeypatch):
    """The layers' GEMM on the team (rnnfast._kernels.backend.matmul): NumPy's product within
    rounding on 1, 2 and 3 threads, ranges of rows or of columns, and bit for bit alike on
    every team mode at each count."""
    a, b, expected = make_operands(27, m, n, k, trans_a, trans_b, dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for n_threads in (1, 2, 3):
        monkeypatch.setattr(SWITCHES, "cores", n_threads)
        results = []
        for mode in MODES:
            build.reset_team(mode)
            out = np.full((m, n), np.nan, dtype)
            assert _cython_backend.matmul(a, b, out, n_threads, trans_a, trans_b,
                                          split_columns) is out
            results.append(out)
        for other in results[1:]:
            np.testing.assert_array_equal(other, results[0])
        assert_close(results[0], expected, tol, "out")


def test_team_matmul_of_an_empty_inner_dimension_is_zeros():
    out = np.full((3, 4), np.nan)
    _cython_backend.matmul(np.ones((3, 0)), np.ones((0, 4)), out, 2)
    np.testing.assert_array_equal(out, np.zeros((3, 4)))


@pytest.mark.parametrize("bad, error, match", [
    (dict(out=np.ones((4, 5), np.float16)), TypeError, "out must be float32 or float64"),
    (dict(out=[[0.0]]), TypeError, "out must be a NumPy array"),
    (dict(a=np.ones((4, 3), np.float32)), ValueError, "a must be a C-contiguous"),
    (dict(b=np.ones((5, 3)).T), ValueError, "b must be a C-contiguous"),
    (dict(b=np.ones((4, 5))), ValueError, "does not fit out"),
    (dict(n_threads=0), ValueError, "n_threads must be a positive int"),
    (dict(n_threads=2.0), ValueError, "n_threads must be a positive int"),
])
def test_team_matmul_rejects_what_it_cannot_compute(bad, error, match):
    args = dict(a=np.ones((4, 3)), b=np.ones((3, 5)), out=np.empty((4, 5)), n_threads=2)
    args.update(bad)
    with pytest.raises(error, match=match):
        _cython_backend.matmul(args["a"], args["b"], args["out"], args["n_threads"])


def test_team_matmul_refuses_an_output_that_overlaps_an_operand():
    a = np.ones((4, 4))
    with pytest.raises(ValueError, match="overlap"):
        _cython_backend.matmul(a, np.ones((4, 4)), a, 2)
    readonly = np.empty((4, 4))
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _cython_backend.matmul(np.ones((4, 4)), np.ones((4, 4)), readonly, 2)



def test_float32_weight_gradients_on_numpy_sgemm_or_scipys(build, monkeypatch):
    """The team's float32 weight-gradient ranges on NumPy's bundled sgemm (where found) and on
    SciPy's agree with the reference; which one runs is only a matter of speed."""
    from rnnfast._kernels import blas, numpy_blas

    monkeypatch.setattr(SWITCHES, "threads_min_product_flops", 0)
    monkeypatch.setattr(SWITCHES, "cores", 2)
    build.reset_team("always")
    p = make_problem(30, 6, 33, 20, 140)
    reference = run(p, 1, backend="numpy")
    cast = p.astype(np.float32)
    found = blas.weights_sgemm_address()
    try:
        results = {}
        for name, address in (("numpy", found), ("scipy", 0)):
            blas.use_weights_sgemm(address)
            results[name] = run(cast, 2)
    finally:
        blas.use_weights_sgemm(found)
    for _, grads in results.values():
        assert_grads_close(grads, reference[1], FLOAT32_VS_FLOAT64["grad"])
    assert found == 0 or numpy_blas.use_numpy_sgemm()
