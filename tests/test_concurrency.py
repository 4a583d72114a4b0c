"""Calls from several Python threads at once (the kernels release the GIL).

The same calls made from 2, 4 or 8 threads of a ThreadPoolExecutor, with separate data per call
and shared read-only weights, give bit-identical results to those calls made one after another:
on every step path (micro-kernel, BLAS, each compiled build), with n_threads=1 and 2 per call.
And the BLAS thread cap (rnnfast.utils.threads.blas_threads_at_most), one process-wide setting that
overlapping calls raise and lower, holds while any call needs it and is restored after the last.
"""
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rnnfast
from rnnfast._kernels import backend as _cython_backend
from rnnfast.utils import threads as _threads
from rnn_helpers import GRAD_NAMES, PATHS, force_path, make_problem

WORKERS = [2, 4, 8]
CALLS_PER_WORKER = 4
# Small problems (T*B*H*(D+H) below NUMPY_WEIGHT_GRADS_MIN_FLOPS: the weight gradients stay in
# the kernel) and larger ones (weight gradients in NumPy's BLAS after the pass, under the
# thread cap). Short sequences: with n_threads=2 from 8 Python threads on 2 cores, every step's
# barrier waits for descheduled threads.
SHAPES = [(6, 3, 8, 40), (20, 8, 64, 64)]


def read_only(array):
    array = array.copy()
    array.flags.writeable = False
    return array


def shared_weights(dtype, D, H, seed=0):
    """W_xh, W_hh, b: one set of read-only arrays that every call reads."""
    p = make_problem(seed, 1, 1, D, H, dtype)
    return read_only(p.W_xh), read_only(p.W_hh), read_only(p.b)


def calls(n, dtype):
    """n calls' own data (x, h0, dout, dh_n, lengths), over both shapes, with and without
    lengths (unsorted: the batch is reordered)."""
    made = []
    for i in range(n):
        T, B, D, H = SHAPES[i % len(SHAPES)]
        p = make_problem(100 + i, T, B, D, H, dtype)
        lengths = None if i % 3 else np.random.default_rng(i).integers(1, T + 1, B)
        made.append((SHAPES[i % len(SHAPES)], p.x, p.h0, p.dout, p.dh_n, lengths))
    return made


def functional_call(weights, n_threads, call):
    (T, B, D, H), x, h0, dout, dh_n, lengths = call
    W_xh, W_hh, b = weights[H]
    out, cache = rnnfast.rnn_forward(x, h0, W_xh, W_hh, b, n_threads=n_threads, lengths=lengths)
    grads = rnnfast.rnn_backward(dout, cache, dh_n, n_threads=n_threads)
    return [out] + [getattr(grads, name) for name in GRAD_NAMES]


def assert_same_results(concurrent, sequential):
    assert len(concurrent) == len(sequential)
    for i, (got, want) in enumerate(zip(concurrent, sequential)):
        for j, (a, b) in enumerate(zip(got, want)):
            assert a.dtype == b.dtype and np.array_equal(a, b), f"call {i}, result {j}"


@pytest.fixture(params=PATHS)
def any_path(request, monkeypatch):
    """Each step path (micro-kernel or BLAS, each compiled build)."""
    force_path(monkeypatch, request.param)
    return request.param


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("workers", WORKERS)
def test_functional_calls_from_threads_equal_sequential_calls(any_path, workers, n_threads,
                                                              monkeypatch):
    if any_path.startswith("small"):  # n_threads > 1 shares every step on the thread team
        monkeypatch.setattr(_cython_backend.switches, "threads_min_step_flops", 0)
    dtype = np.float32 if workers != 4 else np.float64
    weights = {H: shared_weights(dtype, D, H) for _, _, D, H in SHAPES}
    # Fewer calls with n_threads > 1: the calls that find the thread team busy run alone, the
    # others share it (slower on a shared 2-core machine, and no different in kind).
    work = calls(workers * (CALLS_PER_WORKER if n_threads == 1 else 2), dtype)
    sequential = [functional_call(weights, n_threads, call) for call in work]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        concurrent = list(pool.map(lambda call: functional_call(weights, n_threads, call), work))
    assert_same_results(concurrent, sequential)
    for W_xh, W_hh, b in weights.values():  # read-only, and still so
        assert not (W_xh.flags.writeable or W_hh.flags.writeable or b.flags.writeable)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("workers", WORKERS)
