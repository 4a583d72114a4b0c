"""`rnnfast.Embedding`: integer tokens to vectors, as a row gather (never a one-hot product).

Parameters and gradients use the names of ``torch.nn.Embedding`` ("weight"), so a table moves
between the two by copying the array.
"""
import numpy as np

from rnnfast.nn._scatter_add import scatter_add_rows
from rnnfast.nn.module import Module
from rnnfast.utils.memory import check_allocation
from rnnfast.utils.validation import (as_int_array, check_float_dtype, check_index_range,
                                      check_size, random_generator)

__all__ = ["Embedding"]


class Embedding(Module):
    """A lookup table from integer tokens to vectors: out[t, b] = weight[ids[t, b]].

    The input layer of a token model (``torch.nn.Embedding``): a row gather, never a one-hot
    matrix product.

    Parameters
    ----------
    num_embeddings : int
        V, the number of tokens; ids lie in [0, V).
    embedding_dim : int
        E, the size of each vector.
    dtype : {np.float32, np.float64}
        dtype of the table and of the outputs.
    seed : int, None or numpy.random.Generator
        Source of the initial table; a Generator is used (and advanced) as is.

    Attributes
    ----------
    weight : ndarray, shape (V, E)
        The table, initialised like torch: standard normal.
    dtype : numpy dtype
        Of the table and of every result.
    grads : dict of str to ndarray
        After ``backward``: "weight" (V, E), the sum of the upstream gradients of every position
        that looked a row up (zero for rows not used). Each backward pass replaces it.
    """

    def __init__(self, num_embeddings, embedding_dim, dtype=np.float32, seed=None):
        self.num_embeddings = check_size(num_embeddings, "num_embeddings")
        self.embedding_dim = check_size(embedding_dim, "embedding_dim")
        self.dtype = dtype = check_float_dtype(dtype)
        rng = random_generator(seed)
        shape = (self.num_embeddings, self.embedding_dim)
        check_allocation("Embedding", [("weight (num_embeddings, embedding_dim)", shape, dtype),
                                       ("its float64 draw", shape, np.float64)])
        self.weight = rng.standard_normal(shape).astype(dtype)  # float64 draw, then cast
        self._params = {"weight": self.weight}
        self.grads = {}
        self._ids = None  # (T*B,) from the last forward
        self._shape = None  # its (T, B)

    def __repr__(self):
        return (f"Embedding(num_embeddings={self.num_embeddings}, "
                f"embedding_dim={self.embedding_dim}, dtype={self.dtype.name})")

    def forward(self, ids):
        """Look the ids up.

        Parameters
        ----------
        ids : array_like of int, shape (T, B)
            Token ids, each in [0, num_embeddings).

        Returns
        -------
        out : ndarray, shape (T, B, E)
            ``weight[ids]``, a new array with the table's dtype.

        Raises
        ------
        TypeError
            ids do not have an integer dtype.
        ValueError
            ids are not 2-D, have a dimension of size 0, or an id is out of range (the message
            gives the first bad id and its position).
        """
        ids = as_int_array(ids, "ids", ("T", "B"))  # not copied: it may be a view of any size
        T, B = ids.shape
        check_allocation("Embedding.forward", [
            ("out (T, B, E)", (T, B, self.embedding_dim), self.dtype),
            ("a copy of ids (T, B)", (T, B), np.intp),
            ("the range check (3, T, B)", (3, T, B), np.bool_)])
        check_index_range(ids, "ids", self.num_embeddings, "num_embeddings")
        self._ids = ids.reshape(-1).astype(np.intp)  # a copy: later edits of ids do not leak in
        self._shape = ids.shape
        return self.weight[ids]

    def backward(self, dout):
        """Gradient of a loss L with respect to the table, given dL/dout, for the last forward.

        Parameters
        ----------
        dout : array_like, shape (T, B, E)
            dL/dout, with the table's dtype and the (T, B) of the last forward.

        Returns
        -------
        None
            Integer ids have no gradient.

        Sets ``grads["weight"]`` (V, E): row v is the sum of dout[t, b] over every (t, b) with
        ids[t, b] == v (a scatter-add; a repeated id accumulates).

        Raises
        ------
        RuntimeError
            No forward pass yet.
        TypeError, ValueError
            dout has the wrong dtype or shape.
        """
        T, B = self._forward_shape()
        dout = self._upstream_gradient(dout, "dout", ("T", "B", "E"), self.embedding_dim,
                                       "(T, B from the forward pass, E from embedding_dim)",
                                       ("grads['weight'] (V, E)", self.weight.shape, self.dtype))
        self.grads = {"weight": _scatter_add_rows(self._ids, self.num_embeddings,
                                                  dout.reshape(T * B, self.embedding_dim))}
        return None


def _scatter_add_rows(ids, n_rows, rows):
    """out (n_rows, E) with out[v] = the sum of rows[i] over every i with ids[i] == v, added in
    the order of i (np.add.at's sums, bit for bit), in one compiled pass (_scatter_add.pyx).

    ids (N,) are intp ids checked to lie in [0, n_rows); rows (N, E) of the table's dtype.
    """
    out = np.zeros((n_rows, rows.shape[1]), dtype=rows.dtype)
    scatter_add_rows(ids, np.ascontiguousarray(rows), out)
    return out
