"""The PyTorch front end, rnnfast.torch.RNN, against rnnfast's own functional call and
torch.nn.RNN: forward + backward with autograd (loss sum(out * G), ``out.backward(G)``), and
inference (forward under ``torch.no_grad()``). float32, one thread.

Candidates:
- ``functional``: ``rnnfast.rnn_forward`` + ``rnnfast.rnn_backward`` on NumPy arrays;
- ``rnnfast.torch``: ``rnnfast.torch.RNN`` in eager mode (what a torch user runs);
- ``rnnfast.torch-compiled``: the same module under ``torch.compile(fullgraph=True)`` on the
  aot_eager backend (the compiled graph calls ``torch.ops.rnnfast.rnn_layer`` and its backward
  through the dispatcher; inductor would only change the code around them, here none);
- ``torch``: ``torch.nn.RNN``.

Under pytest, one pytest-benchmark group per (pass, shape):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/test_bench_torch_frontend.py \
        --benchmark-group-by=group

As a script, the comparison, hot (each candidate's calls back to back) and interleaved (one
call of each candidate in turn), medians, the whole process pinned to one core:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/test_bench_torch_frontend.py
        [--quick] [--budget SECONDS] [--shapes T,B,D,H ...] [--overhead]
"""
import argparse
import gc
import os
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch") if __name__ != "__main__" else __import__("torch")

import rnnfast  # noqa: E402
import rnnfast.torch as rt  # noqa: E402

CANDIDATES = ("functional", "rnnfast.torch", "rnnfast.torch-compiled", "torch")
PASSES = ("forward+backward", "inference")
# The grid: T in {1, 25, 100, 1000}, B in {1, 4, 8, 32, 64}, H in {8, ..., 512}, D = H.
GRID = [(T, B, H, H) for T in (1, 25, 100, 1000) for B in (1, 4, 8, 32, 64)
        for H in (8, 32, 64, 128, 256, 512)]
QUICK = [(1, 1, 8, 8), (25, 1, 32, 32), (100, 1, 64, 64), (100, 4, 64, 64), (100, 8, 128, 128),
         (25, 32, 128, 128), (100, 64, 256, 256)]
# pytest-benchmark runs one candidate after another; a few shapes, one per regime.
PYTEST_SHAPES = [(1, 1, 8, 8), (25, 1, 32, 32), (100, 8, 64, 64), (100, 32, 128, 128)]


def make_runner(candidate, shape, pass_name, seed=0):
    """A zero-argument callable running one pass of candidate at shape (T, B, D, H)."""
    T, B, D, H = shape
    torch.manual_seed(seed)
    reference = torch.nn.RNN(D, H)
    x = torch.randn(T, B, D)
    h0 = torch.zeros(1, B, H)
    G = torch.randn(T, B, H)
    if candidate == "functional":
        arrays = [p.detach().numpy() for p in reference.parameters()]
        b = arrays[2] + arrays[3]
        xa, h0a, Ga = x.numpy(), h0[0].numpy(), G.numpy()

        threads = torch.get_num_threads()  # as rnnfast.torch, which follows torch's count

        def functional():
            out, cache = rnnfast.rnn_forward(xa, h0a, arrays[0], arrays[1], b,
                                             n_threads=threads)
            if pass_name == "forward+backward":
                rnnfast.rnn_backward(Ga, cache, n_threads=threads)
        return functional
    module = reference if candidate == "torch" else rt.RNN.from_torch(reference)
    if candidate == "rnnfast.torch-compiled":
        torch._dynamo.reset()  # a fresh compilation per shape, not one more recompilation
        module = torch.compile(module, backend="aot_eager", fullgraph=True)
    parameters = list(module.parameters())

    def call():
        if pass_name == "inference":
            with torch.no_grad():
                return module(x, h0)
        for p in parameters:  # optimizer.zero_grad(): the backward sets fresh gradients
            p.grad = None
        out, _ = module(x, h0)
        out.backward(G)

    return call


# -- where the front end's cost goes (script mode --overhead) ------------------------------------

def floor_runners(shape):
    """Two lower bounds of any front end built on torch.autograd.Function, beside the
    functional call and the module, forward + backward at shape:

    - ``no-op Function``: an autograd.Function with the module's inputs and parameters that
      computes nothing (its results precomputed): torch's own cost per call (apply, the
      engine, one AccumulateGrad per parameter);
    - ``minimal Function``: the same calling rnnfast's backend directly, with no checks and
      no general code (one layer, one direction, no lengths).
    """
    from rnnfast._kernels import backend

    T, B, D, H = shape
    torch.manual_seed(0)
    module = rt.RNN(D, H)
    parameters = list(module.parameters())
    x, h0, G = torch.randn(T, B, D), torch.zeros(1, B, H), torch.randn(T, B, H)
    out, grads = torch.zeros(T, B, H), [torch.zeros_like(p) for p in parameters]

    class NoOp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, hx, *params):
            return out.clone()

        @staticmethod
        def backward(ctx, grad):
            return (None, None, *[g.clone() for g in grads])

    class Minimal(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, hx, w_ih, w_hh, b_ih, b_hh):
            arrays = (x.numpy(), hx.numpy()[0], w_ih.detach().numpy(), w_hh.detach().numpy())
            result, cache = backend.forward(*arrays, b_ih.detach().numpy() + b_hh.detach().numpy(),
                                            "tanh", 1)
            ctx.cache = cache
            return torch.from_numpy(result)

        @staticmethod
        def backward(ctx, grad):
            g = backend.backward(grad.numpy(), ctx.cache, None, 1, False, False)
            db = torch.from_numpy(g.db)
            return (None, None, torch.from_numpy(g.dW_xh), torch.from_numpy(g.dW_hh), db,
                    db.clone())

    def training(function):
        def run():
            for p in parameters:
                p.grad = None
            function.apply(x, h0, *parameters).backward(G)
        return run

    return {"functional": make_runner("functional", shape, "forward+backward"),
            "no-op Function": training(NoOp), "minimal Function": training(Minimal),
            "rnnfast.torch": make_runner("rnnfast.torch", shape, "forward+backward")}


