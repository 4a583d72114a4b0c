"""rnnfast.tasks and rnnfast.nn.masked_mse: what each task generates, the loss and its gradient,
the task model, its trainer and checkpoints, and the 3-bit flip-flop opened up: 8 stable fixed
points, one per memory, with saddles between neighbouring memories."""
import numpy as np
import pytest

from rnnfast import optim
from rnnfast.dynamics import find_fixed_points, sample_states
from rnnfast.nn import masked_mse
from rnnfast.tasks import (TASKS, ContextDependentIntegration, DelayedMatchToSample, FlipFlop,
                           PerceptualDecision, TaskRNN, TaskTrainer, evaluate_task,
                           load_task_model, make_task, task_checkpoint)
from rnnfast.train import NonFiniteError, checkpoint


# --------------------------------------------------------------------------------------------
# masked_mse
# --------------------------------------------------------------------------------------------
def _problem(seed=0, shape=(5, 4, 3)):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), rng.standard_normal(shape), rng.random(shape[:2]) < 0.6


def test_masked_mse_is_the_mean_over_the_unmasked_elements():
    outputs, targets, mask = _problem()
    loss, grad = masked_mse(outputs, targets, mask)
    kept = mask[:, :, None].repeat(3, axis=2)
    assert loss == pytest.approx(np.mean((outputs[kept] - targets[kept]) ** 2), rel=1e-14)
    assert np.all(grad[~mask] == 0)
    full, _ = masked_mse(outputs, targets)
    assert full == pytest.approx(np.mean((outputs - targets) ** 2), rel=1e-14)


def test_masked_mse_gradient_matches_central_differences():
    outputs, targets, mask = _problem(1, (3, 2, 2))
    _, grad = masked_mse(outputs, targets, mask)
    eps = 1e-6
    for index in np.ndindex(outputs.shape):
        plus, minus = outputs.copy(), outputs.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric = (masked_mse(plus, targets, mask)[0] - masked_mse(minus, targets, mask)[0]) / (
            2 * eps)
        assert grad[index] == pytest.approx(numeric, abs=1e-9)


def test_masked_mse_ignores_masked_targets_and_keeps_the_dtype():
    outputs, targets, mask = _problem(2)
    targets[~mask] = np.nan
    loss, grad = masked_mse(outputs.astype(np.float32), targets, mask)
    assert np.isfinite(loss) and grad.dtype == np.float32 and np.all(grad[~mask] == 0)


