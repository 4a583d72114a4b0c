"""The wavefront (rnnfast.nn.wavefront): a stacked RNN's layers side by side on several threads,
time cut into chunks. Its results equal the one-thread layer's and the reference's up to
rounding, forward and backward, with every option of the layer; it runs only where it pays,
and the sequential path, unchanged, everywhere else."""
import numpy as np
import pytest

import rnnfast
from rnnfast.nn import rnn_calls, wavefront
from rnn_helpers import FLOAT32_VS_FLOAT64, SAME_DTYPE_TOL, assert_close

FLOATS = [np.float32, np.float64]


@pytest.fixture
def every_shape_pays(monkeypatch):
    """The wavefront for any shape with two chunks or more, on a machine of 4 cores."""
    monkeypatch.setitem(wavefront.THRESHOLDS, "min_chunk_macs", 1)
    monkeypatch.setitem(wavefront.THRESHOLDS, "min_chunks", 2)
    monkeypatch.setitem(wavefront.THRESHOLDS, "min_speedup", 0.0)
    monkeypatch.setattr(wavefront, "available_cores", lambda: 4)


def draw_call(rng, rnn, T, B, h0=True, dh_n=True, lengths=None):
    L, H, dtype = rnn.num_layers, rnn.hidden_size, rnn.dtype
    shape = (B, T) if rnn.batch_first else (T, B)
    return dict(x=rng.standard_normal(shape + (rnn.input_size,)).astype(dtype),
                h0=rng.standard_normal((L, B, H)).astype(dtype) if h0 else None,
                lengths=lengths,
                dout=rng.standard_normal(shape + (H,)).astype(dtype),
                dh_n=rng.standard_normal((L, B, H)).astype(dtype) if dh_n else None)


def run_layer(config, call, n_threads, return_norms=False):
    """forward + backward of a fresh layer: (results, grads, whether it ran on the wavefront)."""
    rnn = rnnfast.RNN(**config, n_threads=n_threads)
    out, h_n = rnn.forward(call["x"], call["h0"], lengths=call["lengths"])
    on_wavefront = isinstance(rnn._saved, wavefront.WavefrontPass)
    results = rnn.backward(call["dout"], call["dh_n"], return_norms=return_norms)
    return (out, h_n) + tuple(results), rnn.grads, on_wavefront


CASES = {  # name: (config beyond D, H, L, dtype; T, B; lengths)
    "plain": (dict(), 12, 3, None),
    "batch_first, relu, no bias": (dict(batch_first=True, nonlinearity="relu", bias=False),
                                   9, 2, None),
    "sorted lengths": (dict(), 11, 4, [11, 9, 9, 6]),
    "unsorted lengths": (dict(), 10, 4, [7, 10, 5, 8]),
    "dropout": (dict(dropout=0.4), 10, 3, None),
    "per-unit leak and noise": (dict(leak=np.linspace(0.3, 1, 6), noise_std=0.1,
                                     state_noise_std=0.05), 13, 2, None),
    "everything": (dict(dropout=0.3, leak=0.5, noise_std=0.2, batch_first=True), 14, 3,
                   [3, 14, 9]),
}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("L", [2, 3])
@pytest.mark.parametrize("case", CASES)
def test_the_wavefront_agrees_with_the_one_thread_layer(case, L, dtype, every_shape_pays):
    extra, T, B, lengths = CASES[case]
    config = dict(input_size=5, hidden_size=6, num_layers=L, dtype=dtype, seed=7, **extra)
    rng = np.random.default_rng(L)
    call = draw_call(rng, rnnfast.RNN(**config), T, B,
                     lengths=None if lengths is None else np.array(lengths))
    expected, expected_grads, sequential = run_layer(config, call, 1, return_norms=True)
    results, grads, on_wavefront = run_layer(config, call, 3, return_norms=True)
    assert on_wavefront and not sequential
    tol = SAME_DTYPE_TOL[dtype]
    for name, actual, wanted in zip(("out", "h_n", "dx", "dh0", "norms"), results, expected):
        assert actual.shape == wanted.shape and actual.dtype == wanted.dtype, name
        assert_close(actual, wanted, tol["forward" if name in ("out", "h_n") else "grad"], name)
    assert list(grads) == list(expected_grads)
    for name in grads:
        assert_close(grads[name], expected_grads[name], tol["grad"], name)
    assert grads.get("bias_ih_l0") is not grads.get("bias_hh_l0") or "bias" in extra
    # The same pass again gives the same numbers: the chunks' sums run in a fixed order.
    again, again_grads, _ = run_layer(config, call, 3, return_norms=True)
    for actual, repeated in zip(results, again):
        np.testing.assert_array_equal(actual, repeated)
    for name in grads:
        np.testing.assert_array_equal(grads[name], again_grads[name])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", ["plain", "sorted lengths", "unsorted lengths", "everything"])
