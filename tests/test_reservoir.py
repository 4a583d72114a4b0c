"""rnnfast.reservoir.Reservoir: the sparse step (each compiled build) and the dense path against
a NumPy loop written from the update rule, on shapes, leaks, sparsities and batches drawn by
hypothesis; the random weights; chunked runs; bad input."""
import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnfast.reservoir import Reservoir, spectral_radius
from rnnfast.reservoir import sliced

# Against the NumPy loop below: float64 differs by summation order and by the kernels' tanh
# (within 2 ulp), a few ulps a step, and a reservoir with spectral radius < 1 forgets old
# rounding (echo state property), so errors stay ~1e-15; float32 against float64: eps32
# compounded over the memory of the reservoir.
TOL = {np.float64: 1e-12, np.float32: 2e-5}
BUILDS = list(sliced.KERNEL_BUILDS)


def reference_states(u, W, W_in, bias, leak, nonlinearity="tanh", h0=None):
    """The states of the update rule, step by step in float64: u (T, B, D) -> (T, B, H). A
    sparse W multiplies as scipy's sparse product does (ReservoirPy's), its structural zeros
    skipped: NaN or inf in a state reach only the units W connects it to."""
    W = W.astype(np.float64) if scipy.sparse.issparse(W) else np.asarray(W, dtype=np.float64)
    W_in = np.asarray(W_in, dtype=np.float64)
    T, B, _ = u.shape
    H = W.shape[0]
    h = np.zeros((B, H)) if h0 is None else np.asarray(h0, dtype=np.float64).reshape(B, H)
    b = 0.0 if bias is None else np.asarray(bias, dtype=np.float64)
    alpha = np.asarray(leak, dtype=np.float64)
    act = np.tanh if nonlinearity == "tanh" else (lambda a: np.maximum(a, 0))
    states = np.empty((T, B, H))
    for t in range(T):
        a = (W @ h.T).T + u[t].astype(np.float64) @ W_in.T + b
        h = (1 - alpha) * h + alpha * act(a)
        states[t] = h
    return states


def assert_states_close(got, expected, dtype):
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL[dtype] * scale)


@pytest.fixture(params=BUILDS)
def build(request, monkeypatch):
    """Each compiled build of the sparse step this machine runs."""
    monkeypatch.setattr(sliced, "KERNEL", request.param)
    return request.param


@pytest.fixture(params=["sparse", "dense"])
def step(request, monkeypatch):
    """The run forced onto one step path."""
    monkeypatch.setattr(sliced, "use_sparse_step", lambda H, nnz, B: request.param == "sparse")
    return request.param


def random_reservoir(rng, H, D, connectivity, leak, dtype, bias=True, nonlinearity="tanh"):
    """A reservoir made from weights drawn here: W sparse (CSR) at spectral radius 0.9."""
    W = scipy.sparse.random_array((H, H), density=connectivity, rng=rng, format="csr",
                                  data_sampler=rng.standard_normal)
    radius = spectral_radius(W) if W.nnz else 0.0
    W = (W * (0.9 / radius) if radius > 0 else W).astype(dtype)
    W_in = rng.uniform(-1, 1, (H, D)).astype(dtype)
    b = rng.uniform(-0.2, 0.2, H).astype(dtype) if bias else None
    return Reservoir.from_weights(W, W_in, b, leak=leak, nonlinearity=nonlinearity)


leaks = st.one_of(st.floats(0.01, 1.0), st.just(1.0), st.just("per unit"))


@settings(max_examples=40, deadline=None)
@given(H=st.integers(1, 40), D=st.integers(1, 4), B=st.integers(1, 21), T=st.integers(1, 12),
       connectivity=st.sampled_from([0.02, 0.1, 0.3, 1.0]), leak=leaks,
       dtype=st.sampled_from([np.float64, np.float32]), bias=st.booleans(),
       nonlinearity=st.sampled_from(["tanh", "relu"]), seed=st.integers(0, 2**16))
def test_both_steps_of_every_build_follow_the_update_rule(H, D, B, T, connectivity, leak, dtype,
                                                          bias, nonlinearity, seed):
    rng = np.random.default_rng(seed)
    if leak == "per unit":
        leak = rng.uniform(0.05, 1, H).astype(dtype)
    reservoir = random_reservoir(rng, H, D, connectivity, leak, dtype, bias, nonlinearity)
    u = rng.standard_normal((T, B, D)).astype(dtype)
    h0 = rng.uniform(-1, 1, (B, H)).astype(dtype)
    expected = reference_states(u, reservoir.W, reservoir.W_in, reservoir.bias, leak,
                                nonlinearity, h0)
    for build in BUILDS:
        for sparse in (True, False):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(sliced, "KERNEL", build)
                patch.setattr(sliced, "use_sparse_step", lambda *_, s=sparse: s)
                states = reservoir.run(u, h0)
            assert states.dtype == dtype and states.shape == (T, B, H)
            assert_states_close(states, expected, dtype)


