"""Truncated BPTT (rnnfast.train): the state is carried across chunks, the gradient is cut at
the chunk boundary, evaluation agrees with one pass over the whole text, a non-finite loss,
gradient or update stops training with the step and tensor, and runs are reproducible."""
import numpy as np
import pytest

from rnnfast.charlm.model import CharRNN
from rnnfast.train.optim import SGD, Adam
from rnnfast.nn import softmax_cross_entropy
from rnnfast.train.streams import TokenStreams
from rnnfast.train import NonFiniteError, TBPTTTrainer, evaluate
from rnn_helpers import FD_EPS, TOL, assert_close

V, H, E = 5, 4, 3


def model(seed=0, dtype=np.float64, **kwargs):
    return CharRNN(V, hidden_size=H, num_layers=2, embedding_dim=E, dtype=dtype, seed=seed,
                   **kwargs)


def tokens(n=120, seed=0):
    return np.random.default_rng(seed).integers(0, V, n)


class Recorder:
    """An optimizer that records the gradients and leaves the parameters alone."""

    def __init__(self):
        self.grads = []

    def step(self, grads):
        self.grads.append({name: g.copy() for name, g in grads.items()})


def test_state_is_carried_so_chunk_losses_add_up_to_the_whole_stream():
    """With parameters held still, the chunks' losses are those of one pass over the whole
    segment of each stream: only possible if each chunk starts from the last one's state."""
    m, ids = model(), tokens(61)
    trainer = TBPTTTrainer(m, Recorder(), TokenStreams(ids, 3, 6), clip_norm=None)
    losses = [trainer.step() * trainer.last_tokens for _ in range(4)]  # 20 = segment: 6,6,6,2
    segments = np.stack([ids[b * 20:b * 20 + 21] for b in range(3)], axis=1)  # (21, 3)
    logits, _ = m.forward(segments[:-1])
    whole, _ = softmax_cross_entropy(logits, segments[1:])
    assert sum(losses) / 60 == pytest.approx(whole, rel=1e-12)


def test_gradient_is_cut_at_the_chunk_boundary():
    """The gradient of a step is that of its chunk's loss with the carried state held fixed
    (central differences), not that of the whole stream so far."""
    m, ids = model(), tokens(61)
    recorder = Recorder()
    trainer = TBPTTTrainer(m, recorder, TokenStreams(ids, 3, 6), clip_norm=None)
    trainer.step()
    carried = trainer.state.copy()
    inputs = np.stack([ids[b * 20 + 6:b * 20 + 12] for b in range(3)], axis=1)
    targets = np.stack([ids[b * 20 + 7:b * 20 + 13] for b in range(3)], axis=1)
    trainer.step()
    param = m.parameters()["rnn.weight_hh_l0"]
    numeric = np.empty_like(param)
    for idx in np.ndindex(param.shape):
        saved = param[idx]
        values = []
        for delta in (FD_EPS, -FD_EPS):
            param[idx] = saved + delta
            values.append(softmax_cross_entropy(m.forward(inputs, carried)[0], targets)[0])
        param[idx] = saved
        numeric[idx] = (values[0] - values[1]) / (2 * FD_EPS)
    assert_close(recorder.grads[1]["rnn.weight_hh_l0"], numeric, TOL["finite_difference"])


def test_epoch_start_resets_the_state():
    m, ids = model(), tokens(13)
    trainer = TBPTTTrainer(m, Recorder(), TokenStreams(ids, 2, 6), clip_norm=None)
    first = trainer.step()
    trainer.step()  # the segments hold 6 steps: this starts epoch 2 from zeros again
    assert trainer.step() == first


def test_evaluate_equals_one_pass_and_does_not_depend_on_chunking():
    m, ids = model(dropout=0.5), tokens(200)
    logits, _ = m.eval().forward(ids[:-1].reshape(-1, 1))
    m.train()
    whole, _ = softmax_cross_entropy(logits, ids[1:].reshape(-1, 1))
    assert evaluate(m, ids, batch_size=1, seq_len=1000) == pytest.approx(whole, rel=1e-12)
    assert evaluate(m, ids, batch_size=1, seq_len=7) == pytest.approx(whole, rel=1e-12)
    assert m.rnn.training


