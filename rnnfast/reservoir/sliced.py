"""The sparse step: W in the sliced layout the kernel reads, the pass around the kernel, and the
switch between it and the dense kernels.

The kernel (_sparse_step_impl.pxi) runs a whole series in one call without the GIL; this module
builds its matrix once per reservoir (``SlicedMatrix``), allocates and fills the input
projection, and says where the sparse step is the faster one (``use_sparse_step``).
"""
from typing import NamedTuple

import numpy as np
import scipy.sparse

from rnnfast._kernels import backend as _dense_backend
from rnnfast.reservoir import _sparse_step

__all__ = ["SlicedMatrix", "sliced_matrix", "sparse_forward", "use_sparse_step",
           "SPARSE_MAX_DENSITY", "SLICE_ROWS", "KERNEL_BUILDS"]

SLICE_ROWS = _sparse_step.SLICE_ROWS


def _kernel_builds():
    """The compiled builds of the sparse step this machine runs, by the dense kernels' names."""
    builds = {"baseline": _sparse_step}
    if "avx2" in _dense_backend.KERNEL_BUILDS:  # the processor has AVX2 and FMA
        from rnnfast.reservoir import _sparse_step_avx2

        builds["avx2"] = _sparse_step_avx2
    return builds


KERNEL_BUILDS = _kernel_builds()
# The build the dense kernels run (RNNFAST_KERNEL=baseline forces the portable one for both).
# The dense kernels' AVX-512 build differs in its GEMM only: the sparse step runs the AVX2 one.
KERNEL = _dense_backend.KERNEL if _dense_backend.KERNEL in KERNEL_BUILDS else "avx2"


# The switch between the sparse and the dense step, the one place it lives: the sparse step
# runs when W's density (nonzeros / H^2) is at most this, for B series at once. Measured on
# this project's 2-core AMD EPYC (Zen 4), float64, one core, H = 100..1000, against the dense
# kernels through rnn_forward(need_grad=False) as they are at this commit
# (bench/test_bench_reservoir.py --crossover): the sparse step costs about 0.8 cycles per
# nonzero for one series, where the dense kernel pays ~0.6 per entry of W at B = 1.
SPARSE_MAX_DENSITY = {1: 0.5, 16: 0.4}


def use_sparse_step(H, nnz, B):
    """Whether a step of B series on an H x H matrix with nnz nonzeros runs sparse."""
    limit = SPARSE_MAX_DENSITY[1] if B == 1 else SPARSE_MAX_DENSITY[16]
    return nnz <= limit * H * H


class SlicedMatrix(NamedTuple):
    """W (H, H) in the kernel's sliced layout (see _sparse_step_impl.pxi): rows sorted by their
    number of nonzeros, longest first, SLICE_ROWS to a slice, each slice column-major and padded
    with zeros in column H."""

    values: np.ndarray  # (padded,) the dtype of the reservoir
    columns: np.ndarray  # (padded,) uint16 up to H = 65535, else int32
    slice_start: np.ndarray  # (n_slices + 1,) intp: where each slice starts, multiples of SLICE_ROWS
    order: np.ndarray  # (n_slices * SLICE_ROWS,) intp: sorted row -> unit (H: no row)
    row_length: np.ndarray  # (n_slices * SLICE_ROWS,) intp: nonzeros of each sorted row
    nnz: int  # nonzeros of W (explicit zeros included)
    H: int  # W's size

    @property
    def nbytes(self):
        """The bytes one step reads of the matrix: what a bandwidth bound counts."""
        return sum(a.nbytes for a in (self.values, self.columns, self.slice_start, self.order,
                                      self.row_length))


