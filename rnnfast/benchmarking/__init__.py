"""Benchmarking rnnfast against its peers: the problems (problems), the candidates as runners
(peers), the interleaved timer and the one-core pinning (timing), what it ran on (machine),
and whole runs over a grid of shapes (grid) or over batch sizes (batch_sweep). `rnnfast
bench`, `rnnfast demo` and the pytest-benchmark suite in bench/ are built on it; nothing here
prints."""
from rnnfast.benchmarking.batch_sweep import BATCHES, BatchSweep, sweep_batches
from rnnfast.benchmarking.grid import (AGREEMENT, MODES, YARDSTICK, BenchmarkRun, Row,
                                       measure_row, run_benchmark, timing_settings)
from rnnfast.benchmarking.machine import (SLOW_BLAS_ENV, machine_info, slow_blas_environment,
                                          thread_libraries)
from rnnfast.benchmarking.peers import (IMPLEMENTATIONS, ORACLE, PEERS, SUBJECT, Peer,
                                        available_implementations, batched_backward,
                                        batched_forward, import_torch, make_runner,
                                        relative_error, result_error)
from rnnfast.benchmarking.problems import (DTYPES, PASSES, QUICK_SHAPES, SHAPES, Problem, flops,
                                           make_problem)
from rnnfast.benchmarking.timing import (GEMM_SIZES, WINDOW_S, gemm_throughput, paired_ratio,
                                         pinned_to_one_core, time_interleaved, warm_up)

__all__ = ["SHAPES", "QUICK_SHAPES", "DTYPES", "PASSES", "Problem", "make_problem", "flops",
           "Peer", "PEERS", "IMPLEMENTATIONS", "SUBJECT", "ORACLE", "make_runner",
           "available_implementations", "import_torch", "batched_forward", "batched_backward",
           "relative_error", "result_error", "WINDOW_S", "time_interleaved", "warm_up",
           "paired_ratio",
           "pinned_to_one_core", "gemm_throughput", "machine_info", "thread_libraries",
           "slow_blas_environment", "SLOW_BLAS_ENV", "Row", "BenchmarkRun", "measure_row",
           "run_benchmark", "timing_settings", "AGREEMENT", "YARDSTICK", "MODES", "BATCHES",
           "BatchSweep", "sweep_batches", "GEMM_SIZES"]
