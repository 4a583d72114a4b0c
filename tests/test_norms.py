"""Per-step gradient norms: rnn_backward(..., return_norms=True) and RNN.backward(...,
return_norms=True).

norms[t, b] = ||dL/dh_t|| for sequence b: the whole gradient reaching the state out[t, b] (dout_t,
what flows back from step t+1, dh_n at the sequence's last step), before the product with act'.
Checked against the NumPy reference on every kernel path, against an oracle that knows nothing
of the norms (the gradient on h_t is dh0 of a backward pass over the steps after t, started
from h_t), against central differences and torch.nn.RNN; and for the layer, against one
functional call per layer and direction. A norm is a gradient quantity: its tolerances are the
gradients' in rnn_helpers.TOL (the squares are summed in float64 for both dtypes, which adds no
error of its own worth counting).
"""
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnfast
from rnnfast import RNN
from rnnfast._kernels import backend as _cython_backend
from rnn_helpers import (FD_EPS, FLOAT32_VS_FLOAT64, GRAD_NAMES, LENGTH_CASES, LENGTH_IDS, PATHS,
                         SAME_DTYPE_TOL, TOL, assert_close, force_path, make_problem)

# (T, B, D, H): the edges T=1, B=1, H=1; hidden sizes with a narrower last column block, one and
# several whole blocks; batches that use every row group of the micro-kernel (6, 4, 2, 1).
SHAPES = [(1, 1, 1, 1), (3, 1, 5, 7), (6, 3, 2, 17), (4, 5, 9, 33), (5, 13, 3, 16),
          (2, 7, 3, 40)]
SHAPE_IDS = ["T{}B{}D{}H{}".format(*s) for s in SHAPES]
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def run(p, backend="cython", nonlinearity="tanh", lengths=None, n_threads=None):
    """Forward, then backward with norms: (grads, norms)."""
    _, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, backend=backend,
                                   lengths=lengths, n_threads=n_threads)
    return rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, n_threads=n_threads,
                                return_norms=True)


def tolerance(dtype):
    """Tolerance of a result in dtype against the float64 reference."""
    return FLOAT32_VS_FLOAT64["grad"] if dtype == np.float32 else SAME_DTYPE_TOL[np.float64]["grad"]


# --------------------------------------------------------------------------------------------
# Against the reference, on every path.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_dh_n", [True, False], ids=["dh_n", "no_dh_n"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_cython_matches_reference(shape, dtype, nonlinearity, with_dh_n, any_path):
    p = make_problem(0, *shape, dtype, dh_n=with_dh_n)
    grads, norms = run(p, nonlinearity=nonlinearity, n_threads=2)
    _, ref_norms = run(p.astype(np.float64), "numpy", nonlinearity)
    _, same_dtype_norms = run(p, "numpy", nonlinearity)
    T, B = shape[:2]
    assert norms.shape == (T, B) and norms.dtype == dtype
    assert same_dtype_norms.shape == (T, B) and same_dtype_norms.dtype == dtype
    assert_close(norms, ref_norms, tolerance(dtype), "norms")
    assert_close(norms, same_dtype_norms, SAME_DTYPE_TOL[dtype]["grad"], "norms, same dtype")
    # Measuring changes no gradient, not even by rounding.
    _, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, n_threads=2)
    plain = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, n_threads=2)
    for name in GRAD_NAMES:
        np.testing.assert_array_equal(getattr(grads, name), getattr(plain, name), name)