def test_bidirectional_directions_side_by_side_are_the_one_thread_passes(case, dtype,
                                                                        every_shape_pays):
    """Each layer's two directions at once, on two threads: each runs the pass it runs on one
    thread, so the results are the one-thread layer's, bit for bit."""
    extra, T, B, lengths = CASES[case]
    config = dict(input_size=5, hidden_size=6, num_layers=2, dtype=dtype, seed=3,
                  bidirectional=True, **extra)
    rnn = rnnfast.RNN(**config)
    call = draw_call(np.random.default_rng(1), rnn, T, B,
                     lengths=None if lengths is None else np.array(lengths))
    call["dout"] = np.concatenate([call["dout"]] * 2, axis=-1)
    for name in ("h0", "dh_n"):
        call[name] = np.concatenate([call[name]] * 2, axis=0)
    expected, expected_grads, _ = run_layer(config, call, 1, return_norms=True)
    rnn = rnnfast.RNN(**config, n_threads=2)
    out, h_n = rnn.forward(call["x"], call["h0"], lengths=call["lengths"])
    assert rnn._side_by_side
    results = (out, h_n) + rnn.backward(call["dout"], call["dh_n"], return_norms=True)
    for actual, wanted in zip(results, expected):
        np.testing.assert_array_equal(actual, wanted)
    assert list(rnn.grads) == list(expected_grads)
    for name, grad in rnn.grads.items():
        np.testing.assert_array_equal(grad, expected_grads[name], err_msg=name)


def reference_stack(rnn, call):
    """The stack on the NumPy reference in float64, layer after layer: (out, h_n, dx, dh0,
    grads by name)."""
    params = {name: array.astype(np.float64) for name, array in rnn.parameters().items()}
    x, h0 = call["x"].astype(np.float64), call["h0"].astype(np.float64)
    lengths, L = call["lengths"], rnn.num_layers
    caches, h_n, layer_input = [], [], x
    for layer in range(L):
        b = params[f"bias_ih_l{layer}"] + params[f"bias_hh_l{layer}"]
        out, cache = rnnfast.rnn_forward(layer_input, h0[layer], params[f"weight_ih_l{layer}"],
                                         params[f"weight_hh_l{layer}"], b, backend="numpy",
                                         lengths=lengths, leak=float(rnn.leak[layer, 0]))
        caches.append(cache)
        h_n.append(out[lengths - 1, np.arange(x.shape[1])])
        layer_input = out
    grads, dh0, d_output = {}, [None] * L, call["dout"].astype(np.float64)
    for layer in reversed(range(L)):
        g = rnnfast.rnn_backward(d_output, caches[layer], call["dh_n"][layer].astype(np.float64))
        grads.update({f"weight_ih_l{layer}": g.dW_xh, f"weight_hh_l{layer}": g.dW_hh,
                      f"bias_ih_l{layer}": g.db, f"bias_hh_l{layer}": g.db})
        dh0[layer], d_output = g.dh0, g.dx
    return layer_input, np.stack(h_n), d_output, np.stack(dh0), grads


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("leak", [1.0, 0.6])
def test_the_wavefront_agrees_with_the_reference(dtype, leak, every_shape_pays):
    config = dict(input_size=4, hidden_size=7, num_layers=3, dtype=dtype, seed=2, leak=leak)
    rnn = rnnfast.RNN(**config, n_threads=2)
    call = draw_call(np.random.default_rng(5), rnn, 15, 3, lengths=np.array([15, 8, 12]))
    out, h_n = rnn.forward(call["x"], call["h0"], lengths=call["lengths"])
    assert isinstance(rnn._saved, wavefront.WavefrontPass)
    dx, dh0 = rnn.backward(call["dout"], call["dh_n"])
    expected = reference_stack(rnn, call)
    tol = FLOAT32_VS_FLOAT64 if dtype == np.float32 else {"forward": 1e-10, "grad": 1e-10}
    for name, actual, wanted in zip(("out", "h_n", "dx", "dh0"), (out, h_n, dx, dh0), expected):
        assert_close(actual, wanted, tol["forward" if name in ("out", "h_n") else "grad"], name)
    for name, grad in rnn.grads.items():
        assert_close(grad, expected[4][name], tol["grad"], name)


def plan_of(rnn, T, B, lengths=None):
    steps = rnn_calls.Steps(T, B, None if lengths is None else np.asarray(lengths, np.intp))
    return wavefront.plan(rnn, T, B, steps)


