"""Build of rnnfast's Cython extensions. Everything else is declared in pyproject.toml.

Environment variables (all off by default, never set in CI):
  RNNFAST_NATIVE=1  compile with -march=native (faster on the build machine, not portable).
  RNNFAST_DEBUG=1   turn Cython's bounds, wraparound and initialisation checks back on.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup


def _flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


debug = _flag("RNNFAST_DEBUG")
compile_args = ["-O3"]
if _flag("RNNFAST_NATIVE"):
    compile_args.append("-march=native")
if debug:
    compile_args += ["-O1", "-g"]

directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "nonecheck": debug,
    "cdivision": True,
}

extensions = [
    Extension(f"rnnfast.{name}", [f"rnnfast/{name}.pyx"], extra_compile_args=compile_args)
    for name in ("_blas", "_recurrence")
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