@pytest.mark.parametrize("H", [8, 9, 100, 301])
def test_one_series_alone_and_in_a_batch_get_the_same_bits(build, H):
    """B = 1 runs slice by slice, B > 1 row by row over blocks of series: the same sums in the
    same order."""
    rng = np.random.default_rng(H)
    reservoir = random_reservoir(rng, H, 2, 0.1, 0.3, np.float64)
    u = rng.standard_normal((30, 19, 2))
    batch = reservoir.run(u)
    for b in (0, 7, 16, 18):
        np.testing.assert_array_equal(reservoir.run(np.ascontiguousarray(u[:, b])), batch[:, b])


@pytest.mark.parametrize("B", [1, 3])
def test_a_reservoir_without_recurrent_weights(build, B):
    """A W with no nonzero (a tiny reservoir at low connectivity draws one): the state is the
    leaky input drive alone, on the sparse step (whose slices are then all empty)."""
    rng = np.random.default_rng(B)
    W, W_in = scipy.sparse.csr_array((5, 5)), rng.standard_normal((5, 2))
    reservoir = Reservoir.from_weights(W, W_in, leak=0.4)
    assert reservoir.step_path() == "sparse"
    u = rng.standard_normal((7, B, 2))
    assert_states_close(reservoir.run(u), reference_states(u, W, W_in, None, 0.4), np.float64)


def test_a_series_run_in_chunks_equals_one_run(step):
    rng = np.random.default_rng(0)
    reservoir = random_reservoir(rng, 50, 3, 0.1, 0.5, np.float64)
    u = rng.standard_normal((400, 3))
    whole = reservoir.run(u)
    first = reservoir.run(u[:123])
    rest = reservoir.run(u[123:], h0=first[-1])
    np.testing.assert_array_equal(np.concatenate([first, rest]), whole)


def test_one_series_as_2d_and_as_a_batch_of_one(step):
    rng = np.random.default_rng(1)
    reservoir = random_reservoir(rng, 30, 2, 0.2, 0.7, np.float64)
    u = rng.standard_normal((20, 2))
    h0 = rng.uniform(-1, 1, 30)
    np.testing.assert_array_equal(reservoir.run(u, h0), reservoir.run(u[:, None], h0[None])[:, 0])


def test_long_series_cross_the_input_projection_chunks(monkeypatch):
    """The kernel projects the inputs chunk by chunk: results do not depend on the chunk."""
    rng = np.random.default_rng(2)
    reservoir = random_reservoir(rng, 40, 2, 0.1, 0.4, np.float64)
    u = rng.standard_normal((257, 3, 2))
    default = reservoir.run(u)
    monkeypatch.setattr(sliced, "CHUNK_BYTES", 7 * 3 * 40 * 8)  # 7 steps a chunk
    np.testing.assert_array_equal(reservoir.run(u), default)
    assert_states_close(default, reference_states(u, reservoir.W, reservoir.W_in,
                                                  reservoir.bias, 0.4), np.float64)


def test_padding_never_mixes_inf_or_nan_into_other_units(build):
    """A padded entry of the sliced matrix reads h[H] = 0, never a real unit: a unit whose
    state is NaN reaches only the units W connects it to, one step further each step."""
    H = 12
    W = scipy.sparse.csr_array((np.full(3, 0.5), ([0, 1, 2], [0, 0, 1])), shape=(H, H))
    reservoir = Reservoir.from_weights(W, np.full((H, 1), 0.1), leak=0.5)
    for bad in (np.nan, np.inf):
        h0 = np.zeros((2, H))
        h0[1, 0] = bad  # the second series only
        states = reservoir.run(np.zeros((3, 2, 1)), h0)
        expected = reference_states(np.zeros((3, 2, 1)), W, reservoir.W_in, None, 0.5, h0=h0)
        np.testing.assert_array_equal(states, expected)  # NaN where NaN, inf where inf
        assert np.all(states[:, 0] == 0) and np.all(states[:, 1, 3:] == 0)
        np.testing.assert_array_equal(reservoir.run(np.zeros((3, 1)), h0[1]), states[:, 1])
    assert np.isnan(expected[2, 1, :3]).sum() == 0  # inf: tanh(inf) = 1, no NaN made


