"""`rnnfast bench`: the speed of rnnfast against its peers, measured in one interleaved run.

For each shape (T, B, D, H), dtype and pass ("forward", or "forward+backward" with the loss
sum(out * G) so that every step has an upstream gradient) it times:

- ``cython``: rnnfast's compiled backend;
- ``numpy``: rnnfast's NumPy reference, the textbook per-step loop;
- ``numpy-batched``: a stronger NumPy peer written here (``batched_forward``/``batched_backward``):
  the input projection and the weight gradients as single GEMMs over all T*B rows, and only
  ``h @ W_hh.T`` + tanh per step (forward) and the da/dh chain per step (backward) in Python;
- ``torch``: ``torch.nn.RNN`` on the CPU, when PyTorch is importable (forward under
  ``torch.no_grad()``, forward+backward with autograd and ``out.backward(G)``).

How it measures. This machine has phases of a fraction of a second to seconds in which
everything runs up to 2x slower. So the candidates of a row are timed round-robin (A, B, C, A, B,
C, ...) in short windows (a few calls each, about 10 ms), the starting candidate rotating every
round, for a fixed time budget per row; each candidate's figure is the median over its windows
of the time per call, and a speed-up is the median over rounds of the ratio of two candidates'
windows in the same round. Only ratios within a row (one run) are meaningful: never compare
absolute times across runs. The machine's GEMM throughput (NumPy matmul on square 1024 and 2048 matrices,
best GFLOP/s, measured at the start and at the end of the run) is the yardstick for rnnfast's
GFLOP/s (SciPy's BLAS, which the kernels call, is measured beside it). Before timing, each row
checks that every candidate agrees with the reference.

This module is command-line layer (it prints). ``configure_parser`` and ``run`` are what the
``rnnfast`` command calls; the problem builders and the peers are reused by ``bench/``.
"""
import argparse
import gc
import inspect
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

import rnnfast
from rnnfast.cli.arguments import positive_float, positive_int

# ------------------------------------------------------------------------------------------------
# The grid

# (T, B, D, H): min-char-rnn, single sequences (GEMV steps), a long one, then batched GEMM steps.
SHAPES = [(25, 1, 65, 100), (100, 1, 32, 32), (100, 1, 128, 128), (1000, 1, 16, 64),
          (100, 8, 64, 64), (100, 32, 128, 128), (100, 32, 256, 256), (50, 64, 512, 512)]
# --quick: one shape per regime (small kernel, GEMV, BLAS step).
QUICK_SHAPES = [(25, 1, 65, 100), (100, 1, 128, 128), (100, 32, 128, 128)]
DTYPES = ("float32", "float64")
PASSES = ("forward", "forward+backward")
IMPLEMENTATIONS = ("cython", "numpy", "numpy-batched", "torch")
# rnnfast's fast backend, whose speed-ups over the others the table reports.
SUBJECT = "cython"
# The oracle every candidate's results are checked against.
ORACLE = "numpy"
LABELS = {"cython": "cython", "numpy": "numpy ref", "numpy-batched": "np batched",
          "torch": "torch"}
PASS_LABELS = {"forward": "fwd", "forward+backward": "fwd+bwd"}

# Timing: target length of one window, and the per-row budget (seconds) and minimum number of
# windows per candidate, for a full and a --quick run.
WINDOW_S = 0.01
BUDGET_S, QUICK_BUDGET_S = 5.0, 0.6
MIN_WINDOWS, QUICK_MIN_WINDOWS = 7, 3

GEMM_SIZES = (1024, 2048)
# NumPy's GEMM is the yardstick (the "machine's GEMM throughput"); SciPy's BLAS, which
# rnnfast's kernels call, is measured beside it because the two wheels ship different OpenBLAS.
GEMM_LIBRARIES = ("numpy", "scipy")
YARDSTICK = "numpy"
GEMM_REPEATS, QUICK_GEMM_REPEATS = 3, 1

