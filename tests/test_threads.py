"""n_threads: the threaded small-step loop agrees with the reference and with one thread, the
argument is validated, and BLAS's own thread count is restored after every call."""
import numpy as np
import pytest

import rnnfast
from rnnfast._kernels import backend as _cython_backend
from rnn_helpers import (
    FLOAT32_VS_FLOAT64,
    GRAD_NAMES,
    PATHS,
    assert_close,
    assert_grads_close,
    force_path,
    make_problem,
)

SMALL_PATHS = [path for path in PATHS if path.startswith("small")]
# Hidden sizes with one block, several blocks, and a narrower last block; B on both sides of 4.
SHAPES = [(4, 1, 3, 16), (5, 3, 4, 40), (3, 6, 2, 70), (2, 9, 5, 33)]


def run(p, nonlinearity, n_threads, backend="cython"):
    out, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, backend=backend,
                                     n_threads=n_threads)
    return out, rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, n_threads=n_threads)


@pytest.fixture(params=SMALL_PATHS)
def threaded_small_path(request, monkeypatch):
    """Small steps of every size go to the threaded loop when n_threads > 1."""
    force_path(monkeypatch, request.param)
    monkeypatch.setattr(_cython_backend.switches, "threads_min_step_flops", 0)
    return request.param


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}D{}H{}".format(*s))
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_threaded_small_steps_agree_with_the_reference(shape, nonlinearity, dtype,
                                                        threaded_small_path):
    p = make_problem(11, *shape, np.float64)
    ref_out, ref_grads = run(p, nonlinearity, 1, backend="numpy")
    out, grads = run(p.astype(dtype), nonlinearity, 2)
    tol = FLOAT32_VS_FLOAT64 if dtype == np.float32 else {"forward": 1e-10, "grad": 1e-10}
    assert_close(out, ref_out, tol["forward"], "out")
    assert_grads_close(grads, ref_grads, tol["grad"])


@pytest.mark.parametrize("n_threads", [2, 3, 7])
def test_the_kernels_give_identical_results_for_any_thread_count(n_threads, threaded_small_path,
                                                                monkeypatch):
    """Each column block is computed by one thread in the serial order, so the time loops are
    bit-identical across thread counts (BLAS, outside them, may round differently)."""
    monkeypatch.setattr(_cython_backend.switches, "cores", n_threads)  # more than this machine's
    p = make_problem(12, 6, 5, 4, 70, np.float32)
    # Sequences of different lengths (sorted, as the kernels take them) end at every step.
    lengths = np.array([6, 6, 4, 3, 1])
    outputs = [rnnfast.rnn_forward(*p.args, lengths=lengths, n_threads=n, need_grad=False)[0]
               for n in (1, n_threads)]
    assert _cython_backend.switches.last_pass[2] == n_threads
    np.testing.assert_array_equal(outputs[1], outputs[0])


@pytest.fixture(params=["always", "never", "adapt"])
def team_mode(request, threaded_small_path):
    """Threaded steps on the team, alone (each step in one go), or as the team's timings
    decide; the session's "always" afterwards."""
    build = _cython_backend.KERNEL_BUILDS[threaded_small_path.split("-")[1]]
    build.reset_team(request.param)
    yield request.param
    build.reset_team("always")


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_every_team_mode_gives_the_bits_of_one_thread(team_mode, nonlinearity, monkeypatch):
    """Each column block is computed the same way on the team, by the caller alone in one go,
    or on one thread: forward, gradients, norms and a leak, with sequences ending at every
    step, bit for bit (the weight gradients' GEMMs are the same calls)."""
    p = make_problem(17, 7, 6, 3, 70, np.float32)
    lengths = np.array([7, 7, 5, 3, 2, 1])
    leak = np.linspace(0.2, 1.0, 70).astype(np.float32)
    results = []
    for n in (1, 3):
        monkeypatch.setattr(_cython_backend.switches, "cores", n)
        out, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, lengths=lengths,
                                         leak=leak, n_threads=n)
        assert _cython_backend.switches.last_pass[2] == n
        grads, norms = rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n, n_threads=n,
                                            return_norms=True)
        results.append((out, norms) + tuple(grads))
    for one, three in zip(*results):
        np.testing.assert_array_equal(three, one)


def test_the_team_runs_tasks_on_its_workers(threaded_small_path):
    """On "always", the workers take part (over many steps some task goes to them)."""
    build = _cython_backend.KERNEL_BUILDS[threaded_small_path.split("-")[1]]
    if _cython_backend.switches.cores < 2:
        pytest.skip("one core")
    p = make_problem(18, 400, 4, 3, 256, np.float32)
    before = build.team_statistics()
    for _ in range(5):
        rnnfast.rnn_forward(*p.args, n_threads=2, need_grad=False)
    late_waits, tasks_by_workers, workers = build.team_statistics()
    assert workers >= 1 and tasks_by_workers > before[1]


def test_no_step_starts_before_the_last_one_is_complete(threaded_small_path):
    """Long passes of short steps on the team, each compared with one thread bit for bit: a
    step that read its input before every task of the step before it was done would differ."""
    if _cython_backend.switches.cores < 2:
        pytest.skip("one core")
    p = make_problem(19, 300, 2, 3, 192, np.float32)
    expected = rnnfast.rnn_forward(*p.args, n_threads=1, need_grad=False)[0]
    for _ in range(40):
        out = rnnfast.rnn_forward(*p.args, n_threads=2, need_grad=False)[0]
        np.testing.assert_array_equal(out, expected)


def test_reset_team_names_the_modes():
    build = next(iter(_cython_backend.KERNEL_BUILDS.values()))
    with pytest.raises(ValueError, match="adapt, always, never"):
        build.reset_team("sometimes")


def test_default_and_explicit_thread_counts_agree(path):
    p = make_problem(13, 4, 8, 6, 48, np.float64)
    out_default, grads_default = run(p, "tanh", None)
    out_one, grads_one = run(p, "tanh", 1)
    assert_close(out_default, out_one, 1e-12, "out")
    assert_grads_close(grads_default, grads_one, 1e-12)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                        ("2", TypeError), (True, TypeError)])
def test_bad_n_threads_is_rejected(bad, error):
    p = make_problem(14, 2, 1, 2, 3)
    with pytest.raises(error, match="n_threads"):
        rnnfast.rnn_forward(*p.args, n_threads=bad)
    _, cache = rnnfast.rnn_forward(*p.args)
    with pytest.raises(error, match="n_threads"):
        rnnfast.rnn_backward(p.dout, cache, n_threads=bad)


def test_blas_thread_count_is_restored():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()]
    run(make_problem(15, 3, 4, 5, 6), "tanh", 1)
    assert [lib["num_threads"] for lib in threadpoolctl.threadpool_info()] == before


def test_numpy_integer_thread_counts_are_accepted():
    p = make_problem(16, 2, 2, 2, 3)
    out, grads = run(p, "tanh", np.int64(2))
    expected_out, expected_grads = run(p, "tanh", 2)
    np.testing.assert_array_equal(out, expected_out)
    for name in GRAD_NAMES:
        np.testing.assert_array_equal(getattr(grads, name), getattr(expected_grads, name))

