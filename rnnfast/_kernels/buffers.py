"""What the passes allocate, as lists of buffers, and the memoised test that they fit.

forward_buffers and backward_buffers list every buffer a pass allocates that grows with its
arguments, as (description, shape, np.dtype): rnnfast.functional and the layers check a
call's memory from them (rnnfast.utils.memory), and tests/test_memory.py measures them against
what the passes really allocate. Most calls pay one lookup: whether a pass surely fits is
memoised by its arguments (forward_fits, backward_fits).
"""
import functools
import math

import numpy as np

from rnnfast._kernels.builds import COLUMN_PAD, MIN_BLOCK_BYTES
from rnnfast.utils.memory import surely_fits

__all__ = ["forward_buffers", "backward_buffers", "step_matrix_shape", "batch_order",
           "threaded_square_rows", "total_bytes", "forward_fits", "backward_fits"]

_INTP, _FLOAT64 = np.dtype(np.intp), np.dtype(np.float64)
# The largest W_xh whose products a pass on several threads shares on rnnfast's GEMM, packed in
# panels (the default of Switches.gemm_products_max_bytes, rnnfast/_kernels/entry.pyx).
GEMM_PRODUCTS_MAX_BYTES = 1 << 19


def product_panels_buffers(D, H, dtype):
    """The scratch of W_xh in GEMM panels (K x (N + 64) for K, N = D, H) that a pass whose
    products are shared on several threads may take: none for a W_xh beyond
    GEMM_PRODUCTS_MAX_BYTES."""
    if D * H * dtype.itemsize > GEMM_PRODUCTS_MAX_BYTES:
        return []
    return [("W_xh in GEMM panels, products on several threads (D, H + 64)", (D, H + 64),
             dtype)]


def step_matrix_shape(H):
    """The shape of the kernels' step matrix, W_hh^T or W_hh with its rows zero-padded to a
    multiple of COLUMN_PAD (a whole number of micro-kernel column blocks)."""
    return (H, H + -H % COLUMN_PAD)


def batch_order(lengths):
    """How the kernels take a batch with these lengths (an array, or None): None without
    lengths; "sorted" when they come longest first already; "reordered" when the batch is
    sorted by length for the kernels and back."""
    if lengths is None:
        return None
    return "reordered" if np.any(lengths[1:] > lengths[:-1]) else "sorted"


def forward_buffers(T, B, D, H, dtype, h0=True, order=None, leaky=False, noise=False,
                    state_noise=False, need_grad=True):
    """What a forward pass (rnnfast/_kernels/entry.pyx, with backend.py for a reordered batch)
    allocates for these arguments: two lists of (description, shape,
    np.dtype), what it returns or keeps for the backward pass, and what it frees before
    returning (inputs arrive contiguous: their copies are the caller's). h0, noise,
    state_noise: whether they are given; order: batch_order(lengths).

    These lists (and backward_buffers') add up buffers that are not all alive at once (a
    sorted copy is freed before the caller's order is restored): their total is an upper
    bound of a pass's peak, by less than their largest buffer (tests/test_memory.py measures
    both)."""
    # With need_grad the states are kept with h0 (or zeros) before them: out is a view.
    kept = [("the states h0, h_1..h_T (T + 1, B, H)", (T + 1, B, H), dtype) if need_grad
            else ("out (T, B, H)", (T, B, H), dtype)]
    scratch = [("the step matrix (H, H padded)", step_matrix_shape(H), dtype),
               ("the rows active at each step (T,)", (T,), _INTP)]
    scratch += product_panels_buffers(D, H, dtype)
    if leaky:
        if need_grad:
            kept.append(("act(a_t) for the backward pass (T, B, H)", (T, B, H), dtype))
        else:
            scratch.append(("act(a_t) of one step (B, H)", (B, H), dtype))
    if not h0 and not need_grad:
        scratch.append(("a zero initial state (B, H)", (B, H), dtype))
    if order is not None:
        scratch.append(("lengths, their order and its inverse (3, B)", (3, B), _INTP))
    if order == "reordered":  # the kernels see the batch sorted by length
        sorted_copies = kept if need_grad else scratch
        sorted_copies += [("x in length order (T, B, D)", (T, B, D), dtype),
                          ("out in length order (T, B, H)", (T, B, H), dtype)]
        if noise:
            scratch.append(("noise in length order (T, B, H)", (T, B, H), dtype))
        if state_noise:
            scratch.append(("state_noise in length order (T, B, H)", (T, B, H), dtype))
    return kept, scratch


def backward_buffers(T, B, D, H, dtype, order=None, leaky=False, return_norms=False):
    """What a backward pass allocates (for a forward pass with this batch order and leak), as
    (description, shape, np.dtype), the gradients it returns included (see forward_buffers)."""
    buffers = [("da (T, B, H)", (T, B, H), dtype), ("dx (T, B, D)", (T, B, D), dtype),
               ("dW_xh (H, D)", (H, D), dtype), ("dW_hh (H, H)", (H, H), dtype),
               ("the step matrix (H, H padded)", step_matrix_shape(H), dtype),
               ("dh0, db, a zero state (2 * B + 1, H)", (2 * B + 1, H), dtype)]
    buffers += product_panels_buffers(H, D, dtype)
    # Large passes compute the weight gradients in NumPy, after the kernels, with an (H, H)
    # temporary (the step matrix is still held then: the thread keeps it for its next call).
    buffers.append(("the (H, H) temporary of the weight gradients", (H, H), dtype))
    if leaky:
        buffers.append(("the gradient carried past W_hh (B, H)", (B, H), dtype))
    if return_norms:
        buffers += [("norms (T, B)", (T, B), dtype),
                    ("their float64 squares (T + 2 * column blocks, B)",
                     (T + threaded_square_rows(H, dtype), B), _FLOAT64)]
    if order == "reordered":
        buffers += [("dout in length order (T, B, H)", (T, B, H), dtype),
                    ("dx in the caller's order (T, B, D)", (T, B, D), dtype),
                    ("dh_n and dh0 reordered (2, B, H)", (2, B, H), dtype)]
        if return_norms:
            buffers.append(("the norms in the caller's order (T, B)", (T, B), dtype))
    return buffers


def threaded_square_rows(H, dtype):
    """The rows of squares that threaded small steps add: two per column block (see
    backward_loop_threaded), counted for the narrowest block of any build."""
    return 2 * -(-H * dtype.itemsize // MIN_BLOCK_BYTES)


def total_bytes(buffers):
    """The bytes of a list of (description, shape, np.dtype)."""
    return sum(math.prod(shape) * dtype.itemsize for _, shape, dtype in buffers)


# Whether a pass with these arguments of forward_buffers (or backward_buffers), and inputs of
# so many elements besides (each counted as copied), surely fits in memory. Calls repeat their
# shapes (a training loop), so these are memoised.
@functools.lru_cache(maxsize=1024)
def forward_fits(arguments, inputs=0):
    kept, scratch = forward_buffers(*arguments)
    return surely_fits(inputs * arguments[4].itemsize + total_bytes(kept + scratch))


@functools.lru_cache(maxsize=1024)
def backward_fits(arguments, inputs=0):
    return surely_fits(inputs * arguments[4].itemsize + total_bytes(backward_buffers(*arguments)))
