"""Running a reservoir: rnnfast.reservoir.Reservoir.run against ReservoirPy's NumPy backend on
the same weights (a ReservoirPy `Reservoir(units, lr=0.3, sr=0.9)`, dense or 10% connectivity,
float64, one input), per step, and against the time it takes this machine to stream the step's
matrix from the cache level it lives in; ReservoirPy's JAX backend beside it; B = 16 series at
once against one at a time.

The bound: a step reads its whole matrix once (the dense kernels' step matrix, W^T padded to
16 columns; the sparse step's sliced matrix, values + column indices + slice starts + row
order), so it cannot take less than those bytes read at the bandwidth of the cache that holds
them. That bandwidth is measured here, on a buffer of the same size read over and over
(rnnfast.reservoir's `read_words`, four 256-bit loads in flight, compiled with the step).

Run as a script, one core pinned, candidates interleaved (the figures of the README):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/test_bench_reservoir.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/test_bench_reservoir.py --crossover

(--crossover: the sparse and the dense step against each other over densities, the
measurement behind rnnfast/reservoir/sliced.py's switch; --builds: the baseline and the AVX2
build of the sparse step; --epilogue: what a step costs besides its products, tanh against
ReLU; --nrmse: `rnnfast reservoir`'s experiment by rnnfast and by ReservoirPy.) A sparse step
is also compared with its gathers alone (`gather_sum`: the state loaded at every column index
of its matrix, no arithmetic), which bound it before the bandwidth does. Under pytest, pytest-benchmark
groups, one per problem:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/test_bench_reservoir.py \\
        --benchmark-group-by=group
"""
import argparse
import functools
import os
import statistics
import time

import numpy as np
import pytest

from rnnfast.benchmarking import machine_info, time_interleaved
from rnnfast.reservoir import Reservoir, sliced
from rnnfast._kernels import backend as dense_backend

# (units, connectivity): the sizes, dense and sparse.
PROBLEMS = [(100, 1.0), (100, 0.1), (500, 0.1), (1000, 0.1), (500, 1.0), (1000, 1.0)]
LEAK, RADIUS = 0.3, 0.9
MANY = 16  # series at once


def steps_for(units, connectivity, B=1):
    """Steps per call: about 20 ms of rnnfast's work, at least 200."""
    nnz = units * units * connectivity
    return int(max(200, min(20000, 2e7 / (nnz * (1 if B == 1 else 4)))))


@functools.lru_cache(maxsize=None)
def reservoirpy_reservoir(units, connectivity, seed=0):
    """ReservoirPy's reservoir, its weights drawn (one input), or None without ReservoirPy."""
    try:
        from reservoirpy.nodes import Reservoir as RPyReservoir
    except ImportError:
        return None
    reservoir = RPyReservoir(units, lr=LEAK, sr=RADIUS, rc_connectivity=connectivity, seed=seed)
    reservoir.initialize(np.zeros((1, 1)))
    return reservoir


@functools.lru_cache(maxsize=None)
def ours(units, connectivity, seed=0):
    """rnnfast's reservoir on ReservoirPy's weights, or on its own (the same kind) without it."""
    theirs = reservoirpy_reservoir(units, connectivity, seed)
    if theirs is None:
        reservoir = Reservoir(units, spectral_radius=RADIUS, leak=LEAK,
                              connectivity=connectivity, seed=seed, input_size=1)
    else:
        reservoir = Reservoir.from_weights(theirs.W, theirs.Win, theirs.bias, leak=theirs.lr)
    reservoir.run(np.zeros((2, 1)))  # the step matrices made, the kernels warm
    return reservoir


def inputs(T, B=None, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (T, 1) if B is None else (T, B, 1))


def step_matrix_bytes(reservoir, B=1):
    """The bytes one step reads of its matrix, on the path it takes for B series."""
    if reservoir.step_path(B) == "dense":
        return int(np.prod(dense_backend.step_matrix_shape(reservoir.units))) * 8
    matrix = reservoir._sliced_matrix()
    used = [matrix.values, matrix.columns, matrix.slice_start, matrix.order]
    if B > 1:
        used.append(matrix.row_length)
    return sum(array.nbytes for array in used)


