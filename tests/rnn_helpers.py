"""Shared test helpers: the tolerance table, random problems, the comparison, the step paths.

Every comparison in the suite goes through ``assert_close`` with a tolerance from ``TOL``, so the
precision we promise lives in one place, with its reason beside it. Test modules import this
module by name (conftest.py puts tests/ on sys.path: under --import-mode=importlib, test modules
cannot import conftest or each other).
"""
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from rnnfast._kernels import backend as _cython_backend

# --------------------------------------------------------------------------------------------
# Tolerances. Each is a relative error, measured against the largest magnitude of the expected
# array (see assert_close). Keys: what is compared.
# --------------------------------------------------------------------------------------------
TOL = {
    # Cython vs NumPy reference, both float64. They differ only in summation order (BLAS or the
    # blocked loop vs NumPy's matmul) and in tanh (the kernels' own, within 2 ulp: see
    # test_activation.py): a few ulps per step, grown by at most ~T*H additions, i.e. ~1e-14
    # for our shapes. DESIGN.md promises ~1e-10.
    "float64": 1e-10,
    # float32 results (Cython or reference) against a float64 reference, forward: eps32 = 6e-8
    # per operation, summed over D+H terms and compounded over T steps; DESIGN.md promises 1e-5.
    "float32_forward": 1e-5,
    # float32 gradients against a float64 reference: BPTT chains T steps of matmuls on top of
    # the forward's rounding, and dW sums T*B outer products; DESIGN.md promises 1e-4.
    "float32_grad": 1e-4,
    # float32 Cython vs float32 reference: both carry float32 rounding, in different orders,
    # so their difference is bounded by the sum of their errors against exact arithmetic.
    "float32_vs_float32_forward": 2e-5,
    "float32_vs_float32_grad": 2e-4,
    # Central differences in float64 with step FD_EPS = 1e-6: truncation error ~eps^2 * L''' ~
    # 1e-12, cancellation error ~eps64 * |L| / eps ~ 1e-10 * |L| for |L| ~ 1..100. 1e-6 leaves a
    # wide margin above both and still catches any wrong term (errors of order 1e-1 and up).
    "finite_difference": 1e-6,
    # torch.nn.RNN float64 vs ours: independent code, different summation order, same math.
    "torch_float64": 1e-10,
}
FD_EPS = 1e-6  # central-difference step, see TOL["finite_difference"]

# Tolerance of a float32 result against a float64 reference, by what is compared.
FLOAT32_VS_FLOAT64 = {"forward": TOL["float32_forward"], "grad": TOL["float32_grad"]}
# Tolerance of one backend against another at the same dtype, by dtype and forward/grad.
SAME_DTYPE_TOL = {
    np.float64: {"forward": TOL["float64"], "grad": TOL["float64"]},
    np.float32: {"forward": TOL["float32_vs_float32_forward"],
                 "grad": TOL["float32_vs_float32_grad"]},
}
GRAD_NAMES = ("dx", "dh0", "dW_xh", "dW_hh", "db")

# Variable-length batches, (T, B, H, lengths): sorted, unsorted, all full, all length one, ties,
# B beyond a row block of the micro-kernel.
LENGTH_CASES = [
    (5, 4, 7, [5, 3, 3, 1]),
    (5, 4, 7, [2, 5, 1, 4]),
    (4, 3, 17, [4, 4, 4]),
    (3, 5, 9, [1, 1, 1, 1, 1]),
    (6, 9, 33, [6, 1, 5, 2, 6, 3, 4, 4, 2]),
]
LENGTH_IDS = ["T{}B{}H{}-{}".format(T, B, H, "".join(map(str, L))) for T, B, H, L in LENGTH_CASES]


