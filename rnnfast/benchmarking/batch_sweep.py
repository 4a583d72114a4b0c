"""GFLOP/s against the batch size: one shape family (T, B, D, H) with B from 1 up, every
candidate on one thread and on two, and the machine's GEMM peak on as many, for the picture of
`rnnfast bench --plot`. Each thread count is one ``run_benchmark`` over the batch sizes (one
thread pinned to one core, as there); nothing here prints or draws."""
from dataclasses import dataclass

from rnnfast.benchmarking.grid import run_benchmark
from rnnfast.benchmarking.timing import GEMM_SIZES
from rnnfast.utils.threads import available_cores

__all__ = ["BATCHES", "BatchSweep", "sweep_batches"]

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PASS = "forward+backward"


@dataclass
class BatchSweep:
    """What sweep_batches measured: runs[n_threads] is the BenchmarkRun on that many threads,
    one row per batch size."""

    T: int
    D: int
    H: int
    dtype: str
    batches: tuple
    runs: dict  # n_threads -> BenchmarkRun

    @property
    def impls(self):
        return next(iter(self.runs.values())).impls

    def gflops(self, impl, n_threads, mode="hot"):
        """GFLOP/s of ``impl`` at each batch size, on n_threads threads."""
        return [row.gflops(impl, mode) for row in self.runs[n_threads].rows]

    def gemm_peak(self, n_threads):
        """The best GFLOP/s of the GEMM yardstick (NumPy's matmul) on n_threads threads."""
        return self.runs[n_threads].yardstick()[self.dtype]


def sweep_batches(impls, batches=BATCHES, T=50, D=256, H=256, dtype="float32",
                  thread_counts=None, timing=None, gemm_sizes=GEMM_SIZES, on_row=None):
    """Forward + backward of every candidate in ``impls`` at (T, B, D, H) for each B in
    ``batches``, on each of ``thread_counts`` (default 1 and 2, as the cores allow).

    Parameters
    ----------
    impls : list of str
        Names of ``PEERS``, with the subject ("cython") and the oracle ("numpy").
    timing : dict or None
        ``timing_settings(...)``, as for ``run_benchmark``.
    gemm_sizes : tuple of int
        Square GEMM sizes of the peak (smaller ones for a quick look).
    on_row : callable or None
        Called as on_row(n_threads, i, n, shape, dtype, pass_name) before each row.

    Returns
    -------
    BatchSweep
    """
    if thread_counts is None:
        thread_counts = (1, 2) if available_cores() >= 2 else (1,)
    runs = {}
    for n_threads in thread_counts:
        def row_started(*row, n_threads=n_threads):
            if on_row is not None:
                on_row(n_threads, *row)

        runs[n_threads] = run_benchmark([(T, B, D, H) for B in batches], [dtype], [PASS],
                                        impls, threads=n_threads, timing=timing,
                                        quick=True, on_row=row_started, gemm_sizes=gemm_sizes)
    return BatchSweep(T, D, H, dtype, tuple(batches), runs)