def test_the_wavefront_runs_only_where_it_pays(monkeypatch):
    """One thread, one core, one layer, bidirectional layers, large batches and short
    sequences run sequentially; a long thin stack on two cores runs on the wavefront, its
    chunks long enough and every boundary before the shortest sequence's end."""
    monkeypatch.setattr(wavefront, "available_cores", lambda: 2)
    long_thin = dict(input_size=64, hidden_size=128, num_layers=2)
    assert plan_of(rnnfast.RNN(**long_thin), 2000, 1) is not None  # n_threads=None: every core
    assert plan_of(rnnfast.RNN(**long_thin, n_threads=2), 2000, 1).threads == 2
    assert plan_of(rnnfast.RNN(**long_thin, n_threads=1), 2000, 1) is None
    assert plan_of(rnnfast.RNN(**dict(long_thin, num_layers=1)), 2000, 1) is None
    bidirectional = plan_of(rnnfast.RNN(**long_thin, bidirectional=True), 2000, 1)
    assert bidirectional.bounds is None  # each layer's two directions side by side instead
    assert plan_of(rnnfast.RNN(**long_thin, bidirectional=True), 20, 1) is None
    assert plan_of(rnnfast.RNN(**long_thin), 2000, wavefront.THRESHOLDS["max_batch"] + 1) is None
    assert plan_of(rnnfast.RNN(**long_thin), 20, 1) is None  # chunks too short to pay
    assert plan_of(rnnfast.RNN(**long_thin), 2000, 2, lengths=[2000, 30]) is None  # one chunk
    plan = plan_of(rnnfast.RNN(**long_thin), 2000, 2, lengths=[2000, 1500])
    assert plan.bounds[0] == 0 and plan.bounds[-1] == 2000 and max(plan.bounds[:-1]) <= 1499
    chunk_macs = np.diff(plan.bounds) * 2 * 128 * (128 + 128)
    assert chunk_macs.min() >= wavefront.THRESHOLDS["min_chunk_macs"]
    monkeypatch.setattr(wavefront, "available_cores", lambda: 1)
    assert plan_of(rnnfast.RNN(**long_thin), 2000, 1) is None
    rnn = rnnfast.RNN(**long_thin)
    rnn._sequential_only = True  # direction_runs reads every pass whole
    monkeypatch.setattr(wavefront, "available_cores", lambda: 2)
    assert plan_of(rnn, 2000, 1) is None


def test_the_faster_way_runs_and_the_other_is_tried_again(every_shape_pays):
    """Each kind of call is timed both ways in turn at first; then the faster one runs, the
    other every EXPLORE_EVERY-th call; the backward pass follows whichever the forward took."""
    rnn = rnnfast.RNN(3, 4, num_layers=2, seed=0, n_threads=2)
    call = draw_call(np.random.default_rng(0), rnn, 8, 2)
    ways, learning = [], wavefront.LEARNING_CALLS
    for _ in range(learning + 2 * wavefront.EXPLORE_EVERY):
        rnn.forward(call["x"], call["h0"])
        ways.append(isinstance(rnn._saved, wavefront.WavefrontPass))
        rnn.backward(call["dout"], call["dh_n"])
        key = next(iter(rnn._wavefront_timings))
        rnn._wavefront_timings[key][:2] = [1.0, 2.0]  # the sequential pass is the faster
    assert ways[:learning] == [True, False] * (learning // 2)  # both ways in turn first
    explored = [i for i in range(learning, len(ways)) if ways[i]]
    assert len(explored) == 2 and np.diff(explored).tolist() == [wavefront.EXPLORE_EVERY]


def test_a_failure_in_one_thread_stops_the_pass_and_is_raised(every_shape_pays, monkeypatch):
    monkeypatch.setattr(wavefront, "ADAPT", False)  # every call on the wavefront
    rnn = rnnfast.RNN(3, 4, num_layers=3, seed=0, n_threads=3)
    call = draw_call(np.random.default_rng(0), rnn, 9, 2)
    original = rnn._forward_pass

    def failing(x, h0, weights, layer, *args):
        if layer == 2:
            raise RuntimeError("a planted failure in layer 2")
        return original(x, h0, weights, layer, *args)

    monkeypatch.setattr(rnn, "_forward_pass", failing)
    with pytest.raises(RuntimeError, match="planted failure in layer 2"):
        rnn.forward(call["x"], call["h0"])
    monkeypatch.setattr(rnn, "_forward_pass", original)
    rnn.forward(call["x"], call["h0"])  # the threads are free again
    assert isinstance(rnn._saved, wavefront.WavefrontPass)


def test_each_way_is_timed_under_its_own_name(every_shape_pays, monkeypatch):
    """With a clock on which the wavefront takes 1 s and the sequential pass 3 s, the layer
    learns both, then runs the wavefront."""
    clock = [0.0]
    monkeypatch.setattr(wavefront.time, "perf_counter", lambda: clock[0])
    rnn = rnnfast.RNN(3, 4, num_layers=2, seed=0, n_threads=2)
    forward, sequential = wavefront.forward, rnn._sequential_forward

    def slow(seconds, run):
        def timed(*args, **kwargs):
            clock[0] += seconds
            return run(*args, **kwargs)
        return timed

    monkeypatch.setattr(wavefront, "forward", slow(1.0, forward))
    monkeypatch.setattr(rnn, "_sequential_forward", slow(3.0, sequential))
    call = draw_call(np.random.default_rng(0), rnn, 8, 2)
    ways = []
    for _ in range(wavefront.LEARNING_CALLS + 3):
        rnn.forward(call["x"], call["h0"])
        ways.append(isinstance(rnn._saved, wavefront.WavefrontPass))
    (record,) = rnn._wavefront_timings.values()
    assert record[:2] == [3.0, 1.0]  # seconds sequential, on the wavefront
    assert ways[wavefront.LEARNING_CALLS:] == [True] * 3