# Largest max|a - b| / max|b| against the reference for a candidate to count as agreeing: a
# sanity check on what is timed (tests/ holds the real tolerances). float32 is loose because
# T = 1000 steps of float32 rounding, in any summation order, drift that far.
AGREEMENT = {"float32": 1e-3, "float64": 1e-8}

SLOW_BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def flops(shape, pass_name):
    """Floating-point operations of one pass: 2 per multiply-add of the matmuls, the forward's
    x W_xh^T and h W_hh^T, and three times that with the backward (da W_hh, dW_hh, dW_xh, dx)."""
    T, B, D, H = shape
    forward = 2 * T * B * H * (D + H)
    return forward * (3 if pass_name == "forward+backward" else 1)


class Problem(NamedTuple):
    """One benchmark problem: inputs, weights and the upstream gradient G = dL/dout."""

    x: np.ndarray  # (T, B, D)
    h0: np.ndarray  # (B, H)
    W_xh: np.ndarray  # (H, D)
    W_hh: np.ndarray  # (H, H)
    b: np.ndarray  # (H,)
    G: np.ndarray  # (T, B, H)


def make_problem(shape, dtype, seed=0):
    """A random problem of ``shape`` (T, B, D, H); weights at PyTorch's nn.RNN initialisation,
    uniform(-1/sqrt(H), 1/sqrt(H)), so the states neither saturate nor vanish."""
    T, B, D, H = shape
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(H)
    return Problem(
        x=rng.standard_normal((T, B, D)).astype(dtype),
        h0=rng.standard_normal((B, H)).astype(dtype),
        W_xh=rng.uniform(-bound, bound, (H, D)).astype(dtype),
        W_hh=rng.uniform(-bound, bound, (H, H)).astype(dtype),
        b=rng.uniform(-bound, bound, H).astype(dtype),
        G=rng.standard_normal((T, B, H)).astype(dtype),
    )


# ------------------------------------------------------------------------------------------------
# The "numpy batched" peer (tanh only)

def batched_forward(x, h0, W_xh, W_hh, b):
    """Hidden states (T, B, H): the input projection of all steps as one GEMM, then per step
    only h_{t-1} @ W_hh.T and tanh, in place in the output."""
    T, B, D = x.shape
    H = W_hh.shape[0]
    out = np.matmul(x.reshape(T * B, D), W_xh.T).reshape(T, B, H)  # W_xh x_t for every t
    out += b
    recurrent = np.empty((B, H), dtype=x.dtype)
    h = h0
    for t in range(T):
        np.matmul(h, W_hh.T, out=recurrent)  # W_hh h_{t-1}
        h = out[t]
        h += recurrent
        np.tanh(h, out=h)  # h_t = tanh(a_t)
    return out


def batched_backward(G, x, h0, W_xh, W_hh, out):
    """Gradients (dx, dh0, dW_xh, dW_hh, db) of sum(out * G): the da/dh chain per step, the
    weight and input gradients as single GEMMs over all T*B rows after it."""
    T, B, D = x.shape
    H = W_hh.shape[0]
    da = np.multiply(out, out)
    np.subtract(1, da, out=da)  # tanh'(a_t) = 1 - h_t^2 for every t; becomes da_t below
    dh = np.zeros((B, H), dtype=x.dtype)  # W_hh^T da_{t+1}; zero past the last step
    for t in range(T - 1, -1, -1):
        dh += G[t]  # dh_t = g_t + W_hh^T da_{t+1}
        da[t] *= dh  # da_t = dh_t * tanh'(a_t)
        np.matmul(da[t], W_hh, out=dh)  # W_hh^T da_t, carried to step t-1
    da_rows = da.reshape(T * B, H)
    dW_xh = da_rows.T @ x.reshape(T * B, D)  # sum_t da_t x_t^T
    dW_hh = da[0].T @ h0  # sum_t da_t h_{t-1}^T, with h_{t-1} = out[t-1] beyond the first step
    dW_hh += da_rows[B:].T @ out[:-1].reshape((T - 1) * B, H)
    db = da_rows.sum(axis=0)
    dx = (da_rows @ W_xh).reshape(T, B, D)  # W_xh^T da_t for every t
    return dx, dh, dW_xh, dW_hh, db


