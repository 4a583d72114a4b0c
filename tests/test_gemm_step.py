"""The large steps' packed GEMM (gemm.h; step.pxd, gemm_step) on shapes around its blocking.

Its blocks, in every build: tiles of 12 rows (AVX-512) or 6 (the others) by panels of 32 float32
/ 16 float64 columns (AVX-512), 16 / 8 (AVX2) or 8 / 4 (baseline); K blocks of 256 float32 / 128
float64 elements, fewer when the panels' K block would pass 512 KiB (H = 513 in float64: 127);
the rows packed from 8 panels on or rows longer than 1 KiB. The shapes below put B, H (= K = N)
just below, at and above those sizes: B = 1, 5-7, 11-13, 31-33, 65; H = 1..9, 17, 31-33, 100,
129, 257, 300, 513; and tiles of 1-5 rows across one panel and a column to many panels. Each runs with every step forced onto the GEMM (switches.forced_step) and is
compared with the NumPy reference, with a leak, noise and lengths, with the norms, and against
central differences; forcing BLAS instead gives the same results within rounding.
"""
import numpy as np
import pytest

import rnnfast
from rnnfast._kernels import backend as _cython_backend
from rnn_helpers import (FLOAT32_VS_FLOAT64, SAME_DTYPE_TOL, assert_close, assert_grads_close,
                         make_dynamics, make_problem, numeric_gradient)

SWITCHES = _cython_backend.switches
BUILDS = list(_cython_backend.KERNEL_BUILDS)
# (T, B, D, H)
SHAPES = [(3, 1, 2, 1), (2, 5, 3, 2), (2, 6, 1, 3), (2, 7, 2, 4), (3, 11, 2, 5), (2, 12, 3, 6),
          (2, 13, 2, 7), (2, 31, 3, 8), (3, 32, 2, 9), (2, 33, 3, 17), (2, 12, 2, 31),
          (2, 13, 3, 32), (2, 33, 2, 33), (3, 32, 5, 100), (2, 65, 3, 129), (2, 31, 2, 257),
          (2, 33, 4, 300), (2, 13, 3, 513),
          # tiles of 1-5 rows across many panels, the last one partial or whole
          (2, 1, 3, 33), (2, 2, 2, 64), (3, 3, 2, 100), (2, 4, 3, 257), (2, 5, 2, 129),
          (2, 1, 2, 300)]
SHAPE_IDS = ["T{}B{}D{}H{}".format(*s) for s in SHAPES]
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


@pytest.fixture(params=BUILDS)
def gemm_build(request, monkeypatch):
    """Every step of the test on the GEMM of this build."""
    monkeypatch.setattr(SWITCHES, "forced_step", "gemm")
    monkeypatch.setattr(SWITCHES, "build", request.param)
    return request.param


def tolerance(dtype):
    return FLOAT32_VS_FLOAT64 if dtype == np.float32 else SAME_DTYPE_TOL[np.float64]


def run(p, backend, nonlinearity="tanh", lengths=None, **dynamics):
    """Forward, then backward with norms: (out, grads, norms)."""
    out, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, backend=backend,
                                     lengths=lengths, **dynamics)
    grads, norms = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, return_norms=True)
    return out, grads, norms


def assert_matches_reference(p, dtype, nonlinearity="tanh", lengths=None, dynamics=None):
    dynamics = dynamics or {}
    cast = {k: v.astype(dtype) if isinstance(v, np.ndarray) else v for k, v in dynamics.items()}
    out, grads, norms = run(p.astype(dtype), "cython", nonlinearity, lengths, **cast)
    assert SWITCHES.last_pass[1] == "gemm"
    ref_out, ref_grads, ref_norms = run(p, "numpy", nonlinearity, lengths, **dynamics)
    tol = tolerance(dtype)
    assert out.dtype == dtype
    assert_close(out, ref_out, tol["forward"], "out")
    assert_grads_close(grads, ref_grads, tol["grad"])
    assert_close(norms, ref_norms, tol["grad"], "norms")


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_gemm_matches_reference(shape, dtype, nonlinearity, gemm_build):
    assert_matches_reference(make_problem(11, *shape), dtype, nonlinearity)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 13, 2, 7), (2, 33, 3, 33), (2, 31, 2, 257),
                                   (2, 13, 2, 513)], ids=lambda s: "T{}B{}D{}H{}".format(*s))