@pytest.mark.parametrize("case", LENGTH_CASES, ids=LENGTH_IDS)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optional", [(), ("h0", "dh_n")], ids=["h0_dh_n", "neither"])
def test_cython_matches_reference_with_lengths(case, dtype, nonlinearity, optional, any_path):
    T, B, H, lengths = case
    p = make_problem(7, T, B, 3, H, dtype).without(*optional)
    lengths = np.array(lengths)
    _, norms = run(p, nonlinearity=nonlinearity, lengths=lengths, n_threads=2)
    _, ref_norms = run(p.astype(np.float64), "numpy", nonlinearity, lengths)
    assert_close(norms, ref_norms, tolerance(dtype), "norms")
    for b, L in enumerate(lengths):  # no state past a sequence's end: exactly 0
        np.testing.assert_array_equal(norms[L:, b], 0)
        np.testing.assert_array_equal(ref_norms[L:, b], 0)
        assert np.all(norms[:L, b] > 0)


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 8), B=st.integers(1, 9), D=st.integers(1, 4), H=st.integers(1, 20),
       dtype=st.sampled_from([np.float32, np.float64]), path=st.sampled_from(PATHS),
       nonlinearity=st.sampled_from(["tanh", "relu"]), data=st.data())
def test_cython_agrees_with_reference_on_drawn_shapes(T, B, D, H, dtype, path, nonlinearity,
                                                      data):
    """Edges (T=1, B=1, H=1), partial blocks and row groups, random lengths or none."""
    lengths = data.draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B),
                        label="lengths")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    p = make_problem(seed, T, B, D, H, dtype, dh_n=data.draw(st.booleans(), label="dh_n"))
    lengths = None if lengths is None else np.array(lengths)
    with pytest.MonkeyPatch.context() as mp:
        force_path(mp, path)
        _, norms = run(p, nonlinearity=nonlinearity, lengths=lengths)
    _, ref_norms = run(p, "numpy", nonlinearity, lengths)
    assert_close(norms, ref_norms, SAME_DTYPE_TOL[dtype]["grad"], "norms")


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_gradients_on_padding_change_no_norm(backend, any_path):
    p = make_problem(8, 6, 4, 3, 5)
    lengths = np.array([6, 2, 4, 1])
    _, cache = rnnfast.rnn_forward(*p.args, backend=backend, lengths=lengths)
    _, norms = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, return_norms=True)
    noisy = p.dout.copy()
    for b, L in enumerate(lengths):
        noisy[L:, b] = 1e3
    _, noisy_norms = rnnfast.rnn_backward(noisy, cache, dh_n=p.dh_n, return_norms=True)
    np.testing.assert_array_equal(noisy_norms, norms)


