"""Memory: beyond its outputs, a forward + backward pass allocates one (T, B, H) buffer (da) and
O(B*H + H*H) scratch, whatever the path; and thousands of calls, or a training loop, do not
grow it. Measured with tracemalloc, which sees NumPy's buffers."""
import gc
import sys
import tracemalloc

import numpy as np
import pytest

import rnnfast
from rnnfast._kernels import backend as _cython_backend
from rnnfast._kernels import entry as _entry
from rnnfast.train import optim
from rnnfast.utils.memory import buffer_bytes
from rnn_helpers import PATHS, force_path, make_problem

SLACK_BYTES = 64 * 1024  # Python objects, NumPy array headers, tracemalloc's own records


def peak_allocation(call):
    """Bytes allocated at the peak of call(), above what was allocated before it; and its result.
    The calling thread's kept scratch is freed first: the call allocates all it needs."""
    _entry.release_scratch()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before, result


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(200, 4, 16, 96), (50, 33, 8, 64)], ids=["long", "wide"])
def test_forward_and_backward_allocate_only_outputs_one_buffer_and_scratch(path, shape,
                                                                           monkeypatch):
    force_path(monkeypatch, path)
    T, B, D, H = shape
    p = make_problem(0, T, B, D, H, np.float64, h0=False, dh_n=False)
    itemsize = 8
    rows, columns = _cython_backend.step_matrix_shape(H)
    # the step matrix, zero states, the (H, H) temporary of NumPy's weight gradients
    scratch = (rows * columns + 2 * B * H + H * H) * itemsize
    # One warm-up pass: first calls create lasting objects (caches of the thread control).
    rnnfast.rnn_backward(p.dout, rnnfast.rnn_forward(*p.args, n_threads=1)[1], n_threads=1)

    peak, (out, cache) = peak_allocation(lambda: rnnfast.rnn_forward(*p.args, n_threads=1))
    assert peak <= out.nbytes + scratch + SLACK_BYTES

    peak, grads = peak_allocation(lambda: rnnfast.rnn_backward(p.dout, cache, n_threads=1))
    outputs = sum(g.nbytes for g in grads if g is not None)
    one_buffer = T * B * H * itemsize
    assert peak <= outputs + one_buffer + scratch + SLACK_BYTES


# The backend's buffer lists (from which rnn_forward and rnn_backward check their memory) are
# what it allocates: their total is never below a pass's peak, and exceeds it by at most one of
# their buffers (the total counts some that are never alive together), for every kind of call.
BUFFER_CASES = {  # name: (rnn_forward keywords, h0 given, return_norms)
    "plain": (dict(), True, False),
    "no_h0_norms": (dict(), False, True),
    "sorted_lengths": (dict(lengths=[200, 150, 150, 3]), True, False),
    "unsorted_lengths_norms": (dict(lengths=[3, 200, 150, 150]), True, True),
    "leaky": (dict(leak=0.3), True, False),
    "leaky_noises_unsorted": (dict(leak=0.3, noise=True, state_noise=True,
                                   lengths=[3, 200, 150, 150]), False, True),
    "leaky_no_grad": (dict(leak=0.3, need_grad=False), True, False),
    "no_grad_unsorted": (dict(need_grad=False, noise=True, lengths=[3, 200, 150, 150]), True,
                         False),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(BUFFER_CASES))
def test_the_buffer_lists_are_what_the_backend_allocates(case, path, monkeypatch):
    force_path(monkeypatch, path)
    T, B, D, H = 200, 4, 16, 96
    options, has_h0, return_norms = BUFFER_CASES[case]
    p = make_problem(1, T, B, D, H, np.float64, h0=has_h0)
    options = dict(options, n_threads=1)
    for name in ("noise", "state_noise"):
        if options.get(name):
            options[name] = np.full((T, B, H), 0.01)
    lengths = None if "lengths" not in options else np.array(options["lengths"], np.intp)
    options["lengths"] = lengths
    order = _cython_backend.batch_order(lengths)
    listed = dict(h0=has_h0, order=order, leaky="leak" in options,
                  noise="noise" in options, state_noise="state_noise" in options,
                  need_grad=options.get("need_grad", True))
    kept, scratch = _cython_backend.forward_buffers(T, B, D, H, np.dtype(np.float64), **listed)
    rnnfast.rnn_forward(*p.args, **options)  # warm up
    peak, (out, cache) = peak_allocation(lambda: rnnfast.rnn_forward(*p.args, **options))
    assert_bounds(peak, kept + scratch)
    if cache is None:
        return
    buffers = _cython_backend.backward_buffers(T, B, D, H, np.dtype(np.float64), order,
                                               "leak" in options, return_norms)
    peak, _ = peak_allocation(lambda: rnnfast.rnn_backward(p.dout, cache, n_threads=1,
                                                           return_norms=return_norms))
    assert_bounds(peak, buffers)


