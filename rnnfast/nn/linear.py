"""`rnnfast.Linear`: an output layer applied at every time step, one GEMM over all T*B rows.

Parameters and gradients use the names of ``torch.nn.Linear`` ("weight", "bias"), so weights
move between the two by copying arrays. The layer keeps a reference to its input for the
backward pass (not a copy): do not modify it in place between ``forward`` and ``backward``.
"""
import numpy as np

from rnnfast._kernels.backend import matmul as team_matmul
from rnnfast.nn.module import Module
from rnnfast.utils.memory import check_allocation
from rnnfast.utils.threads import resolve_n_threads
from rnnfast.utils.validation import (check_bool, check_float_dtype, check_shape, check_size,
                                      contiguous, copy_size, float_array, random_generator)

__all__ = ["Linear"]


class Linear(Module):
    """An affine map applied at every time step: y_t = W_hy h_t + b_y.

    The output layer of a recurrent model (``torch.nn.Linear`` on a (T, B, H) input). Forward
    and backward are each one GEMM over all T*B rows.

    Parameters
    ----------
    in_features : int
        H, the size of each input vector.
    out_features : int
        O, the size of each output vector.
    bias : bool
        Whether there is a bias b_y.
    dtype : {np.float32, np.float64}
        dtype of the parameters; inputs must have the same.
    seed : int, None or numpy.random.Generator
        Source of the initial weights; a Generator is used (and advanced) as is.
    n_threads : int or None
        1: the GEMMs are NumPy's (on its BLAS's threads). 2 or more (None: every core): they
        run in ranges on the thread team of rnnfast's kernels, the threads the RNN's passes
        use, so a model's layers share one team rather than wake a second pool of threads
        between them (results then depend on the count, as a threaded BLAS's do).

    Attributes
    ----------
    weight : ndarray, shape (O, H)
        W_hy. Initialised like torch: uniform on (-1/sqrt(H), 1/sqrt(H)).
    bias : ndarray, shape (O,), or None
        b_y, initialised like the weight; None when ``bias=False``.
    dtype : numpy dtype
        Of the parameters, of the inputs and of every result.
    grads : dict of str to ndarray
        After ``backward``: "weight" (O, H) and, with a bias, "bias" (O,). Each backward pass
        replaces them (they are not accumulated over calls).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, seed=None,
                 n_threads=1):
        self.in_features = check_size(in_features, "in_features")
        self.n_threads = resolve_n_threads(n_threads)
        self.out_features = check_size(out_features, "out_features")
        bias = check_bool(bias, "bias")
        self.dtype = dtype = check_float_dtype(dtype)
        rng = random_generator(seed)
        shape = (self.out_features, self.in_features)
        check_allocation("Linear", [("weight (out_features, in_features)", shape, dtype),
                                    ("its float64 draw", shape, np.float64)])
        bound = 1.0 / np.sqrt(self.in_features)
        # Drawn in float64, then cast: a float32 layer equals the float64 one (same seed) rounded.
        self.weight = rng.uniform(-bound, bound, shape).astype(dtype)
        self.bias = rng.uniform(-bound, bound, self.out_features).astype(dtype) if bias else None
        self._params = {"weight": self.weight}
        if self.bias is not None:
            self._params["bias"] = self.bias
        self.grads = {}
        self._h = None  # (T*B, H) from the last forward
        self._shape = None  # its (T, B)

    def __repr__(self):
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, dtype={self.dtype.name})")

    def forward(self, h):
        """y_t = W_hy h_t + b_y for every step and sequence.

        Parameters
        ----------
        h : array_like, shape (T, B, H)
            Inputs (typically the RNN's hidden states), with the layer's dtype.

        Returns
        -------
        y : ndarray, shape (T, B, O)

        Raises
        ------
        TypeError
            h is not float32/float64, or not the dtype of the weights.
        ValueError
            h is not 3-D, has a dimension of size 0, or its last dimension is not in_features.
        """
        h = float_array(h, "h", ("T", "B", "H"))  # checked before any copy (see rnn_forward)
        self._check_dtype(h, "h")
        T, B, H = h.shape
        check_shape(h, "h", ("T", "B", "H"), (T, B, self.in_features), "(H from in_features)")
        check_allocation("Linear.forward", [copy_size(h, "h", ("T", "B", "H")),
                                            ("y (T, B, O)", (T, B, self.out_features),
                                             self.dtype)])
        h2 = contiguous(h).reshape(T * B, H)
        y = self._product(h2, self.weight, (T * B, self.out_features), trans_b=True)  # h W^T
        if self.bias is not None:
            y += self.bias
        self._h = h2
        self._shape = (T, B)
        return y.reshape(T, B, self.out_features)

    def backward(self, dy):
        """Gradients of a loss L given dL/dy, for the last ``forward``.

        Parameters
        ----------
        dy : array_like, shape (T, B, O)
            dL/dy, with the layer's dtype and the (T, B) of the last forward.

        Returns
        -------
        dh : ndarray, shape (T, B, H)
            dL/dh = dy W_hy.

        Sets ``grads``: "weight" = sum over t, b of dy_t h_t^T, shape (O, H); "bias" = sum of
        dy over t and b, shape (O,).

        Raises
        ------
        RuntimeError
            No forward pass yet.
        TypeError, ValueError
            dy has the wrong dtype or shape.
        """
        T, B = self._forward_shape()
        dy = self._upstream_gradient(dy, "dy", ("T", "B", "O"), self.out_features,
                                     "(T, B from the forward pass, O from out_features)",
                                     ("dh (T, B, H)", (T, B, self.in_features), self.dtype))
        dy2 = dy.reshape(T * B, self.out_features)
        # (O, H) = dy^T h over all T*B rows
        grads = {"weight": self._product(dy2, self._h, self.weight.shape, trans_a=True,
                                         split_columns=True)}
        if self.bias is not None:
            grads["bias"] = dy2.sum(axis=0)
        self.grads = grads
        dh = self._product(dy2, self.weight, (T * B, self.in_features))
        return dh.reshape(T, B, self.in_features)

    def _product(self, a, b, shape, trans_a=False, trans_b=False, split_columns=False):
        """op(a) @ op(b), of the given shape: NumPy's on one thread, else the team's (see
        n_threads), in ranges of rows or, with split_columns, of columns."""
        if self.n_threads == 1:
            return (a.T if trans_a else a) @ (b.T if trans_b else b)
        return team_matmul(a, contiguous(b), np.empty(shape, self.dtype), self.n_threads,
                           trans_a, trans_b, split_columns)
