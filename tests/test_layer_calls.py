"""rnnfast.RNN's calls, checked once and run on the compiled entry: the layer is exactly the
functional passes it is made of (bit for bit), it sees parameters updated in place, and what it
remembers between calls (the memory a kind of call needs, the bias sum, the leak) never makes
a later call skip a check."""
import numpy as np
import pytest

import rnnfast
from rnnfast.nn.leaky import draw_noise
from rnnfast.train.optim import SGD
from rnnfast.utils import memory

FLOATS = [np.float32, np.float64]


def functional_layer(rnn, x, h0, lengths, dout, dh_n):
    """A unidirectional stacked RNN (no dropout) as the rnn_forward / rnn_backward calls it is
    made of, time-major: (out, h_n, dx, dh0, grads)."""
    params, L = rnn.parameters(), rnn.num_layers
    caches, h_n, layer_input = [], [], x
    for layer in range(L):
        b = (params[f"bias_ih_l{layer}"] + params[f"bias_hh_l{layer}"]) if rnn.bias else None
        out, cache = rnnfast.rnn_forward(layer_input, None if h0 is None else h0[layer],
                                         params[f"weight_ih_l{layer}"],
                                         params[f"weight_hh_l{layer}"], b,
                                         nonlinearity=rnn.nonlinearity, lengths=lengths)
        caches.append(cache)
        last = out[-1] if lengths is None else out[np.asarray(lengths) - 1, np.arange(x.shape[1])]
        h_n.append(last)
        layer_input = out
    grads, dh0, d_output = {}, [None] * L, dout
    for layer in reversed(range(L)):
        g = rnnfast.rnn_backward(d_output, caches[layer], None if dh_n is None else dh_n[layer])
        grads[f"weight_ih_l{layer}"], grads[f"weight_hh_l{layer}"] = g.dW_xh, g.dW_hh
        if rnn.bias:
            grads[f"bias_ih_l{layer}"] = grads[f"bias_hh_l{layer}"] = g.db
        dh0[layer], d_output = g.dh0, g.dx
    return layer_input, np.stack(h_n), d_output, np.stack(dh0), grads


def problem(rnn, T, B, seed, h0=True, dh_n=True):
    rng = np.random.default_rng(seed)
    L, H, dtype = rnn.num_layers, rnn.hidden_size, rnn.dtype
    x = rng.standard_normal((T, B, rnn.input_size)).astype(dtype)
    dout = rng.standard_normal((T, B, H)).astype(dtype)
    return (x, rng.standard_normal((L, B, H)).astype(dtype) if h0 else None, dout,
            rng.standard_normal((L, B, H)).astype(dtype) if dh_n else None)


def assert_identical(actual, expected, name):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, name
    np.testing.assert_array_equal(actual, expected, err_msg=name)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("L, bias, nonlinearity", [(1, True, "tanh"), (2, False, "relu"),
                                                   (3, True, "tanh")])
@pytest.mark.parametrize("lengths", [None, "sorted", "unsorted"])
def test_the_layer_is_its_functional_passes_bit_for_bit(dtype, L, bias, nonlinearity, lengths):
    rnn = rnnfast.RNN(5, 7, num_layers=L, bias=bias, nonlinearity=nonlinearity, dtype=dtype,
                      seed=3, n_threads=1)
    T, B = 9, 4
    x, h0, dout, dh_n = problem(rnn, T, B, seed=L)
    lengths = {None: None, "sorted": np.array([9, 7, 7, 2]),
               "unsorted": np.array([3, 9, 1, 6])}[lengths]
    for step in range(2):  # the second call after an in-place update, on warm state
        expected = functional_layer(rnn, x, h0, lengths, dout, dh_n)
        out, h_n = rnn.forward(x, h0, lengths=lengths)
        dx, dh0 = rnn.backward(dout, dh_n)
        for name, actual, wanted in zip(("out", "h_n", "dx", "dh0"), (out, h_n, dx, dh0),
                                        expected):
            assert_identical(actual, wanted, name)
        assert rnn.grads.keys() == expected[4].keys()
        for name, grad in rnn.grads.items():
            assert_identical(grad, expected[4][name], name)
        assert rnn.grads.get("bias_ih_l0") is not rnn.grads.get("bias_hh_l0") or not bias
        SGD(rnn.parameters(), lr=0.1).step(rnn.grads)


