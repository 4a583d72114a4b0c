"""Variable-length batches (``lengths``): each sequence runs for its own number of steps, its
outputs past the end are zeros and its state stays put; the kernels run only the rows still
going. Checked against the reference on every path, finite differences, and PyTorch's packed
sequences."""
import numpy as np
import pytest

import rnnfast
from rnn_helpers import (FD_EPS, FLOAT32_VS_FLOAT64, GRAD_NAMES, LENGTH_CASES, LENGTH_IDS,
                         SAME_DTYPE_TOL, TOL, assert_close, assert_grads_close, make_problem)



def run(p, lengths, backend, nonlinearity="tanh", n_threads=None):
    out, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, backend=backend,
                                     lengths=lengths, n_threads=n_threads)
    return out, rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, n_threads=n_threads)


@pytest.mark.parametrize("case", LENGTH_CASES, ids=LENGTH_IDS)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("optional", [(), ("h0", "dh_n", "b")], ids=["all", "none"])
def test_cython_matches_reference(case, nonlinearity, dtype, optional, any_path):
    T, B, H, lengths = case
    p = make_problem(7, T, B, 3, H, dtype).without(*optional)
    lengths = np.array(lengths)
    out, grads = run(p, lengths, "cython", nonlinearity, n_threads=2)
    ref_out, ref_grads = run(p.astype(np.float64), lengths, "numpy", nonlinearity)
    tol = FLOAT32_VS_FLOAT64 if dtype == np.float32 else SAME_DTYPE_TOL[np.float64]
    assert_close(out, ref_out, tol["forward"], "out")
    assert_grads_close(grads, ref_grads, tol["grad"], has_bias=p.b is not None)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_padding_is_zero_and_states_stop(backend):
    p = make_problem(8, 6, 4, 3, 5)
    lengths = np.array([6, 2, 4, 1])
    out, _ = rnnfast.rnn_forward(*p.args, backend=backend, lengths=lengths)
    full, _ = rnnfast.rnn_forward(*p.args, backend=backend)
    for b, L in enumerate(lengths):
        np.testing.assert_array_equal(out[L:, b], 0)
        # Up to its end a sequence does not notice the others' lengths.
        assert_close(out[:L, b], full[:L, b], 1e-12, f"row {b}")


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_gradients_ignore_padding_and_match_central_differences(backend):
    p = make_problem(9, 4, 3, 2, 4)
    lengths = np.array([2, 4, 1])
    rng = np.random.default_rng(10)
    G, G_n = p.dout, rng.standard_normal((3, 4))
    last = lengths - 1

    def loss(x, h0, W_xh, W_hh, b):
        out, _ = rnnfast.rnn_forward(x, h0, W_xh, W_hh, b, backend=backend, lengths=lengths)
        final = out[last, np.arange(3)]  # each sequence's last real state
        return float(np.sum(out * G) + np.sum(final * G_n))

    out, cache = rnnfast.rnn_forward(*p.args, backend=backend, lengths=lengths)
    grads = rnnfast.rnn_backward(G, cache, dh_n=G_n)
    args = dict(x=p.x, h0=p.h0, W_xh=p.W_xh, W_hh=p.W_hh, b=p.b)
    for name, grad in zip(("x", "h0", "W_xh", "W_hh", "b"), grads):
        array = args[name]
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + FD_EPS
            plus = loss(**args)
            array[index] = saved - FD_EPS
            minus = loss(**args)
            array[index] = saved
            numeric[index] = (plus - minus) / (2 * FD_EPS)
        assert_close(grad, numeric, TOL["finite_difference"], name)
    # Gradients given on padded outputs change nothing.
    noisy = G.copy()
    for b, L in enumerate(lengths):
        noisy[L:, b] = 1e3
    noisy_grads = rnnfast.rnn_backward(noisy, cache, dh_n=G_n)
    for name in GRAD_NAMES:
        np.testing.assert_array_equal(getattr(noisy_grads, name), getattr(grads, name))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_matches_torch_packed_sequences(dtype):
    torch = pytest.importorskip("torch")
    T, B, D, H = 6, 5, 3, 8
    p = make_problem(11, T, B, D, H, dtype, dh_n=False)
    lengths = np.array([3, 6, 1, 5, 6])
    rnn = torch.nn.RNN(D, H, dtype=torch.float32 if dtype == np.float32 else torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(p.W_xh))
        rnn.weight_hh_l0.copy_(torch.from_numpy(p.W_hh))
        rnn.bias_ih_l0.copy_(torch.from_numpy(p.b))
        rnn.bias_hh_l0.zero_()
    xt = torch.tensor(p.x, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths),
                                                     enforce_sorted=False)
    out_packed, h_n = rnn(packed, torch.tensor(p.h0).unsqueeze(0))
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, total_length=T)
    (out_t * torch.tensor(p.dout)).sum().backward()

    out, cache = rnnfast.rnn_forward(*p.args, lengths=lengths)
    grads = rnnfast.rnn_backward(p.dout, cache)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    assert_close(out, out_t.detach().numpy(), tol, "out")
    assert_close(out[lengths - 1, np.arange(B)], h_n[0].detach().numpy(), tol, "h_n")
    assert_close(grads.dx, xt.grad.numpy(), tol, "dx")
    assert_close(grads.dW_hh, rnn.weight_hh_l0.grad.numpy(), tol, "dW_hh")
    assert_close(grads.dW_xh, rnn.weight_ih_l0.grad.numpy(), tol, "dW_xh")
    assert_close(grads.db, rnn.bias_ih_l0.grad.numpy(), tol, "db")


@pytest.mark.parametrize("lengths, error, match", [
    ([1.0, 2.0], TypeError, "lengths must have an integer dtype"),
    ([1, 2, 3], ValueError, r"lengths must have shape \(B,\) = \(2,\)"),
    ([[1, 2]], ValueError, r"lengths must be 1-D with shape \(B\)"),
    ([0, 2], ValueError, "between 1 and T = 3"),
    ([1, 4], ValueError, "between 1 and T = 3"),
])
def test_bad_lengths_are_rejected(lengths, error, match):
    p = make_problem(12, 3, 2, 2, 3)
    with pytest.raises(error, match=match):
        rnnfast.rnn_forward(*p.args, lengths=lengths)
