"""rnnfast.RNN, the layer: PyTorch's nn.RNN semantics (stacked, bidirectional, batch_first,
relu, no bias, dropout), checked against torch.nn.RNN when installed and against central
differences always."""
import numpy as np
import pytest

from rnnfast import RNN
from rnn_helpers import FD_EPS, TOL, assert_close

CONFIGS = [  # num_layers, bidirectional, batch_first, nonlinearity, bias
    (1, False, False, "tanh", True),
    (2, False, False, "tanh", True),
    (2, True, False, "tanh", True),
    (3, True, True, "relu", False),
    (2, False, True, "relu", True),
    (1, True, True, "tanh", False),
]
CONFIG_IDS = ["L{}-{}-{}-{}-{}".format(L, "bi" if bi else "uni", "bf" if bf else "tm", nl,
                                       "bias" if b else "nobias")
              for L, bi, bf, nl, b in CONFIGS]


def make_rnn(config, D=4, H=6, dtype=np.float64, seed=0, **kwargs):
    L, bi, bf, nl, bias = config
    return RNN(D, H, num_layers=L, nonlinearity=nl, bias=bias, batch_first=bf,
               bidirectional=bi, dtype=dtype, seed=seed, **kwargs)


def make_inputs(rnn, T=5, B=3, seed=1):
    rng = np.random.default_rng(seed)
    shape = (B, T, rnn.input_size) if rnn.batch_first else (T, B, rnn.input_size)
    x = rng.standard_normal(shape).astype(rnn.dtype)
    h0 = 0.5 * rng.standard_normal((rnn.num_layers * rnn.num_directions, B,
                                    rnn.hidden_size)).astype(rnn.dtype)
    return x, h0


def torch_twin(torch, rnn, config):
    """A torch.nn.RNN of the same configuration, whose weights rnn then loads."""
    L, bi, bf, nl, bias = config
    reference = torch.nn.RNN(rnn.input_size, rnn.hidden_size, num_layers=L, nonlinearity=nl,
                             bias=bias, batch_first=bf, bidirectional=bi, dtype=torch.float64)
    rnn.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    return reference


def assert_matches_torch(rnn, reference, results, torch_results, G, G_n, check_dh0=True):
    """Outputs, final states and every gradient of rnn equal those of its torch twin."""
    (out, h_n, dx, dh0), (out_t, h_n_t, xt, ht) = results, torch_results
    ((out_t * G).sum() + (h_n_t * G_n).sum()).backward()
    tol = TOL["torch_float64"]
    assert_close(out, out_t.detach().numpy(), tol, "out")
    assert_close(h_n, h_n_t.detach().numpy(), tol, "h_n")
    assert_close(dx, xt.grad.numpy(), tol, "dx")
    if check_dh0:
        assert_close(dh0, ht.grad.numpy(), tol, "dh0")
    for name, parameter in reference.named_parameters():
        assert_close(rnn.grads[name], parameter.grad.numpy(), tol, name)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("with_h0", [True, False], ids=["h0", "no_h0"])
def test_matches_torch_outputs_and_gradients(config, with_h0):
    torch = pytest.importorskip("torch")
    rnn = make_rnn(config)
    reference = torch_twin(torch, rnn, config)
    x, h0 = make_inputs(rnn)
    out, h_n = rnn.forward(x, h0 if with_h0 else None)
    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(h0, requires_grad=True)
    out_t, h_n_t = reference(xt, ht if with_h0 else None)
    rng = np.random.default_rng(2)
    G, G_n = rng.standard_normal(out.shape), rng.standard_normal(h_n.shape)
    dx, dh0 = rnn.backward(G, G_n)
    assert_matches_torch(rnn, reference, (out, h_n, dx, dh0), (out_t, h_n_t, xt, ht),
                         torch.tensor(G), torch.tensor(G_n), check_dh0=with_h0)

def loss_and_grads(rnn, x, h0, G, G_n):
    out, h_n = rnn.forward(x, h0)
    return float(np.sum(out * G) + np.sum(h_n * G_n)), rnn.backward(G, G_n)


