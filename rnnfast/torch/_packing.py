"""PackedSequence in and out of the kernels' layout.

A PackedSequence holds the sequences sorted longest first, step after step: at step t, the
first batch_sizes[t] of them. The kernels take the same order as a padded (T, B, D) batch with
``lengths`` (each sequence runs for its own steps, the padding is never computed on), so the
packed rows are scattered once into a zero batch in that order, and the output's rows gathered
back; no reordering, and hx / h_n are permuted as torch.nn.RNN permutes them.
"""
import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence

from rnnfast.torch._checks import ShapeError, check_cpu

__all__ = ["Packing"]


class Packing:
    """The layout of one PackedSequence: its lengths and where its rows sit in (T, B)."""

    def __init__(self, sequence):
        data, batch_sizes, self.sorted_indices, self.unsorted_indices = sequence
        self.batch_sizes = batch_sizes
        sizes = _check_batch_sizes(batch_sizes, data)
        T, B = len(sizes), int(sizes[0])
        self.T, self.B = T, B
        # lengths[b] = the steps t with batch_sizes[t] > b (batch_sizes is non-increasing).
        self.lengths = torch.from_numpy(np.searchsorted(-sizes, -np.arange(B), side="left"))
        # Row n of the packed data is (t, b) = (its step, its place among that step's rows).
        starts = np.cumsum(sizes) - sizes
        steps = np.repeat(np.arange(T), sizes)
        self.rows = torch.from_numpy(steps * B + np.arange(len(steps)) - starts[steps])
        for name, indices in (("sorted_indices", self.sorted_indices),
                              ("unsorted_indices", self.unsorted_indices)):
            if indices is not None and tuple(indices.shape) != (B,):
                raise ShapeError(f"the PackedSequence's {name} must have shape ({B},) (the "
                                 f"batch size); got {tuple(indices.shape)}")

    def padded(self, data):
        """The packed rows (N, D) as a zero-padded time-major batch (T, B, D)."""
        D = data.shape[1]
        return data.new_zeros((self.T * self.B, D)).index_copy(0, self.rows, data).view(
            self.T, self.B, D)

    def packed(self, padded):
        """The rows of a padded batch (T, B, W) that belong to the sequences, packed (N, W)."""
        return padded.reshape(self.T * self.B, -1).index_select(0, self.rows)

    def packed_like(self, padded):
        """padded (T, B, W) as a PackedSequence of this layout."""
        return PackedSequence(self.packed(padded), self.batch_sizes, self.sorted_indices,
                              self.unsorted_indices)

    def dropout(self, padded, p):
        """torch's dropout on the packed rows of padded, as torch.nn.RNN applies it between
        layers of a packed input (one mask over (N, W): the same random numbers)."""
        W = padded.shape[2]
        dropped = torch.dropout(self.packed(padded), p, True)
        return padded.new_zeros((self.T * self.B, W)).index_copy(0, self.rows, dropped).view(
            self.T, self.B, W)

    def sort_states(self, hx):
        """hx (L, B, H) in the sorted order of the sequences."""
        return hx if self.sorted_indices is None else hx.index_select(1, self.sorted_indices)

    def unsort_states(self, h_n):
        """h_n (L, B, H) back in the caller's order."""
        return h_n if self.unsorted_indices is None else h_n.index_select(
            1, self.unsorted_indices)


def _check_batch_sizes(batch_sizes, data):
    """batch_sizes as a NumPy array, after checking that it describes ``data``'s rows."""
    if not isinstance(batch_sizes, torch.Tensor) or batch_sizes.dtype != torch.int64 or \
            batch_sizes.dim() != 1 or len(batch_sizes) == 0:
        raise ValueError("the PackedSequence's batch_sizes must be a non-empty 1-D int64 "
                         "tensor, as torch.nn.utils.rnn.pack_padded_sequence makes it")
    check_cpu(batch_sizes, "the PackedSequence's batch_sizes")
    sizes = batch_sizes.numpy()
    if sizes[-1] < 1 or np.any(sizes[1:] > sizes[:-1]):
        raise ValueError(f"the PackedSequence's batch_sizes must be positive and "
                         f"non-increasing; got {sizes.tolist()[:20]}")
    if not isinstance(data, torch.Tensor) or data.dim() != 2 or data.shape[0] != sizes.sum():
        shape = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ShapeError(f"the PackedSequence's data must be 2-D with sum(batch_sizes) = "
                         f"{sizes.sum()} rows; got {shape}")
    return sizes
