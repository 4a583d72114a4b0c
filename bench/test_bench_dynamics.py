"""Finding the fixed points of a trained RNN: rnnfast.dynamics.find_fixed_points against
minimising q = ½||F(h) - h||² by Adam, as FixedPointFinder (Golub & Sussillo 2018) does, and
against MINPACK's hybrj (scipy.optimize.root, method "hybr") run on each start in turn.

The network is a 3-bit flip-flop (the example of FixedPointFinder and of Sussillo & Barak 2013),
a tanh RNN with H = 128 trained here with rnnfast.tasks (seeded: the same network every run);
the starts are 1024 states of held-out trials plus Gaussian noise of 0.5, as `rnnfast dynamics`
draws them. Every candidate gets the same starts and the same target, q < 1e-12 for each start,
in float64.

- rnnfast: find_fixed_points (the whole call: the searches, merging, the eigenvalues).
- Adam, FixedPointFinder's settings: one joint objective, the mean q over all starts; Adam with
  epsilon 0.01 and its adaptive learning rate (initial 1.0, times 0.95 when the loss is worse
  than in all of the last 5 steps, times 1/0.95 after 5 steps of steady decrease); up to 5000
  iterations (its max_iters); gradients by PyTorch's autograd, as FixedPointFinderTorch. (Its
  adaptive gradient-norm clipping is left out: with the mean objective the gradients are small,
  and clipping only slows it further.)
  The same Adam in NumPy with the gradient J^T r written out (two GEMMs a step), its fastest
  form here.
- Adam, FixedPointFinderTorch's own loop: learning rate 0.05, times 0.7 every 500 steps, up to
  2000 iterations.
- hybrj: scipy.optimize.root(..., jac=True, method="hybr") per start, the analytic Jacobian.

Run as a script on one pinned core (the figures the docs quote):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/test_bench_dynamics.py [--core 1]

Under pytest it is a pytest-benchmark group (rnnfast and hybrj; Adam once, it takes long):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/test_bench_dynamics.py \\
        --benchmark-group-by=group
"""
import argparse
import functools
import os
import time

import numpy as np
import pytest

from rnnfast import optim
from rnnfast.cli.bench import import_torch
from rnnfast.dynamics import StepMap, as_step_map, find_fixed_points, sample_states
from rnnfast.tasks import FlipFlop, PerceptualDecision, TaskRNN, TaskTrainer, evaluate_task

H, N, NOISE, TOL = 128, 1024, 0.5, 1e-12
TRAIN_STEPS, TRAIN_BATCH, TRAIN_LR = 800, 64, 5e-3


@functools.lru_cache(maxsize=None)
def flip_flop_network(hidden=H, seed=0):
    """(StepMap, starts (N, H), training report) of a trained 3-bit flip-flop."""
    return _trained_network(FlipFlop(n_bits=3), hidden, seed, TRAIN_STEPS, TRAIN_LR)


@functools.lru_cache(maxsize=None)
def decision_network(hidden=H, seed=0):
    """The same for perceptual decision making (evidence integrated and held through a delay:
    slow directions, eigenvalues near 1), searched under its delay input."""
    return _trained_network(PerceptualDecision(), hidden, seed, 2000, 1e-3)


def _trained_network(task, hidden, seed, steps, lr):
    model = TaskRNN(task.input_size, hidden, task.output_size, seed=seed, n_threads=1)
    trainer = TaskTrainer(model, task, optim.Adam(model.parameters(), lr=lr),
                          batch_size=TRAIN_BATCH, seed=seed)
    for _ in range(steps):
        trainer.step()
    held_out = task.batch(256, seed=seed + 1)
    loss, accuracy = evaluate_task(model, task, held_out)
    _, states = model.forward(held_out.inputs)
    starts = sample_states(states, N, noise=NOISE, mask=held_out.mask, seed=seed + 2)
    step_map = as_step_map(model)
    drive = step_map.drive(task.delay_input())
    # The search's constant input is folded into the bias: every candidate sees F(h) = f(Wh + c).
    searched = StepMap(step_map.W_hh, b=drive, nonlinearity=step_map.nonlinearity)
    return searched, starts, {"loss": loss, "accuracy": accuracy, "steps": steps,
                              "task": task.name}


@functools.lru_cache(maxsize=None)
def random_network(hidden=H, gain=1.5, seed=0):
    """W_hh with i.i.d. N(0, gain²/H) entries: for gain > 1 a chaotic network with many
    unstable fixed points (Sompolinsky, Crisanti & Sommers 1988); starts on its trajectories."""
    W = gain * np.random.default_rng(seed).standard_normal((hidden, hidden)) / np.sqrt(hidden)
    step_map = StepMap(W)
    h0 = np.random.default_rng(seed + 1).uniform(-1, 1, (64, hidden))
    states = step_map.run(None, h0, steps=100)[20:]
    starts = sample_states(states, N, noise=NOISE, seed=seed + 2)
    return step_map, starts, {"loss": float("nan"), "accuracy": float("nan"), "steps": 0,
                              "task": f"random, gain {gain}"}


