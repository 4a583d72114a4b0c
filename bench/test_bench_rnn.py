"""Forward and forward+backward over the grid of `rnnfast bench`: rnnfast's Cython backend against its
NumPy reference, the batched NumPy peer and torch.nn.RNN (skipped when PyTorch is not
installed). One benchmark group per (pass, shape, dtype). And the cost of the per-step gradient
norms: the backward pass alone, without and with return_norms=True, one group per (shape, dtype)
("backward norms ..."):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench --benchmark-group-by=group

The problems, the peers and the FLOP count are those of `rnnfast bench`
(rnnfast.benchmarking). Each benchmark's extra_info carries its GFLOP/s; with
--benchmark-json, also the speed-up of the Cython backend over it (see conftest.py).
"""
import time

import pytest

import rnnfast
from rnnfast.benchmarking import (DTYPES, IMPLEMENTATIONS, PASSES, PEERS, SHAPES, SUBJECT, flops,
                                  make_problem, make_runner)

# The NumPy reference is skipped where one call takes longer than this (measured on the spot,
# so it depends on the machine; on the 2-core development VM its slowest row, 50,64,512,512
# float64 forward+backward, takes about 0.5 s, so nothing is skipped there).
REFERENCE_MAX_ROUND_S = 2.0


def _shape_id(shape):
    return "T{}_B{}_D{}_H{}".format(*shape)


def _warm_up(run):
    """Seconds of one call: first-call costs (PyTorch's autograd set-up, page faults) out of the
    way before pytest-benchmark calibrates its rounds on the next calls."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _skip_slow_reference(seconds):
    """Skip, saying why, when one call of the NumPy reference took over REFERENCE_MAX_ROUND_S."""
    if seconds > REFERENCE_MAX_ROUND_S:
        pytest.skip(f"SLOW REFERENCE: the NumPy reference takes {seconds:.1f} s per round here "
                    f"(> {REFERENCE_MAX_ROUND_S} s)")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("pass_name", PASSES)
def test_rnn(benchmark, bench_threads, pass_name, shape, dtype, impl):
    if not PEERS[impl].available():
        pytest.skip(f"{impl} is not installed")
    run = make_runner(impl, make_problem(shape, dtype), pass_name, bench_threads)
    seconds = _warm_up(run)
    if impl == "numpy":
        _skip_slow_reference(seconds)
    benchmark.group = f"{pass_name} T,B,D,H={','.join(map(str, shape))} {dtype}"
    work = flops(shape, pass_name)
    benchmark.extra_info.update(impl=impl, pass_name=pass_name, shape=list(shape), dtype=dtype,
                                flops=work)
    benchmark(run)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["gflops"] = work / benchmark.stats.stats.median / 1e9


# The backward pass alone, plain and with norms. "cython" is the subject, so in the JSON the
# speedup_of_cython of "cython+norms" is the cost of the norms: its median over plain cython's.
NORMS_IMPLEMENTATIONS = (SUBJECT, "cython+norms")


@pytest.mark.parametrize("impl", NORMS_IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_backward_norms(benchmark, bench_threads, shape, dtype, impl):
    p = make_problem(shape, dtype)
    _, cache = rnnfast.rnn_forward(p.x, p.h0, p.W_xh, p.W_hh, p.b, n_threads=bench_threads)
    return_norms = impl == "cython+norms"

    def run():
        return rnnfast.rnn_backward(p.G, cache, n_threads=bench_threads,
                                    return_norms=return_norms)

    _warm_up(run)
    benchmark.group = f"backward norms T,B,D,H={','.join(map(str, shape))} {dtype}"
    work = flops(shape, "forward+backward") - flops(shape, "forward")
    benchmark.extra_info.update(impl=impl, pass_name="backward", shape=list(shape), dtype=dtype,
                                return_norms=return_norms, flops=work)
    benchmark(run)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["gflops"] = work / benchmark.stats.stats.median / 1e9