@pytest.mark.parametrize("config", CONFIGS[2:4], ids=CONFIG_IDS[2:4])
def test_gradients_match_central_differences(config):
    rnn = make_rnn(config, D=3, H=4)
    x, h0 = make_inputs(rnn, T=3, B=2)
    out, h_n = rnn.forward(x, h0)
    rng = np.random.default_rng(3)
    G, G_n = rng.standard_normal(out.shape), rng.standard_normal(h_n.shape)
    _, (dx, dh0) = loss_and_grads(rnn, x, h0, G, G_n)
    analytic = dict(rnn.grads, x=dx, h0=dh0)
    arrays = dict(rnn.parameters(), x=x, h0=h0)
    for name, array in arrays.items():
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + FD_EPS
            plus, _ = loss_and_grads(rnn, x, h0, G, G_n)
            array[index] = saved - FD_EPS
            minus, _ = loss_and_grads(rnn, x, h0, G, G_n)
            array[index] = saved
            numeric[index] = (plus - minus) / (2 * FD_EPS)
        assert_close(analytic[name], numeric, TOL["finite_difference"], name)


def test_float32_layer_agrees_with_float64():
    config = CONFIGS[2]
    rnn64 = make_rnn(config)
    rnn32 = make_rnn(config, dtype=np.float32)
    rnn32.load_state_dict(rnn64.state_dict())
    x, h0 = make_inputs(rnn64)
    out64, h_n64 = rnn64.forward(x, h0)
    out32, h_n32 = rnn32.forward(x.astype(np.float32), h0.astype(np.float32))
    assert out32.dtype == np.float32 and h_n32.dtype == np.float32
    assert_close(out32, out64, TOL["float32_forward"], "out")
    dx32, dh032 = rnn32.backward(np.ones_like(out32))
    dx64, dh064 = rnn64.backward(np.ones_like(out64))
    assert_close(dx32, dx64, TOL["float32_grad"], "dx")
    assert_close(dh032, dh064, TOL["float32_grad"], "dh0")


def test_dropout_applies_between_layers_in_training_only():
    rnn = make_rnn((2, False, False, "tanh", True), dropout=0.5, seed=4)
    x, h0 = make_inputs(rnn, T=20, B=8)
    rnn.eval()
    out_eval, _ = rnn.forward(x, h0)
    out_eval_again, _ = rnn.forward(x, h0)
    np.testing.assert_array_equal(out_eval, out_eval_again)  # no randomness in eval mode
    no_dropout = make_rnn((2, False, False, "tanh", True), seed=4)
    no_dropout.load_state_dict(rnn.state_dict())
    np.testing.assert_array_equal(out_eval, no_dropout.forward(x, h0)[0])
    rnn.train()
    out_train, _ = rnn.forward(x, h0)
    assert not np.allclose(out_train, out_eval)
    # The mask zeroes about half of layer 0's outputs; its gradient flows only through the kept.
    caches, masks, _, _ = rnn._saved
    assert masks[0] is not None and masks[1] is None
    assert 0.35 < np.mean(masks[0] == 0) < 0.65
    np.testing.assert_allclose(np.unique(masks[0]), [0.0, 2.0])