# ------------------------------------------------------------------------------------------------
# Runners: zero-argument callables doing one pass, returning (out, grads or None)

def accepts_n_threads(function):
    """Whether ``function`` takes an ``n_threads`` keyword (added to rnnfast's API in issue 3)."""
    return "n_threads" in inspect.signature(function).parameters


def _rnnfast_runner(backend, problem, with_backward, n_threads):
    p = problem
    forward_kw = {"backend": backend}
    backward_kw = {}
    if backend == "cython":  # the reference's threads are its BLAS's, set by threadpoolctl
        if accepts_n_threads(rnnfast.rnn_forward):
            forward_kw["n_threads"] = n_threads
        if accepts_n_threads(rnnfast.rnn_backward):
            backward_kw["n_threads"] = n_threads

    def run():
        out, cache = rnnfast.rnn_forward(p.x, p.h0, p.W_xh, p.W_hh, p.b, **forward_kw)
        if not with_backward:
            return out, None
        return out, tuple(rnnfast.rnn_backward(p.G, cache, **backward_kw))

    return run


def _batched_runner(problem, with_backward):
    p = problem

    def run():
        out = batched_forward(p.x, p.h0, p.W_xh, p.W_hh, p.b)
        if not with_backward:
            return out, None
        return out, batched_backward(p.G, p.x, p.h0, p.W_xh, p.W_hh, out)

    return run


def import_torch():
    """PyTorch, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_runner(problem, with_backward, n_threads):
    torch = import_torch()
    torch.set_num_threads(n_threads)
    p = problem
    H, D = p.W_xh.shape
    rnn = torch.nn.RNN(D, H, nonlinearity="tanh", dtype=getattr(torch, p.x.dtype.name))
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(p.W_xh))
        rnn.weight_hh_l0.copy_(torch.from_numpy(p.W_hh))
        rnn.bias_ih_l0.copy_(torch.from_numpy(p.b))
        rnn.bias_hh_l0.zero_()
    rnn.bias_hh_l0.requires_grad_(False)  # rnnfast has one bias; b is bias_ih_l0
    x = torch.from_numpy(p.x).requires_grad_(with_backward)
    h0 = torch.from_numpy(p.h0).unsqueeze(0).requires_grad_(with_backward)  # (layers=1, B, H)
    G = torch.from_numpy(p.G)

    def forward():
        with torch.no_grad():
            return rnn(x, h0)[0], None

    def forward_backward():
        x.grad = h0.grad = None  # fresh gradients, not accumulated into the last call's
        rnn.zero_grad(set_to_none=True)
        out = rnn(x, h0)[0]
        out.backward(G)
        return out, (x.grad, h0.grad[0], rnn.weight_ih_l0.grad, rnn.weight_hh_l0.grad,
                     rnn.bias_ih_l0.grad)

    return forward_backward if with_backward else forward


def make_runner(impl, problem, pass_name, n_threads=1):
    """A zero-argument callable running one ``pass_name`` of ``impl`` on ``problem``; it returns
    (out, grads): grads is None for "forward", else (dx, dh0, dW_xh, dW_hh, db)."""
    with_backward = pass_name == "forward+backward"
    if impl in ("cython", "numpy"):
        return _rnnfast_runner(impl, problem, with_backward, n_threads)
    if impl == "numpy-batched":
        return _batched_runner(problem, with_backward)
    if impl == "torch":
        return _torch_runner(problem, with_backward, n_threads)
    raise ValueError(f"unknown implementation {impl!r}; expected one of {IMPLEMENTATIONS}")


def _as_numpy(array):
    """A NumPy view of an ndarray or a torch tensor."""
    return array.detach().numpy() if hasattr(array, "detach") else np.asarray(array)


def relative_error(result, expected):
    """The largest max|a - b| / max|b| over the output and every gradient of two results."""
    pairs = [(result[0], expected[0])]
    if expected[1] is not None:
        pairs += zip(result[1], expected[1])
    worst = 0.0
    for actual, wanted in pairs:
        actual, wanted = _as_numpy(actual), _as_numpy(wanted)
        scale = max(float(np.max(np.abs(wanted))), np.finfo(wanted.dtype).tiny)
        worst = max(worst, float(np.max(np.abs(actual - wanted))) / scale)
    return worst


# ------------------------------------------------------------------------------------------------
# Timing

def _time_window(run, calls):
    """Seconds per call of ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / calls


