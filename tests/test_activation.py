"""The Cython backend's tanh is an approximation (rnnfast/_kernels/activation.pxd): hold its stated bound.

Through the public API: with D = H = 1, W_xh = 1, no bias and h0 = None, one step computes
a = x exactly, so out = tanh(x) for every x in a batch of many sequences.
The error is measured in units in the last place (ulp) of the result's dtype, against an
oracle more accurate than the bound: float64 np.tanh for float32 results, long double np.tanh
(80-bit on x86) for float64 results.
"""
import numpy as np
import pytest

import rnnfast

# Stated in _activation.pxd: at most 1.3 ulp (float32) and 2 ulp (float64) from tanh. The
# bounds below add a little for the oracle's own rounding; a formula error costs far more.
ULP_BOUND = {np.float32: 1.5, np.float64: 2.5}


def oracle(x):
    """tanh(x) to much better than one ulp of x's dtype, as float64 or long double."""
    if x.dtype == np.float32:
        return np.tanh(x.astype(np.float64))
    if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps:
        return np.tanh(x.astype(np.longdouble))
    pytest.skip("no long double wider than float64 to check float64 tanh against")


def sample_points(dtype):
    """Many x: uniform over the working range, log-spaced magnitudes down to subnormals, and
    dense around the approximation's switch at |x| = 0.625 and where tanh rounds to 1."""
    rng = np.random.default_rng(60)
    tiny = np.finfo(dtype).smallest_subnormal
    parts = [
        rng.uniform(-25, 25, 200_000),
        np.logspace(np.log10(float(tiny)), 1.5, 20_000),
        0.625 + np.linspace(-1e-3, 1e-3, 4001),
        np.linspace(8.5, 9.5, 2001),  # float32 tanh rounds to 1 from 9.01
        np.linspace(18.5, 19.5, 2001),  # float64 tanh rounds to 1 from 19.1
        [0.0, tiny, float(np.finfo(dtype).tiny), 1e-8, 1.0, 20.0, 40.0, 1e10, 1e30],
    ]
    x = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts]).astype(dtype)
    return np.concatenate([x, -x])


def tanh_via_rnn(x, backend):
    """out of a one-step RNN whose pre-activations are exactly x."""
    one = np.ones((1, 1), dtype=x.dtype)
    out, _ = rnnfast.rnn_forward(x.reshape(1, -1, 1), None, one, one, None, backend=backend)
    return out.reshape(-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_tanh_within_its_stated_ulp_bound(dtype, path):
    x = sample_points(dtype)
    got = tanh_via_rnn(x, "cython")
    exact = oracle(x)
    ulp = np.spacing(np.abs(exact).astype(dtype)).astype(exact.dtype)
    error_ulp = np.abs(got.astype(exact.dtype) - exact) / ulp
    worst = int(np.argmax(error_ulp))
    assert error_ulp[worst] <= ULP_BOUND[dtype], (
        f"tanh({x[worst]!r}) = {got[worst]!r}, off by {float(error_ulp[worst]):.2f} ulp")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_tanh_is_odd_bounded_and_monotone(dtype, path):
    """Exact properties of tanh that an approximation must keep: odd, |tanh| <= 1, monotone
    non-decreasing (checked on a sorted grid), tanh(0) = 0."""
    x = np.sort(sample_points(dtype))
    got = tanh_via_rnn(x, "cython")
    np.testing.assert_array_equal(tanh_via_rnn(-x, "cython"), -got)
    assert np.all(np.abs(got) <= 1)
    assert np.all(np.diff(got) >= 0)
    assert tanh_via_rnn(np.zeros(1, dtype), "cython")[0] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_tanh_special_values(dtype, path):
    x = np.array([np.inf, -np.inf, np.nan, np.finfo(dtype).max, -np.finfo(dtype).max], dtype)
    got = tanh_via_rnn(x, "cython")
    np.testing.assert_array_equal(got, np.array([1, -1, np.nan, 1, -1], dtype))