def read_seconds(nbytes, budget=0.05):
    """Seconds to read nbytes once from the cache level that holds them: the best of several
    timed reads of a buffer of that size, read over and over (`read_words` of the widest
    build)."""
    kernel = sliced.KERNEL_BUILDS[sliced.KERNEL]
    words = np.arange(max(1, nbytes // 8), dtype=np.uint64)
    repeats = max(1, int(2e8 // max(nbytes, 1)))  # about 1-2 ms a call
    kernel.read_words(words, repeats)
    best = np.inf
    deadline = time.perf_counter() + budget
    while time.perf_counter() < deadline or best == np.inf:
        start = time.perf_counter()
        kernel.read_words(words, repeats)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * nbytes / (words.size * 8)


def gather_seconds(reservoir, budget=0.05):
    """Seconds of the gathers of one step alone (h read at every column index of the sliced
    matrix, no arithmetic: `gather_sum` of the widest build), or None for a dense step. Each
    nonzero of a sparse step loads its column's state from an arbitrary place: this, not
    reading the matrix, is what bounds a sparse step of one series."""
    if reservoir.step_path() == "dense":
        return None
    kernel = sliced.KERNEL_BUILDS[sliced.KERNEL]
    columns = reservoir._sliced_matrix().columns
    h = np.zeros(reservoir.units + 1)
    repeats = max(1, int(2e7 // columns.size))
    kernel.gather_sum(columns, h, 1)
    best = np.inf
    deadline = time.perf_counter() + budget
    while time.perf_counter() < deadline or best == np.inf:
        start = time.perf_counter()
        kernel.gather_sum(columns, h, repeats)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def runners(units, connectivity):
    """The candidates for one problem, as (zero-argument call, steps per call, series)."""
    reservoir = ours(units, connectivity)
    T, T_many = steps_for(units, connectivity), steps_for(units, connectivity, MANY)
    one, many = inputs(T), inputs(T_many, MANY)
    candidates = {"rnnfast": (lambda: reservoir.run(one), T, 1),
                  f"rnnfast B={MANY}": (lambda: reservoir.run(many), T_many, MANY)}
    theirs = reservoirpy_reservoir(units, connectivity)
    if theirs is not None:
        candidates["reservoirpy"] = (lambda: theirs.run(one), T, 1)
    return candidates


@functools.lru_cache(maxsize=None)
def jax_per_step(units, connectivity):
    """ReservoirPy's JAX backend on the same weights: (seconds per step beyond the first T,
    seconds of a whole call of T steps), or None without JAX. Each `run` call traces and
    compiles its scan again, so a call costs that compilation plus its steps."""
    theirs = reservoirpy_reservoir(units, connectivity)
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        from jax.experimental import sparse as jsparse
        from reservoirpy.jax.nodes import Reservoir as JaxReservoir
    except ImportError:
        return None
    if theirs is None:
        return None
    import scipy.sparse

    W = (jsparse.BCOO.from_scipy_sparse(theirs.W) if scipy.sparse.issparse(theirs.W)
         else jnp.asarray(theirs.W))
    Win = theirs.Win.toarray() if scipy.sparse.issparse(theirs.Win) else theirs.Win
    reservoir = JaxReservoir(units, lr=LEAK, W=W, Win=jnp.asarray(Win), bias=0.0)
    T = steps_for(units, connectivity)
    times = {}
    for steps in (T, 8 * T):
        u = jnp.asarray(inputs(steps))
        reservoir.run(u).block_until_ready()
        best = np.inf
        for _ in range(3):
            start = time.perf_counter()
            reservoir.run(u).block_until_ready()
            best = min(best, time.perf_counter() - start)
        times[steps] = best
    return (times[8 * T] - times[T]) / (7 * T), times[T]


def measure(units, connectivity, budget):
    """Per-step medians of the interleaved rounds, the ratios, the bound, for one problem."""
    candidates = runners(units, connectivity)
    calls = {name: run for name, (run, _, _) in candidates.items()}
    samples, _ = time_interleaved(calls, budget, min_windows=7, window_s=0.03)
    per_step = {name: [s / candidates[name][1] for s in samples[name]] for name in samples}
    row = {"units": units, "connectivity": connectivity,
           "path": ours(units, connectivity).step_path(),
           "path_many": ours(units, connectivity).step_path(MANY)}
    row["rnnfast"] = statistics.median(per_step["rnnfast"])
    row["many_per_series"] = statistics.median(per_step[f"rnnfast B={MANY}"]) / MANY
    row["many_gain"] = statistics.median(
        a / (b / MANY) for a, b in zip(per_step["rnnfast"], per_step[f"rnnfast B={MANY}"]))
    if "reservoirpy" in per_step:
        row["reservoirpy"] = statistics.median(per_step["reservoirpy"])
        row["speedup"] = statistics.median(
            a / b for a, b in zip(per_step["reservoirpy"], per_step["rnnfast"]))
    nbytes = step_matrix_bytes(ours(units, connectivity))
    row["matrix_bytes"], row["bound"] = nbytes, read_seconds(nbytes)
    row["gathers"] = gather_seconds(ours(units, connectivity))
    return row


def _us(seconds):
    return f"{seconds * 1e6:.2f}"


def report(rows, jax_rows):
    header = ["H", "conn", "path", "rnnfast us/step", "ReservoirPy us/step", "x RPy",
              "RPy JAX us/step (call)", "matrix", "stream us", "x bound", "gathers us",
              "x gathers", f"B={MANY} us/series", f"B={MANY} gain"]
    lines = [header]
    for row in rows:
        jax = jax_rows.get((row["units"], row["connectivity"]))
        lines.append([
            str(row["units"]), f"{row['connectivity']:g}", row["path"], _us(row["rnnfast"]),
            _us(row["reservoirpy"]) if "reservoirpy" in row else "-",
            f"{row['speedup']:.1f}x" if "speedup" in row else "-",
            f"{_us(jax[0])} ({jax[1] * 1e3:.0f} ms)" if jax else "-",
            f"{row['matrix_bytes'] / 1024:.0f} KiB", _us(row["bound"]),
            f"{row['rnnfast'] / row['bound']:.2f}",
            "-" if row["gathers"] is None else _us(row["gathers"]),
            "-" if row["gathers"] is None else f"{row['rnnfast'] / row['gathers']:.2f}",
            _us(row["many_per_series"]),
            f"{row['many_gain']:.1f}x ({row['path_many']})"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths))
                     for line in lines)


def crossover(budget):
    """Sparse and dense step per step, B = 1 and 16, over densities: where the switch goes."""
    print(f"{'H':>5} {'B':>3} {'density':>8} {'sparse us':>10} {'dense us':>10} {'dense/sparse':>12}")
    for H in (100, 300, 1000):
        for B in (1, MANY):
            for density in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0):
                reservoir = Reservoir(H, connectivity=density, leak=LEAK, seed=0, input_size=1)
                T = steps_for(H, density, B)
                u = inputs(T, None if B == 1 else B)
                calls = {}
                for path in ("sparse", "dense"):
                    def run(path=path):
                        original = sliced.use_sparse_step
                        sliced.use_sparse_step = lambda *_: path == "sparse"
                        try:
                            reservoir.run(u)
                        finally:
                            sliced.use_sparse_step = original
                    run()
                    calls[path] = run
                samples, _ = time_interleaved(calls, budget, min_windows=5, window_s=0.02)
                ratio = statistics.median(d / s for d, s in zip(samples["dense"],
                                                                samples["sparse"]))
                print(f"{H:>5} {B:>3} {density:>8g} {_us(min(samples['sparse']) / T):>10} "
                      f"{_us(min(samples['dense']) / T):>10} {ratio:>12.2f}", flush=True)


def nrmse_against_reservoirpy(units=500, train=4000, test=1000, horizon=500, warmup=100,
                              ridge=1e-9, seed=0):
    """`rnnfast reservoir`'s experiment (its defaults), run by rnnfast's ESN and by a
    ReservoirPy `Reservoir >> Ridge` model on the same weights, series and ridge: the one-step
    and free-running NRMSE of each (by the std and by the range). ReservoirPy's free run is
    its documented loop, one `model(x)` call per step, from the state training left."""
    from reservoirpy.nodes import Reservoir as RPyReservoir, Ridge as RPyRidge

    from rnnfast.cli.reservoir import TRANSIENT
    from rnnfast.reservoir import ESN, datasets, nrmse

    series = datasets.mackey_glass(TRANSIENT + train + max(test, horizon) + 1)[TRANSIENT:]
    u, y = series[:-1], series[1:]
    reservoir = Reservoir(units, spectral_radius=1.25, leak=0.3, seed=seed, input_size=1)
    esn = ESN(reservoir, ridge=ridge).fit(u[:train], y[:train], warmup)
    start = esn.state
    ours_one = esn.predict(u[train:train + test])
    esn.state = start
    ours_free = esn.generate(horizon)
    theirs_reservoir = RPyReservoir(W=reservoir.W, Win=reservoir.W_in, bias=0.0, lr=0.3)
    readout = RPyRidge(ridge=ridge)
    model = theirs_reservoir >> readout
    model.fit(u[:train], y[:train], warmup=warmup)
    state = dict(theirs_reservoir.state)
    theirs_one = model.run(u[train:train + test])
    theirs_reservoir.state = state
    x, theirs_free = readout.run(state["out"][None])[0], []  # the forecast of u[train]
    for _ in range(horizon):
        theirs_free.append(x)
        x = model(x)  # one step, the output fed back
    theirs_free = np.array(theirs_free)
    target_one, target_free = y[train:train + test], u[train:train + horizon]
    print(f"Mackey-Glass, tau 17; ESN H = {units}, spectral radius 1.25, leak 0.3, ridge "
          f"{ridge:g}; {train} training steps ({warmup} warm-up), {test} one-step, {horizon} "
          f"free-running")
    for name, one, free in (("rnnfast", ours_one, ours_free),
                            ("ReservoirPy", theirs_one, theirs_free)):
        print(f"  {name:<12} one-step NRMSE {nrmse(target_one, one):.4e} (std) "
              f"{nrmse(target_one, one, 'range'):.4e} (range); free-running "
              f"{nrmse(target_free, free):.4e} (std) {nrmse(target_free, free, 'range'):.4e} "
              f"(range)")
    print(f"  largest one-step difference {np.abs(ours_one - theirs_one).max():.2e}")
    # Which readout is right: the ridge solution by least squares on the augmented system
    # [S_c; sqrt(ridge) I] (SVD, no normal equations), on the same training states.
    states = reservoir.run(u[:train + test])
    S, Y = states[warmup:train], y[warmup:train]
    mean_s, mean_y = S.mean(axis=0), Y.mean(axis=0)
    A = np.vstack([S - mean_s, np.sqrt(ridge) * np.eye(units)])
    b = np.vstack([Y - mean_y, np.zeros((units, 1))])
    w = np.linalg.lstsq(A, b, rcond=None)[0]
    oracle = states[train:] @ w + (mean_y - mean_s @ w)
    print(f"  against the least-squares oracle: rnnfast {np.abs(ours_one - oracle).max():.2e}, "
          f"ReservoirPy {np.abs(theirs_one - oracle).max():.2e} (largest one-step error)")


def builds(budget):
    """The sparse step of each compiled build against the others, B = 1 and 16."""
    print(f"{'H':>5} {'B':>3} " + " ".join(f"{name + ' us/step':>18}" for name in
                                           sliced.KERNEL_BUILDS))
    chosen = sliced.KERNEL
    for H in (100, 500, 1000):
        reservoir = ours(H, 0.1)
        for B in (1, MANY):
            u = inputs(steps_for(H, 0.1, B), None if B == 1 else B)
            calls = {}
            for name in sliced.KERNEL_BUILDS:
                def run(name=name):
                    sliced.KERNEL = name
                    try:
                        reservoir.run(u)
                    finally:
                        sliced.KERNEL = chosen
                calls[name] = run
            samples, _ = time_interleaved(calls, budget, min_windows=5, window_s=0.02)
            print(f"{H:>5} {B:>3} " + " ".join(
                f"{_us(statistics.median(samples[name]) / len(u)):>18}" for name in calls),
                flush=True)


def epilogue(budget):
    """What a step costs besides its products: a reservoir with an empty W (the input
    projection, the activation, the leak, the copies, the output's pages), tanh and ReLU."""
    import scipy.sparse

    for H in (100, 1000):
        u = inputs(200000 // H)
        calls = {}
        for nonlinearity in ("tanh", "relu"):
            reservoir = Reservoir.from_weights(scipy.sparse.csr_array((H, H)),
                                               np.ones((H, 1)), leak=LEAK,
                                               nonlinearity=nonlinearity)
            calls[nonlinearity] = functools.partial(reservoir.run, u)
        samples, _ = time_interleaved(calls, budget, min_windows=5, window_s=0.02)
        per_unit = {name: statistics.median(samples[name]) / (len(u) * H) for name in calls}
        print(f"H = {H}: {per_unit['tanh'] * 1e9:.2f} ns per unit and step with tanh, "
              f"{per_unit['relu'] * 1e9:.2f} with ReLU", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per problem")
    parser.add_argument("--core", type=int, default=1, help="the core to pin the process to")
    parser.add_argument("--crossover", action="store_true",
                        help="time the sparse and the dense step against each other")
    parser.add_argument("--no-jax", action="store_true", help="leave ReservoirPy's JAX out")
    parser.add_argument("--nrmse", action="store_true",
                        help="`rnnfast reservoir`'s NRMSE, rnnfast against ReservoirPy")
    parser.add_argument("--builds", action="store_true",
                        help="the sparse step of each compiled build against the others")
    parser.add_argument("--epilogue", action="store_true",
                        help="a step's cost besides its products, with tanh and with ReLU")
    args = parser.parse_args()
    import threadpoolctl

    os.sched_setaffinity(0, {args.core})
    with threadpoolctl.threadpool_limits(limits=1):
        info = machine_info()
        print(f"one core (#{args.core}), float64, leak {LEAK}, spectral radius {RADIUS}, one "
              f"input; rnnfast kernels: {sliced.KERNEL} build; {info['cpu']}")
        for library in info.get("thread_libraries", []):
            if library.get("user_api") == "blas":
                print(f"blas: {library.get('internal_api')} {library.get('version')}, "
                      f"{library.get('architecture')} kernel, {library.get('num_threads')} "
                      f"thread ({library.get('owner')})")
        print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        if args.crossover:
            crossover(args.budget / 4)
            return
        if args.nrmse:
            nrmse_against_reservoirpy()
            return
        if args.builds:
            builds(args.budget / 2)
            return
        if args.epilogue:
            epilogue(args.budget / 2)
            return
        rows = [measure(units, connectivity, args.budget) for units, connectivity in PROBLEMS]
        jax_rows = {}
        if not args.no_jax:
            for units, connectivity in PROBLEMS:
                jax_rows[units, connectivity] = jax_per_step(units, connectivity)
        print(report(rows, jax_rows))
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print("medians of interleaved rounds, per step of one series (B = 1 unless said); x RPy "
              "and the B = 16 gain are medians of per-round ratios; stream: the matrix's bytes "
              "at the bandwidth measured for a buffer of that size; x bound = rnnfast / stream; "
              "gathers: one step's loads of h at its column indices alone; JAX: per step beyond "
              "the first call's steps (its whole call, which compiles again, in brackets)")


@pytest.mark.parametrize("candidate", ["rnnfast", f"rnnfast B={MANY}", "reservoirpy"])
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: f"H{p[0]}_conn{p[1]:g}")
def test_reservoir_run(benchmark, problem, candidate):
    units, connectivity = problem
    candidates = runners(units, connectivity)
    if candidate not in candidates:
        pytest.skip("ReservoirPy is not installed")
    run, steps, series = candidates[candidate]
    run()
    benchmark.group = f"reservoir H={units} connectivity={connectivity:g}"
    benchmark.extra_info.update(steps=steps, series=series,
                                matrix_bytes=step_matrix_bytes(ours(units, connectivity)))
    benchmark(run)


if __name__ == "__main__":
    main()