def test_the_random_reservoir():
    reservoir = Reservoir(200, spectral_radius=1.1, connectivity=0.05, input_scaling=0.5,
                          input_connectivity=0.2, bias_scaling=0.3, leak=0.2, seed=3)
    W = reservoir.W
    assert scipy.sparse.issparse(W) and W.nnz == 2000 and reservoir.nnz == 2000
    assert abs(np.max(np.abs(np.linalg.eigvals(W.toarray()))) - 1.1) < 1e-9
    assert reservoir.W_in is None and reservoir.input_size is None  # drawn on the first run
    reservoir.run(np.zeros((3, 4)))
    W_in = reservoir.W_in
    assert W_in.shape == (200, 4) and set(np.unique(W_in)) == {-0.5, 0.0, 0.5}
    assert np.all(np.count_nonzero(W_in, axis=0) == 40)
    assert np.all(np.abs(reservoir.bias) <= 0.3) and np.ptp(reservoir.bias) > 0.3
    dense = Reservoir(60, connectivity=1.0, seed=3)
    assert isinstance(dense.W, np.ndarray) and dense.bias is None
    assert abs(np.max(np.abs(np.linalg.eigvals(dense.W))) - 0.9) < 1e-9
    # The same seed gives the same reservoir; W does not depend on the input size.
    again = Reservoir(200, spectral_radius=1.1, connectivity=0.05, input_scaling=0.5,
                      input_connectivity=0.2, bias_scaling=0.3, leak=0.2, seed=3,
                      input_size=4)
    assert (again.W != W).nnz == 0
    np.testing.assert_array_equal(again.W_in, W_in)
    np.testing.assert_array_equal(again.bias, reservoir.bias)
    other = Reservoir(200, connectivity=0.05, seed=4)
    assert (other.W != W).nnz > 0


def test_float32_reservoirs_and_per_input_scaling():
    reservoir = Reservoir(50, seed=0, dtype=np.float32, input_scaling=[1.0, 0.1], leak=0.5)
    u = np.random.default_rng(0).standard_normal((40, 2))
    states = reservoir.run(u)  # float64 input, cast to the reservoir's dtype
    assert states.dtype == np.float32
    assert set(np.unique(np.abs(reservoir.W_in[:, 1]))) == {0.0, np.float32(0.1)}
    expected = reference_states(u[:, None].astype(np.float32), reservoir.W, reservoir.W_in,
                                None, 0.5)[:, 0]
    assert_states_close(states, expected, np.float32)


def test_the_switch_runs_sparse_reservoirs_sparse_and_dense_ones_dense():
    assert Reservoir(100, connectivity=0.1, seed=0).step_path() == "sparse"
    assert Reservoir(100, connectivity=1.0, seed=0).step_path() == "dense"
    assert Reservoir(100, connectivity=0.1, seed=0).step_path(16) == "sparse"