def test_training_lowers_the_loss_and_is_reproducible():
    ids = np.tile(np.array([0, 1, 2, 3, 4, 3, 2, 1]), 40)  # a pattern a small RNN learns

    def run(seed):
        m = model(seed=seed, dtype=np.float32)
        trainer = TBPTTTrainer(m, Adam(m.parameters(), lr=0.02), TokenStreams(ids, 4, 10))
        losses = [trainer.step() for _ in range(150)]
        return m, losses

    (a, losses), (b, _), (c, _) = run(0), run(0), run(1)
    assert np.mean(losses[-10:]) < 0.2 * np.mean(losses[:10])
    for name, value in a.parameters().items():
        assert np.array_equal(value, b.parameters()[name]), name
    assert not np.array_equal(a.parameters()["rnn.weight_hh_l0"],
                              c.parameters()["rnn.weight_hh_l0"])


def test_clipping_bounds_the_applied_gradient():
    m, recorder = model(), Recorder()
    trainer = TBPTTTrainer(m, recorder, TokenStreams(tokens(), 3, 6), clip_norm=1e-3)
    trainer.step()
    assert trainer.last_grad_norm > 1e-3  # the norm before clipping
    total = np.sqrt(sum(np.sum(g ** 2) for g in recorder.grads[0].values()))
    assert total == pytest.approx(1e-3, rel=1e-3)
    trainer = TBPTTTrainer(model(), recorder, TokenStreams(tokens(), 3, 6), clip_norm=None,
                           clip_value=1e-4)
    trainer.step()
    assert max(np.abs(g).max() for g in recorder.grads[1].values()) <= 1e-4


@pytest.mark.parametrize("where", ["parameter", "update"])
def test_non_finite_training_stops_with_step_and_tensor(where):
    m = model()
    trainer = TBPTTTrainer(m, Adam(m.parameters(), lr=0.01), TokenStreams(tokens(), 3, 6))
    trainer.step()
    if where == "parameter":
        m.parameters()["output.bias"][2] = np.nan
        expected = r"step 2: the loss is nan \(parameter output.bias has 1 non-finite"
    else:
        trainer.optimizer.lr = 1e308  # Adam's step lr / (1 - beta1^t) overflows
        expected = r"step 2: the optimizer's update overflowed \(parameter .* non-finite"
    before = {name: p.copy() for name, p in m.parameters().items()}
    with pytest.raises(NonFiniteError, match=expected):
        trainer.step()
    if where == "parameter":  # nothing was updated
        for name, p in m.parameters().items():
            assert np.array_equal(p, before[name], equal_nan=True)
    assert trainer.steps == 1


def test_non_finite_gradient_is_reported():
    m = model()
    trainer = TBPTTTrainer(m, SGD(m.parameters(), lr=0.1), TokenStreams(tokens(), 3, 6))
    original = m.backward

    def backward(dlogits):
        grads = original(dlogits)
        grads["rnn.weight_hh_l1"][0, 1] = np.inf
        return grads

    m.backward = backward
    with pytest.raises(NonFiniteError, match="step 1: the gradient norm is inf.*weight_hh_l1"):
        trainer.step()


def test_trainer_state_round_trip():
    ids = tokens(300)
    a = model()
    ta = TBPTTTrainer(a, SGD(a.parameters(), lr=0.1), TokenStreams(ids, 3, 7))
    for _ in range(4):
        ta.step()
    b = model()
    b.load_state_dict(a.state_dict())
    tb = TBPTTTrainer(b, SGD(b.parameters(), lr=0.1), TokenStreams(ids, 3, 7))
    tb.load_state_dict(ta.state_dict())
    assert tb.steps == 4
    assert [ta.step() for _ in range(20)] == [tb.step() for _ in range(20)]
    with pytest.raises(ValueError, match=r"carried state must have shape"):
        tb.load_state_dict({**ta.state_dict(), "state": np.zeros((1, 3, H))})


def test_blas_is_held_to_one_thread_inside_a_step(monkeypatch):
    """The model's threads are its kernels' team: inside a step (forward, backward and the
    update's gradient norm) every BLAS runs on one thread, and its setting comes back after."""
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                if lib["user_api"] == "blas"]

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        outside = blas_threads()
        if max(outside, default=1) < 2:
            pytest.skip("no BLAS with two threads here")
        model = CharRNN(11, 8, embedding_dim=4, seed=0, n_threads=2)
        seen = []
        forward = model.forward
        monkeypatch.setattr(model, "forward",
                            lambda *args: seen.append(blas_threads()) or forward(*args))
        trainer = TBPTTTrainer(model, Adam(model.parameters()),
                               TokenStreams(np.arange(200) % 11, 2, 5))
        trainer.step()
        assert seen == [[1] * len(outside)]
        assert blas_threads() == outside
