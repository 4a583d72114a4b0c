"""pytest configuration: the fixtures ``path``, ``any_path`` and ``one_torch_thread``, tests/
on sys.path for rnn_helpers, and the hypothesis profiles.

The tolerance table, the random problems and the comparison live in rnn_helpers.py, which test
modules import by name; under --import-mode=importlib (pyproject.toml) that needs this directory
on sys.path. Only tests/ is added, never the repository root, so ``import rnnfast`` still finds
the installed package.
"""
import os
import sys

import pytest
from hypothesis import settings

# Every hypothesis test draws the same examples on every run, so that CI's result depends on
# the code alone; `pytest --hypothesis-profile=explore` draws new ones (a search for bugs).
settings.register_profile("reproducible", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("reproducible")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rnn_helpers import PATHS, force_path  # noqa: E402
from rnnfast._kernels import backend as _cython_backend  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def threaded_steps_on_the_team():
    """Threaded steps always go to the team of threads (rnnfast/_kernels/team.h), in every
    build: left to measure whether it pays, the team would run a test's few steps on one
    thread or on several as the machine's load has it. Tests of the other ways set theirs."""
    for build in _cython_backend.KERNEL_BUILDS.values():
        build.reset_team("always")
    yield
    for build in _cython_backend.KERNEL_BUILDS.values():
        build.reset_team("adapt")


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    """Run the test once on each path of the Cython backend (step kernel x compiled build)."""
    force_path(monkeypatch, request.param)
    return request.param


@pytest.fixture(params=list(PATHS) + ["small-threaded"])
def any_path(request, monkeypatch):
    """Every kernel path, and the small-step loop on two threads (n_threads > 1 needed)."""
    if request.param == "small-threaded":
        force_path(monkeypatch, f"small-{_cython_backend.KERNEL}")
        monkeypatch.setattr(_cython_backend.switches, "threads_min_step_flops", 0)
        monkeypatch.setattr(_cython_backend.switches, "cores", 2)
    else:
        force_path(monkeypatch, request.param)
    return request.param


@pytest.fixture(params=[("numpy", None)] + [("cython", path) for path in PATHS],
                ids=["numpy"] + [f"cython-{path}" for path in PATHS])
def backend(request, monkeypatch):
    """The backend name to pass to rnn_forward: the reference, and Cython on each path."""
    name, path = request.param
    if path is not None:
        force_path(monkeypatch, path)
    return name


@pytest.fixture
def one_torch_thread():
    """torch's intra-op pool is not needed for the torch tests' sizes; keep the 2-core machine
    calm (and the thread count the same for every test)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
