"""The problems of the benchmark: the grid of shapes, random inputs and weights, the FLOP count.

A problem is one (T, B, D, H) and dtype: inputs, weights and the upstream gradient G of the loss
sum(out * G), so that every step has an upstream gradient in a forward+backward pass.
"""
from typing import NamedTuple

import numpy as np

__all__ = ["SHAPES", "QUICK_SHAPES", "DTYPES", "PASSES", "Problem", "make_problem", "flops"]

# (T, B, D, H): min-char-rnn, single sequences (GEMV steps), a long one, then batched GEMM steps.
SHAPES = [(25, 1, 65, 100), (100, 1, 32, 32), (100, 1, 128, 128), (1000, 1, 16, 64),
          (100, 8, 64, 64), (100, 32, 128, 128), (100, 32, 256, 256), (50, 64, 512, 512)]
# One shape per regime (small kernel, GEMV, BLAS step), for a run of well under a minute.
QUICK_SHAPES = [(25, 1, 65, 100), (100, 1, 128, 128), (100, 32, 128, 128)]
DTYPES = ("float32", "float64")
PASSES = ("forward", "forward+backward")


def flops(shape, pass_name):
    """Floating-point operations of one pass: 2 per multiply-add of the matmuls, the forward's
    x W_xh^T and h W_hh^T, and three times that with the backward (da W_hh, dW_hh, dW_xh, dx)."""
    T, B, D, H = shape
    forward = 2 * T * B * H * (D + H)
    return forward * (3 if pass_name == "forward+backward" else 1)


class Problem(NamedTuple):
    """One benchmark problem: inputs, weights and the upstream gradient G = dL/dout."""

    x: np.ndarray  # (T, B, D)
    h0: np.ndarray  # (B, H)
    W_xh: np.ndarray  # (H, D)
    W_hh: np.ndarray  # (H, H)
    b: np.ndarray  # (H,)
    G: np.ndarray  # (T, B, H)

    @property
    def args(self):
        """The arguments of rnn_forward: (x, h0, W_xh, W_hh, b)."""
        return self.x, self.h0, self.W_xh, self.W_hh, self.b


def make_problem(shape, dtype, seed=0):
    """A random problem of ``shape`` (T, B, D, H); weights at PyTorch's nn.RNN initialisation,
    uniform(-1/sqrt(H), 1/sqrt(H)), so the states neither saturate nor vanish."""
    T, B, D, H = shape
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(H)
    return Problem(
        x=rng.standard_normal((T, B, D)).astype(dtype),
        h0=rng.standard_normal((B, H)).astype(dtype),
        W_xh=rng.uniform(-bound, bound, (H, D)).astype(dtype),
        W_hh=rng.uniform(-bound, bound, (H, H)).astype(dtype),
        b=rng.uniform(-bound, bound, H).astype(dtype),
        G=rng.standard_normal((T, B, H)).astype(dtype),
    )