@pytest.mark.parametrize("dtype", FLOATS)
def test_a_bidirectional_layer_is_its_two_passes(dtype):
    """One bidirectional layer: the reverse direction is rnn_forward on the reversed sequence."""
    rnn = rnnfast.RNN(3, 5, bidirectional=True, dtype=dtype, seed=1, n_threads=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 3)).astype(dtype)
    dout = rng.standard_normal((6, 2, 10)).astype(dtype)
    out, h_n = rnn.forward(x)
    dx, _ = rnn.backward(dout)
    p = rnn.parameters()
    expected_dx = 0
    for direction, suffix in enumerate(("", "_reverse")):
        flip = (lambda a: a[::-1]) if direction else (lambda a: a)
        b = p[f"bias_ih_l0{suffix}"] + p[f"bias_hh_l0{suffix}"]
        states, cache = rnnfast.rnn_forward(np.ascontiguousarray(flip(x)), None,
                                            p[f"weight_ih_l0{suffix}"],
                                            p[f"weight_hh_l0{suffix}"], b)
        assert_identical(out[:, :, 5 * direction:5 * direction + 5], flip(states), "out")
        assert_identical(h_n[direction], states[-1], "h_n")
        g = rnnfast.rnn_backward(
            np.ascontiguousarray(flip(dout[:, :, 5 * direction:5 * direction + 5])), cache)
        assert_identical(rnn.grads[f"weight_hh_l0{suffix}"], g.dW_hh, "dW_hh")
        expected_dx = expected_dx + flip(g.dx)
    assert_identical(dx, expected_dx, "dx")


@pytest.mark.parametrize("dtype", FLOATS)
def test_updates_in_place_reach_the_next_pass(dtype):
    """An optimizer (and load_state_dict) write into the parameters: the next forward pass runs
    with the new values, as a layer built with them does."""
    rnn = rnnfast.RNN(4, 6, num_layers=2, dtype=dtype, seed=0)
    x, h0, dout, _ = problem(rnn, 5, 3, seed=1)
    optimizer = SGD(rnn.parameters(), lr=0.5)
    for _ in range(3):
        out, _ = rnn.forward(x, h0)
        rnn.backward(dout)
        optimizer.step(rnn.grads)
        fresh = rnnfast.RNN(4, 6, num_layers=2, dtype=dtype, seed=9)
        fresh.load_state_dict(rnn.state_dict())
        assert_identical(rnn.forward(x, h0)[0], fresh.forward(x, h0)[0], "out")
    # The biases alone, changed in place: their sum is taken again.
    rnn.parameters()["bias_hh_l1"][:] += 1
    moved = rnn.forward(x, h0)[0]
    fresh.load_state_dict(rnn.state_dict())
    assert_identical(moved, fresh.forward(x, h0)[0], "out after a bias update")
    assert not np.array_equal(moved, out)