# -- pytest-benchmark ---------------------------------------------------------------------------

@pytest.mark.parametrize("candidate", CANDIDATES)
@pytest.mark.parametrize("shape", PYTEST_SHAPES, ids=lambda s: "T{}_B{}_D{}_H{}".format(*s))
@pytest.mark.parametrize("pass_name", PASSES)
def test_torch_frontend(benchmark, bench_threads, pass_name, shape, candidate):
    torch.set_num_threads(bench_threads)
    run = make_runner(candidate, shape, pass_name)
    run()
    benchmark.group = f"torch front end {pass_name} T,B,D,H={','.join(map(str, shape))} float32"
    benchmark.extra_info.update(candidate=candidate, pass_name=pass_name, shape=list(shape))
    benchmark(run)


# -- script: hot and interleaved ---------------------------------------------------------------

def measure(runners, budget_s):
    """Median seconds per call of each runner: (hot, interleaved).

    Hot: windows of back-to-back calls (about 2 ms each), the runners taking turns by window.
    Interleaved: one call of each runner in turn. Half the budget each; garbage collection off.
    """
    names = list(runners)
    for run in runners.values():  # first-call costs out of the way
        run()
    per_call = {}
    for name in names:
        t0 = time.perf_counter()
        runners[name]()
        per_call[name] = time.perf_counter() - t0
    calls = {name: max(1, int(0.002 / max(per_call[name], 1e-7))) for name in names}
    hot = {name: [] for name in names}
    interleaved = {name: [] for name in names}
    gc.disable()
    try:
        end = time.perf_counter() + budget_s / 2
        while time.perf_counter() < end or min(map(len, hot.values())) < 5:
            for name in names:
                run = runners[name]
                t0 = time.perf_counter()
                for _ in range(calls[name]):
                    run()
                hot[name].append((time.perf_counter() - t0) / calls[name])
        end = time.perf_counter() + budget_s / 2
        rounds = 0
        while time.perf_counter() < end or rounds < 11:
            rounds += 1
            order = names[rounds % len(names):] + names[:rounds % len(names)]
            for name in order:
                t0 = time.perf_counter()
                runners[name]()
                interleaved[name].append(time.perf_counter() - t0)
    finally:
        gc.enable()
    return ({n: float(np.median(v)) for n, v in hot.items()},
            {n: float(np.median(v)) for n, v in interleaved.items()})


def _us(seconds):
    return f"{seconds * 1e6:.1f}" if seconds < 1e-2 else f"{seconds * 1e6:.0f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few shapes, one per regime")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per shape and pass")
    parser.add_argument("--shapes", nargs="*", help="T,B,D,H shapes instead of the grid")
    parser.add_argument("--core", type=int, default=None, help="the core to pin to")
    parser.add_argument("--overhead", action="store_true",
                        help="where the front end's cost goes: against two floors (see "
                             "floor_runners) instead of the comparison")
    args = parser.parse_args()
    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_info, threadpool_limits
    threadpool_limits(1)
    blas = sorted({(i["internal_api"], i.get("architecture")) for i in threadpool_info()
                   if i["user_api"] == "blas"}, key=str)
    print(f"torch {torch.__version__}, one thread, pinned to core {core}; BLAS {blas}; "
          f"load average {os.getloadavg()[0]:.2f}")
    shapes = ([tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes
              else QUICK if args.quick else GRID)
    if args.overhead:
        print("forward + backward, µs per call (hot / interleaved medians)")
        for shape in shapes:
            hot, interleaved = measure(floor_runners(shape), args.budget)
            print(",".join(map(str, shape)).rjust(14), "  ".join(
                f"{name} {_us(hot[name])} / {_us(interleaved[name])}" for name in hot))
        return
    header = ("T,B,D,H", "mode", "functional", "rnnfast.torch", "overhead", "compiled", "torch",
              "x torch", "no_grad", "torch no_grad", "x torch")
    print("  ".join(f"{h:>14}" for h in header))
    for shape in shapes:
        results = {}
        for pass_name in PASSES:
            names = CANDIDATES if pass_name == "forward+backward" else ("rnnfast.torch", "torch")
            runners = {name: make_runner(name, shape, pass_name) for name in names}
            results[pass_name] = measure(runners, args.budget)
        for mode, index in (("hot", 0), ("interleaved", 1)):
            fb, inf = results["forward+backward"][index], results["inference"][index]
            row = (",".join(map(str, shape)), mode, _us(fb["functional"]),
                   _us(fb["rnnfast.torch"]), _us(fb["rnnfast.torch"] - fb["functional"]),
                   _us(fb["rnnfast.torch-compiled"]), _us(fb["torch"]),
                   f"{fb['torch'] / fb['rnnfast.torch']:.2f}x", _us(inf["rnnfast.torch"]),
                   _us(inf["torch"]), f"{inf['torch'] / inf['rnnfast.torch']:.2f}x")
            print("  ".join(f"{v:>14}" for v in row), flush=True)
    print("times in µs per call, medians; overhead = rnnfast.torch - functional (forward + "
          "backward with autograd); compiled = rnnfast.torch under torch.compile (aot_eager)")


if __name__ == "__main__":
    main()