NETWORKS = {"flipflop": flip_flop_network, "decision": decision_network,
            "random": random_network}


def run_rnnfast(step_map, starts):
    fp = find_fixed_points(step_map, starts, tol=TOL, n_threads=1)
    final_q = np.full(len(starts), np.inf)
    reached = fp.assignment >= 0
    final_q[reached] = fp.q[fp.assignment[reached]]
    final_q[fp.unconverged] = fp.unconverged_q
    return {"iterations": int(fp.iterations.max()), "median_iterations":
            float(np.median(fp.iterations)), "converged": int(reached.sum()), "q": final_q,
            "points": len(fp), "stable": int(fp.stable.sum())}


class _AdaptiveRate:
    """FixedPointFinder's AdaptiveLearningRate with its defaults (no warm-up)."""

    def __init__(self, initial=1.0, factor=0.95, window=5):
        self.rate, self.factor, self.window = initial, factor, window
        self.losses, self.step, self.last_change = [], 0, -1

    def update(self, loss):
        self.losses.append(loss)
        recent = self.losses[-(1 + self.window):]
        if self.step >= self.last_change + self.window and len(recent) > self.window:
            if all(recent[-1] > value for value in recent[:-1]):
                self.rate *= self.factor
                self.last_change = self.step
            elif all(b < a for a, b in zip(recent[:-1], recent[1:])):
                self.rate /= self.factor
                self.last_change = self.step
        self.step += 1
        return self.rate


def run_adam(step_map, starts, schedule="fpf", max_iter=None):
    """Minimise mean q with torch's Adam and autograd; iterations until every q < TOL."""
    torch = import_torch()
    torch.set_num_threads(1)
    W = torch.from_numpy(step_map.W_hh.copy())
    c = torch.from_numpy(step_map.drive())
    x = torch.tensor(starts, dtype=torch.float64, requires_grad=True)
    if schedule == "fpf":
        max_iter = max_iter or 5000
        adam = torch.optim.Adam([x], lr=1.0, eps=0.01)
        rate = _AdaptiveRate()
    else:  # FixedPointFinderTorch's loop
        max_iter = max_iter or 2000
        adam = torch.optim.Adam([x], lr=0.05)
        lr_schedule = torch.optim.lr_scheduler.StepLR(adam, step_size=500, gamma=0.7)
    first_below = np.full(len(starts), -1)
    for iteration in range(max_iter):
        adam.zero_grad()
        q = 0.5 * torch.sum((torch.tanh(x @ W.T + c) - x) ** 2, dim=1)
        q_values = q.detach().numpy()
        newly = (q_values < TOL) & (first_below < 0)
        first_below[newly] = iteration
        if (q_values < TOL).all():
            break
        loss = q.mean()
        loss.backward()
        adam.step()
        if schedule == "fpf":
            for group in adam.param_groups:
                group["lr"] = rate.update(float(loss.detach()))
        else:
            lr_schedule.step()
    with torch.no_grad():
        q_values = (0.5 * torch.sum((torch.tanh(x @ W.T + c) - x) ** 2, dim=1)).numpy()
    return {"iterations": iteration + 1, "converged": int((q_values < TOL).sum()),
            "q": q_values, "first_below": first_below}


def run_adam_numpy(step_map, starts, max_iter=5000):
    """The same Adam as run_adam with FixedPointFinder's settings (torch.optim.Adam's update,
    epsilon 0.01, the adaptive rate), its gradient J^T r / N written out: two GEMMs a step."""
    W, alpha = step_map.W_hh, step_map.leak
    drive = step_map.drive()
    x = np.array(starts, dtype=np.float64)
    m, v = np.zeros_like(x), np.zeros_like(x)
    beta1, beta2, eps = 0.9, 0.999, 0.01
    rate = _AdaptiveRate()
    lr = rate.rate
    first_below = np.full(len(starts), -1)
    for iteration in range(max_iter):
        r, slope = step_map.residual(x, drive)
        q = 0.5 * np.einsum("ij,ij->i", r, r)
        first_below[(q < TOL) & (first_below < 0)] = iteration
        if (q < TOL).all():
            break
        grad = ((alpha * slope * r) @ W - alpha * r) / len(x)  # d mean(q) / dx = J^T r / N
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        t = iteration + 1
        x -= lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
        lr = rate.update(float(q.mean()))
    r, _ = step_map.residual(x, drive)
    q = 0.5 * np.einsum("ij,ij->i", r, r)
    return {"iterations": iteration + 1, "converged": int((q < TOL).sum()), "q": q,
            "first_below": first_below}