def test_the_sliced_layout():
    rng = np.random.default_rng(5)
    W = scipy.sparse.random_array((21, 21), density=0.3, rng=rng, format="csr")
    matrix = sliced.sliced_matrix(W, np.dtype(np.float64))
    rows = sliced.SLICE_ROWS
    assert len(matrix.order) == 24 and set(matrix.order[:21]) == set(range(21))
    assert np.all(matrix.order[21:] == 21) and matrix.columns.dtype == np.uint16
    lengths = np.diff(W.indptr)[matrix.order[:21]]
    assert np.all(np.diff(lengths) <= 0)  # longest first
    np.testing.assert_array_equal(matrix.row_length[:21], lengths)
    # Each sorted row's entries, read back from the slices, are the row of W.
    for p, unit in enumerate(matrix.order[:21]):
        first = matrix.slice_start[p // rows] + p % rows
        entries = slice(first, first + matrix.row_length[p] * rows, rows)
        row = np.zeros(22)
        np.add.at(row, matrix.columns[entries], matrix.values[entries])
        np.testing.assert_array_equal(row[:21], W.toarray()[unit])
    padded = matrix.values.size - matrix.nnz
    assert np.all(matrix.columns[matrix.values == 0] == 21) or padded == 0


@pytest.mark.parametrize("bad, error, words", [
    (dict(units=0), ValueError, "units"),
    (dict(units=2.5), TypeError, "units"),
    (dict(spectral_radius=0), ValueError, "spectral_radius"),
    (dict(connectivity=0), ValueError, "connectivity"),
    (dict(connectivity=1.5), ValueError, "connectivity"),
    (dict(input_connectivity=0), ValueError, "input_connectivity"),
    (dict(leak=0), ValueError, "leak"),
    (dict(leak=1.5), ValueError, "leak"),
    (dict(bias_scaling=-1), ValueError, "bias_scaling"),
    (dict(nonlinearity="sigmoid"), ValueError, "nonlinearity"),
    (dict(dtype=np.int32), TypeError, "dtype"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(input_scaling="big"), TypeError, "input_scaling"),
    (dict(input_size=0), ValueError, "input_size"),
])
def test_bad_construction_is_refused_naming_the_argument(bad, error, words):
    arguments = dict(units=10)
    arguments.update(bad)
    with pytest.raises(error, match=words):
        Reservoir(**arguments)


def test_bad_weights_are_refused():
    W = np.eye(4) * 0.5
    with pytest.raises(ValueError, match="W"):
        Reservoir.from_weights(np.ones((4, 3)), np.ones((4, 1)))
    with pytest.raises(ValueError, match="W"):
        Reservoir.from_weights(scipy.sparse.csr_array((4, 3)), np.ones((4, 1)))
    with pytest.raises(TypeError, match="W"):
        Reservoir.from_weights(np.eye(4, dtype=int), np.ones((4, 1)))
    with pytest.raises(ValueError, match="W_in"):
        Reservoir.from_weights(W, np.ones((3, 1)))
    with pytest.raises(TypeError, match="W_in must have the dtype of W"):
        Reservoir.from_weights(W, np.ones((4, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="bias"):
        Reservoir.from_weights(W, np.ones((4, 1)), np.ones(5))
    with pytest.raises(ValueError, match="leak"):
        Reservoir.from_weights(W, np.ones((4, 1)), leak=np.array([0.5, 0.5, 0.5, 2.0]))
    with pytest.raises(ValueError, match="input_scaling has 2 values"):
        Reservoir(10, input_scaling=[1.0, 2.0]).run(np.zeros((3, 3)))


def test_bad_runs_are_refused_before_any_work():
    reservoir = Reservoir(10, seed=0, input_size=2)
    with pytest.raises(ValueError, match="2-D"):
        reservoir.run(np.zeros(5))
    with pytest.raises(ValueError, match="D = 3"):
        reservoir.run(np.zeros((5, 3)))
    with pytest.raises(TypeError, match="u must have dtype"):
        reservoir.run(np.zeros((5, 2), dtype=int))
    with pytest.raises(ValueError, match="T = 0"):
        reservoir.run(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="h0"):
        reservoir.run(np.zeros((5, 2)), h0=np.zeros(9))
    with pytest.raises(ValueError, match="h0"):
        reservoir.run(np.zeros((5, 4, 2)), h0=np.zeros((3, 10)))
    with pytest.raises(MemoryError, match="chunks"):  # said before u's 32 GB copy is made
        reservoir.run(np.broadcast_to(np.zeros(2, dtype=np.float32), (2**31 - 1, 2)))


def test_the_weights_are_the_reservoirs_own():
    W, W_in = np.eye(3) * 0.5, np.ones((3, 1))
    reservoir = Reservoir.from_weights(W, W_in, 0.1, leak=0.5)
    W[0, 0] = W_in[0, 0] = 7.0
    assert reservoir.W[0, 0] == 0.5 and reservoir.W_in[0, 0] == 1.0
    assert not reservoir.W.flags.writeable and not reservoir.W_in.flags.writeable
    np.testing.assert_array_equal(reservoir.bias, np.full(3, 0.1))
    assert Reservoir.from_weights(W, W_in, 0.0).bias is None


@pytest.mark.parametrize("n", [1, 7, 16, 17, 1000])
def test_the_benchmarks_bandwidth_yardstick_reads_every_word(build, n):
    words = np.zeros(n, dtype=np.uint64)
    for i in range(n):  # one bit per word, so a skipped word is missed
        words[i] = np.uint64(1) << np.uint64(i % 64)
    expected = int(np.bitwise_or.reduce(words))
    assert sliced.KERNEL_BUILDS[build].read_words(words, 3) == expected
    words[-1] = np.uint64(1) << np.uint64(63)
    assert sliced.KERNEL_BUILDS[build].read_words(words, 1) & (1 << 63)