def assert_close(actual, expected, tol, err_msg=""):
    """Assert actual == expected to a relative tolerance, measured against the array's scale.

    Rounding errors of a sum of products are proportional to the size of the terms, not of the
    result: an entry that is small through cancellation carries the absolute error of the big
    terms it was computed from. So every entry may be off by ``tol * scale``, with scale the
    largest finite magnitude in ``expected``, floored at 1 (our problems have inputs, weights and
    upstream gradients of order 1, so the terms are at least of order 1 even when a whole result
    is small, e.g. dh0 after a few steps of vanishing gradient). ``rtol`` adds nothing beyond
    atol here but keeps the failure report readable. NaN must sit at the same positions and
    infinities must be equal (assert_allclose's equal_nan). Shapes must match exactly.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{err_msg}: shape {actual.shape} != {expected.shape}"
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max()) if finite.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, equal_nan=True,
                               err_msg=err_msg)


def numeric_gradient(f, array):
    """d f() / d array, entry by entry, by central differences with step FD_EPS (array is
    perturbed in place, and restored)."""
    grad = np.empty_like(array)
    for idx in np.ndindex(array.shape):
        saved = array[idx]
        array[idx] = saved + FD_EPS
        plus = f()
        array[idx] = saved - FD_EPS
        minus = f()
        array[idx] = saved
        grad[idx] = (plus - minus) / (2 * FD_EPS)
    return grad


def assert_grads_close(actual, expected, tol, has_bias=True):
    """Compare two RNNGrads field by field; db must be None exactly when there is no bias."""
    for name in GRAD_NAMES:
        a, e = getattr(actual, name), getattr(expected, name)
        if name == "db" and not has_bias:
            assert a is None and e is None, "db must be None without a bias"
            continue
        assert_close(a, e, tol, err_msg=name)


# --------------------------------------------------------------------------------------------
# Random problems.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """Inputs of one forward + backward pass. Optional pieces are None when left out."""

    x: np.ndarray  # (T, B, D)
    h0: Optional[np.ndarray]  # (B, H)
    W_xh: np.ndarray  # (H, D)
    W_hh: np.ndarray  # (H, H)
    b: Optional[np.ndarray]  # (H,)
    dout: np.ndarray  # (T, B, H)
    dh_n: Optional[np.ndarray]  # (B, H)

    @property
    def args(self):
        """The positional arguments of rnn_forward."""
        return self.x, self.h0, self.W_xh, self.W_hh, self.b

    @property
    def shape(self):
        """(T, B, D, H)."""
        T, B, D = self.x.shape
        return T, B, D, self.W_hh.shape[0]

    def astype(self, dtype):
        """The same problem with every array cast to dtype."""
        cast = {k: None if v is None else v.astype(dtype) for k, v in self.__dict__.items()}
        return Problem(**cast)

    def without(self, *names):
        """The same problem with the named optional pieces (h0, b, dh_n) set to None."""
        return replace(self, **{name: None for name in names})


def make_problem(seed, T, B, D, H, dtype=np.float64, *, bias=True, h0=True, dh_n=True):
    """A random, well-conditioned problem from numpy's Generator seeded with ``seed``.

    Weights are scaled by 1/sqrt(fan-in), so every pre-activation has variance ~1: tanh is not
    saturated (its gradients are not all ~0, which would make gradient checks vacuous) and relu
    has live units. W_hh gets 0.9/sqrt(H) to keep the recurrence contracting on average.
    Values are drawn in float64 and then cast, so a float32 problem equals the float64 one
    rounded.
    """
    rng = np.random.default_rng(seed)
    p = Problem(
        x=rng.standard_normal((T, B, D)),
        h0=0.5 * rng.standard_normal((B, H)),
        W_xh=rng.standard_normal((H, D)) / np.sqrt(D),
        W_hh=0.9 * rng.standard_normal((H, H)) / np.sqrt(H),
        b=0.1 * rng.standard_normal(H),
        dout=rng.standard_normal((T, B, H)),
        dh_n=rng.standard_normal((B, H)),
    )
    dropped = [name for name, keep in (("b", bias), ("h0", h0), ("dh_n", dh_n)) if not keep]
    return p.without(*dropped).astype(dtype)


# Leaks of the leaky tests: one for every unit, or one per unit (from 0.02, a time constant of
# 50 steps, to exactly 1, some units not leaky at all).
LEAK_KINDS = ("scalar", "per-unit")


def make_dynamics(seed, H, T, B, dtype=np.float64, *, leak="per-unit", noise=True,
                  state_noise=True):
    """The leak, noise and state_noise keyword arguments of a leaky rnn_forward call.

    leak is one of LEAK_KINDS (or None for none); the noises (T, B, H) are small beside the
    pre-activations and states (standard deviations 0.3 and 0.1). Arrays are drawn in float64
    and cast, as in make_problem; cast_dynamics casts them again.
    """
    rng = np.random.default_rng(seed + 7919)
    dynamics = {}
    if leak == "scalar":
        dynamics["leak"] = 0.2
    elif leak == "per-unit":
        alpha = rng.uniform(0.02, 1.0, H)
        alpha[rng.integers(H)] = 1.0
        dynamics["leak"] = alpha.astype(dtype)
    if noise:
        dynamics["noise"] = (0.3 * rng.standard_normal((T, B, H))).astype(dtype)
    if state_noise:
        dynamics["state_noise"] = (0.1 * rng.standard_normal((T, B, H))).astype(dtype)
    return dynamics


def cast_dynamics(dynamics, dtype):
    """The same keyword arguments with every array cast to dtype (numbers stay numbers)."""
    return {k: v.astype(dtype) if isinstance(v, np.ndarray) else v for k, v in dynamics.items()}


def preactivations(p, nonlinearity):
    """The pre-activations a_t (T, B, H) of problem p, computed here in float64 from the math.

    Used only to choose problems (e.g. relu problems with no unit near the kink), never as an
    oracle for the package.
    """
    T, B, D, H = p.shape
    act = np.tanh if nonlinearity == "tanh" else (lambda a: np.maximum(a, 0))
    h = np.zeros((B, H)) if p.h0 is None else p.h0.astype(np.float64)
    pre = np.empty((T, B, H))
    for t in range(T):
        a = p.x[t] @ p.W_xh.T + h @ p.W_hh.T + (0 if p.b is None else p.b)
        pre[t] = a
        h = act(a)
    return pre


def make_problem_away_from_kink(seed, T, B, D, H, margin, **kwargs):
    """Like make_problem, for relu: the first seed >= ``seed`` whose |a_t| > margin everywhere.

    Central differences across relu's kink at 0 measure nothing useful; a margin much larger
    than the perturbation of any a_t keeps every unit on one side of it.
    """
    for s in range(seed, seed + 1000):
        p = make_problem(s, T, B, D, H, **kwargs)
        if np.abs(preactivations(p, "relu")).min() > margin:
            return p
    raise RuntimeError("no problem away from the relu kink in 1000 seeds")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# The paths of the Cython backend: each step kernel (the small-step micro-kernel, BLAS or our
# packed GEMM) in
# each compiled build of the kernels this machine runs (baseline; avx2 on x86-64 with AVX2).
# --------------------------------------------------------------------------------------------
STEPS = ("small", "blas", "gemm")
PATHS = tuple(f"{step}-{build}" for build in _cython_backend.KERNEL_BUILDS for step in STEPS)


def force_path(monkeypatch, path):
    """Make every Cython step take ``path`` ("<step>-<build>", e.g. "small-avx2").

    The step: the switch (``switches.forced_step``) sends every step to that kernel: both
    kernels must be correct on every shape, whichever one the switch would pick today ("blas"
    also keeps steps off the threads). The build: the passes run that build's kernels
    (``switches.build``).
    """
    step, build = path.split("-")
    monkeypatch.setattr(_cython_backend.switches, "forced_step", step)
    monkeypatch.setattr(_cython_backend.switches, "build", build)