def run_hybrj(step_map, starts):
    """MINPACK's hybrj on each start (Powell's hybrid method, the analytic Jacobian)."""
    from scipy.optimize import root

    drive = step_map.drive()

    def residual_and_jacobian(h):
        r, slope = step_map.residual(h[None], drive)
        return r[0], step_map.residual_jacobian(slope)[0]

    q = np.empty(len(starts))
    evaluations = np.empty(len(starts), dtype=np.int64)
    for k, start in enumerate(starts):
        solution = root(residual_and_jacobian, start, jac=True, method="hybr",
                        options={"xtol": 1e-14})
        r, _ = step_map.residual(solution.x[None], drive)
        q[k] = 0.5 * float(r[0] @ r[0])
        evaluations[k] = solution.nfev
    return {"converged": int((q < TOL).sum()), "q": q, "iterations": int(evaluations.max()),
            "median_iterations": float(np.median(evaluations))}


RUNNERS = {"rnnfast": run_rnnfast, "hybrj": run_hybrj, "adam-fpf-numpy": run_adam_numpy,
           "adam-fpf": functools.partial(run_adam, schedule="fpf"),
           "adam-fpf-torch": functools.partial(run_adam, schedule="torch")}


@pytest.mark.parametrize("impl", ("rnnfast", "hybrj", "adam-fpf-numpy"))
def test_fixed_points_of_a_flip_flop(benchmark, bench_threads, impl):
    step_map, starts, _ = flip_flop_network()
    benchmark.group = f"fixed points, 3-bit flip-flop H={H}, {N} starts, q < {TOL:g}"
    rounds = 1 if impl.startswith("adam") else 3
    result = benchmark.pedantic(RUNNERS[impl], args=(step_map, starts), rounds=rounds,
                                iterations=1)
    benchmark.extra_info.update(impl=impl, converged=result["converged"],
                                iterations=result["iterations"])


def _describe(impl, seconds, ratio, result):
    q = result["q"]
    line = (f"{impl:15s} {seconds:7.2f} s  {ratio:6.1f}x  {result['converged']:4d}/{N}  "
            f"iterations: max {result['iterations']}")
    if "median_iterations" in result:
        line += f", median {result['median_iterations']:g}"
    if "first_below" in result:
        reached = result["first_below"][result["first_below"] >= 0]
        if reached.size:
            line += f", median to q < tol {int(np.median(reached))}"
    line += f"; q: median {np.median(q):.1e}, max {np.max(q):.1e}"
    if "points" in result:
        line += f"; {result['points']} points, {result['stable']} stable"
    return line


def _report(core, rounds, network):
    from threadpoolctl import threadpool_info, threadpool_limits

    os.sched_setaffinity(0, {core})
    runners = {impl: runner for impl, runner in RUNNERS.items()
               if impl not in ("adam-fpf", "adam-fpf-torch") or import_torch() is not None}
    with threadpool_limits(1):
        blas = [f"{lib['internal_api']} {lib.get('architecture', '?')} {lib['version']}"
                for lib in threadpool_info() if lib["user_api"] == "blas"]
        print(f"one thread pinned to core {core}; BLAS: {', '.join(blas)}")
        start = time.perf_counter()
        step_map, starts, trained = NETWORKS[network]()
        print(f"network: {trained['task']}, tanh RNN H = {H}, trained {trained['steps']} "
              f"steps in {time.perf_counter() - start:.0f} s (held-out loss "
              f"{trained['loss']:.1e}, accuracy {100 * trained['accuracy']:.1f}%); {N} starts, "
              f"noise {NOISE}")
        run_rnnfast(step_map, starts)  # warm-up
        times = {impl: [] for impl in runners}
        results = {}
        for _ in range(rounds):  # interleaved: one call of each candidate in turn
            for impl, runner in runners.items():
                began = time.perf_counter()
                results[impl] = runner(step_map, starts)
                times[impl].append(time.perf_counter() - began)
    print(f"median of {rounds} interleaved rounds; x: time / rnnfast's time, median over "
          f"rounds; then how many of the {N} starts reached q < {TOL:g}")
    for impl in runners:
        ratio = np.median(np.array(times[impl]) / np.array(times["rnnfast"]))
        print(_describe(impl, float(np.median(times[impl])), float(ratio), results[impl]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="fixed points of a trained flip-flop: rnnfast "
                                                 "vs Adam on q (FixedPointFinder) vs hybrj")
    parser.add_argument("--core", type=int, default=1, help="the core to pin to (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--network", choices=tuple(NETWORKS), default="flipflop",
                        help="the network searched (default flipflop)")
    arguments = parser.parse_args()
    _report(arguments.core, arguments.rounds, arguments.network)