def _calls_per_window(run, window_s):
    """How many calls fill a window of about ``window_s`` (at least one)."""
    return max(1, int(window_s / _time_window(run, 1)))


def time_interleaved(runners, budget_s, min_windows, max_windows=None, window_s=WINDOW_S):
    """Seconds per call of each runner, one figure per window, timed round-robin; and the
    number of calls in each runner's windows.

    Every round gives each runner one window of a few calls (about ``window_s``), starting with
    a different runner each round; rounds go on until ``budget_s`` has passed and every runner
    has ``min_windows`` windows, or until ``max_windows``. Garbage collection is off meanwhile.
    """
    names = list(runners)
    calls = {name: _calls_per_window(runners[name], window_s) for name in names}
    samples = {name: [] for name in names}
    start = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_ in range(max_windows or sys.maxsize):
            first = round_ % len(names)
            for name in names[first:] + names[:first]:
                samples[name].append(_time_window(runners[name], calls[name]))
            if round_ + 1 >= min_windows and time.perf_counter() - start >= budget_s:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples, calls


def _gemm_call(library, a, b, c):
    """A zero-argument call of ``library``'s GEMM computing c = a @ b in place."""
    if library == "numpy":
        return lambda: np.matmul(a, b, out=c)
    from scipy.linalg import blas

    gemm = blas.get_blas_funcs("gemm", dtype=a.dtype)  # Fortran order: no copies
    return lambda: gemm(1.0, a, b, beta=0.0, c=c, overwrite_c=1)


def gemm_throughput(dtype, library="numpy", sizes=GEMM_SIZES, repeats=GEMM_REPEATS):
    """Best GFLOP/s of a BLAS GEMM on square matrices of each size: NumPy's matmul, or SciPy's
    BLAS (the library rnnfast's kernels call through scipy.linalg.cython_blas)."""
    rng = np.random.default_rng(0)
    best = {}
    for n in sizes:
        a, b = (np.asfortranarray(rng.standard_normal((n, n)), dtype) for _ in range(2))
        c = np.zeros((n, n), dtype=dtype, order="F")
        call = _gemm_call(library, a, b, c)
        call()  # warm-up: page in, spin up BLAS
        seconds = min(_timed(call) for _ in range(repeats))
        best[n] = 2 * n ** 3 / seconds / 1e9
    return best


