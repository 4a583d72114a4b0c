"""rnnfast.benchmarking as a library: every peer computes what the reference computes, the
interleaved timer gives every candidate its rounds in rotating order, the paired ratio, the
one-core pinning and the report of a whole (tiny) run. Nothing here times anything."""
import os

import numpy as np
import pytest

from rnnfast import benchmarking
from rnnfast.benchmarking import (PEERS, make_problem, make_runner, relative_error, result_error,
                                  time_interleaved)


@pytest.mark.parametrize("impl", list(PEERS))
@pytest.mark.parametrize("pass_name", benchmarking.PASSES)
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 1e-4)])
def test_every_peer_computes_the_references_results(impl, pass_name, dtype, tol):
    if not PEERS[impl].available():
        pytest.skip(f"{impl} is not installed")
    problem = make_problem((7, 3, 4, 5), dtype, seed=1)
    expected = make_runner("numpy", problem, pass_name)()
    result = make_runner(impl, problem, pass_name)()
    assert (result[1] is None) == (pass_name == "forward")
    assert result_error(result, expected) < tol
    if result[1] is not None:
        assert len(result[1]) == 5  # dx, dh0, dW_xh, dW_hh, db


def test_result_error_sees_a_wrong_gradient():
    problem = make_problem((4, 2, 3, 3), "float64")
    expected = make_runner("numpy", problem, "forward+backward")()
    out, grads = expected
    wrong = (out, grads[:3] + (grads[3] * 1.01,) + grads[4:])
    assert result_error(wrong, expected) == pytest.approx(0.01, rel=1e-6)
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0


def test_unknown_implementation_is_named():
    with pytest.raises(ValueError, match="unknown implementation 'numbat'"):
        make_runner("numbat", make_problem((2, 1, 1, 1), "float32"), "forward")


def test_problem_and_flops():
    p = make_problem((5, 2, 3, 4), "float32", seed=3)
    assert p.x.shape == (5, 2, 3) and p.G.shape == (5, 2, 4) and p.x.dtype == np.float32
    assert np.all(np.abs(p.W_hh) <= 0.5)  # uniform(-1/sqrt(H), 1/sqrt(H))
    assert benchmarking.flops((5, 2, 3, 4), "forward") == 2 * 5 * 2 * 4 * (3 + 4)
    assert benchmarking.flops((5, 2, 3, 4), "forward+backward") == 3 * 2 * 5 * 2 * 4 * 7


def test_time_interleaved_rotates_the_first_candidate_and_counts_windows():
    order = []
    runners = {name: (lambda n=name: order.append(n)) for name in "abc"}
    samples, calls = time_interleaved(runners, budget_s=0.0, min_windows=4, max_windows=4,
                                      window_s=0.0)
    assert calls == {"a": 1, "b": 1, "c": 1}
    assert {name: len(s) for name, s in samples.items()} == {"a": 4, "b": 4, "c": 4}
    rounds = [order[3 + 3 * i:6 + 3 * i] for i in range(4)]  # after one sizing call each
    assert rounds == [list("abc"), list("bca"), list("cab"), list("abc")]


def test_paired_ratio_is_the_median_of_the_per_round_ratios():
    assert benchmarking.paired_ratio([2.0, 4.0, 30.0], [1.0, 1.0, 1.0]) == 4.0


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_pinning_to_one_core_is_undone():
    allowed = os.sched_getaffinity(0)
    with benchmarking.pinned_to_one_core() as core:
        assert os.sched_getaffinity(0) == {core} and core in allowed
    assert os.sched_getaffinity(0) == allowed


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="threads not listed here")
def test_pinning_to_one_core_pins_the_threads_started_before():
    """Other libraries' pools exist before the block: they must not run on a second core."""
    import threading

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        allowed = os.sched_getaffinity(worker.native_id)
        with benchmarking.pinned_to_one_core() as core:
            assert os.sched_getaffinity(worker.native_id) == {core}
        assert os.sched_getaffinity(worker.native_id) == allowed
    finally:
        stop.set()
        worker.join()


def test_a_tiny_run_reports_every_row_and_setting():
    pytest.importorskip("threadpoolctl")
    impls = benchmarking.available_implementations(exclude=("torch",))
    seen = []
    run = benchmarking.run_benchmark(
        [(3, 1, 2, 5)], ["float32"], ["forward", "forward+backward"], impls,
        timing=benchmarking.timing_settings(rounds=2), quick=True,
        on_row=lambda *row: seen.append(row))
    assert [row[:2] for row in seen] == [(1, 2), (2, 2)]
    assert [row.pass_name for row in run.rows] == ["forward", "forward+backward"]
    assert not run.disagreeing()
    report = run.to_json(warnings=["w"])
    assert report["settings"]["implementations"] == impls and report["warnings"] == ["w"]
    row = report["rows"][1]
    assert set(row["speedup_of_cython"]) == set(benchmarking.MODES)
    for mode in benchmarking.MODES:
        assert set(row["speedup_of_cython"][mode]) == set(impls) - {"cython"}
        assert row["best_peer"][mode] in set(impls) - {"cython"}
        assert all(len(windows) == 2
                   for windows in row["seconds_per_call_by_window"][mode].values())
    assert row["flops"] == benchmarking.flops((3, 1, 2, 5), "forward+backward")