def test_numpy_backend_from_threads_equals_sequential_calls(workers, n_threads):
    weights = {H: shared_weights(np.float64, D, H) for _, _, D, H in SHAPES}
    work = calls(workers * 2, np.float64)

    def run(call):
        (T, B, D, H), x, h0, dout, dh_n, lengths = call
        out, cache = rnnfast.rnn_forward(x, h0, *weights[H], backend="numpy",
                                         n_threads=n_threads, lengths=lengths)
        return [out] + list(rnnfast.rnn_backward(dout, cache, dh_n, n_threads=n_threads))

    sequential = [run(call) for call in work]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        concurrent = list(pool.map(run, work))
    assert_same_results(concurrent, sequential)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("workers", WORKERS)
def test_rnn_layers_sharing_one_state_dict(any_path, workers, n_threads):
    """Separate layers (their own caches) loaded from one read-only state dict."""
    config = dict(input_size=6, hidden_size=40, num_layers=2, bidirectional=True,
                  n_threads=n_threads, seed=3)
    state = {name: read_only(array) for name, array in rnnfast.RNN(**config).state_dict().items()}
    rng = np.random.default_rng(5)
    work = []
    for i in range(workers * CALLS_PER_WORKER):
        T, B = 5 + i % 7, 1 + i % 4
        lengths = rng.integers(1, T + 1, B) if i % 2 else None
        work.append((rng.standard_normal((T, B, 6)).astype(np.float32), lengths,
                     rng.standard_normal((T, B, 80)).astype(np.float32)))

    def run(call):
        x, lengths, dout = call
        rnn = rnnfast.RNN(**config)
        rnn.load_state_dict(state)
        out, h_n = rnn.forward(x, lengths=lengths)
        dx, dh0 = rnn.backward(dout)
        return [out, h_n, dx, dh0] + [rnn.grads[name] for name in sorted(rnn.grads)]

    sequential = [run(call) for call in work]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        concurrent = list(pool.map(run, work))
    assert_same_results(concurrent, sequential)


# ---------------------------------------------------------------------------------------------
# The BLAS thread cap under concurrent blocks.
# ---------------------------------------------------------------------------------------------
class FakeBlas:
    """A process-wide BLAS thread setting, as threadpoolctl's controller exposes it."""

    def __init__(self, num_threads):
        self.num_threads = num_threads
        self.calls = 0

    def get_num_threads(self):
        return self.num_threads

    def set_num_threads(self, n):
        self.calls += 1
        self.num_threads = n


class FakePerThreadBlas:
    """A per-thread setting (OpenBLAS on OpenMP): each thread sees and sets its own."""

    def __init__(self, num_threads):
        self.default = num_threads
        self.local = threading.local()

    def get_num_threads(self):
        return getattr(self.local, "n", self.default)

    def set_num_threads(self, n):
        self.local.n = n


@pytest.fixture
def fake_blas(monkeypatch):
    """On an 8-core machine, two process-wide BLAS libraries with 8 threads and 1 thread, and
    a per-thread one with 8."""
    libraries = [FakeBlas(8), FakeBlas(1)]
    per_thread = FakePerThreadBlas(8)
    monkeypatch.setattr(_threads, "_controller", (libraries, [per_thread]))
    monkeypatch.setattr(_threads, "available_cores", lambda: 8)
    return libraries + [per_thread]