def _timed(function):
    """Seconds one call of ``function`` takes."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------------
# One row of the table

@dataclass
class Row:
    """The measurements of one (shape, dtype, pass)."""

    shape: tuple
    dtype: str
    pass_name: str
    medians: dict  # impl -> seconds per call (median over windows)
    samples: dict  # impl -> seconds per call, one per window
    calls_per_window: dict
    errors: dict  # impl -> relative error against the reference
    disagreeing: list  # impls whose error exceeds AGREEMENT

    @property
    def flops(self):
        return flops(self.shape, self.pass_name)

    def speedup(self, peer):
        """How many times faster the subject (cython) ran than ``peer``: the median over rounds
        of peer time / subject time within a round. Two windows of one round are seconds apart
        at most, so a slow phase of the machine mostly hits both; pairing them makes the ratio
        steadier than the ratio of medians when rounds are few (the largest shapes)."""
        return float(np.median(np.divide(self.samples[peer], self.samples[SUBJECT])))

    def ratio_of_medians(self, peer):
        """peer median / subject median: the other estimate of the speed-up."""
        return self.medians[peer] / self.medians[SUBJECT]

    def gflops(self, impl=SUBJECT):
        return self.flops / self.medians[impl] / 1e9


def measure_row(shape, dtype, pass_name, impls, timing, n_threads):
    """Check every implementation against the reference, then time them interleaved."""
    problem = make_problem(shape, dtype)
    runners = {impl: make_runner(impl, problem, pass_name, n_threads) for impl in impls}
    expected = runners[ORACLE]()
    errors = {impl: relative_error(run(), expected) for impl, run in runners.items()}
    samples, calls = time_interleaved(runners, **timing)
    return Row(shape, dtype, pass_name,
               medians={impl: float(np.median(s)) for impl, s in samples.items()},
               samples=samples, calls_per_window=calls, errors=errors,
               disagreeing=[impl for impl, e in errors.items() if e > AGREEMENT[dtype]])


# ------------------------------------------------------------------------------------------------
# Machine information

def _cpu_model():
    """The CPU model name from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags(wanted=("avx", "avx2", "fma", "avx512f")):
    """Which of the SIMD extensions that matter here the CPU reports (Linux only)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in wanted if flag in present]
    except OSError:
        pass
    return []


def _versions():
    import scipy

    torch = sys.modules.get("torch")
    return {"python": platform.python_version(), "rnnfast": rnnfast.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__,
            "torch": torch.__version__ if torch else None}


def _library_owner(filepath):
    """Which package a shared library came with, from the folder a wheel puts it in; "system"
    for the operating system's (rnnfast's OpenMP runtime, shared with PyTorch when rnnfast is
    imported first: both ask for libgomp.so.1)."""
    owners = {"numpy.libs": "numpy", "scipy.libs": "scipy, called by rnnfast's kernels",
              "torch": "torch"}
    parts = (filepath or "").split(os.sep)
    fallback = "system" if (filepath or "").startswith(("/usr/", "/lib")) else "?"
    return next((owner for folder, owner in owners.items() if folder in parts), fallback)


def thread_libraries():
    """The BLAS and OpenMP libraries loaded in this process, as threadpoolctl sees them, in a
    fixed order (by file)."""
    import threadpoolctl

    keys = ("user_api", "internal_api", "version", "architecture", "num_threads",
            "threading_layer", "filepath")
    libraries = [{key: info.get(key) for key in keys} for info in threadpoolctl.threadpool_info()]
    for library in libraries:
        library["owner"] = _library_owner(library["filepath"])
    return sorted(libraries, key=lambda library: library["filepath"] or "")


def machine_info():
    """CPU, core count, library versions and the thread libraries (BLAS and its kernel)."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": _cpu_model(), "cpu_flags": _cpu_flags(), "cores": os.cpu_count(),
            "usable_cores": len(affinity) if affinity else os.cpu_count(),
            "platform": platform.platform(), "versions": _versions(),
            "thread_libraries": thread_libraries()}


def slow_blas_environment():
    """The environment variables set here that make a current OpenBLAS slower."""
    return [name for name in SLOW_BLAS_ENV if name in os.environ]


# ------------------------------------------------------------------------------------------------
# Printing

def format_seconds(seconds):
    """A duration with a unit that keeps 3-4 significant digits: µs, ms or s."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


def format_table(headers, rows, left_columns=1):
    """Lines of a plain-text table, the first ``left_columns`` left-aligned, the rest right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells):
        return "  ".join(str(cell).ljust(w) if i < left_columns else str(cell).rjust(w)
                         for i, (cell, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers), line(["-" * w for w in widths])] + [line(row) for row in rows]


def _library_line(lib):
    """One thread library: API, version, kernel, threads, file and the package it serves."""
    threads = f"{lib['num_threads']} thread" + ("" if lib["num_threads"] == 1 else "s")
    where = f"{os.path.basename(lib['filepath'] or '?')} ({lib['owner']})"
    if lib["user_api"] != "blas":
        return f"{lib['user_api']}: {threads}, {where}"
    return (f"{lib['user_api']}: {lib['internal_api']} {lib['version']}, "
            f"{lib['architecture']} kernel, {threads}, {where}")


