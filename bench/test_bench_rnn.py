"""Forward and forward+backward: the Cython backend against the NumPy reference (and PyTorch's
nn.RNN when it is installed), one benchmark group per shape and pass.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench --benchmark-group-by=group

Each benchmark's extra_info carries its GFLOP/s; compare the rows of one group for speed-ups.
"""
import numpy as np
import pytest

import rnnfast

# (T, B, D, H): a min-char-rnn step, a small and a medium single sequence, and two batched shapes.
SHAPES = [(25, 1, 65, 100), (100, 1, 32, 32), (100, 1, 128, 128), (100, 8, 64, 64),
          (100, 32, 128, 128)]
DTYPES = [np.float32, np.float64]


def _problem(T, B, D, H, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    W_xh = (rng.standard_normal((H, D)) / np.sqrt(D)).astype(dtype)
    W_hh = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    b = (0.1 * rng.standard_normal(H)).astype(dtype)
    dout = rng.standard_normal((T, B, H)).astype(dtype)
    return x, W_xh, W_hh, b, dout


def _flops(T, B, D, H, with_backward):
    """Multiply-adds x 2 of the matmuls: forward x W_xh^T and h W_hh^T; backward three times."""
    forward = 2 * T * B * H * (D + H)
    return forward * (3 if with_backward else 1)


def _rnnfast_call(backend, problem, with_backward):
    x, W_xh, W_hh, b, dout = problem

    def run():
        out, cache = rnnfast.rnn_forward(x, None, W_xh, W_hh, b, backend=backend)
        if with_backward:
            rnnfast.rnn_backward(dout, cache)

    return run


def _torch_call(problem, with_backward):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    x, W_xh, W_hh, b, dout = problem
    H, D = W_xh.shape
    rnn = torch.nn.RNN(D, H, dtype=torch.float32 if x.dtype == np.float32 else torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(W_xh))
        rnn.weight_hh_l0.copy_(torch.from_numpy(W_hh))
        rnn.bias_ih_l0.copy_(torch.from_numpy(b))
        rnn.bias_hh_l0.zero_()
    xt, gt = torch.from_numpy(x), torch.from_numpy(dout)

    def run():
        if with_backward:
            out, _ = rnn(xt.requires_grad_(True))
            out.backward(gt)
        else:
            with torch.no_grad():
                rnn(xt)

    return run


@pytest.mark.parametrize("with_backward", [False, True], ids=["forward", "forward+backward"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}_B{}_D{}_H{}".format(*s))
@pytest.mark.parametrize("impl", ["cython", "numpy", "torch"])
def test_rnn(benchmark, impl, shape, dtype, with_backward):
    problem = _problem(*shape, dtype)
    if impl == "torch":
        run = _torch_call(problem, with_backward)
    else:
        run = _rnnfast_call(impl, problem, with_backward)
    pass_name = "forward+backward" if with_backward else "forward"
    benchmark.group = f"{pass_name} T,B,D,H={shape} {np.dtype(dtype).name}"
    benchmark.pedantic(run, rounds=20, iterations=1, warmup_rounds=2)
    median = benchmark.stats.stats.median
    benchmark.extra_info["gflops"] = _flops(*shape, with_backward) / median / 1e9