@pytest.mark.parametrize("lengths", [None, [6, 2, 5, 1, 6, 3, 4]], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", PATHS)
def test_norms_are_bit_identical_for_any_thread_count(path, dtype, lengths, monkeypatch):
    """One thread runs the serial loop; more run the threaded one (small steps), whose blocks'
    sums of squares are added in the serial order: the same bits. H = 70 has several column
    blocks and a narrower last one."""
    force_path(monkeypatch, path)
    if path.startswith("small"):  # (BLAS steps stay on the serial loop)
        monkeypatch.setattr(_cython_backend.switches, "threads_min_step_flops", 0)
    monkeypatch.setattr(_cython_backend.switches, "cores", 4)
    p = make_problem(12, 6, 7, 4, 70, dtype)
    lengths = None if lengths is None else np.array(lengths)
    _, norms_1 = run(p, lengths=lengths, n_threads=1)
    for n_threads in (2, 3):
        _, norms_n = run(p, lengths=lengths, n_threads=n_threads)
        np.testing.assert_array_equal(norms_n, norms_1, f"{n_threads} threads")


@pytest.mark.parametrize("scale", [2.0 ** -80, 2.0 ** 80], ids=["tiny", "huge"])
@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_float32_norms_neither_underflow_nor_overflow(scale, backend, any_path):
    """Vanishing and exploding gradients are what the norms are read for. The backward pass is
    linear in (dout, dh_n), and scaling by a power of two is exact in floating point while
    nothing leaves the normal range: float32 gradients of 2^-80 or 2^80 are fine, but their
    squares (2^-160, 2^160) are not float32 numbers. Summed in float64, the norms scale
    exactly."""
    p = make_problem(13, 5, 3, 4, 24, np.float32)
    _, norms = run(p, backend, n_threads=2)
    scaled = replace(p, dout=p.dout * np.float32(scale), dh_n=p.dh_n * np.float32(scale))
    _, scaled_norms = run(scaled, backend, n_threads=2)
    assert np.all(np.isfinite(scaled_norms)) and np.all(scaled_norms > 0)
    np.testing.assert_array_equal(scaled_norms, norms * np.float32(scale))


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_nan_and_inf_propagate_to_their_steps(backend):
    """A NaN in dout_t reaches ||dh_t|| and every earlier step; an inf gives inf at step t."""
    p = make_problem(14, 4, 2, 3, 5)
    _, cache = rnnfast.rnn_forward(*p.args, backend=backend)
    for bad in (np.nan, np.inf):
        dout = p.dout.copy()
        dout[2, 1, 3] = bad
        with np.errstate(all="ignore"):  # the reference's NumPy warns about inf - inf etc.
            _, norms = rnnfast.rnn_backward(dout, cache, dh_n=p.dh_n, return_norms=True)
        if np.isnan(bad):
            assert np.all(np.isnan(norms[:3, 1]))
        else:  # inf at step 2; before it inf - inf can make NaN
            assert norms[2, 1] == np.inf
        assert np.all(np.isfinite(norms[3])) and np.all(np.isfinite(norms[:, 0]))


# --------------------------------------------------------------------------------------------
# Against oracles that know nothing of the norms.
# --------------------------------------------------------------------------------------------
def tail_loss_gradient(p, t, b, length, nonlinearity):
    """dL/dh_t for sequence b, with L = sum(out * dout) over its real steps + <h_last, dh_n>:
    dout[t, b] directly, plus dh0 of a backward pass over steps t+1 .. length-1 started from
    h_t (the state does not know where it came from). Reference backend, no norms involved."""
    direct = p.dout[t, b].copy()
    dh_n = np.zeros_like(direct) if p.dh_n is None else p.dh_n[b]
    if t == length - 1:  # the last real step: the loss sees h_t through dh_n
        return direct + dh_n
    out, _ = rnnfast.rnn_forward(p.x[: t + 1, b:b + 1], None if p.h0 is None else p.h0[b:b + 1],
                                 p.W_xh, p.W_hh, p.b, nonlinearity=nonlinearity,
                                 backend="numpy")
    _, cache = rnnfast.rnn_forward(p.x[t + 1:length, b:b + 1], out[-1], p.W_xh, p.W_hh, p.b,
                                   nonlinearity=nonlinearity, backend="numpy")
    tail = rnnfast.rnn_backward(p.dout[t + 1:length, b:b + 1], cache, dh_n=dh_n[None])
    return direct + tail.dh0[0]


@pytest.mark.parametrize("lengths", [None, [5, 2, 4]], ids=["full", "lengths"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_norms_are_the_norms_of_the_gradient_on_each_state(backend, nonlinearity, lengths):
    p = make_problem(15, 5, 3, 4, 9)
    T, B = 5, 3
    _, norms = run(p, backend, nonlinearity, None if lengths is None else np.array(lengths))
    full = [T] * B if lengths is None else lengths
    expected = np.zeros((T, B))
    for b in range(B):
        for t in range(full[b]):
            expected[t, b] = np.linalg.norm(tail_loss_gradient(p, t, b, full[b], nonlinearity))
    assert_close(norms, expected, SAME_DTYPE_TOL[np.float64]["grad"], "norms")


@pytest.mark.parametrize("t, b", [(0, 0), (2, 0), (1, 2)])
def test_gradient_on_a_state_matches_central_differences(t, b):
    """The oracle above, checked itself: dL/dh_t by central differences of the loss in h_t,
    element by element, through the steps after t."""
    p = make_problem(16, 4, 3, 2, 5)
    lengths = np.array([4, 3, 3])
    L = lengths[b]
    out, _ = rnnfast.rnn_forward(*p.args, lengths=lengths)

    def loss(h_t):
        tail, _ = rnnfast.rnn_forward(p.x[t + 1:L, b:b + 1], h_t[None], p.W_xh, p.W_hh, p.b)
        return (h_t @ p.dout[t, b] + np.sum(tail[:, 0] * p.dout[t + 1:L, b])
                + tail[-1, 0] @ p.dh_n[b])

    h_t = out[t, b].copy()
    numeric = np.empty_like(h_t)
    for i in range(h_t.size):
        saved = h_t[i]
        h_t[i] = saved + FD_EPS
        up = loss(h_t)
        h_t[i] = saved - FD_EPS
        down = loss(h_t)
        h_t[i] = saved
        numeric[i] = (up - down) / (2 * FD_EPS)
    assert_close(tail_loss_gradient(p, t, b, L, "tanh"), numeric, TOL["finite_difference"],
                 "dL/dh_t")
    _, norms = run(p, lengths=lengths)
    assert_close(norms[t, b], np.linalg.norm(numeric), TOL["finite_difference"], "norm")


def test_matches_torch_nn_rnn():
    """dL/dh_t from torch.nn.RNN by the same split: a leaf tensor h_t starts the steps after t."""
    torch = pytest.importorskip("torch")
    T, B, D, H = 5, 3, 4, 8
    p = make_problem(17, T, B, D, H)
    rnn = torch.nn.RNN(D, H, dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(p.W_xh))
        rnn.weight_hh_l0.copy_(torch.from_numpy(p.W_hh))
        rnn.bias_ih_l0.copy_(torch.from_numpy(p.b))
        rnn.bias_hh_l0.zero_()
    x, dout, dh_n = (torch.from_numpy(a) for a in (p.x, p.dout, p.dh_n))
    with torch.no_grad():
        states, _ = rnn(x, torch.from_numpy(p.h0)[None])
    expected = np.empty((T, B))
    for t in range(T):
        h_t = states[t].clone().requires_grad_(True)
        loss = (h_t * dout[t]).sum()
        final = h_t
        if t < T - 1:
            tail, final = rnn(x[t + 1:], h_t[None])
            loss = loss + (tail * dout[t + 1:]).sum()
            final = final[0]
        (loss + (final * dh_n).sum()).backward()
        expected[t] = h_t.grad.norm(dim=1).numpy()
    _, norms = run(p)
    assert_close(norms, expected, TOL["torch_float64"], "norms")


# --------------------------------------------------------------------------------------------
# The layer.
# --------------------------------------------------------------------------------------------
def reverse_within(array, lengths):
    """array (T, B, ...) with each sequence's first lengths[b] steps in reverse order."""
    reversed_ = array.copy()
    for b, L in enumerate(lengths):
        reversed_[:L, b] = array[L - 1::-1, b] if L > 1 else array[:1, b]
    return reversed_


def per_direction_norms(rnn, x, h0, dout, dh_n, lengths):
    """The layer's norms, (num_layers, num_directions, T, B), from one functional call per
    layer and direction (time-major, no dropout), reversing by hand."""
    T, B, _ = x.shape
    H, dirs = rnn.hidden_size, rnn.num_directions
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    params = rnn.parameters()
    caches, layer_input = [], x
    for layer in range(rnn.num_layers):
        outputs = []
        for d, suffix in enumerate(["", "_reverse"][:dirs]):
            b = (params[f"bias_ih_l{layer}{suffix}"] + params[f"bias_hh_l{layer}{suffix}"]
                 if rnn.bias else None)
            xs = reverse_within(layer_input, lengths) if d else layer_input
            out, cache = rnnfast.rnn_forward(xs, h0[layer * dirs + d],
                                             params[f"weight_ih_l{layer}{suffix}"],
                                             params[f"weight_hh_l{layer}{suffix}"], b,
                                             nonlinearity=rnn.nonlinearity, lengths=lengths)
            caches.append(cache)
            outputs.append(reverse_within(out, lengths) if d else out)
        layer_input = np.concatenate(outputs, axis=2)
    norms = np.empty((rnn.num_layers, dirs, T, B))
    d_output = dout
    for layer in reversed(range(rnn.num_layers)):
        d_input = 0
        for d in range(dirs):
            d_states = d_output[:, :, d * H:(d + 1) * H]
            if d:
                d_states = reverse_within(d_states, lengths)
            grads, layer_norms = rnnfast.rnn_backward(d_states, caches[layer * dirs + d],
                                                      dh_n[layer * dirs + d], return_norms=True)
            norms[layer, d] = reverse_within(layer_norms, lengths) if d else layer_norms
            d_input = d_input + (reverse_within(grads.dx, lengths) if d else grads.dx)
        d_output = d_input
    return norms


LAYER_CONFIGS = [  # num_layers, bidirectional, batch_first, nonlinearity
    (1, False, False, "tanh"),
    (1, True, True, "tanh"),
    (2, True, False, "relu"),
    (3, True, True, "tanh"),
    (2, False, True, "tanh"),
]


@pytest.mark.parametrize("lengths", [None, [5, 2, 4], [1, 5, 3]],
                         ids=["full", "unsorted-a", "unsorted-b"])
@pytest.mark.parametrize("config", LAYER_CONFIGS,
                         ids=["L{}-{}-{}-{}".format(L, "bi" if bi else "uni",
                                                    "bf" if bf else "tm", nl)
                              for L, bi, bf, nl in LAYER_CONFIGS])
def test_layer_norms_match_per_direction_functional_calls(config, lengths):
    L, bi, bf, nl = config
    T, B, D, H = 5, 3, 4, 6
    rnn = RNN(D, H, num_layers=L, nonlinearity=nl, batch_first=bf, bidirectional=bi,
              dtype=np.float64, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, D))
    h0 = 0.5 * rng.standard_normal((L * rnn.num_directions, B, H))
    dout = rng.standard_normal((T, B, rnn.num_directions * H))
    dh_n = rng.standard_normal((L * rnn.num_directions, B, H))
    to_layer = (lambda a: a.transpose(1, 0, 2)) if bf else (lambda a: a)
    out, _ = rnn.forward(to_layer(x), h0, lengths=lengths)
    dx, dh0, norms = rnn.backward(to_layer(dout), dh_n, return_norms=True)
    assert norms.shape == (L, rnn.num_directions, T, B)  # (T, B) also with batch_first
    assert norms.dtype == np.float64
    expected = per_direction_norms(rnn, x, h0, dout, dh_n, lengths)
    assert_close(norms, expected, SAME_DTYPE_TOL[np.float64]["grad"], "norms")
    # The gradients are those of a plain backward.
    rnn.forward(to_layer(x), h0, lengths=lengths)
    plain_dx, plain_dh0 = rnn.backward(to_layer(dout), dh_n)
    np.testing.assert_array_equal(dx, plain_dx)
    np.testing.assert_array_equal(dh0, plain_dh0)


def test_layer_reverse_direction_norms_are_in_time_order():
    """The reverse direction runs from each sequence's last step to time 0. A gradient on its
    state at time 0 alone (no dh_n) is that state's whole gradient, and flows back along its
    order to its states at times 1 .. length - 1; none reaches the forward direction."""
    T, B, D, H = 4, 2, 3, 5
    rnn = RNN(D, H, bidirectional=True, dtype=np.float64, seed=5)
    x = np.random.default_rng(6).standard_normal((T, B, D))
    rnn.forward(x, lengths=[4, 3])
    dout = np.zeros((T, B, 2 * H))
    dout[0, :, H:] = 1  # a gradient on the reverse direction's state at time 0 only
    _, _, norms = rnn.backward(dout, return_norms=True)
    np.testing.assert_array_equal(norms[0, 0], 0)  # nothing reaches the forward direction
    assert np.all(norms[0, 1, 0] == np.sqrt(H))  # the state at time 0: dout alone
    # ... and flows to the states at times 1, 2, ... (earlier in the reverse order).
    assert np.all(norms[0, 1, 1:3] > 0)
    assert norms[0, 1, 3, 1] == 0  # sequence 1 has 3 steps: no state at time 3
    assert norms[0, 1, 3, 0] > 0


def test_float32_layer_with_dropout_agrees_with_float64():
    """Same seed, same parameters and dropout masks in both dtypes (drawn in float64): the
    float32 layer's norms are the float64 ones to float32 accuracy, lengths and both
    directions included."""
    norms = {}
    for dtype in (np.float32, np.float64):
        rnn = RNN(3, 8, num_layers=2, dropout=0.5, bidirectional=True, dtype=dtype, seed=7)
        x = np.random.default_rng(8).standard_normal((6, 4, 3)).astype(dtype)
        out, _ = rnn.forward(x, lengths=[6, 3, 1, 5])
        _, _, norms[dtype] = rnn.backward(np.ones_like(out), return_norms=True)
        assert norms[dtype].shape == (2, 2, 6, 4) and norms[dtype].dtype == dtype
    assert_close(norms[np.float32], norms[np.float64], FLOAT32_VS_FLOAT64["grad"], "norms")


# --------------------------------------------------------------------------------------------
# The argument, the default return value, memory.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [1, 0, "yes", None, np.array(True), [True]],
                         ids=["1", "0", "str", "None", "array", "list"])
def test_return_norms_must_be_a_bool(bad):
    p = make_problem(18, 3, 2, 2, 4)
    _, cache = rnnfast.rnn_forward(*p.args)
    with pytest.raises(TypeError, match="^return_norms must be a bool") as excinfo:
        rnnfast.rnn_backward(p.dout, cache, return_norms=bad)
    assert repr(bad) in str(excinfo.value)
    rnn = RNN(2, 4, dtype=np.float64)
    out, _ = rnn.forward(p.x)
    with pytest.raises(TypeError, match="^return_norms must be a bool"):
        rnn.backward(np.ones_like(out), return_norms=bad)


def test_numpy_bools_are_accepted_and_false_returns_the_gradients_alone():
    p = make_problem(19, 3, 2, 2, 4)
    _, cache = rnnfast.rnn_forward(*p.args)
    grads, norms = rnnfast.rnn_backward(p.dout, cache, return_norms=np.True_)
    assert norms.shape == (3, 2)
    for flag in (False, np.False_):
        plain = rnnfast.rnn_backward(p.dout, cache, return_norms=flag)
        assert isinstance(plain, rnnfast.RNNGrads)
    rnn = RNN(2, 4, dtype=np.float64)
    out, _ = rnn.forward(p.x)
    assert len(rnn.backward(np.ones_like(out))) == 2
    assert len(rnn.backward(np.ones_like(out), return_norms=True)) == 3


def peak_allocation(call):
    """Bytes allocated at the peak of call(), above what was allocated before it."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


@pytest.mark.parametrize("shape", [(200, 4, 16, 96), (50, 33, 8, 64)], ids=["long", "wide"])
def test_norms_cost_their_output_and_a_few_rows_of_scratch(shape, any_path):
    """No (T, B, H) buffer for the norms: beyond a plain backward, the (T, B) result, the
    (T, B) float64 sums of squares, and on threads at most 2 * H more rows of B float64 (the
    per-block sums)."""
    T, B, D, H = shape
    p = make_problem(0, T, B, D, H, np.float64, h0=False, dh_n=False)
    _, cache = rnnfast.rnn_forward(*p.args, n_threads=2)
    backward = lambda **kw: rnnfast.rnn_backward(p.dout, cache, n_threads=2, **kw)  # noqa: E731
    backward(return_norms=True)  # warm-up: first calls create lasting objects
    plain = peak_allocation(backward)
    with_norms = peak_allocation(lambda: backward(return_norms=True))
    assert with_norms <= plain + 2 * T * B * 8 + 2 * H * B * 8 + 16 * 1024
