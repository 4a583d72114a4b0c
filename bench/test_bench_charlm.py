"""One training step of the character-level language model (the default of `rnnfast train`):
rnnfast's TBPTTTrainer against the same model and update in PyTorch (nn.Embedding -> nn.RNN ->
nn.Linear, cross-entropy, clip_grad_norm_, Adam, hidden state carried and detached), on the same
threads. One group per (hidden size, dtype); extra_info has the characters per second.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/test_bench_charlm.py \\
        --benchmark-group-by=group

RNNFAST_BENCH_THREADS sets the threads of every library (default 1, see conftest.py).

Run as a script, it times the two round-robin (rnnfast, torch, rnnfast, ...) on one thread and
prints medians and the median of the per-round ratios, the figure the README quotes:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/test_bench_charlm.py [--rounds N]

With --threads 2, each round runs four steps in turn: rnnfast and torch on one thread (the
calling thread pinned to one core for the step) and on two (every library on two threads: rnnfast's
n_threads=2 with NumPy's BLAS on two, torch.set_num_threads(2)), and prints each one's
median, rnnfast's two-thread speed-up over its one-thread step and over torch's two-thread
step (medians of per-round ratios); --without-torch leaves torch out (no torch pool in the
process, as in `rnnfast train`).
"""
import os
import argparse

import numpy as np
import pytest

from rnnfast.benchmarking import import_torch, paired_ratio, pinned_to_one_core, time_interleaved
from rnnfast.charlm import CharRNN
from rnnfast.train import TBPTTTrainer, TokenStreams, optim

VOCAB, EMBEDDING, BATCH, SEQ_LEN = 163, 64, 32, 64  # rnnfast train's defaults on its corpus
HIDDEN_SIZES = (128, 256, 512)
LR = 3e-3
CLIP = 5.0


def _tokens():
    # Random ids: the cost of a step does not depend on the text.
    return np.random.default_rng(0).integers(0, VOCAB, 400_000)


def _rnnfast_step(hidden, dtype, threads):
    model = CharRNN(VOCAB, hidden, 1, EMBEDDING, dtype=dtype, seed=0, n_threads=threads)
    trainer = TBPTTTrainer(model, optim.Adam(model.parameters(), lr=LR),
                           TokenStreams(_tokens(), BATCH, SEQ_LEN), clip_norm=CLIP)
    return trainer.step


def _torch_step(hidden, dtype, threads):
    torch = import_torch()
    torch.set_num_threads(threads)
    torch_dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(VOCAB, EMBEDDING, dtype=torch_dtype)
    rnn = torch.nn.RNN(EMBEDDING, hidden, dtype=torch_dtype)
    output = torch.nn.Linear(hidden, VOCAB, dtype=torch_dtype)
    params = [*embedding.parameters(), *rnn.parameters(), *output.parameters()]
    adam = torch.optim.Adam(params, lr=LR)
    streams = TokenStreams(_tokens(), BATCH, SEQ_LEN)
    state = {"h": torch.zeros(1, BATCH, hidden, dtype=torch_dtype)}

    def step():
        inputs, targets, _ = streams.next_chunk()
        out, h_n = rnn(embedding(torch.from_numpy(inputs)), state["h"])
        logits = output(out)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB),
                                                 torch.from_numpy(targets).reshape(-1))
        adam.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        adam.step()
        state["h"] = h_n.detach()  # truncated BPTT: the gradient stops here
        return loss.item()

    return step


MAKERS = {"rnnfast": _rnnfast_step, "torch": _torch_step}


@pytest.mark.parametrize("impl", tuple(MAKERS))
@pytest.mark.parametrize("dtype", ("float32",))
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
def test_charlm_training_step(benchmark, bench_threads, hidden, dtype, impl):
    if impl == "torch" and import_torch() is None:
        pytest.skip("PyTorch is not installed")
    step = MAKERS[impl](hidden, dtype, bench_threads)
    for _ in range(3):  # warm-up: first-call costs out of the way
        step()
    benchmark.group = f"charlm step H={hidden} B={BATCH} T={SEQ_LEN} {dtype}"
    benchmark.extra_info.update(impl=impl, hidden=hidden, dtype=dtype)
    benchmark(step)
    if benchmark.stats is not None:
        benchmark.extra_info["chars_per_s"] = BATCH * SEQ_LEN / benchmark.stats.stats.median


