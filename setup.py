"""Build of rnnfast's Cython extensions. Everything else is declared in pyproject.toml.

Environment variables (all off by default, never set in CI):
  RNNFAST_NATIVE=1  compile with -march=native (faster on the build machine, not portable).
  RNNFAST_DEBUG=1   turn Cython's bounds, wraparound and initialisation checks back on.
  RNNFAST_ASAN=1    compile and link with AddressSanitizer (where the compiler has it), to catch
                    out-of-bounds accesses and use-after-free in the kernels; combinable with
                    RNNFAST_DEBUG. Python must then load the ASan runtime first:
                      LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
                          python -m pytest
"""
import os
import platform
import shlex
import subprocess
import sys
import sysconfig
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup


def _flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


debug = _flag("RNNFAST_DEBUG")
asan = _flag("RNNFAST_ASAN")
# -fno-trapping-math lets the compiler evaluate both sides of a select in SIMD (the fast tanh);
# results do not change, only floating-point exception flags, which nothing here reads.
compile_args = ["-O3", "-fno-trapping-math"]
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



def _compiler_accepts(flags, program):
    """Whether the C compiler builds and links program (C source) with flags."""
    if sys.platform == "win32":
        return False
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "check.c")
        with open(source, "w") as file:
            file.write(program)
        command = compiler + flags + [source, "-o", os.path.join(folder, "check")]
        try:
            return subprocess.run(command, capture_output=True).returncode == 0
        except OSError:
            return False


# OpenMP for Cython's prange where a kernel uses it (the threaded time loops run on rnnfast's own
# team of threads instead, rnnfast/_kernels/team.h); where the compiler lacks it, the pragmas
# are ignored and the loops run on one thread.
_OPENMP_PROGRAM = "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n"
openmp = ["-fopenmp"] if _compiler_accepts(["-fopenmp"], _OPENMP_PROGRAM) else []

# AddressSanitizer instruments every memory access of the extensions. Python, NumPy and BLAS are
# not rebuilt, but the preloaded runtime puts red zones around every malloc, so the kernels'
# reads and writes past NumPy's buffers are caught too (not those BLAS makes). The frame
# pointer gives readable stack traces.
asan_flags = []
if asan:
    if _compiler_accepts(["-fsanitize=address", "-fno-omit-frame-pointer"],
                         "int main(void) { return 0; }\n"):
        asan_flags = ["-fsanitize=address", "-fno-omit-frame-pointer"]
        compile_args += asan_flags + ["-g"]
    else:  # said loudly: a build believed to be checked would be worse than none
        print("RNNFAST_ASAN=1: this C compiler cannot build with -fsanitize=address; building "
              "WITHOUT AddressSanitizer", file=sys.stderr)


# C headers the extensions include, by package: an edit to one must recompile them (Cython
# tracks .pxd/.pxi).
C_HEADERS = {"_kernels": ["rnnfast/_kernels/microkernel.h", "rnnfast/_kernels/microkernel_impl.h",
                          "rnnfast/_kernels/gemm.h", "rnnfast/_kernels/gemm_impl.h",
                          "rnnfast/_kernels/natural.h", "rnnfast/_kernels/natural_dot_impl.h",
                          "rnnfast/_kernels/natural_axpy_impl.h",
                          "rnnfast/_kernels/natural_undef.h",
                          "rnnfast/_kernels/scratch.h", "rnnfast/_kernels/team.h"],
             "reservoir": ["rnnfast/reservoir/sliced_kernel.h",
                           "rnnfast/reservoir/sliced_kernel_impl.h"],
             "train.optim": ["rnnfast/train/optim/adam_kernel.h"]}


# Cython's `cdef inline` becomes a plain C `inline`, a hint: GCC 12 then kept the vectorised
# tanh (activation.pxd) as a call per element inside the epilogue loops, which could no longer
# vectorise (measured: 8 ns an element, a float32 32 x 128 forward step 3.5x slower than with
# relu). In the kernels every `cdef inline` is a small helper of a hot loop: always inlined.
FORCE_INLINE = ("CYTHON_INLINE", "__inline__ __attribute__((always_inline))")


def _extension(name, extra_args=(), parallel=True, numpy_api=False, package="_kernels",
               force_inline=True):
    flags = compile_args + list(extra_args) + (openmp if parallel else [])
    folder = "rnnfast/" + package.replace(".", "/")
    include_dirs = [folder]
    macros = [FORCE_INLINE] if force_inline and not debug and sys.platform != "win32" else []
    if numpy_api:  # the compiled entry checks and allocates arrays with NumPy's C API
        import numpy

        include_dirs.append(numpy.get_include())
        macros.append(("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"))
    return Extension(f"rnnfast.{package}.{name}", [f"{folder}/{name}.pyx"],
                     include_dirs=include_dirs, define_macros=macros,
                     extra_compile_args=flags, depends=C_HEADERS.get(package, []),
                     extra_link_args=(openmp if parallel else []) + asan_flags)


# The sparse reservoir step (rnnfast/reservoir/_sparse_step_impl.pxi), one thread, no BLAS.
extensions = [_extension("blas", parallel=False), _extension("recurrence"),
              _extension("entry", parallel=False, numpy_api=True, force_inline=False),
              _extension("_sparse_step", parallel=False, package="reservoir"),
              # The training step's small loops, beside the Python that calls them: the
              # embedding's scatter-add, and Adam's update, without fused multiply-adds (they
              # would change its NumPy bits) and errno (so that its square roots vectorise).
              _extension("_scatter_add", parallel=False, package="nn"),
              _extension("_adam", ["-ffp-contract=off", "-fno-math-errno"], parallel=False,
                         package="train.optim")]
# On x86-64 the kernels are compiled a second time with AVX2 and FMA, which doubles the SIMD
# width and fuses multiply-adds; rnnfast/_kernels/backend.py picks that build at run time when
# the processor has them, so the package stays portable without -march=native. The sparse
# reservoir step follows the same choice (rnnfast/reservoir/sliced.py).
if platform.machine().lower() in {"x86_64", "amd64"} and sys.platform != "win32":
    extensions.append(_extension("recurrence_avx2", ["-mavx2", "-mfma"]))
    # A third compilation with AVX-512 (F, VL) for the large steps' GEMM (gemm.h): 32 vector
    # registers hold a 12-row tile of two 512-bit vectors, measured 1.2-1.4x the AVX2 tile's
    # GFLOP/s on this project's Zen 4 (both near its two 256-bit FMA pipes' peak otherwise).
    extensions.append(_extension("recurrence_avx512",
                                 ["-mavx512f", "-mavx512vl", "-mavx2", "-mfma"]))
    extensions.append(_extension("_sparse_step_avx2", ["-mavx2", "-mfma"], parallel=False,
                                 package="reservoir"))

# Each flavour writes its C files to its own folder: cythonize regenerates C only when the .pyx
# is newer than the .c, so with one folder a debug build after a release build would silently
# compile the release C (no bounds checks), and the other way round.
flavour = "debug" if debug else "release"
setup(ext_modules=cythonize(extensions, compiler_directives=directives,
                            build_dir=os.path.join("build", f"cython-{flavour}")))