def test_the_buffer_lists_hold_the_products_shared_on_threads(monkeypatch):
    """On two threads with the products shared on rnnfast's GEMM, the pass also packs W_xh in
    panels: the lists count it (a W_xh of 64 x 300 floats, 300 columns: the panels' padding)."""
    monkeypatch.setattr(_cython_backend.switches, "threads_min_product_flops", 0)
    monkeypatch.setattr(_cython_backend.switches, "cores", 2)
    T, B, D, H = 40, 33, 300, 64
    p = make_problem(2, T, B, D, H, np.float64)
    kept, scratch = _cython_backend.forward_buffers(T, B, D, H, np.dtype(np.float64))
    rnnfast.rnn_forward(*p.args, n_threads=2)  # warm up
    peak, (out, cache) = peak_allocation(lambda: rnnfast.rnn_forward(*p.args, n_threads=2))
    assert_bounds(peak, kept + scratch)
    buffers = _cython_backend.backward_buffers(T, B, D, H, np.dtype(np.float64))
    peak, _ = peak_allocation(lambda: rnnfast.rnn_backward(p.dout, cache, n_threads=2))
    assert_bounds(peak, buffers)


def assert_bounds(peak, buffers):
    sizes = [buffer_bytes(shape, dtype) for _, shape, dtype in buffers]
    assert peak <= sum(sizes) + SLACK_BYTES, (peak, buffers)
    assert sum(sizes) - peak <= max(sizes) + SLACK_BYTES, (peak, buffers)


# ---------------------------------------------------------------------------------------------
# No growth over many calls: what a call allocates is all freed (or replaced) once it returns.
# ---------------------------------------------------------------------------------------------
# Allowed growth of traced memory over all the measured iterations together. What remains after
# settle() moved it by under 1 kB here, for every test below; a leak of one small array per call
# (130 bytes traced: the ndarray object and its data) exceeds it 2.4 times or more over the
# iterations below (300 or more), as the last test checks.
GROWTH_BYTES = 16 * 1024
WARM_UP = 50


def settle():
    """Free what is only cached: garbage in cycles, and the interpreter's method cache, which
    keeps the attribute names it last looked up alive (threadpoolctl looks BLAS functions up
    by names it formats anew on every call: otherwise kilobytes of noise)."""
    gc.collect()
    sys._clear_type_cache()


def growth(step, iterations, warm_up=WARM_UP):
    """Bytes of traced memory still held after `iterations` more calls of step() than after the
    warm-up (both after a garbage collection), and the lines that gained most (for messages)."""
    tracemalloc.start()
    try:
        for i in range(warm_up):
            step(i)
        settle()
        before = tracemalloc.get_traced_memory()[0]
        first = tracemalloc.take_snapshot()
        for i in range(warm_up, warm_up + iterations):
            step(i)
        settle()
        after = tracemalloc.get_traced_memory()[0]
        if after - before <= GROWTH_BYTES:
            return after - before, ""
        top = tracemalloc.take_snapshot().compare_to(first, "lineno")[:5]
        return after - before, "\n".join(str(stat) for stat in top)
    finally:
        tracemalloc.stop()


def functional_step(backend, lengths_kind, dtype=np.float32):
    """One forward + backward call of the functional API, on data that changes with i."""
    T, B, D, H = 6, 3, 5, 20
    problems = [make_problem(seed, T, B, D, H, dtype) for seed in range(4)]
    lengths = {"none": None, "sorted": np.array([6, 4, 1]), "unsorted": np.array([2, 6, 4])}
    chosen = lengths[lengths_kind]

    def step(i):
        p = problems[i % len(problems)]
        out, cache = rnnfast.rnn_forward(*p.args, backend=backend, lengths=chosen, n_threads=1)
        rnnfast.rnn_backward(p.dout, cache, p.dh_n, n_threads=1)
    return step