def header_lines(info, threads, n_threads_supported, gemm):
    """What was measured on: machine, versions, BLAS, threads, the GEMM yardstick."""
    v = info["versions"]
    flags = ", ".join(info["cpu_flags"]) or "unknown"
    lines = [
        f"rnnfast {v['rnnfast']} bench: vanilla RNN (tanh)",
        f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"SIMD: {flags}; {info['platform']}",
        f"python {v['python']}, numpy {v['numpy']}, scipy {v['scipy']}, "
        f"torch {v['torch'] or 'not used'}",
    ]
    lines += map(_library_line, info["thread_libraries"])
    lines.append(f"threads used: {threads} (BLAS and OpenMP via threadpoolctl, "
                 f"torch.set_num_threads, rnnfast n_threads="
                 f"{threads if n_threads_supported else 'not supported by this build'})")
    for library, by_dtype in gemm.items():
        role = "the yardstick of % GEMM" if library == YARDSTICK else "what rnnfast's kernels call"
        lines.append(f"GEMM {library} ({role}), best GFLOP/s on n x n: " + "; ".join(
            f"{dtype} " + ", ".join(f"n={n} {g:.1f}" for n, g in by_size.items())
            for dtype, by_size in by_dtype.items()))
    return lines


def row_cells(row, impls, gemm_best):
    """The table cells of one row."""
    T, B, D, H = row.shape
    times = [format_seconds(row.medians[impl]) + ("!" if impl in row.disagreeing else "")
             for impl in impls]
    speedups = [f"{row.speedup(peer):.2f}x" for peer in impls if peer != SUBJECT]
    gflops = row.gflops()
    return ([f"{T},{B},{D},{H}", row.dtype, PASS_LABELS[row.pass_name]] + times + speedups
            + [f"{gflops:.2f}", f"{100 * gflops / gemm_best[row.dtype]:.1f}%"])


def table_lines(rows, impls, gemm_best):
    headers = (["T,B,D,H", "dtype", "pass"] + [LABELS[impl] for impl in impls]
               + [f"x {LABELS[peer]}" for peer in impls if peer != SUBJECT]
               + ["GFLOP/s", "% GEMM"])
    return format_table(headers, [row_cells(row, impls, gemm_best) for row in rows],
                        left_columns=3)


