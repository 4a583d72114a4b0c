"""Benchmark set-up: record which BLAS ran, and pin BLAS to one thread unless asked otherwise.

Run from the repository root (unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which slow a current
OpenBLAS on this machine's processors):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench --benchmark-group-by=group
"""
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def single_threaded_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    threads = int(os.environ.get("RNNFAST_BENCH_THREADS", "1"))
    with threadpoolctl.threadpool_limits(threads):
        yield


def pytest_benchmark_update_machine_info(config, machine_info):
    import numpy
    import scipy
    import threadpoolctl

    machine_info["numpy"] = numpy.__version__
    machine_info["scipy"] = scipy.__version__
    machine_info["blas"] = [
        {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                  "filepath")}
        for info in threadpoolctl.threadpool_info()
    ]
