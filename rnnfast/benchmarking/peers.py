"""The candidates a benchmark times, each as a runner: a zero-argument callable doing one pass
on a problem and returning (out, grads), grads None for a forward pass, else
(dx, dh0, dW_xh, dW_hh, db).

- ``cython``: rnnfast's compiled backend, the subject of every speed-up;
- ``numpy``: rnnfast's NumPy reference, the textbook per-step loop, and the oracle;
- ``numpy-batched``: the strongest NumPy peer, written here (``batched_forward`` and
  ``batched_backward``): the input projection and the weight gradients as single GEMMs over all
  T*B rows, only ``h @ W_hh.T`` + tanh per step (forward) and the da/dh chain per step
  (backward) in Python;
- ``torch``: ``torch.nn.RNN`` on the CPU, when PyTorch is importable (forward under
  ``torch.no_grad()``, forward+backward with autograd and ``out.backward(G)``);
- ``numba``: the batched algorithm under ``@numba.njit``, no Python per step
  (rnnfast/benchmarking/numba_peer.py), when numba is installed;
- ``jax``: ``lax.scan`` under ``jax.jit``, the backward by ``jax.vjp``
  (rnnfast/benchmarking/jax_peer.py), when JAX is installed.

The optional peers install with the ``bench`` extra (``pip install "rnnfast[bench]"``).

A new peer is one function ``make(problem, with_backward, n_threads) -> runner`` and one
``Peer`` in ``PEERS``; the command line, the pytest-benchmark suite and the JSON report pick it
up from there.
"""
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Callable

import numpy as np

from rnnfast.functional import rnn_backward, rnn_forward

__all__ = ["Peer", "PEERS", "IMPLEMENTATIONS", "SUBJECT", "ORACLE", "make_runner",
           "available_implementations", "import_torch", "batched_forward", "batched_backward",
           "relative_error", "result_error"]


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
# Runners

def _rnnfast_runner(backend):
    """A peer's make function for one of rnnfast's backends."""

    def make(problem, with_backward, n_threads):
        p = problem
        # The reference's threads are its BLAS's, set by the caller through threadpoolctl.
        threads = {"n_threads": n_threads} if backend == "cython" else {}

        def run():
            out, cache = rnn_forward(*p.args, backend=backend, **threads)
            if not with_backward:
                return out, None
            return out, tuple(rnn_backward(p.G, cache, **threads))

        return run

    return make


def _batched_runner(problem, with_backward, n_threads):
    p = problem  # its threads are NumPy's BLAS's, set by the caller

    def run():
        out = batched_forward(*p.args)
        if not with_backward:
            return out, None
        return out, batched_backward(p.G, p.x, p.h0, p.W_xh, p.W_hh, out)

    return run


def import_torch():
    """PyTorch, or None when it is not installed."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None


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


def _installed(module):
    """Whether ``module`` can be imported here (found without importing it)."""
    return importlib.util.find_spec(module) is not None


def _module_runner(module):
    """A peer's make function that imports rnnfast.benchmarking.<module> on first use."""

    def make(problem, with_backward, n_threads):
        peer = importlib.import_module(f"rnnfast.benchmarking.{module}")
        return peer.make(problem, with_backward, n_threads)

    return make


@dataclass(frozen=True)
class Peer:
    """A candidate of the benchmark.

    name: its key (command line, JSON); label: its column in the table; make(problem,
    with_backward, n_threads) -> runner; available() -> whether it can run here (its library
    is installed); install: how to install it, for the line that says it was skipped.
    """

    name: str
    label: str
    make: Callable
    available: Callable = lambda: True
    install: str = ""


PEERS = {peer.name: peer for peer in (
    Peer("cython", "cython", _rnnfast_runner("cython")),
    Peer("numpy", "numpy ref", _rnnfast_runner("numpy")),
    Peer("numpy-batched", "np batched", _batched_runner),
    Peer("torch", "torch", _torch_runner, available=lambda: import_torch() is not None,
         install="pip install torch (the CPU build: see the README)"),
    Peer("numba", "numba", _module_runner("numba_peer"), available=lambda: _installed("numba"),
         install='pip install "rnnfast[bench]"'),
    Peer("jax", "jax", _module_runner("jax_peer"), available=lambda: _installed("jax"),
         install='pip install "rnnfast[bench]"'),
)}
IMPLEMENTATIONS = tuple(PEERS)
# rnnfast's fast backend, whose speed-ups over the others the table reports.
SUBJECT = "cython"
# The oracle every candidate's results are checked against.
ORACLE = "numpy"


def available_implementations(exclude=()):
    """The peers that can run here, in PEERS order, without those named in ``exclude``."""
    return [name for name, peer in PEERS.items() if name not in exclude and peer.available()]


def make_runner(impl, problem, pass_name, n_threads=1):
    """A zero-argument callable running one ``pass_name`` ("forward" or "forward+backward") of
    the peer ``impl`` on ``problem``; it returns (out, grads): grads is None for "forward",
    else (dx, dh0, dW_xh, dW_hh, db)."""
    if impl not in PEERS:
        raise ValueError(f"unknown implementation {impl!r}; expected one of {IMPLEMENTATIONS}")
    return PEERS[impl].make(problem, pass_name == "forward+backward", n_threads)


# ------------------------------------------------------------------------------------------------
# Agreement

def _as_numpy(array):
    """A NumPy view of an ndarray or a torch tensor."""
    return array.detach().numpy() if hasattr(array, "detach") else np.asarray(array)


def relative_error(actual, expected):
    """max|actual - expected| / max|expected| (a tiny denominator where expected is all zero);
    ndarrays or torch tensors."""
    actual, expected = _as_numpy(actual), _as_numpy(expected)
    scale = max(float(np.max(np.abs(expected))), np.finfo(expected.dtype).tiny)
    return float(np.max(np.abs(actual - expected))) / scale


def result_error(result, expected):
    """The largest relative_error over the output and every gradient of two runners' results,
    (out, grads)."""
    pairs = [(result[0], expected[0])]
    if expected[1] is not None:
        pairs += zip(result[1], expected[1])
    return max(relative_error(actual, wanted) for actual, wanted in pairs)
