"""Benchmark set-up: pin the thread count, record which BLAS ran, add speed-ups to the JSON.

Run from the repository root (unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which slow a current
OpenBLAS on this machine's processors):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench --benchmark-group-by=group

BLAS, OpenMP, PyTorch and rnnfast run on one thread, with the process pinned to one core, or on
RNNFAST_BENCH_THREADS threads.
pytest-benchmark times one test after another, so its ratios can be skewed by this machine's slow
phases; `rnnfast bench`, which interleaves the candidates, is the figure of record.
"""
import os

import pytest

from rnnfast.benchmarking import SUBJECT, import_torch, pinned_to_one_core
from rnnfast.benchmarking import machine_info as rnnfast_machine_info

try:
    import threadpoolctl
except ImportError:  # the session fixture skips every benchmark, saying how to install it
    threadpoolctl = None


# The machine as the benchmarks saw it (thread libraries under the limits), for machine_info.
_MEASURED_ON = {}


def _bench_threads():
    return int(os.environ.get("RNNFAST_BENCH_THREADS", "1"))


@pytest.fixture(scope="session")
def bench_threads():
    """Threads for BLAS, PyTorch and rnnfast: RNNFAST_BENCH_THREADS, default 1."""
    return _bench_threads()


@pytest.fixture(scope="session", autouse=True)
def pinned_threads(bench_threads):
    """Limit every BLAS and OpenMP library in the process to ``bench_threads``; on one thread,
    pin the process to one core too (as `rnnfast bench` does)."""
    if threadpoolctl is None:
        pytest.skip("the benchmarks need threadpoolctl: pip install threadpoolctl")
    import_torch()  # loaded first, so that its OpenMP runtime is limited as well
    with threadpoolctl.threadpool_limits(limits=bench_threads):
        _MEASURED_ON.update(rnnfast_machine_info())
        if bench_threads == 1:
            with pinned_to_one_core() as core:
                _MEASURED_ON["pinned_core"] = core
                yield
        else:
            yield


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record the BLAS libraries (kernel, version, threads) and the library versions."""
    machine_info["bench_threads"] = _bench_threads()
    machine_info["rnnfast_bench"] = _MEASURED_ON


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Give each benchmark the speed-up of rnnfast's Cython backend over it, within its group
    (peer median / cython median; 1 for cython itself)."""
    subject_median = {bench["group"]: bench["stats"]["median"]
                      for bench in output_json["benchmarks"]
                      if (bench.get("params") or {}).get("impl") == SUBJECT}
    for bench in output_json["benchmarks"]:
        if bench["group"] in subject_median:
            bench["extra_info"]["speedup_of_cython"] = (
                bench["stats"]["median"] / subject_median[bench["group"]])
