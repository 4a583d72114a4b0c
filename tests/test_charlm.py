"""The character-level language model (rnnfast.charlm): gradients of the whole model by central
differences, agreement with the same model built from PyTorch modules, generation, and loading
from checkpoints."""
import numpy as np
import pytest

from rnnfast.train import checkpoint
from rnnfast.charlm.model import CharRNN, generate, load_model, model_checkpoint
from rnnfast.nn import softmax_cross_entropy
from rnnfast.charlm.text import Vocabulary
from rnn_helpers import FD_EPS, TOL, assert_close

V, E, H, L, T, B = 6, 3, 4, 2, 5, 3


def tiny_model(dtype=np.float64, seed=0, **kwargs):
    settings = dict(vocab_size=V, hidden_size=H, num_layers=L, embedding_dim=E, dtype=dtype,
                    seed=seed)
    settings.update(kwargs)
    return CharRNN(**settings)


def problem(seed=1):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B)),
            rng.standard_normal((L, B, H)) * 0.5)


def loss_of(model, ids, targets, h0):
    logits, _ = model.forward(ids, h0)
    return softmax_cross_entropy(logits, targets)[0]


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_gradients_match_central_differences(nonlinearity):
    model = tiny_model(nonlinearity=nonlinearity)
    ids, targets, h0 = problem()
    logits, _ = model.forward(ids, h0)
    _, dlogits = softmax_cross_entropy(logits, targets)
    grads = model.backward(dlogits)
    assert set(grads) == set(model.parameters())
    for name, param in model.parameters().items():
        numeric = np.empty_like(param)
        for idx in np.ndindex(param.shape):
            saved = param[idx]
            param[idx] = saved + FD_EPS
            plus = loss_of(model, ids, targets, h0)
            param[idx] = saved - FD_EPS
            minus = loss_of(model, ids, targets, h0)
            param[idx] = saved
            numeric[idx] = (plus - minus) / (2 * FD_EPS)
        assert_close(grads[name], numeric, TOL["finite_difference"], err_msg=name)


def test_parameter_names_and_state_dict():
    model = tiny_model()
    names = set(model.parameters())
    assert {"embedding.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l1", "rnn.bias_hh_l1",
            "output.weight", "output.bias"} <= names
    state = model.state_dict()
    other = tiny_model(seed=5)
    assert not np.array_equal(other.parameters()["rnn.weight_hh_l0"], state["rnn.weight_hh_l0"])
    other.load_state_dict(state)
    for name, value in state.items():
        assert np.array_equal(other.parameters()[name], value)
    ids, targets, h0 = problem()
    assert loss_of(model, ids, targets, h0) == loss_of(other, ids, targets, h0)
    with pytest.raises(ValueError, match="output.weight"):
        other.load_state_dict({**state, "output.weight": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({k: v for k, v in state.items() if k != "output.bias"})


def test_same_seed_same_model_different_seed_different():
    a, b, c = tiny_model(seed=3), tiny_model(seed=3), tiny_model(seed=4)
    for name in a.parameters():
        assert np.array_equal(a.parameters()[name], b.parameters()[name])
    assert not np.array_equal(a.parameters()["embedding.weight"],
                              c.parameters()["embedding.weight"])


def test_agrees_with_torch():
    torch = pytest.importorskip("torch")
    model = tiny_model()
    ids, targets, h0 = problem()
    embedding = torch.nn.Embedding(V, E, dtype=torch.float64)
    rnn = torch.nn.RNN(E, H, L, dtype=torch.float64)
    output = torch.nn.Linear(H, V, dtype=torch.float64)
    params = model.parameters()
    with torch.no_grad():
        for prefix, module in (("embedding", embedding), ("rnn", rnn), ("output", output)):
            for name, p in module.named_parameters():
                p.copy_(torch.from_numpy(params[f"{prefix}.{name}"]))
    h0_t = torch.tensor(h0)
    logits_t, h_n_t = rnn(embedding(torch.from_numpy(ids)), h0_t)
    logits_t = output(logits_t)
    loss_t = torch.nn.functional.cross_entropy(logits_t.reshape(-1, V),
                                               torch.from_numpy(targets).reshape(-1))
    loss_t.backward()

    logits, h_n = model.forward(ids, h0)
    loss, dlogits = softmax_cross_entropy(logits, targets)
    grads = model.backward(dlogits)
    assert_close(logits, logits_t.detach().numpy(), TOL["torch_float64"])
    assert_close(h_n, h_n_t.detach().numpy(), TOL["torch_float64"])
    assert loss == pytest.approx(loss_t.item(), rel=TOL["torch_float64"])
    for prefix, module in (("embedding", embedding), ("rnn", rnn), ("output", output)):
        for name, p in module.named_parameters():
            assert_close(grads[f"{prefix}.{name}"], p.grad.numpy(), TOL["torch_float64"],
                         err_msg=name)


def test_float32_model_is_float32_throughout():
    model = tiny_model(dtype=np.float32)
    ids, targets, _ = problem()
    logits, h_n = model.forward(ids)
    assert logits.dtype == np.float32 and h_n.dtype == np.float32
    grads = model.backward(softmax_cross_entropy(logits, targets)[1])
    assert all(g.dtype == np.float32 for g in grads.values())


# -- generation ------------------------------------------------------------------------------

VOCAB = Vocabulary("abcdef")


def test_greedy_generation_equals_argmax_of_the_whole_sequence():
    """Generating one character at a time carries the state correctly: reading the prime and
    the generated text as one sequence predicts each generated character as its argmax. The
    result starts with the prime (as `rnnfast sample` prints it)."""
    model = tiny_model()
    text = generate(model, VOCAB, 12, prime="abca", temperature=0)
    assert text.startswith("abca") and len(text) == 4 + 12
    ids = VOCAB.encode(text)
    logits, _ = model.forward(ids[:-1].reshape(-1, 1))
    predicted = np.argmax(logits[:, 0], axis=1)[3:]
    assert np.array_equal(predicted, ids[4:])


def test_generation_is_seeded_and_restores_training_mode():
    model = tiny_model(dropout=0.5)
    a = generate(model, VOCAB, 40, prime="ab", temperature=1.0, seed=7)
    assert model.training and model.rnn.training  # dropout was off while sampling, on after
    b = generate(model, VOCAB, 40, prime="ab", temperature=1.0, seed=7)
    c = generate(model, VOCAB, 40, prime="ab", temperature=1.0, seed=8)
    assert a == b and len(a) == 2 + 40 and set(a) <= set(VOCAB.chars)
    model.eval()
    generate(model, VOCAB, 5, prime="ab", seed=7)
    assert not model.training and not model.rnn.training  # evaluation mode is kept too
    assert a != c


def test_low_temperature_follows_the_mode_and_high_spreads_out():
    model = tiny_model()
    greedy = generate(model, VOCAB, 30, prime="a", temperature=0)
    assert generate(model, VOCAB, 30, prime="a", temperature=1e-4, seed=0) == greedy
    hot = generate(model, VOCAB, 600, prime="a", temperature=50.0, seed=0)
    assert len(set(hot)) == len(VOCAB)  # near-uniform draws visit every character


def test_generate_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="prime has 1 character"):
        generate(model, VOCAB, 5, prime="az")
    with pytest.raises(ValueError, match="vocab has 3 characters.*vocab_size = 6"):
        generate(model, Vocabulary("abc"), 5)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, VOCAB, 5, temperature=-1)
    with pytest.raises(ValueError, match="length"):
        generate(model, VOCAB, 0)
    with pytest.raises(TypeError, match="vocab must be a Vocabulary"):
        generate(model, "abcdef", 5)