def sliced_matrix(W, dtype):
    """W (an (H, H) scipy.sparse matrix or ndarray, already checked) as a SlicedMatrix of
    dtype. Duplicate entries are summed (as scipy's products do); explicit zeros are kept."""
    csr = scipy.sparse.csr_array(W, dtype=dtype, copy=True)
    csr.sum_duplicates()  # also sorts each row's columns, so that the gathers run in order
    H = csr.shape[0]
    lengths = np.diff(csr.indptr)
    n_slices = -(-H // SLICE_ROWS)
    order = np.full(n_slices * SLICE_ROWS, H, dtype=np.intp)
    order[:H] = np.argsort(-lengths, kind="stable")
    row_length = np.zeros(n_slices * SLICE_ROWS, dtype=np.intp)
    row_length[:H] = lengths[order[:H]]
    # A slice is as long as its first (longest) row.
    slice_start = np.zeros(n_slices + 1, dtype=np.intp)
    np.cumsum(row_length[::SLICE_ROWS] * SLICE_ROWS, out=slice_start[1:])
    column_dtype = np.uint16 if H <= np.iinfo(np.uint16).max else np.int32
    values = np.zeros(slice_start[-1], dtype=dtype)
    columns = np.full(slice_start[-1], H, dtype=column_dtype)
    # Entry k of sorted row p goes to slice_start[p // SLICE_ROWS] + k * SLICE_ROWS + p % SLICE_ROWS.
    position = np.empty(H, dtype=np.intp)
    position[order[:H]] = np.arange(H)
    row_of_entry = np.repeat(position, lengths)
    k = np.arange(csr.nnz) - np.repeat(csr.indptr[:-1], lengths)
    target = (slice_start[row_of_entry // SLICE_ROWS] + k * SLICE_ROWS
              + row_of_entry % SLICE_ROWS)
    values[target] = csr.data
    columns[target] = csr.indices
    return SlicedMatrix(values, columns, slice_start, order, row_length, int(csr.nnz), H)


def _specialisation(build, dtype, column_dtype):
    """The kernel's version for these types, called directly (Cython's dispatch on the argument
    types costs microseconds per call)."""
    floating = "float" if dtype == np.float32 else "double"
    column = "uint16_t" if column_dtype == np.uint16 else "int32_t"
    return KERNEL_BUILDS[build].forward_pass[f"{floating}|{column}"]


_EMPTY = {np.dtype(np.float32): np.empty(0, np.float32),
            np.dtype(np.float64): np.empty(0, np.float64)}

# Series per block for B > 1 (see _sparse_step_impl.pxi): the more, the more work each entry
# of W loads does; measured best at 16 for H = 100..1000 (B = 16, float64), where a block's
# state, (H + 1) x 16 numbers, is in the L1 cache at H = 100 and in L2 beyond.
MAX_SERIES_BLOCK = 16
# The input projection runs on chunks of steps of about this many bytes of out, so that each
# chunk is still in the L2 cache (1 MiB here) when its steps read it.
CHUNK_BYTES = 256 << 10


def series_block(B):
    """Series per block for a step of B series (1 for B = 1)."""
    return min(B, MAX_SERIES_BLOCK)


def sparse_forward(matrix, x, h0, W_in, bias, leak, relu, build=None, block=None):
    """The states (T, B, H) of a pass over x (T, B, D), C-contiguous, from h0 (B, H) (None:
    zeros), with W as the SlicedMatrix ``matrix``, W_in (H, D), bias (H,) or None, leak a
    number or (H,) (None: no leak). Arrays arrive checked, contiguous and of one dtype.
    build: the compiled build to run (default: the dense kernels' choice); block: series per
    block (default: series_block(B)).
    """
    T, B, D = x.shape
    H = W_in.shape[0]
    dtype = x.dtype
    out = np.empty((T, B, H), dtype=dtype)
    if h0 is None:
        h0 = np.zeros((B, H), dtype=dtype)
    block = block or series_block(B)
    size = -(-B // block) * (H + 1) * block
    state, scratch = np.zeros((2, size), dtype=dtype), np.zeros((2, size), dtype=dtype)
    if leak is None:
        alpha = _EMPTY[dtype]
    else:
        alpha = np.repeat(np.broadcast_to(np.asarray(leak, dtype=dtype), (H,)), block)
    kernel = _specialisation(build or KERNEL, dtype, matrix.columns.dtype)
    chunk = max(1, CHUNK_BYTES // (B * H * dtype.itemsize))
    kernel(x, np.ascontiguousarray(W_in.T), _EMPTY[dtype] if bias is None else bias, h0, out,
           matrix.values,
           matrix.columns, matrix.slice_start, matrix.order, matrix.row_length, alpha, state,
           scratch, block, chunk, relu)
    return out
