"""What a benchmark ran on: the CPU and its SIMD extensions, the core count, the versions of
the libraries, and the BLAS and OpenMP libraries loaded in the process (their kernel and thread
count, as threadpoolctl sees them)."""
import os
import platform
import sys

import numpy as np

import rnnfast

__all__ = ["machine_info", "thread_libraries", "slow_blas_environment", "SLOW_BLAS_ENV"]

# Environment variables, set on some machines, that make a current OpenBLAS slower.
SLOW_BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _cpu_model():
    """The CPU model name from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags(wanted=("avx", "avx2", "fma", "avx512f")):
    """Which of the SIMD extensions that matter here the CPU reports (Linux only)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in wanted if flag in present]
    except OSError:
        pass
    return []


def _versions():
    import scipy

    torch = sys.modules.get("torch")
    return {"python": platform.python_version(), "rnnfast": rnnfast.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__,
            "torch": torch.__version__ if torch else None}


def _library_owner(filepath):
    """Which package a shared library came with, from the folder a wheel puts it in; "system"
    for the operating system's (rnnfast's OpenMP runtime, shared with PyTorch when rnnfast is
    imported first: both ask for libgomp.so.1)."""
    owners = {"numpy.libs": "numpy", "scipy.libs": "scipy, called by rnnfast's kernels",
              "torch": "torch"}
    parts = (filepath or "").split(os.sep)
    fallback = "system" if (filepath or "").startswith(("/usr/", "/lib")) else "?"
    return next((owner for folder, owner in owners.items() if folder in parts), fallback)


def thread_libraries():
    """The BLAS and OpenMP libraries loaded in this process, as threadpoolctl sees them, in a
    fixed order (by file)."""
    import threadpoolctl

    keys = ("user_api", "internal_api", "version", "architecture", "num_threads",
            "threading_layer", "filepath")
    libraries = [{key: info.get(key) for key in keys} for info in threadpoolctl.threadpool_info()]
    for library in libraries:
        library["owner"] = _library_owner(library["filepath"])
    return sorted(libraries, key=lambda library: library["filepath"] or "")


def machine_info():
    """CPU, core count, library versions and the thread libraries (BLAS and its kernel)."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": _cpu_model(), "cpu_flags": _cpu_flags(), "cores": os.cpu_count(),
            "usable_cores": len(affinity) if affinity else os.cpu_count(),
            "platform": platform.platform(), "versions": _versions(),
            "thread_libraries": thread_libraries()}


def slow_blas_environment():
    """The environment variables set here that make a current OpenBLAS slower."""
    return [name for name in SLOW_BLAS_ENV if name in os.environ]