# -- checkpoints of a model ------------------------------------------------------------------

def test_load_model_restores_parameters_vocab_and_dropout_generator(tmp_path):
    model = tiny_model(dropout=0.3)
    model.rnn.rng.random(5)  # move the dropout generator away from its seeded start
    meta, sections = model_checkpoint(model, VOCAB)
    checkpoint.save(tmp_path / "m.npz", meta, sections)
    loaded, vocab = load_model(tmp_path / "m.npz")
    assert vocab == VOCAB and loaded.config == model.config
    for name, value in model.parameters().items():
        assert np.array_equal(loaded.parameters()[name], value)
    assert np.array_equal(loaded.rnn.rng.random(4), model.rnn.rng.random(4))


def test_load_model_rejects_an_inconsistent_checkpoint(tmp_path):
    model = tiny_model()
    meta, sections = model_checkpoint(model, VOCAB)
    sections["model"]["rnn.weight_hh_l0"] = np.zeros((H + 1, H + 1))
    checkpoint.save(tmp_path / "shape.npz", meta, sections)
    with pytest.raises(checkpoint.CheckpointError, match=r"rnn.weight_hh_l0.*shape \(4, 4\)"):
        load_model(tmp_path / "shape.npz")

    meta, sections = model_checkpoint(model, Vocabulary("abc"))
    checkpoint.save(tmp_path / "vocab.npz", meta, sections)
    with pytest.raises(checkpoint.CheckpointError, match="vocabulary has 3 characters"):
        load_model(tmp_path / "vocab.npz")

    meta, sections = model_checkpoint(model, VOCAB)
    del meta["rng"]
    checkpoint.save(tmp_path / "meta.npz", meta, sections)
    with pytest.raises(checkpoint.CheckpointError, match="lacks \\['rng'\\]"):
        load_model(tmp_path / "meta.npz")

    meta, sections = model_checkpoint(model, VOCAB)
    meta["model"]["hidden_layers"] = 3
    checkpoint.save(tmp_path / "config.npz", meta, sections)
    with pytest.raises(checkpoint.CheckpointError, match="hidden_layers"):
        load_model(tmp_path / "config.npz")