def test_dropout_gradients_match_central_differences():
    """With the dropout mask fixed (the same seed before each forward), the gradient is exact."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 3))
    G = rng.standard_normal((3, 2, 4))

    def run(x_value):
        rnn = make_rnn((2, False, False, "tanh", True), D=3, H=4, dropout=0.4, seed=6)
        out, _ = rnn.forward(x_value)
        return float(np.sum(out * G)), rnn

    _, rnn = run(x)
    dx, _ = rnn.backward(G)
    numeric = np.empty_like(x)
    for index in np.ndindex(x.shape):
        shifted = x.copy()
        shifted[index] += FD_EPS
        plus, _ = run(shifted)
        shifted[index] -= 2 * FD_EPS
        minus, _ = run(shifted)
        numeric[index] = (plus - minus) / (2 * FD_EPS)
    assert_close(dx, numeric, TOL["finite_difference"], "dx")


def test_parameters_follow_torch_names_shapes_and_initialisation():
    rnn = RNN(5, 8, num_layers=2, bidirectional=True, seed=0)
    shapes = {name: p.shape for name, p in rnn.parameters().items()}
    assert shapes["weight_ih_l0"] == (8, 5) and shapes["weight_ih_l1_reverse"] == (8, 16)
    assert shapes["weight_hh_l1"] == (8, 8) and shapes["bias_hh_l0_reverse"] == (8,)
    assert len(shapes) == 16
    bound = 1 / np.sqrt(8)
    for p in rnn.parameters().values():
        assert p.dtype == np.float32 and np.all(np.abs(p) <= bound)


def test_state_dict_round_trip_and_seed():
    a, b = RNN(3, 4, num_layers=2, seed=1), RNN(3, 4, num_layers=2, seed=2)
    assert not np.array_equal(a.parameters()["weight_hh_l1"], b.parameters()["weight_hh_l1"])
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(x)[0], b.forward(x)[0])
    state = a.state_dict()
    state["weight_hh_l0"][...] = 0  # a copy: the layer is unchanged
    assert np.any(a.parameters()["weight_hh_l0"] != 0)


@pytest.mark.parametrize("make_state, match", [
    (lambda s: {k: v for k, v in s.items() if k != "bias_ih_l0"}, "missing.*bias_ih_l0"),
    (lambda s: dict(s, extra=np.zeros(1)), "unexpected.*extra"),
    (lambda s: dict(s, weight_hh_l0=np.zeros((3, 3))), "weight_hh_l0.*shape"),
    (lambda s: dict(s, bias_hh_l0=np.ones(4, dtype=np.complex128)),
     "bias_hh_l0.*real numbers.*complex128"),
])
def test_bad_state_dict_is_rejected(make_state, match):
    rnn = RNN(3, 4)
    before = rnn.state_dict()
    with pytest.raises((ValueError, TypeError), match=match):
        rnn.load_state_dict(make_state(rnn.state_dict()))
    for name, array in rnn.parameters().items():  # nothing was loaded
        np.testing.assert_array_equal(array, before[name])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(input_size=0), ValueError, "input_size"),
    (dict(hidden_size=2.5), TypeError, "hidden_size"),
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(nonlinearity="sigmoid"), ValueError, "nonlinearity"),
    (dict(dropout=1.0), ValueError, "dropout"),
    (dict(dtype=np.int32), TypeError, "dtype"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    arguments = dict(input_size=3, hidden_size=4)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        RNN(**arguments)


def test_bad_call_arguments():
    rnn = RNN(3, 4, num_layers=2, dtype=np.float64)
    x = np.zeros((5, 2, 3))
    with pytest.raises(RuntimeError, match="forward"):
        rnn.backward(np.zeros((5, 2, 4)))
    with pytest.raises(ValueError, match="input_size"):
        rnn.forward(np.zeros((5, 2, 7)))
    with pytest.raises(ValueError, match="h0"):
        rnn.forward(x, np.zeros((1, 2, 4)))
    with pytest.raises(TypeError, match="dtype"):
        rnn.forward(x.astype(np.float32))
    rnn.forward(x)
    with pytest.raises(ValueError, match="dout"):
        rnn.backward(np.zeros((5, 2, 5)))
    with pytest.raises(ValueError, match="dh_n"):
        rnn.backward(np.zeros((5, 2, 4)), np.zeros((3, 2, 4)))


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("lengths", [[5, 2, 4], [1, 5, 3]], ids=["unsorted-a", "unsorted-b"])
def test_lengths_match_torch_packed_sequences(config, lengths):
    """Variable-length batches give PyTorch's packed-sequence results: zero outputs past each
    length, h_n at each sequence's last real step (the reverse direction reads each sequence
    backwards from its own end), and the same gradients."""
    torch = pytest.importorskip("torch")
    rnn = make_rnn(config)
    reference = torch_twin(torch, rnn, config)
    batch_first = config[2]
    x, h0 = make_inputs(rnn)
    lengths = np.array(lengths)
    out, h_n = rnn.forward(x, h0, lengths=lengths)
    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(h0, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths),
                                                     batch_first=batch_first,
                                                     enforce_sorted=False)
    out_packed, h_n_t = reference(packed, ht)
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=batch_first,
                                                      total_length=5)
    rng = np.random.default_rng(7)
    G, G_n = rng.standard_normal(out.shape), rng.standard_normal(h_n.shape)
    dx, dh0 = rnn.backward(G, G_n)
    assert_matches_torch(rnn, reference, (out, h_n, dx, dh0), (out_t, h_n_t, xt, ht),
                         torch.tensor(G), torch.tensor(G_n))

def test_lengths_are_validated():
    rnn = RNN(3, 4, dtype=np.float64)
    with pytest.raises(ValueError, match="lengths"):
        rnn.forward(np.zeros((5, 2, 3)), lengths=[6, 1])


# -- one direction's weights and runs ----------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_direction_weights_are_the_layers_own_arrays_under_torchs_names(config):
    """direction_weights(l, d) is what direction d of layer l runs with: running rnn_forward on
    them reproduces that direction's states, and writing into W_hh changes the layer."""
    import rnnfast

    rnn = make_rnn(config)
    x, h0 = make_inputs(rnn)
    runs = rnn.direction_runs(x, h0)
    assert [(layer, d) for layer, d, _, _ in runs] == [
        (layer, d) for layer in range(rnn.num_layers) for d in range(rnn.num_directions)]
    params = rnn.parameters()
    for layer, direction, args, out in runs:
        W_xh, W_hh, b = rnn.direction_weights(layer, direction)
        suffix = "_reverse" if direction else ""
        assert W_xh is params[f"weight_ih_l{layer}{suffix}"]
        assert W_hh is params[f"weight_hh_l{layer}{suffix}"]
        if rnn.bias:
            assert_close(b, params[f"bias_ih_l{layer}{suffix}"]
                         + params[f"bias_hh_l{layer}{suffix}"], 0)
        else:
            assert b is None
        expected, _ = rnnfast.rnn_forward(args[0], args[1], W_xh, W_hh, b,
                                          nonlinearity=rnn.nonlinearity)
        assert_close(out, expected, TOL["float64"])
    _, W_hh, _ = rnn.direction_weights(rnn.num_layers - 1, rnn.num_directions - 1)
    W_hh[...] = 0.0
    suffix = "_reverse" if rnn.bidirectional else ""
    assert not params[f"weight_hh_l{rnn.num_layers - 1}{suffix}"].any()


def test_direction_runs_leave_the_state_for_backward_and_the_mode_alone():
    """A diagnostic run between a forward and its backward pass changes nothing of either."""
    rnn = RNN(3, 4, num_layers=2, dtype=np.float64, seed=0)
    x = np.random.default_rng(2).standard_normal((5, 2, 3))
    out, _ = rnn.forward(x)
    expected = rnn.backward(np.ones_like(out))[0]
    rnn.forward(x)
    rnn.direction_runs(x[:3, :1])  # another shape: its caches must not be kept
    assert rnn.training
    assert_close(rnn.backward(np.ones_like(out))[0], expected, 0)
    rnn.eval()
    rnn.direction_runs(x)
    assert not rnn.training


@pytest.mark.parametrize("layer, direction, error", [(2, 0, ValueError), (0, 1, ValueError),
                                                     (-1, 0, ValueError), (0.5, 0, TypeError)])
def test_direction_weights_reject_a_layer_or_direction_the_rnn_does_not_have(layer, direction,
                                                                             error):
    with pytest.raises(error, match="layer|direction"):
        RNN(3, 4, num_layers=2).direction_weights(layer, direction)
