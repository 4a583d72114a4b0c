"""Outputs and gradients agree with torch.nn.RNN on the same weights (an outside oracle).

Weights are copied in PyTorch's layout: weight_ih_l0 = W_xh, weight_hh_l0 = W_hh,
bias_ih_l0 = b, bias_hh_l0 = 0 (or bias=False). The loss is sum(out * G) + sum(h_n * G_n),
whose gradients torch's autograd computes and rnn_backward(G, cache, dh_n=G_n) must match.
"""
import numpy as np
import pytest

import rnnfast
from rnn_helpers import FLOAT32_VS_FLOAT64, TOL, assert_close, make_problem

torch = pytest.importorskip("torch")

SHAPES = [(1, 1, 1, 1), (5, 3, 4, 7), (4, 2, 6, 33)]
# Our float32 against torch's float64: the same tolerances as against our float64 reference.
# torch float64 against ours: independent implementations of the same float64 arithmetic.
TORCH_TOL = {np.float64: {"forward": TOL["torch_float64"], "grad": TOL["torch_float64"]},
             np.float32: FLOAT32_VS_FLOAT64}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def torch_reference(p, nonlinearity):
    """Outputs and gradients of torch.nn.RNN in float64 on problem p's values."""
    T, B, D, H = p.shape
    rnn = torch.nn.RNN(D, H, nonlinearity=nonlinearity, bias=p.b is not None,
                       dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(p.W_xh.astype(np.float64)))
        rnn.weight_hh_l0.copy_(torch.from_numpy(p.W_hh.astype(np.float64)))
        if p.b is not None:
            rnn.bias_ih_l0.copy_(torch.from_numpy(p.b.astype(np.float64)))
            rnn.bias_hh_l0.zero_()
    x = torch.tensor(p.x, dtype=torch.float64, requires_grad=True)
    h0_values = np.zeros((B, H)) if p.h0 is None else p.h0
    h0 = torch.tensor(h0_values[None], dtype=torch.float64, requires_grad=True)
    out, h_n = rnn(x, h0 if p.h0 is not None else None)
    loss = (out * torch.from_numpy(p.dout.astype(np.float64))).sum()
    if p.dh_n is not None:
        loss = loss + (h_n[0] * torch.from_numpy(p.dh_n.astype(np.float64))).sum()
    loss.backward()
    grads = {
        "dx": x.grad.numpy(),
        "dh0": h0.grad[0].numpy() if p.h0 is not None else None,
        "dW_xh": rnn.weight_ih_l0.grad.numpy(),
        "dW_hh": rnn.weight_hh_l0.grad.numpy(),
        "db": rnn.bias_ih_l0.grad.numpy() if p.b is not None else None,
    }
    return out.detach().numpy(), h_n.detach()[0].numpy(), grads


@pytest.mark.parametrize("with_dh_n", [True, False], ids=["dh_n", "no_dh_n"])
@pytest.mark.parametrize("with_h0", [True, False], ids=["h0", "h0_None"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=["T{}B{}D{}H{}".format(*s) for s in SHAPES])
def test_matches_torch_rnn(shape, backend, dtype, nonlinearity, with_bias, with_h0, with_dh_n):
    p = make_problem(50, *shape, dtype, bias=with_bias, h0=with_h0, dh_n=with_dh_n)
    ref_out, ref_h_n, ref_grads = torch_reference(p, nonlinearity)

    out, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, backend=backend)
    grads = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n)

    tol = TORCH_TOL[dtype]
    assert out.dtype == dtype
    assert_close(out, ref_out, tol["forward"], "out")
    assert_close(out[-1], ref_h_n, tol["forward"], "h_n")
    for name, expected in ref_grads.items():
        if expected is None and name == "db":
            assert grads.db is None
        elif expected is not None:
            assert_close(getattr(grads, name), expected, tol["grad"], name)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_dh0_for_h0_none_matches_torch_at_zero(backend, nonlinearity):
    """With h0=None our dh0 is the gradient at a zero initial state: torch's, given zeros."""
    p = make_problem(51, 4, 3, 5, 6, bias=True, h0=False)
    zero_h0 = type(p)(**{**p.__dict__, "h0": np.zeros((3, 6))})
    _, _, ref_grads = torch_reference(zero_h0, nonlinearity)
    _, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, backend=backend)
    grads = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n)
    assert_close(grads.dh0, ref_grads["dh0"], TOL["torch_float64"], "dh0")
