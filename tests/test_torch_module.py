"""rnnfast.torch.RNN against torch.nn.RNN on the same weights: outputs, h_n and every gradient
for every option and their combinations, tensors and PackedSequence, both the eager path and
the operator path (the dispatcher), and what a torch user relies on besides.
"""
import subprocess
import sys
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rnnfast.torch as rt  # noqa: E402
from rnnfast.torch import _bridge, ops  # noqa: E402
from torch_rnn_helpers import (Config, check_against_torch, compare, lengths_for,  # noqa: E402
                               make_inputs, reference_module, run)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(params=["eager", "dispatcher"])
def path(request, monkeypatch):
    """The module's two routes to the kernels: the autograd.Function of plain eager mode, and
    the registered operators (what torch.compile sees)."""
    if request.param == "dispatcher":
        monkeypatch.setattr(ops, "_can_skip_dispatcher", lambda x: False)
    return request.param


DTYPES = [torch.float64, torch.float32]
DTYPE_IDS = ["float64", "float32"]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "no_hx"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_matches_torch(path, num_layers, bidirectional, nonlinearity, bias, with_hx, dtype):
    check_against_torch(Config(num_layers=num_layers, bidirectional=bidirectional,
                               nonlinearity=nonlinearity, bias=bias, with_hx=with_hx,
                               dtype=dtype))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layout", ["batch_first", "unbatched", "unbatched_batch_first"])
def test_layouts_match_torch(path, layout, bidirectional):
    check_against_torch(Config(num_layers=2, bidirectional=bidirectional,
                               batch_first=layout.endswith("batch_first"),
                               unbatched=layout.startswith("unbatched")))


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 5, 3, 17), (9, 1, 2, 33), (3, 7, 40, 8)],
                         ids=lambda s: "T{}B{}D{}H{}".format(*s))
def test_edge_shapes_match_torch(path, shape):
    T, B, D, H = shape
    check_against_torch(Config(T=T, B=B, D=D, H=H, num_layers=2, bidirectional=True))


LENGTHS = [(5, 3, 3, 1), (2, 5, 1, 4), (4, 4, 4, 4), (1, 1, 1, 5)]


@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("lengths", LENGTHS, ids=lambda L: "".join(map(str, L)))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_packed_matches_torch(path, bidirectional, lengths, enforce_sorted):
    if enforce_sorted and list(lengths) != sorted(lengths, reverse=True):
        lengths = tuple(sorted(lengths, reverse=True))
    check_against_torch(Config(T=max(lengths), B=len(lengths), num_layers=2,
                               bidirectional=bidirectional, lengths=lengths,
                               enforce_sorted=enforce_sorted))


@pytest.mark.parametrize("packed", [False, True], ids=["tensor", "packed"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_dropout_in_training_draws_torch_masks(path, bidirectional, packed):
    """In train() the masks come from torch's generator, exactly as torch.nn.RNN draws them:
    the same seed gives torch's results; in eval() there is no dropout."""
    config = Config(T=6, B=4, num_layers=3, bidirectional=bidirectional, dropout=0.4,
                    train=True, lengths=(6, 2, 5, 3) if packed else None,
                    enforce_sorted=False)
    ours, (output, _, _) = check_against_torch(config)
    x, hx, G, G_n = make_inputs(config)
    ours.eval()
    no_dropout = run(ours, config, x, hx, G, G_n, torch.float64)
    assert (no_dropout[0] - output).abs().max() > 1e-3  # dropout changed the training run
    check_against_torch(replace(config, train=False))


def test_same_seed_repeats_a_run_with_dropout():
    config = Config(num_layers=2, dropout=0.5, train=True)
    ours = rt.RNN(**config.module_args(), dtype=torch.float64).train()
    x, hx, G, G_n = make_inputs(config)
    first = run(ours, config, x, hx, G, G_n, torch.float64)  # run() seeds torch before forward
    second = run(ours, config, x, hx, G, G_n, torch.float64)
    compare(second, first, torch.float64)
    torch.manual_seed(5)
    assert not torch.equal(ours(x)[0], ours(x)[0])  # fresh masks at each call


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_configurations_match_torch(data):
    T, B = data.draw(st.integers(1, 6), "T"), data.draw(st.integers(1, 5), "B")
    packed = data.draw(st.booleans(), "packed")
    lengths = lengths_for(T, B, data.draw(st.integers(0, 99), "lengths_seed")) if packed else None
    config = Config(
        T=T, B=B, D=data.draw(st.integers(1, 7), "D"), H=data.draw(st.integers(1, 20), "H"),
        num_layers=data.draw(st.integers(1, 3), "num_layers"),
        nonlinearity=data.draw(st.sampled_from(["tanh", "relu"]), "nonlinearity"),
        bias=data.draw(st.booleans(), "bias"), batch_first=data.draw(st.booleans(), "bf"),
        bidirectional=data.draw(st.booleans(), "bidirectional"),
        dtype=data.draw(st.sampled_from(DTYPES), "dtype"),
        with_hx=data.draw(st.booleans(), "hx"), lengths=lengths, enforce_sorted=False,
        unbatched=not packed and data.draw(st.booleans(), "unbatched"),
        seed=data.draw(st.integers(0, 99), "seed"))
    check_against_torch(config)


# -- parameters, conversions -------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {"num_layers": 3, "bidirectional": True},
                                     {"bias": False, "nonlinearity": "relu", "num_layers": 2}])
