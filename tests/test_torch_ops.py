"""The operators behind rnnfast.torch.RNN: torch.library.opcheck, gradcheck, torch.compile
(fullgraph, one opaque node per layer, the same results as eager), a training run that follows
torch.nn.RNN's loss curve, and the errors bad input gets.

torch.compile runs on the aot_eager backend (it traces forward and backward through the fake
implementations and the registered autograd formula, as inductor does) except in one test with
inductor itself, which compiles C++ here: about 30 s the first time on this machine, ~5 s with
its cache warm.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch._dynamo.backends.common import aot_autograd  # noqa: E402
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

import rnnfast.torch as rt  # noqa: E402
from rnnfast.torch import ops  # noqa: E402
from rnn_helpers import TOL, assert_close  # noqa: E402

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def layer_args(T=4, B=3, D=5, H=6, bidirectional=True, bias=True, hx=True, lengths=None,
               nonlinearity="tanh", dtype=F64, seed=0):
    """Arguments of torch.ops.rnnfast.rnn_layer, the tensors requiring grad."""
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return (torch.randn(*shape, generator=gen, dtype=dtype) / 2).requires_grad_(True)

    directions = 2 if bidirectional else 1
    slots = []
    for d in range(2):
        present = d < directions
        slots += [draw(H, D) if present else None, draw(H, H) if present else None,
                  draw(H) if present and bias else None, draw(H) if present and bias else None]
    return (draw(T, B, D), draw(directions, B, H) if hx else None, *slots,
            None if lengths is None else torch.tensor(lengths), nonlinearity, 1)


OP_CASES = {"bi-bias-hx-lengths": dict(lengths=[4, 2, 1]),
            "uni-no_bias-no_hx": dict(bidirectional=False, bias=False, hx=False),
            "uni-relu-float32": dict(bidirectional=False, nonlinearity="relu",
                                     dtype=torch.float32)}


@pytest.mark.parametrize("case", list(OP_CASES))
def test_opcheck(case):
    args = layer_args(**OP_CASES[case])
    torch.library.opcheck(ops.rnn_layer_op, args)
    output, h_n, reverse_states = ops.rnn_layer_op(*args)
    grads = (torch.randn_like(output), torch.randn_like(h_n))
    backward_args = (*grads, *[a.detach() if isinstance(a, torch.Tensor) else a
                               for a in args[:11]], output.detach(), reverse_states,
                     *args[11:], True, args[1] is not None, True)
    torch.library.opcheck(ops.rnn_layer_backward_op, backward_args)


@pytest.mark.parametrize("case", ["uni", "bi-lengths", "bi-no_bias-no_hx", "relu"])
def test_gradcheck(case):
    options = {"uni": dict(bidirectional=False), "bi-lengths": dict(lengths=[3, 2, 1]),
               "bi-no_bias-no_hx": dict(bias=False, hx=False),
               "relu": dict(nonlinearity="relu", bidirectional=False)}[case]
    args = layer_args(T=3, B=3, D=2, H=3, **options)
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]

    def f(*values):
        call = list(args)
        for i, v in zip(tensors, values):
            call[i] = v
        return ops.rnn_layer_op(*call)[:2]

    assert torch.autograd.gradcheck(f, [args[i] for i in tensors])


def test_gradcheck_through_the_module_on_packed_input():
    rnn = rt.RNN(2, 3, 2, bidirectional=True, dtype=F64)
    x = torch.randn(4, 3, 2, dtype=F64, requires_grad=True)
    hx = torch.randn(4, 3, 3, dtype=F64, requires_grad=True)

    def f(x, hx):
        out, h_n = rnn(pack_padded_sequence(x, torch.tensor([2, 4, 1]), enforce_sorted=False),
                       hx)
        return out.data, h_n

    assert torch.autograd.gradcheck(f, (x, hx))


# -- torch.compile ---------------------------------------------------------------------------

class Model(torch.nn.Module):
    def __init__(self, rnn_class, D=5, H=8, V=3, **options):
        super().__init__()
        self.rnn = rnn_class(D, H, **options, dtype=F64)
        self.head = torch.nn.Linear(H * (2 if options.get("bidirectional") else 1), V,
                                    dtype=F64)

    def forward(self, x, hx=None):
        out, h_n = self.rnn(x, hx)
        return self.head(torch.tanh(out)).pow(2).mean() + h_n.pow(2).mean()


def loss_and_grads(model, x, hx):
    loss = model(x, hx)
    return [loss.detach()] + list(torch.autograd.grad(loss, [x, hx, *model.parameters()]))


def recording_backend(graphs):
    def record(kind):
        def compiler(gm, example_inputs):
            graphs.append((kind, gm))
            return gm.forward
        return compiler
    return aot_autograd(fw_compiler=record("forward"), bw_compiler=record("backward"))


def op_calls(gm, op):
    return sum(node.op == "call_function" and node.target == op for node in gm.graph.nodes)


def test_compiled_model_is_one_op_per_layer_and_matches_eager():
    sizes = []
    for T in (3, 40):
        torch.manual_seed(0)
        model = Model(rt.RNN, num_layers=2, bidirectional=True, batch_first=True)
        x = torch.randn(2, T, 5, dtype=F64, requires_grad=True)
        hx = torch.randn(4, 2, 8, dtype=F64, requires_grad=True)
        graphs = []
        compiled = torch.compile(model, backend=recording_backend(graphs), fullgraph=True,
                                 dynamic=False)
        got, expected = loss_and_grads(compiled, x, hx), loss_and_grads(model, x, hx)
        for a, b in zip(got, expected):
            assert_close(a.numpy(), b.numpy(), TOL["torch_float64"])
        (_, forward), (_, backward) = graphs
        assert op_calls(forward, torch.ops.rnnfast.rnn_layer.default) == 2
        assert op_calls(backward, torch.ops.rnnfast.rnn_layer_backward.default) == 2
        sizes.append((len(forward.graph.nodes), len(backward.graph.nodes)))
        with torch.no_grad():  # inference compiles to its own graph, without the backward
            assert compiled(x, hx).item() == pytest.approx(model(x, hx).item(), rel=1e-12)
    assert sizes[0] == sizes[1]  # the time loop stays inside the operators: no unrolling


def test_compiled_model_on_packed_sequences_matches_eager():
    """A PackedSequence's layout is read with NumPy from batch_sizes, which Dynamo does not
    trace: such a model compiles with a graph break there, and gives eager's results for
    every set of lengths."""
    rnn = rt.RNN(3, 4, 2, bidirectional=True, dtype=F64)

    def loss(x, lengths):
        out, h_n = rnn(pack_padded_sequence(x, lengths, enforce_sorted=False))
        return out.data.pow(2).sum() + h_n.sum()

    compiled = torch.compile(loss, backend="aot_eager")
    x = torch.randn(5, 3, 3, dtype=F64)
    for lengths in ([5, 2, 4], [3, 5, 1], [5, 5, 5]):
        lengths = torch.tensor(lengths)
        assert compiled(x, lengths).item() == pytest.approx(loss(x, lengths).item(), rel=1e-12)


def test_inductor_training_steps_match_eager(monkeypatch):
    # Inductor's graph caches key a graph by the operators it calls, not by what their
    # registrations do (a backward formula or schema changed since the cached run would be
    # replayed stale): compile afresh. Its C++ cache, keyed by the generated source, stays.
    monkeypatch.setattr(torch._inductor.config, "fx_graph_cache", False)
    monkeypatch.setattr(torch._functorch.config, "enable_autograd_cache", False)
    torch.manual_seed(0)
    eager = Model(rt.RNN, num_layers=2, nonlinearity="relu")
    compiled_model = Model(rt.RNN, num_layers=2, nonlinearity="relu")
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model, fullgraph=True)
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.01) for m in (eager, compiled_model)]
    x = torch.randn(7, 3, 5, dtype=F64)
    for _ in range(3):
        losses = []
        for model, optimizer in zip((eager, compiled), optimizers):
            optimizer.zero_grad()
            loss = model(x)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    for a, b in zip(eager.parameters(), compiled_model.parameters()):
        assert_close(a.detach().numpy(), b.detach().numpy(), TOL["torch_float64"])


def test_adam_training_follows_torch_rnn_loss_curve():
    """300 Adam steps of the same small model, float64, same seed: the same losses."""
    curves = []
    for rnn_class in (torch.nn.RNN, rt.RNN):
        torch.manual_seed(0)
        model = Model(rnn_class, D=4, H=16, num_layers=2, dropout=0.3)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        data = torch.randn(12, 8, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
        curve = []
        for _ in range(300):
            optimizer.zero_grad()
            loss = model(data)
            loss.backward()
            optimizer.step()
            curve.append(loss.item())
        curves.append(np.array(curve))
    assert curves[0][-1] < 0.5 * curves[0][0]  # it learns: the comparison means something
    assert_close(curves[1], curves[0], 1e-8)


# -- errors ----------------------------------------------------------------------------------

def _torch_raises(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the type torch.nn.RNN raises is what we want
        return type(exc)
    return None


BAD_CALLS = {
    "4-D input": lambda m: m(torch.randn(2, 3, 4, 5)),
    "wrong input size": lambda m: m(torch.randn(3, 2, 7)),
    "wrong hx shape": lambda m: m(torch.randn(3, 2, 4), torch.randn(1, 3, 5)),
    "hx 2-D for batched input": lambda m: m(torch.randn(3, 2, 4), torch.randn(2, 5)),
    "float64 input, float32 weights": lambda m: m(torch.randn(3, 2, 4, dtype=F64)),
    "int input": lambda m: m(torch.ones(3, 2, 4, dtype=torch.int64)),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_calls_raise_what_torch_raises(case):
    """Each mistake raises rnnfast's ValueError/TypeError, also of torch.nn.RNN's class."""
    torch_type = _torch_raises(lambda: BAD_CALLS[case](torch.nn.RNN(4, 5)))
    assert torch_type is not None
    with pytest.raises(torch_type) as info:
        BAD_CALLS[case](rt.RNN(4, 5))
    assert isinstance(info.value, (ValueError, TypeError))
    assert str(info.value)


def test_other_devices_point_to_torch_rnn():
    with pytest.raises(rt.DeviceError, match="torch.nn.RNN"):
        rt.RNN(4, 5, device="cuda")
    meta_input = torch.randn(3, 2, 4, device="meta")
    with pytest.raises(rt.DeviceError, match="CPU only.*torch.nn.RNN"):
        rt.RNN(4, 5)(meta_input)
    with pytest.raises(rt.DeviceError, match="weight_ih_l0"):
        rt.RNN(4, 5).to("meta")(torch.randn(3, 2, 4))
    with pytest.raises(RuntimeError, match="CPU only"):  # also RuntimeError, as in torch
        rt.RNN(4, 5)(torch.randn(3, 2, 4), torch.zeros(1, 2, 5, device="meta"))


def test_other_dtypes_are_refused():
    with pytest.raises(rt.DtypeError, match="float16"):
        rt.RNN(4, 5, dtype=torch.float16)
    with pytest.raises(rt.DtypeError, match=r"\.float\(\) or \.double\(\)"):
        rt.RNN(4, 5).half()(torch.randn(3, 2, 4, dtype=torch.float16))
    with pytest.raises(rt.DtypeError, match="hx dtype"):
        rt.RNN(4, 5)(torch.randn(3, 2, 4), torch.zeros(1, 2, 5, dtype=F64))


@pytest.mark.parametrize("kwargs, error", [
    (dict(hidden_size=0), ValueError), (dict(hidden_size=2.0), TypeError),
    (dict(num_layers=0), ValueError), (dict(dropout=1.5), ValueError),
    (dict(nonlinearity="sigmoid"), ValueError), (dict(bias=1), TypeError),
    (dict(n_threads=0), ValueError)])
def test_bad_constructor_arguments(kwargs, error):
    with pytest.raises(error):
        rt.RNN(**{"input_size": 4, "hidden_size": 5, **kwargs})


def test_replaced_parameters_are_checked():
    rnn = rt.RNN(4, 5)
    rnn.weight_hh_l0 = torch.nn.Parameter(torch.randn(5, 4))
    with pytest.raises(rt.ShapeError, match=r"weight_hh_l0 must have shape \(5, 5\)"):
        rnn(torch.randn(3, 2, 4))


def test_bad_packed_sequences_and_empty_inputs():
    rnn = rt.RNN(4, 5)
    data = torch.randn(6, 4)
    with pytest.raises(ValueError, match="non-increasing"):
        rnn(PackedSequence(data, torch.tensor([2, 3, 1]), None, None))
    with pytest.raises(ValueError, match="sum\\(batch_sizes\\) = 5"):
        rnn(PackedSequence(data, torch.tensor([3, 2]), None, None))
    with pytest.raises(ValueError, match="at least one step"):
        rnn(torch.randn(0, 2, 4))


@pytest.mark.parametrize("change, match", [
    (lambda a: {0: torch.randn(4, 3, 6, dtype=F64)}, "w_ih\\[0\\] must have shape"),
    (lambda a: {1: torch.randn(2, 4, 6, dtype=F64)}, "hx must have shape"),
    (lambda a: {10: torch.tensor([1, 4, 2])}, "sorted longest first"),
    (lambda a: {10: torch.tensor([5, 4, 2])}, "values in 1..T = 4"),
    (lambda a: {6: None}, "given together"),
    (lambda a: {4: None}, "all be given or all be None"),
    (lambda a: {11: "sigmoid"}, "nonlinearity"),
])
def test_operator_checks_its_arguments(change, match):
    """The operator is public (torch.ops.rnnfast.rnn_layer): bad arguments never reach the
    kernels, which have no bounds checks."""
    args = [a.detach() if isinstance(a, torch.Tensor) else a
            for a in layer_args(lengths=[4, 2, 1])]
    for index, value in change(args).items():
        args[index] = value
    with pytest.raises(ValueError, match=match):
        torch.ops.rnnfast.rnn_layer(*args)