def test_gemm_leak_noise_and_lengths(shape, dtype, gemm_build):
    """A per-unit leak with both noises, and a batch of ragged lengths (unsorted), on the
    GEMM: the leak's epilogue and the carry run on tiles of rows still running."""
    T, B, D, H = shape
    p = make_problem(12, *shape)
    lengths = np.random.default_rng(3).integers(1, T + 1, B)
    lengths[B // 2] = T
    assert_matches_reference(p, dtype, lengths=lengths, dynamics=make_dynamics(12, H, T, B))


@pytest.mark.parametrize("shape", [(2, 13, 2, 7), (2, 33, 2, 9)],
                         ids=lambda s: "T{}B{}D{}H{}".format(*s))
@pytest.mark.parametrize("name", ["W_hh", "h0"])
def test_gemm_gradients_match_finite_differences(shape, name, gemm_build):
    """dL/dW_hh and dL/dh0 of L = sum(out * dout) + sum(h_T * dh_n) on the GEMM, float64,
    leaky with noise, against central differences of the GEMM's own forward pass."""
    T, B, D, H = shape
    p = make_problem(13, *shape)
    dynamics = make_dynamics(13, H, T, B)

    def loss():
        out, _ = rnnfast.rnn_forward(*p.args, **dynamics)
        return float(np.sum(out * p.dout) + np.sum(out[-1] * p.dh_n))

    _, grads, _ = run(p, "cython", **dynamics)
    analytic = grads.dW_hh if name == "W_hh" else grads.dh0
    numeric = numeric_gradient(loss, getattr(p, name))
    assert_close(analytic, numeric, 1e-6, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 33, 3, 33), (2, 65, 2, 129), (2, 32, 3, 300)],
                         ids=lambda s: "T{}B{}D{}H{}".format(*s))
def test_gemm_agrees_with_blas_steps(shape, dtype, monkeypatch):
    """The same passes on SciPy's BLAS steps and on the GEMM agree within their rounding."""
    p = make_problem(14, *shape).astype(dtype)
    results = {}
    for step in ("blas", "gemm"):
        monkeypatch.setattr(SWITCHES, "forced_step", step)
        results[step] = run(p, "cython", lengths=None, **make_dynamics(14, shape[3], shape[0],
                                                                       shape[1], dtype))
        assert SWITCHES.last_pass[1] == step
    tol = SAME_DTYPE_TOL[dtype]
    (out, grads, norms), (ref_out, ref_grads, ref_norms) = results["gemm"], results["blas"]
    assert_close(out, ref_out, tol["forward"], "out")
    assert_grads_close(grads, ref_grads, tol["grad"])
    assert_close(norms, ref_norms, tol["grad"], "norms")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_switch_sends_large_steps_to_the_gemm(dtype, monkeypatch):
    """Large steps (above small_steps_max_batch rows, from large_steps_min_steps steps) of
    hidden sizes in the GEMM's range go to it, others to BLAS, on one thread as on two (the
    bits do not depend on it); own_gemm False sends them all to BLAS."""
    monkeypatch.setattr(SWITCHES, "forced_step", None)
    T = SWITCHES.large_steps_min_steps
    for B in (SWITCHES.small_steps_max_batch + 1, 8, 32):
        for H, expected in ((SWITCHES.gemm_min_hidden, "gemm"),
                            (SWITCHES.gemm_min_hidden - 1, "blas")):
            p = make_problem(15, T, B, 1, H).astype(dtype)
            for threads in (1, 2):
                rnnfast.rnn_forward(*p.args, n_threads=threads)
                assert SWITCHES.last_pass[1] == expected, (B, H, threads)
    B = SWITCHES.small_steps_max_batch + 1
    wide = make_problem(16, T, B, 1, 600).astype(dtype)
    for limit, expected in ((512, "blas" if dtype == np.float64 else "gemm"), (1 << 62, "gemm")):
        monkeypatch.setattr(SWITCHES, "gemm_max_hidden_float64", limit)
        rnnfast.rnn_forward(*wide.args, n_threads=1)
        assert SWITCHES.last_pass[1] == expected, limit
    monkeypatch.setattr(SWITCHES, "own_gemm", False)
    rnnfast.rnn_forward(*make_problem(15, T, B, 1, SWITCHES.gemm_min_hidden).astype(dtype).args,
                        n_threads=1)
    assert SWITCHES.last_pass[1] == "blas"


def test_float64_gemm_limit_only_where_L2_is_small(monkeypatch):
    """Float64 large steps stay on BLAS beyond gemm_max_hidden_float64 = 512 on cores with less
    than 2 MiB of L2 (measured slower on our GEMM there), not on larger ones (faster)."""
    from rnnfast._kernels import entry

    monkeypatch.setattr(entry, "l2_cache_bytes", lambda: 1 << 20)
    assert entry.Switches().gemm_max_hidden_float64 == 512
    monkeypatch.setattr(entry, "l2_cache_bytes", lambda: 2 << 20)
    assert entry.Switches().gemm_max_hidden_float64 > 1 << 20