def test_overlapping_blocks_keep_the_smallest_limit_and_restore_the_original(fake_blas):
    """The interleaving that broke save-and-restore per block: A (limit 2) enters, B (limit 1)
    enters, A leaves, B leaves. B must keep its limit after A left, and the original 8 must
    come back (saving per block, B would have "restored" A's 2 for good)."""
    lib, low, _ = fake_blas
    a, b = _threads.blas_threads_at_most(2), _threads.blas_threads_at_most(1)
    a.__enter__()
    assert lib.num_threads == 2
    b.__enter__()
    assert lib.num_threads == 1
    a.__exit__(None, None, None)
    assert lib.num_threads == 1  # B still runs
    b.__exit__(None, None, None)
    assert lib.num_threads == 8 and low.num_threads == 1 and low.calls == 0
    assert not _threads._requests and not _threads._saved


def test_every_interleaving_of_three_blocks(fake_blas):
    """Whatever the order of entries and exits, inside a block the setting is at most its limit
    (and the smallest limit in progress), and after the last exit it is the original."""
    lib = fake_blas[0]
    limits = [1, 2, 4]
    events = [(i, kind) for i in range(3) for kind in ("enter", "exit")]
    for order in itertools.permutations(events):
        if any(order.index((i, "enter")) > order.index((i, "exit")) for i in range(3)):
            continue
        blocks = [_threads.blas_threads_at_most(n) for n in limits]
        inside = set()
        for i, kind in order:
            getattr(blocks[i], f"__{kind}__")(*(() if kind == "enter" else (None,) * 3))
            (inside.add if kind == "enter" else inside.discard)(i)
            expected = min([limits[j] for j in inside], default=8)
            assert lib.num_threads == expected, order
        assert lib.num_threads == 8


def test_blocks_from_many_threads(fake_blas):
    """Real threads entering and leaving at random: never above any limit in progress, and the
    original setting at the end."""
    lib, _, per_thread = fake_blas
    errors = []
    inside = {}
    guard = threading.Lock()

    def worker(seed):
        rng = np.random.default_rng(seed)
        for _ in range(300):
            limit = int(rng.integers(1, 8))
            with _threads.blas_threads_at_most(limit):
                with guard:
                    inside[threading.get_ident()] = limit
                    if lib.num_threads > min(inside.values()):
                        errors.append((lib.num_threads, dict(inside)))
                    if per_thread.get_num_threads() != limit:  # this thread's own limit
                        errors.append(("per thread", per_thread.get_num_threads(), limit))
                with guard:
                    del inside[threading.get_ident()]
            if per_thread.get_num_threads() != 8:
                errors.append(("per thread after", per_thread.get_num_threads()))

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert lib.num_threads == 8


def test_real_blas_settings_are_restored_after_concurrent_calls():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()]
    weights = {H: shared_weights(np.float32, D, H) for _, _, D, H in SHAPES}
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda call: functional_call(weights, 1, call), calls(16, np.float32)))
    assert [lib["num_threads"] for lib in threadpoolctl.threadpool_info()] == before


def test_calls_from_worker_threads_hold_blas_to_n_threads(monkeypatch):
    """threadpoolctl (from 3.6) lets only the first Python thread to set a limit change a
    process-wide OpenBLAS pool and silently ignores the others: a call from a worker thread,
    after one from the main thread, must still run BLAS on n_threads=1 inside the pass."""
    pytest.importorskip("threadpoolctl")
    if _threads.available_cores() < 2:
        pytest.skip("one core: n_threads=1 changes nothing")
    seen = []
    enter = _threads.blas_threads_at_most.__enter__

    def spy(self):  # BLAS's threads once the pass has set its limit, just before its kernel
        entered = enter(self)
        seen.append(tuple(lib.get_num_threads() for lib in _threads._blas_libraries()[0]))
        return entered

    monkeypatch.setattr(_threads.blas_threads_at_most, "__enter__", spy)
    T, B, D, H = SHAPES[1]  # its GEMMs are large enough to be held to one BLAS thread
    p = make_problem(0, T, B, D, H, np.float32)
    run = lambda: rnnfast.rnn_forward(*p.args, n_threads=1)  # noqa: E731
    run()  # from the main thread
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda _: run(), range(4)))
    assert seen and all(threads == (1,) * len(threads) for threads in seen), seen