def test_a_new_leak_is_checked_and_used():
    rnn = rnnfast.RNN(3, 4, num_layers=2, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    rnn.forward(x)
    rnn.leak = [0.5, 0.25, 1.0, 0.75]
    leaky = rnnfast.RNN(3, 4, num_layers=2, seed=0, leak=[0.5, 0.25, 1.0, 0.75])
    assert_identical(rnn.forward(x)[0], leaky.forward(x)[0], "out")
    assert rnn.leak.shape == (2, 4) and not rnn.leak.flags.writeable
    with pytest.raises(ValueError, match="leak"):
        rnn.leak = 1.5


def test_a_warm_layer_still_checks_every_call():
    """After calls that passed (and whose memory was remembered), a bad argument still gets
    its own error, naming it."""
    rnn = rnnfast.RNN(3, 4, num_layers=2)
    x, h0, dout, dh_n = problem(rnn, 5, 2, seed=0)
    for _ in range(2):
        rnn.forward(x, h0)
        rnn.backward(dout, dh_n)
    bad_forward = [
        (dict(x=x.astype(np.float64)), TypeError, "x must have the layer's dtype"),
        (dict(x=x[:, :, :2].copy()), ValueError, "input_size = 3"),
        (dict(x=x[0]), ValueError, "x must be 3-D"),
        (dict(x=x[:0]), ValueError, "x has T = 0"),
        (dict(h0=h0[:1].copy()), ValueError, "h0 must have shape"),
        (dict(h0=h0[:, :1].copy()), ValueError, "h0 must have shape"),
        (dict(h0=h0.astype(np.float64)), TypeError, "h0 must have the layer's dtype"),
        (dict(lengths=[5, 6]), ValueError, "lengths must be between 1 and T = 5"),
        (dict(lengths=[5]), ValueError, "lengths must have shape"),
    ]
    for change, error, match in bad_forward:
        call = dict(dict(x=x, h0=h0), **change)
        with pytest.raises(error, match=match):
            rnn.forward(call["x"], call["h0"], lengths=call.get("lengths"))
    rnn.forward(x, h0)
    bad_backward = [
        (dict(dout=dout.astype(np.float64)), TypeError, "dout must have the layer's dtype"),
        (dict(dout=dout[:4].copy()), ValueError, "dout must have shape"),
        (dict(dh_n=dh_n[:, :1].copy()), ValueError, "dh_n must have shape"),
        (dict(dh_n=dh_n.astype(np.float64)), TypeError, "dh_n must have the layer's dtype"),
        (dict(return_norms=1), TypeError, "return_norms"),
    ]
    for change, error, match in bad_backward:
        call = dict(dict(dout=dout, dh_n=dh_n, return_norms=False), **change)
        with pytest.raises(error, match=match):
            rnn.backward(call["dout"], call["dh_n"], return_norms=call["return_norms"])
    # Views and the other byte order are converted, to the same results.
    expected = rnn.forward(x, h0)[0]
    assert_identical(rnn.forward(x[:, ::-1][:, ::-1], h0)[0], expected, "out from a view")
    assert_identical(rnn.forward(x.astype(x.dtype.newbyteorder()), np.asfortranarray(h0))[0],
                     expected, "out from swapped and Fortran-ordered arrays")


def test_the_memory_check_is_remembered_per_kind_of_call(monkeypatch):
    """A kind of call that fitted is not listed again; one that cannot fit raises every time,
    before and after others passed."""
    rnn = rnnfast.RNN(3, 8, num_layers=2, seed=0, dropout=0.2)
    monkeypatch.setattr(memory, "memory_limit", lambda: (200_000, "of RAM (a test's limit)"))
    small = np.ones((10, 2, 3), np.float32)
    big = np.ones((10000, 2, 3), np.float32)  # its states alone: 2 * 10001 * 2 * 8 * 4 bytes
    calls = []
    real_check = memory.check_allocation

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real_check(*args, **kwargs)

    monkeypatch.setattr("rnnfast.nn.rnn_calls.check_allocation", counted)
    for _ in range(3):
        rnn.forward(small)
        rnn.backward(np.ones((10, 2, 8), np.float32))
        with pytest.raises(MemoryError, match="RNN.forward would allocate"):
            rnn.forward(big)
    assert calls.count("RNN.forward") == 1 + 3 and calls.count("RNN.backward") == 1
    rnn.eval()  # no dropout masks: another kind of call, checked once more
    rnn.forward(small)
    assert calls.count("RNN.forward") == 5


@pytest.mark.parametrize("dtype", FLOATS)
def test_the_noise_is_drawn_for_each_direction_in_turn(dtype):
    """A noisy bidirectional layer draws, from its rng, the forward direction's noise on a_t,
    then on h_t, then the reverse direction's: each direction is rnn_forward with those draws."""
    rnn = rnnfast.RNN(3, 4, bidirectional=True, dtype=dtype, seed=2, leak=0.5, noise_std=0.3,
                      state_noise_std=0.1, n_threads=1)
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype(dtype)
    rng = np.random.default_rng()
    rng.bit_generator.state = rnn.rng.bit_generator.state
    out, _ = rnn.forward(x)
    p = rnn.parameters()
    for direction, suffix in enumerate(("", "_reverse")):
        noise, state_noise = draw_noise(rng, rnn.leak[0], 0.3, 0.1, (6, 2, 4), dtype)
        flip = (lambda a: a[::-1]) if direction else (lambda a: a)
        states, _ = rnnfast.rnn_forward(
            np.ascontiguousarray(flip(x)), None, p[f"weight_ih_l0{suffix}"],
            p[f"weight_hh_l0{suffix}"], p[f"bias_ih_l0{suffix}"] + p[f"bias_hh_l0{suffix}"],
            leak=0.5, noise=noise, state_noise=state_noise)
        assert_identical(out[:, :, 4 * direction:4 * direction + 4], flip(states), "out")