def _interleaved(hidden, rounds):
    """Median seconds per step of each implementation and of the torch/rnnfast ratio, timed
    round-robin (one step per window) on one thread and one core, so that a slow phase of the
    machine hits both alike."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1), pinned_to_one_core():
        steps = {impl: make(hidden, "float32", 1) for impl, make in MAKERS.items()}
        for step in steps.values():
            for _ in range(3):
                step()
        times, _ = time_interleaved(steps, budget_s=0.0, min_windows=rounds,
                                    max_windows=rounds, window_s=0.0)
    ratio = paired_ratio(times["torch"], times["rnnfast"])
    return {impl: float(np.median(t)) for impl, t in times.items()}, ratio


def _on_threads(step, threads, torch_threads=None):
    """step on `threads` threads: NumPy's BLAS held to them and, for one, the process pinned
    to one core; torch's own setting when torch_threads is given."""
    from threadpoolctl import threadpool_limits

    def run():
        if torch_threads is not None:
            import_torch().set_num_threads(torch_threads)
        with threadpool_limits(threads):
            if threads == 1:  # the two-thread steps' pools keep their cores
                with pinned_to_one_core(every_thread=False):
                    return step()
            return step()

    return run


def _two_threads(hidden, rounds, with_torch=True):
    """Medians (seconds) of the four steps (rnnfast's two without torch), and rnnfast's
    two-thread speed-ups over its own one-thread step and over torch's two-thread step (None
    without torch), timed round-robin."""
    steps = {"rnnfast 1": _on_threads(_rnnfast_step(hidden, "float32", 1), 1),
             "rnnfast 2": _on_threads(_rnnfast_step(hidden, "float32", 2), 2)}
    if with_torch:
        steps.update({"torch 1": _on_threads(_torch_step(hidden, "float32", 1), 1, 1),
                      "torch 2": _on_threads(_torch_step(hidden, "float32", 2), 2, 2)})
    for step in steps.values():
        for _ in range(3):
            step()
    times, _ = time_interleaved(steps, budget_s=0.0, min_windows=rounds, max_windows=rounds,
                                window_s=0.0)
    return ({name: float(np.median(t)) for name, t in times.items()},
            paired_ratio(times["rnnfast 1"], times["rnnfast 2"]),
            paired_ratio(times["torch 2"], times["rnnfast 2"]) if with_torch else None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="rnnfast vs PyTorch, one character-model "
                                                 "training step, interleaved")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, choices=(1, 2), default=1,
                        help="2: one and two threads for both libraries")
    parser.add_argument("--without-torch", action="store_true",
                        help="with --threads 2: rnnfast's steps only (no torch pool in the "
                             "process, as in `rnnfast train`)")
    args = parser.parse_args()
    if import_torch() is None and not (args.threads == 2 and args.without_torch):
        raise SystemExit("PyTorch is not installed")
    if args.threads == 2:
        if len(os.sched_getaffinity(0)) < 2:
            raise SystemExit("--threads 2 needs two cores")
        print(f"B={BATCH} T={SEQ_LEN} V={VOCAB} E={EMBEDDING}, float32, Adam, clip {CLIP}, "
              f"median of {args.rounds} interleaved rounds")
        for hidden in HIDDEN_SIZES:
            medians, own, over_torch = _two_threads(hidden, args.rounds, not args.without_torch)
            cells = "  ".join(f"{name} {t * 1e3:6.1f} ms" for name, t in medians.items())
            versus = "" if over_torch is None else f", vs torch on 2: {over_torch:.2f}x"
            print(f"H={hidden:4d}  {cells}  rnnfast 2 threads vs 1: {own:.2f}x{versus}")
        raise SystemExit(0)
    print(f"B={BATCH} T={SEQ_LEN} V={VOCAB} E={EMBEDDING}, float32, Adam, clip {CLIP}, "
          f"1 thread, median of {args.rounds} interleaved rounds")
    for hidden in HIDDEN_SIZES:
        medians, ratio = _interleaved(hidden, args.rounds)
        print(f"H={hidden:4d}  rnnfast {medians['rnnfast'] * 1e3:6.1f} ms  torch "
              f"{medians['torch'] * 1e3:6.1f} ms  speed-up {ratio:.2f}x  "
              f"({BATCH * SEQ_LEN / medians['rnnfast'] / 1e3:.0f}k chars/s)")