class Progress:
    """"[i/n] what" on stderr: rewritten in place on a terminal, one line each otherwise."""

    def __init__(self, total, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.in_place = stream.isatty()

    def update(self, done, what):
        text = f"[{done}/{self.total}] {what}"
        if self.in_place:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        if self.in_place:
            self.stream.write("\r\033[K")
            self.stream.flush()


# ------------------------------------------------------------------------------------------------
# The command

def _shape(text):
    """argparse type: "T,B,D,H" -> (T, B, D, H), each a positive integer."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected T,B,D,H (four positive integers); got {text!r}")
    return shape


def configure_parser(parser):
    """Add the options of `rnnfast bench` to ``parser``."""
    parser.description = (
        "Time rnnfast's Cython backend against its NumPy reference, a batched NumPy peer and "
        "torch.nn.RNN over a grid of shapes, interleaving the candidates round-robin, and "
        "report medians, speed-ups, GFLOP/s and the share of this machine's GEMM throughput.")
    parser.add_argument("--quick", action="store_true",
                        help=f"{len(QUICK_SHAPES)} shapes and a short time budget per row "
                             "(well under a minute)")
    parser.add_argument("--shapes", nargs="+", type=_shape, metavar="T,B,D,H",
                        help="shapes to measure (default: the full grid, or --quick's)")
    parser.add_argument("--dtype", nargs="+", choices=DTYPES, default=list(DTYPES),
                        dest="dtypes", help="dtypes (default: both)")
    parser.add_argument("--pass", nargs="+", choices=PASSES, default=list(PASSES),
                        dest="passes", help="passes (default: both)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="threads for BLAS, PyTorch and rnnfast (default 1)")
    parser.add_argument("--rounds", type=positive_int,
                        help="exactly this many interleaved windows per candidate and row "
                             "(default: as many as fit in --budget)")
    parser.add_argument("--budget", type=positive_float,
                        help=f"seconds of timing per row (default {BUDGET_S}, "
                             f"{QUICK_BUDGET_S} with --quick)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--json", metavar="FILE",
                        help="also write every measurement and the machine information as JSON")


def _timing_settings(args):
    """Keyword arguments of time_interleaved from the options."""
    if args.rounds:
        return {"budget_s": 0.0, "min_windows": args.rounds, "max_windows": args.rounds}
    return {"budget_s": args.budget or (QUICK_BUDGET_S if args.quick else BUDGET_S),
            "min_windows": QUICK_MIN_WINDOWS if args.quick else MIN_WINDOWS}


def _implementations(args):
    """The candidates of this run: torch only when wanted and importable."""
    impls = [impl for impl in IMPLEMENTATIONS if impl != "torch"]
    if not args.no_torch and import_torch() is not None:
        impls.append("torch")
    return impls


def _measure_grid(args, impls, threads):
    """Every row of the run, with a progress indicator."""
    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    cases = [(shape, dtype, pass_name) for shape in shapes for dtype in args.dtypes
             for pass_name in args.passes]
    timing = _timing_settings(args)
    progress = Progress(len(cases))
    rows = []
    for i, (shape, dtype, pass_name) in enumerate(cases, 1):
        T, B, D, H = shape
        progress.update(i, f"T={T} B={B} D={D} H={H} {dtype} {pass_name}")
        rows.append(measure_row(shape, dtype, pass_name, impls, timing, threads))
    progress.close()
    return rows


def _measure_gemm(dtypes, quick):
    """GFLOP/s as {library: {dtype: {size: GFLOP/s}}}."""
    repeats = QUICK_GEMM_REPEATS if quick else GEMM_REPEATS
    return {library: {dtype: gemm_throughput(np.dtype(dtype), library, repeats=repeats)
                      for dtype in dtypes}
            for library in GEMM_LIBRARIES}


def _best_of(first, second):
    """Two nested dicts of numbers of one layout merged by taking the larger number."""
    if isinstance(first, dict):
        return {key: _best_of(first[key], second[key]) for key in first}
    return max(first, second)


def yardstick(gemm):
    """Per dtype, the machine's GEMM throughput that rnnfast's GFLOP/s are a share of."""
    return {dtype: max(by_size.values()) for dtype, by_size in gemm[YARDSTICK].items()}


class RunRecord(NamedTuple):
    """What one run measured, and on what."""

    info: dict
    warnings: list
    impls: list
    n_threads_supported: bool
    gemm: dict
    rows: list


def _row_json(row, impls, yardstick_gflops):
    """One row of the JSON report: every figure of the table and the raw windows."""
    return {"shape": dict(zip("TBDH", row.shape)), "dtype": row.dtype, "pass": row.pass_name,
            "flops": row.flops, "median_s": row.medians,
            "speedup_of_cython": {peer: row.speedup(peer) for peer in impls if peer != SUBJECT},
            "ratio_of_medians": {peer: row.ratio_of_medians(peer)
                                 for peer in impls if peer != SUBJECT},
            "gflops": {impl: row.gflops(impl) for impl in impls},
            "gemm_share_of_cython": row.gflops() / yardstick_gflops[row.dtype],
            "relative_error": row.errors, "disagreeing": row.disagreeing,
            "calls_per_window": row.calls_per_window,
            "seconds_per_call_by_window": row.samples}


def _json_report(args, run_record):
    """Everything measured, the machine and the settings, as one JSON-able dict."""
    r = run_record
    return {
        "machine": r.info, "warnings": r.warnings,
        "settings": {"threads": args.threads,
                     "rnnfast_n_threads_supported": r.n_threads_supported,
                     "quick": args.quick, "window_s": WINDOW_S, **_timing_settings(args),
                     "implementations": r.impls, "subject": SUBJECT, "oracle": ORACLE},
        "gemm_gflops": {library: {dtype: {str(n): g for n, g in by_size.items()}
                                  for dtype, by_size in by_dtype.items()}
                        for library, by_dtype in r.gemm.items()},
        "gemm_yardstick": {"library": YARDSTICK, "gflops": yardstick(r.gemm)},
        "rows": [_row_json(row, r.impls, yardstick(r.gemm)) for row in r.rows],
    }


def _measure(args, threadpoolctl, warnings):
    """Pin the threads, then measure GEMM, the grid, and GEMM again."""
    impls = _implementations(args)  # imports torch first, so that its OpenMP is limited too
    with threadpoolctl.threadpool_limits(limits=args.threads):
        if "torch" in impls:
            sys.modules["torch"].set_num_threads(args.threads)
        info = machine_info()
        gemm_start = _measure_gemm(args.dtypes, args.quick)  # at both ends of the run,
        rows = _measure_grid(args, impls, args.threads)  # so that one slow phase cannot spoil it
        gemm = _best_of(gemm_start, _measure_gemm(args.dtypes, args.quick))
    return RunRecord(info, warnings, impls, accepts_n_threads(rnnfast.rnn_forward), gemm, rows)


def _timing_line(args):
    timing = _timing_settings(args)
    how_many = (f"{timing['min_windows']} per candidate" if args.rounds else
                f"~{timing['budget_s']:g} s per row (at least {timing['min_windows']} windows)")
    return (f"timing: round-robin windows of ~{WINDOW_S * 1e3:.0f} ms, {how_many}; "
            "median time per call; speed-up = median over rounds of peer / cython")


def _disagreement_lines(rows):
    """The candidates that disagreed with the reference, if any."""
    disagreeing = [(row, impl) for row in rows for impl in row.disagreeing]
    if not disagreeing:
        return []
    return ["", f"! disagrees with the NumPy reference beyond the sanity bound {AGREEMENT} "
                "(max |diff| / max |ref| over out and gradients):"] + [
        f"  {impl} at {row.shape} {row.dtype} {row.pass_name}: {row.errors[impl]:.2e}"
        for row, impl in disagreeing]


def _report_lines(args, r):
    """The printed report: header, timing method, table, disagreements."""
    return (header_lines(r.info, args.threads, r.n_threads_supported, r.gemm)
            + [_timing_line(args), ""] + table_lines(r.rows, r.impls, yardstick(r.gemm))
            + _disagreement_lines(r.rows))


def _json_path_problem(path):
    """Why ``path`` cannot be written, or None: checked before a run of minutes, not after."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"--json {path}: no folder {folder}"
    if not os.access(folder, os.W_OK):
        return f"--json {path}: folder {folder} is not writable"
    return None


def run(args):
    """Run the benchmark described by ``args`` and print the report. Returns 0; 1 when some
    implementation disagreed with the reference; 2 when it cannot run (threadpoolctl missing,
    --json not writable)."""
    try:
        import threadpoolctl
    except ImportError:
        print("rnnfast bench needs threadpoolctl to pin BLAS threads: pip install threadpoolctl "
              "(it is in rnnfast's test and bench extras)", file=sys.stderr)
        return 2
    problem = args.json and _json_path_problem(args.json)
    if problem:
        print(f"rnnfast bench: {problem}", file=sys.stderr)
        return 2
    warnings = [f"{name} is set: it slows a current OpenBLAS on this processor; for true numbers "
                f"run `env -u {' -u '.join(SLOW_BLAS_ENV)} rnnfast bench`"
                for name in slow_blas_environment()]
    for warning in warnings:
        print("WARNING: " + warning, flush=True)
    record = _measure(args, threadpoolctl, warnings)
    for line in _report_lines(args, record):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_json_report(args, record), f, indent=1)
        print(f"\nwrote {args.json}")
    return 1 if any(row.disagreeing for row in record.rows) else 0