def test_parameters_and_initialisation_are_torchs(options):
    torch.manual_seed(3)
    ref = torch.nn.RNN(4, 9, **options)
    torch.manual_seed(3)
    ours = rt.RNN(4, 9, **options)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        assert torch.equal(a, b), name
    assert [[p.shape for p in ps] for ps in ours.all_weights] == \
        [[p.shape for p in ps] for ps in ref.all_weights]
    ref.load_state_dict(rt.RNN(4, 9, **options).state_dict())  # loads both ways
    ours.load_state_dict(torch.nn.RNN(4, 9, **options).state_dict())


def test_from_torch_and_to_torch_round_trip():
    ref = torch.nn.RNN(3, 5, 2, nonlinearity="relu", bias=False, batch_first=True, dropout=0.2,
                       bidirectional=True, dtype=torch.float64).eval()
    ours = rt.RNN.from_torch(ref)
    assert not ours.training and ours.weight_ih_l0.dtype == torch.float64
    back = ours.to_torch()
    assert isinstance(back, torch.nn.RNN) and not back.training
    for name in ("input_size", "hidden_size", "num_layers", "nonlinearity", "bias",
                 "batch_first", "dropout", "bidirectional"):
        assert getattr(ours, name) == getattr(ref, name) == getattr(back, name), name
    for a, b in zip(ref.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    with pytest.raises(TypeError, match="torch.nn.RNN"):
        rt.RNN.from_torch(torch.nn.GRU(3, 5))


def test_is_a_module_not_a_torch_rnn():
    ours = rt.RNN(3, 4)
    assert isinstance(ours, torch.nn.Module) and not isinstance(ours, torch.nn.RNNBase)
    assert "RNN(3, 4)" in repr(torch.nn.Sequential(ours))


# -- autograd behaviour ------------------------------------------------------------------------

def test_no_grad_and_inference_mode_build_no_graph(path):
    ours = rt.RNN(3, 4, 2, bidirectional=True)
    x = torch.randn(5, 2, 3, requires_grad=True)
    with torch.no_grad():
        out, h_n = ours(x)
    assert out.grad_fn is None and h_n.grad_fn is None and not out.requires_grad
    with torch.inference_mode():
        out2, _ = ours(x)
    torch.testing.assert_close(out2, out, rtol=0, atol=0)


def test_requires_grad_is_respected(path):
    """Only what requires grad gets a gradient: frozen layers, an input without grad."""
    ours = rt.RNN(3, 4, 2)
    for name, p in ours.named_parameters():
        p.requires_grad_(name.endswith("l1"))  # layer 0 frozen
    x = torch.randn(5, 2, 3)
    hx = torch.randn(2, 2, 4, requires_grad=True)
    out, h_n = ours(x, hx)
    (out.sum() + h_n.sum()).backward()
    assert x.grad is None and hx.grad is not None
    assert all((p.grad is None) != name.endswith("l1") for name, p in ours.named_parameters())
    for p in ours.parameters():
        p.requires_grad_(False)
    out, _ = ours(x)
    assert not out.requires_grad


def test_backward_asks_only_for_the_gradients_needed(path, monkeypatch):
    """The backend is told which gradients will be used: no dx for an input that needs none,
    no parameter gradients for a frozen layer (the kernels' own skipping is the backend's)."""
    asked = []
    original = _bridge.backward
    monkeypatch.setattr(_bridge, "backward",
                        lambda *a: asked.append(a[-2:]) or original(*a))
    ours = rt.RNN(3, 4, 2)
    ours.weight_ih_l1.requires_grad_(False)
    ours(torch.randn(5, 2, 3))[0].sum().backward()  # layer 1 still trains its weight_hh
    assert asked == [(True, True), (False, True)]  # layer 1, then layer 0 (no dx)
    for p in ours.parameters():
        p.requires_grad_(False)
    asked.clear()
    ours(torch.randn(5, 2, 3, requires_grad=True))[0].sum().backward()
    assert asked == [(True, False), (True, False)]


def test_double_backward_is_refused_clearly(path):
    ours = rt.RNN(3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    out, _ = ours(x)
    (dx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)  # first order is fine
    with pytest.raises(RuntimeError, match="double backward"):
        dx.sum().backward()


def test_inputs_modified_in_place_after_forward_are_caught(path):
    ours = rt.RNN(3, 4)
    x = torch.randn(5, 2, 3, requires_grad=True)
    out, _ = ours(x * 1)
    out.add_(1)  # the states the backward pass needs
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_non_contiguous_inputs_give_the_same_results(path):
    ours = rt.RNN(3, 4, bidirectional=True, dtype=torch.float64)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    hx = torch.randn(2, 2, 4, dtype=torch.float64).transpose(0, 1).contiguous().transpose(0, 1)
    expected = ours(x.transpose(0, 1).contiguous(), hx.contiguous())
    got = ours(x.transpose(0, 1), hx)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    expanded = torch.randn(1, 1, 3, dtype=torch.float64).expand(5, 2, 3)
    torch.testing.assert_close(ours(expanded)[0], ours(expanded.contiguous())[0], rtol=0, atol=0)


def test_threads_follow_torch_unless_set(monkeypatch):
    seen = []
    original = _bridge.forward
    monkeypatch.setattr(_bridge, "forward", lambda *a: seen.append(a[6]) or original(*a))
    x = torch.randn(3, 2, 3)
    torch.set_num_threads(2)
    rt.RNN(3, 4)(x)
    torch.set_num_threads(1)
    rt.RNN(3, 4)(x)
    rt.RNN(3, 4, n_threads=3)(x)
    assert seen == [2, 1, 3]


def test_results_do_not_depend_on_threads():
    ours = rt.RNN(8, 200, dtype=torch.float64, n_threads=1)
    x = torch.randn(6, 8, 8, dtype=torch.float64)
    one = ours(x)[0]
    ours.n_threads = 2
    torch.testing.assert_close(ours(x)[0], one, rtol=1e-12, atol=1e-12)


def test_import_rnnfast_does_not_import_torch():
    code = "import sys, rnnfast; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_reference_module_helper_rounds_weights():
    ref = reference_module(Config(dtype=torch.float32))
    assert all(torch.equal(p, p.float().double()) for p in ref.parameters())


def test_parameters_replaced_relaid_or_updated_are_read_afresh(path):
    """A parameter given new memory, a new layout (same memory, transposed) or new values in
    place (an optimizer step) is what the next call reads."""
    ours = rt.RNN(3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    ours(x)
    with torch.no_grad():
        ours.weight_hh_l0.data = torch.randn(4, 4, dtype=torch.float64)
        torch.testing.assert_close(ours(x)[0], ours.to_torch()(x)[0])
        ours.weight_hh_l0.data = ours.weight_hh_l0.data.t()
        torch.testing.assert_close(ours(x)[0], ours.to_torch()(x)[0])
        ours.weight_hh_l0.mul_(2)
        torch.testing.assert_close(ours(x)[0], ours.to_torch()(x)[0])


def test_readme_training_loop_runs_as_written(capsys):
    """The README's "Use from PyTorch" loop, executed as printed there; it learns."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Use from PyTorch", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    error, variance = map(float, re.findall(r"[-\d.]+", capsys.readouterr().out)[:2])
    assert error < 0.05 * variance