@pytest.mark.parametrize("backend, lengths_kind, iterations", [
    ("cython", "none", 400), ("cython", "unsorted", 400), ("numpy", "unsorted", 300)])
def test_functional_calls_do_not_grow_memory(backend, lengths_kind, iterations):
    grown, top = growth(functional_step(backend, lengths_kind), iterations)
    assert grown <= GROWTH_BYTES, f"{grown} bytes more after {iterations} calls:\n{top}"


def test_rnn_layer_calls_do_not_grow_memory():
    rnn = rnnfast.RNN(5, 16, num_layers=2, bidirectional=True, dropout=0.2, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 5)).astype(np.float32)
    dout = rng.standard_normal((6, 3, 32)).astype(np.float32)
    lengths = [np.array([6, 2, 4]), None]

    def step(i):
        out, h_n = rnn.forward(x, lengths=lengths[i % 2])
        rnn.backward(dout)

    grown, top = growth(step, 300)
    assert grown <= GROWTH_BYTES, f"{grown} bytes more after 300 calls:\n{top}"


def test_training_loop_does_not_grow_memory():
    """The README's training loop: Embedding -> RNN -> Linear -> softmax_cross_entropy ->
    clip_grad_norm -> Adam, a few hundred steps."""
    V, E, H = 30, 16, 32
    emb, rnn = rnnfast.Embedding(V, E, seed=0), rnnfast.RNN(E, H, seed=1)
    head = rnnfast.Linear(H, V, seed=2)
    parts = {"emb": emb, "rnn": rnn, "head": head}
    params = {f"{name}.{k}": v for name, part in parts.items()
              for k, v in part.parameters().items()}
    adam = optim.Adam(params, lr=3e-3)
    tokens = np.random.default_rng(0).integers(0, V, (13, 4))
    losses = []

    def step(i):
        out, _ = rnn.forward(emb.forward(tokens[:-1]))
        loss, dlogits = rnnfast.softmax_cross_entropy(head.forward(out), tokens[1:])
        emb.backward(rnn.backward(head.backward(dlogits))[0])
        grads = {f"{name}.{k}": v for name, part in parts.items() for k, v in part.grads.items()}
        optim.clip_grad_norm(grads, 5.0)
        adam.step(grads)
        if i % 50 == 0:
            losses.append(loss)

    grown, top = growth(step, 300)
    assert grown <= GROWTH_BYTES, f"{grown} bytes more after 300 steps:\n{top}"
    assert losses[-1] < losses[0]  # and it trains


def test_truncated_bptt_training_does_not_grow_memory():
    """The loop of `rnnfast train`: a CharRNN trained by TBPTTTrainer, the state carried across
    chunks and reset at each of the many epochs the 300 steps run through."""
    from rnnfast.charlm.model import CharRNN
    from rnnfast.train.streams import TokenStreams
    from rnnfast.train.trainer import TBPTTTrainer

    model = CharRNN(12, hidden_size=24, num_layers=2, embedding_dim=8, dropout=0.1, seed=0)
    tokens = np.random.default_rng(0).integers(0, 12, 200)
    trainer = TBPTTTrainer(model, optim.Adam(model.parameters(), lr=3e-3),
                           TokenStreams(tokens, batch_size=4, seq_len=16))

    grown, top = growth(lambda i: trainer.step(), 300)
    assert trainer.streams.epoch > 50  # the carried state was dropped and rebuilt many times
    assert grown <= GROWTH_BYTES, f"{grown} bytes more after 300 steps:\n{top}"


def test_the_bound_catches_a_leak_of_one_small_array_per_call(monkeypatch):
    """The tests above would see a leak: with one 1-element array kept per call (planted in
    the backend), 300 calls exceed the bound."""
    kept = []
    forward = _entry.forward

    def leaky_forward(*args):
        kept.append(np.empty(1))
        return forward(*args)

    monkeypatch.setattr(_entry, "forward", leaky_forward)
    grown, _ = growth(functional_step("cython", "none"), 300)
    assert grown > GROWTH_BYTES, grown