def test_masked_mse_agrees_with_torch():
    torch = pytest.importorskip("torch")
    outputs, targets, mask = _problem(3)
    y = torch.tensor(outputs, requires_grad=True)
    keep = torch.tensor(mask)
    reference = torch.nn.functional.mse_loss(y[keep], torch.tensor(targets)[keep])
    reference.backward()
    loss, grad = masked_mse(outputs, targets, mask)
    assert loss == pytest.approx(reference.item(), rel=1e-12)
    np.testing.assert_allclose(grad, y.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("args, error, message", [
    ((np.zeros((2, 2, 1), dtype=int), np.zeros((2, 2, 1))), TypeError, "outputs"),
    ((np.zeros((2, 2)), np.zeros((2, 2))), ValueError, "outputs"),
    ((np.zeros((2, 2, 1)), np.zeros((2, 2, 2))), ValueError, "targets"),
    ((np.zeros((2, 2, 1)), np.array([["a"]])), TypeError, "targets"),
    ((np.zeros((2, 2, 1)), np.zeros((2, 2, 1), dtype=complex)), TypeError, "targets"),
    ((np.zeros((2, 2, 1)), np.zeros((2, 2, 1)), np.ones((2, 3))), ValueError, "mask"),
    ((np.zeros((2, 2, 1)), np.zeros((2, 2, 1)), np.zeros((2, 2))), ValueError, "at least one"),
    ((np.zeros((2, 2, 1)), np.zeros((2, 2, 1)), np.full((2, 2), 0.5)), ValueError, "0 and 1"),
    ((np.zeros((2, 2, 1)), np.full((2, 2, 1), np.inf)), ValueError, "finite"),
])
def test_masked_mse_rejects_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        masked_mse(*args)


# --------------------------------------------------------------------------------------------
# The tasks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_draws_seeded_batches_of_the_declared_shapes(name):
    task = TASKS[name]()
    batch = task.batch(7, seed=3)
    T = batch.inputs.shape[0]
    assert batch.inputs.shape == (T, 7, task.input_size) and batch.inputs.dtype == np.float32
    assert batch.targets.shape == (T, 7, task.output_size) and batch.mask.shape == (T, 7)
    assert batch.mask.dtype == bool and batch.mask.any(axis=0).all()
    again = task.batch(7, seed=3, dtype=np.float64)
    np.testing.assert_allclose(again.inputs, batch.inputs, rtol=1e-6)
    assert not np.array_equal(task.batch(7, seed=4).inputs, batch.inputs)
    rng = np.random.default_rng(0)
    assert not np.array_equal(task.batch(7, rng).inputs, task.batch(7, rng).inputs)
    assert task.accuracy(batch.targets, batch) == 1.0
    assert task.accuracy(-batch.targets, batch) == 0.0
    assert make_task(name, **task.settings()) == task
    assert task.delay_input().shape == (task.input_size,)


def test_flip_flop_targets_hold_the_sign_of_each_channels_last_pulse():
    task = FlipFlop(n_bits=4, steps=80, p_pulse=0.1)
    batch = task.batch(50, seed=0, dtype=np.float64)
    assert np.all(batch.inputs[0] != 0)  # every channel starts with a pulse
    rate = np.mean(batch.inputs[1:] != 0)
    assert rate == pytest.approx(0.1, abs=0.01)
    for b in range(50):
        for bit in range(4):
            last = 0.0
            for t in range(80):
                if batch.inputs[t, b, bit] != 0:
                    last = batch.inputs[t, b, bit]
                assert batch.targets[t, b, bit] == last
    assert batch.mask.all()


def _period(task_batch_row):
    """The steps where a (T,) boolean row is True, as (first, last + 1)."""
    steps = np.flatnonzero(task_batch_row)
    return steps[0], steps[-1] + 1


def test_perceptual_decision_reports_the_sign_of_the_evidence_after_the_delay():
    task = PerceptualDecision(noise=0.0, fixation=3, stimulus=6, delay=(2, 9), response=4)
    batch = task.batch(200, seed=1, dtype=np.float64)
    delays = []
    for b in range(200):
        cue, evidence = batch.inputs[:, b, 0], batch.inputs[:, b, 1]
        target = batch.targets[:, b, 0]
        go = _period(cue)[1]
        stim = _period(evidence != 0)
        assert stim == (3, 9) and np.all(np.abs(evidence[3:9]) == np.abs(evidence[3]))
        assert abs(evidence[3]) in task.coherences
        assert np.all(target[go:go + 4] == np.sign(evidence[3])) and np.all(target[:go] == 0)
        np.testing.assert_array_equal(np.flatnonzero(batch.mask[:, b]),
                                      np.r_[0:3, go:go + 4])
        delays.append(go - 9)
    assert min(delays) == 2 and max(delays) == 9
    noisy = PerceptualDecision(noise=1.0, stimulus=400).batch(1, seed=0, dtype=np.float64)
    stimulus = noisy.inputs[5:405, 0, 1]
    assert np.std(stimulus) == pytest.approx(1.0, rel=0.1)


def test_context_dependent_integration_reports_the_cued_stream():
    task = ContextDependentIntegration(noise=0.0, delay=3)
    batch = task.batch(300, seed=2, dtype=np.float64)
    contexts = []
    for b in range(300):
        x = batch.inputs[:, b]
        context = int(np.argmax(x[0, 3:5]))
        contexts.append(context)
        trial = batch.inputs[:, b, 3 + context] == 1
        assert np.all(x[trial, 4 - context] == 0) and trial.sum() == len(trial)
        stream = x[5, 1 + context]  # the first stimulus step
        response = batch.targets[:, b, 0] != 0
        assert np.all(batch.targets[response, b, 0] == np.sign(stream))
        assert np.all(x[response, 0] == 0) and np.all(x[:response.argmax(), 0] == 1)
    assert 100 < sum(contexts) < 200
    assert task.delay_input().tolist() == [1, 0, 0, 1, 0]


def test_delayed_match_to_sample_says_whether_the_test_is_the_sample():
    task = DelayedMatchToSample(n_stimuli=3, noise=0.0, p_match=0.3)
    batch = task.batch(400, seed=5, dtype=np.float64)
    matches = 0
    for b in range(400):
        x = batch.inputs[:, b, 1:]
        shown = np.flatnonzero(x.any(axis=1))
        sample = np.argmax(x[shown[0]])
        test = np.argmax(x[shown[-1]])
        answer = batch.targets[batch.targets[:, b, 0] != 0, b, 0]
        assert len(answer) == 5 and np.all(answer == (1 if sample == test else -1))
        matches += sample == test
    assert matches / 400 == pytest.approx(0.3, abs=0.06)


@pytest.mark.parametrize("call, error, message", [
    (lambda: FlipFlop(n_bits=0), ValueError, "n_bits"),
    (lambda: FlipFlop(p_pulse=1.5), ValueError, "p_pulse"),
    (lambda: PerceptualDecision(coherences=()), ValueError, "coherences"),
    (lambda: PerceptualDecision(noise=-1), ValueError, "noise"),
    (lambda: PerceptualDecision(delay=(9, 2)), ValueError, "delay"),
    (lambda: PerceptualDecision(stimulus=0), ValueError, "stimulus"),
    (lambda: DelayedMatchToSample(n_stimuli=1), ValueError, "n_stimuli"),
    (lambda: make_task("stroop"), ValueError, "unknown task"),
    (lambda: FlipFlop().batch(0), ValueError, "batch_size"),
    (lambda: FlipFlop().batch(2, dtype=np.int32), TypeError, "dtype"),
    (lambda: FlipFlop().accuracy(np.zeros((2, 2, 3)), FlipFlop().batch(2)), ValueError,
     "shape"),
])
def test_bad_task_settings_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --------------------------------------------------------------------------------------------
# The model, its trainer and its checkpoints
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("leak", [1.0, 0.3])
def test_task_model_gradient_matches_central_differences(leak):
    task = PerceptualDecision(stimulus=4, delay=2, response=3, fixation=2)
    model = TaskRNN(2, 5, 1, leak=leak, dtype=np.float64, seed=0)
    batch = task.batch(3, seed=0, dtype=np.float64)

    def loss():
        return masked_mse(model.forward(batch.inputs)[0], batch.targets, batch.mask)[0]

    outputs, _ = model.forward(batch.inputs)
    grads = model.backward(masked_mse(outputs, batch.targets, batch.mask)[1])
    assert set(grads) == set(model.parameters())
    rng = np.random.default_rng(1)
    for name in ("rnn.weight_hh_l0", "rnn.bias_ih_l0", "readout.weight"):
        param = model.parameters()[name]
        direction = rng.standard_normal(param.shape)
        param += 1e-6 * direction
        plus = loss()
        param -= 2e-6 * direction
        minus = loss()
        param += 1e-6 * direction
        assert np.sum(grads[name] * direction) == pytest.approx((plus - minus) / 2e-6,
                                                                rel=1e-6)


def test_the_identity_initialisation_starts_by_holding_the_state():
    H = 200
    W = TaskRNN(2, H, 1, recurrent_init="identity", seed=0).rnn.parameters()["weight_hh_l0"]
    off_diagonal = W[~np.eye(H, dtype=bool)]
    assert np.diag(W).mean() == pytest.approx(0.9, abs=0.01)
    assert off_diagonal.std() * np.sqrt(H) == pytest.approx(0.1, rel=0.05)
    torch_like = TaskRNN(2, H, 1, seed=0).rnn.parameters()["weight_hh_l0"]
    assert np.abs(torch_like).max() <= 1 / np.sqrt(H)
    with pytest.raises(ValueError, match="recurrent_init"):
        TaskRNN(2, 3, 1, recurrent_init="orthogonal")


def test_training_lowers_the_loss_and_a_checkpoint_restores_the_model(tmp_path):
    task = FlipFlop(n_bits=2, steps=30)
    model = TaskRNN(2, 8, 2, recurrent_init="identity", seed=0, n_threads=1)
    trainer = TaskTrainer(model, task, optim.Adam(model.parameters(), lr=1e-2), batch_size=16,
                          seed=0)
    held_out = task.batch(64, seed=9)
    before, _ = evaluate_task(model, task, held_out)
    for _ in range(150):
        trainer.step()
    after, accuracy = evaluate_task(model, task, held_out)
    assert after < 0.5 * before and accuracy > 0.9 and trainer.steps == 150
    path = tmp_path / "task.npz"
    checkpoint.save(path, *task_checkpoint(model, task))
    loaded, loaded_task = load_task_model(path)
    assert loaded_task == task and loaded.config == model.config
    np.testing.assert_array_equal(loaded.forward(held_out.inputs)[0],
                                  model.forward(held_out.inputs)[0])


def test_a_leaky_noisy_model_steps_as_its_equations_and_its_checkpoint_keeps_the_leak(tmp_path):
    model = TaskRNN(2, 6, 2, leak=0.4, noise_std=0.1, dtype=np.float64, seed=0)
    inputs = np.random.default_rng(1).standard_normal((7, 3, 2))
    state = model.rnn.rng.bit_generator.state
    outputs, states = model.forward(inputs)
    # The same noise, drawn again, through the leaky step written out from the equations.
    model.rnn.rng.bit_generator.state = state
    noise = model.rnn.rng.standard_normal(states.shape) * np.sqrt(2 / 0.4) * 0.1
    W_xh, W_hh, b = model.rnn.direction_weights(0)
    h = np.zeros((3, 6))
    for t in range(7):
        h = 0.6 * h + 0.4 * np.tanh(inputs[t] @ W_xh.T + h @ W_hh.T + b + noise[t])
        np.testing.assert_allclose(states[t], h, rtol=1e-12, atol=1e-14)
    path = tmp_path / "leaky.npz"
    checkpoint.save(path, *task_checkpoint(model, FlipFlop(n_bits=2)))
    loaded, _ = load_task_model(path)
    assert loaded.config == model.config and loaded.config["leak"] == 0.4
    loaded.rnn.noise_std = model.rnn.noise_std = 0.0
    np.testing.assert_array_equal(loaded.forward(inputs)[0], model.forward(inputs)[0])


@pytest.mark.parametrize("kwargs, message", [(dict(leak=0.0), "leak"), (dict(leak=1.5), "leak"),
                                             (dict(noise_std=-1.0), "noise_std")])
def test_bad_leak_or_noise_of_a_task_model_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskRNN(2, 3, 1, **kwargs)


def test_a_checkpoint_that_is_not_a_task_model_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    checkpoint.save(path, {"model": {}}, {"model": {}})
    with pytest.raises(checkpoint.CheckpointError, match="task model"):
        load_task_model(path)
    meta, sections = task_checkpoint(TaskRNN(3, 4, 3, seed=0), FlipFlop())
    meta["model"]["hidden_size"] = 5
    checkpoint.save(path, meta, sections)
    with pytest.raises(checkpoint.CheckpointError, match="consistent"):
        load_task_model(path)


def test_training_stops_on_non_finite_values_and_names_the_step():
    task = FlipFlop(n_bits=1, steps=5)
    model = TaskRNN(1, 3, 1, seed=0)
    model.parameters()["readout.weight"][0, 0] = np.nan
    trainer = TaskTrainer(model, task, optim.SGD(model.parameters(), lr=0.1), seed=0)
    with pytest.raises(NonFiniteError, match="step 1: the loss"):
        trainer.step()
    with pytest.raises(TypeError, match="task"):
        TaskTrainer(model, "flipflop", optim.SGD(model.parameters(), lr=0.1))


# --------------------------------------------------------------------------------------------
# The 3-bit flip-flop, opened up (Sussillo & Barak 2013, figure 2)
# --------------------------------------------------------------------------------------------
def _trained_flip_flop(seed, H=16, steps=500, leak=1.0):
    task = FlipFlop(n_bits=3, steps=48)
    model = TaskRNN(3, H, 3, seed=seed, n_threads=1, leak=leak)
    trainer = TaskTrainer(model, task, optim.Adam(model.parameters(), lr=1e-2), batch_size=32,
                          seed=seed)
    for _ in range(steps):
        trainer.step()
    return model, task


@pytest.mark.parametrize("seed, leak", [(11, 1.0), (23, 1.0), (37, 1.0), (23, 0.5)])
def test_a_trained_3_bit_flip_flop_has_8_stable_points_with_saddles_between(seed, leak):
    model, task = _trained_flip_flop(seed, leak=leak)
    held_out = task.batch(128, seed=1000 + seed)
    assert evaluate_task(model, task, held_out)[1] > 0.99
    _, states = model.forward(held_out.inputs)
    fp = find_fixed_points(model, sample_states(states, 1024, noise=0.5, seed=seed),
                           np.zeros(3))
    W, b = model.readout.weight.astype(np.float64), model.readout.bias.astype(np.float64)
    memories = np.sign(fp.points[fp.stable] @ W.T + b)
    assert fp.stable.sum() == 8 and len({tuple(m) for m in memories}) == 8
    # Each saddle with one unstable direction sits between two memories one flip apart: the
    # map run from either side of it along that direction ends at those two.
    values, vectors = fp.eig()
    between = 0
    for k in np.flatnonzero(fp.unstable_dims == 1):
        assert values[k, 0].imag == 0 and values[k, 0].real > 1
        ends = []
        for side in (1, -1):
            start = fp.points[k] + side * 1e-3 * vectors[k][:, 0].real
            end = fp.step_map.run(None, start[None], steps=300)[-1, 0]
            distance = np.abs(fp.points[fp.stable] - end).max(axis=1)
            assert distance.min() < 1e-4
            ends.append(int(distance.argmin()))
        assert np.sum(memories[ends[0]] != memories[ends[1]]) == 1
        between += 1
    assert between >= 6  # the cube has 12 edges; the searches find most of them
