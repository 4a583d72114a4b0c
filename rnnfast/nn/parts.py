"""Model parts around the recurrence: an output layer over time, a token embedding, and the loss.

Pure NumPy, time-major like the rest of the package, float32 or float64. Each part computes the
whole sequence at once: ``Linear`` is one GEMM over all T*B rows, ``Embedding`` a row gather,
``softmax_cross_entropy`` one vectorised pass. Parameters and gradients use the names of
``torch.nn.Linear`` and ``torch.nn.Embedding`` ("weight", "bias"), so weights move between the two
by copying arrays.

The layers keep references to what their backward pass needs (not copies); do not modify an
input in place between a layer's ``forward`` and ``backward``.
"""
import numpy as np

from rnnfast.utils.validation import (as_int_array, check_allocation, check_float_dtype,
                                 check_shape, check_size, contiguous, copy_size, float_array,
                                 load_parameters, native_dtype, random_generator)

__all__ = ["Linear", "Embedding", "softmax_cross_entropy"]


# ---------------------------------------------------------------------------------------------
# Validation helpers shared by the parts.
# ---------------------------------------------------------------------------------------------
def _check_matching_dtype(array, name, dtype, owner):
    """Raise TypeError unless array has the parts' dtype (no silent casts)."""
    if native_dtype(array) != dtype:
        raise TypeError(f"{name} must have the dtype of the {owner}'s weights, {dtype}; "
                        f"got {array.dtype} (cast one of them)")


def _check_range(array, name, upper, upper_name, where=None):
    """Raise ValueError, naming the first bad value and its position, unless 0 <= array < upper.

    Only the positions where ``where`` is True are checked (all when where is None).
    """
    bad = (array < 0) | (array >= upper)
    if where is not None:
        bad &= where
    if bad.any():
        position = np.unravel_index(int(np.argmax(bad)), array.shape)
        position = tuple(int(i) for i in position)
        raise ValueError(f"{name} must lie in [0, {upper_name}) = [0, {upper}); got "
                         f"{array[position]} at position {position}")


class _Module:
    """What Linear and Embedding share: parameters, state dicts and the dtype of both."""

    def parameters(self):
        """The parameters, name -> array. The arrays themselves (not copies): an optimizer
        updates them in place."""
        return dict(self._params)

    def state_dict(self):
        """The parameters, name -> a copy of the array (safe to keep while training goes on)."""
        return {name: array.copy() for name, array in self._params.items()}

    def load_state_dict(self, state_dict):
        """Copy arrays into the parameters, in place (references from ``parameters()`` stay valid).

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Exactly the keys of ``parameters()``, each with the parameter's shape and a float
            dtype, cast to the parameter's (as torch's load_state_dict does): a PyTorch state
            dict converted to NumPy loads as is.

        Raises
        ------
        TypeError
            state_dict is not a mapping.
        ValueError
            A missing or unexpected key, or an array whose shape differs from the parameter's
            or whose values are not floating-point. Nothing is loaded then.
        """
        load_parameters(self._params, state_dict)

    @property
    def dtype(self):
        """The dtype of the parameters, of the float inputs and of every result."""
        return self.weight.dtype


# ---------------------------------------------------------------------------------------------
# Linear over time.
# ---------------------------------------------------------------------------------------------
class Linear(_Module):
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

    Attributes
    ----------
    weight : ndarray, shape (O, H)
        W_hy. Initialised like torch: uniform on (-1/sqrt(H), 1/sqrt(H)).
    bias : ndarray, shape (O,), or None
        b_y, initialised like the weight; None when ``bias=False``.
    grads : dict of str to ndarray
        After ``backward``: "weight" (O, H) and, with a bias, "bias" (O,). Each backward pass
        replaces them (they are not accumulated over calls).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, seed=None):
        self.in_features = check_size(in_features, "in_features")
        self.out_features = check_size(out_features, "out_features")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be a bool; got {type(bias).__name__} {bias!r}")
        dtype = check_float_dtype(dtype)
        rng = random_generator(seed)
        shape = (self.out_features, self.in_features)
        check_allocation("Linear", [("weight (out_features, in_features)", shape, dtype),
                                    ("its float64 draw", shape, np.float64)])
        bound = 1.0 / np.sqrt(self.in_features)
        # Drawn in float64, then cast: a float32 layer equals the float64 one (same seed) rounded.
        self.weight = rng.uniform(-bound, bound, (self.out_features, self.in_features))
        self.weight = self.weight.astype(dtype)
        self.bias = rng.uniform(-bound, bound, self.out_features).astype(dtype) if bias else None
        self._params = {"weight": self.weight}
        if self.bias is not None:
            self._params["bias"] = self.bias
        self.grads = {}
        self._h = None  # (T*B, H) from the last forward

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
        _check_matching_dtype(h, "h", self.dtype, "Linear")
        T, B, H = h.shape
        check_shape(h, "h", ("T", "B", "H"), (T, B, self.in_features), "(H from in_features)")
        check_allocation("Linear.forward", [copy_size(h, "h", ("T", "B", "H")),
                                            ("y (T, B, O)", (T, B, self.out_features),
                                             self.dtype)])
        h = contiguous(h)
        h2 = h.reshape(T * B, H)
        y = h2 @ self.weight.T  # (T*B, O): one GEMM over every step
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
        if self._h is None:
            raise RuntimeError("Linear.backward called before Linear.forward")
        dy = float_array(dy, "dy", ("T", "B", "O"))
        _check_matching_dtype(dy, "dy", self.dtype, "Linear")
        T, B = self._shape
        check_shape(dy, "dy", ("T", "B", "O"), (T, B, self.out_features),
                    "(T, B from the forward pass, O from out_features)")
        check_allocation("Linear.backward", [copy_size(dy, "dy", ("T", "B", "O")),
                                             ("dh (T, B, H)", (T, B, self.in_features),
                                              self.dtype)])
        dy = contiguous(dy)
        dy2 = dy.reshape(T * B, self.out_features)
        grads = {"weight": dy2.T @ self._h}  # (O, H) = dy^T h over all T*B rows
        if self.bias is not None:
            grads["bias"] = dy2.sum(axis=0)
        self.grads = grads
        return (dy2 @ self.weight).reshape(T, B, self.in_features)


# ---------------------------------------------------------------------------------------------
# Embedding.
# ---------------------------------------------------------------------------------------------
class Embedding(_Module):
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
    grads : dict of str to ndarray
        After ``backward``: "weight" (V, E), the sum of the upstream gradients of every position
        that looked a row up (zero for rows not used). Each backward pass replaces it.
    """

    def __init__(self, num_embeddings, embedding_dim, dtype=np.float32, seed=None):
        self.num_embeddings = check_size(num_embeddings, "num_embeddings")
        self.embedding_dim = check_size(embedding_dim, "embedding_dim")
        dtype = check_float_dtype(dtype)
        rng = random_generator(seed)
        shape = (self.num_embeddings, self.embedding_dim)
        check_allocation("Embedding", [("weight (num_embeddings, embedding_dim)", shape, dtype),
                                       ("its float64 draw", shape, np.float64)])
        self.weight = rng.standard_normal(shape).astype(dtype)  # float64 draw, then cast
        self._params = {"weight": self.weight}
        self.grads = {}
        self._ids = None  # (T*B,) from the last forward

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
        _check_range(ids, "ids", self.num_embeddings, "num_embeddings")
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
        if self._ids is None:
            raise RuntimeError("Embedding.backward called before Embedding.forward")
        dout = float_array(dout, "dout", ("T", "B", "E"))
        _check_matching_dtype(dout, "dout", self.dtype, "Embedding")
        T, B = self._shape
        check_shape(dout, "dout", ("T", "B", "E"), (T, B, self.embedding_dim),
                    "(T, B from the forward pass, E from embedding_dim)")
        check_allocation("Embedding.backward", [copy_size(dout, "dout", ("T", "B", "E")),
                                                ("grads['weight'] (V, E)", self.weight.shape,
                                                 self.dtype)])
        dout = contiguous(dout)
        grad = np.zeros_like(self.weight)
        np.add.at(grad, self._ids, dout.reshape(T * B, self.embedding_dim))
        self.grads = {"weight": grad}
        return None


# ---------------------------------------------------------------------------------------------
# Loss.
# ---------------------------------------------------------------------------------------------
def _as_mask(mask, expected_shape):
    """mask as a bool array of expected_shape; accepts bool, or integers/floats equal to 0 or 1."""
    try:
        array = np.asarray(mask)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"mask could not be converted to an array: {exc}") from None
    if array.dtype != np.bool_:
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise TypeError(f"mask must have dtype bool (or integers/floats equal to 0 or 1); "
                            f"got {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"mask must be 2-D with shape (T, B); got a {array.ndim}-D array with "
                         f"shape {array.shape}")
    check_shape(array, "mask", ("T", "B"), expected_shape, "(T, B from logits)")
    if array.dtype != np.bool_:
        if not np.all((array == 0) | (array == 1)):
            bad = array[(array != 0) & (array != 1)].flat[0]
            raise ValueError(f"mask must hold only 0 and 1 (or be bool); got the value {bad}")
        array = array != 0
    return array


def softmax_cross_entropy(logits, targets, mask=None):
    """Mean cross-entropy of softmax(logits) against integer targets, and its gradient.

    loss = (1/N) * sum over unmasked (t, b) of -log softmax(logits[t, b])[targets[t, b]], in nats,
    with N the number of unmasked positions. Computed stably (the row maximum is subtracted
    before exponentiating), so very large logits are fine.

    Parameters
    ----------
    logits : array_like, shape (T, B, V)
        Unnormalised log-probabilities over V classes, float32 or float64.
    targets : array_like of int, shape (T, B)
        The class at each position, in [0, V). Values at masked positions are ignored (they may
        hold any padding value).
    mask : array_like, shape (T, B), or None
        True (or 1) where a position counts, False (or 0) where it is padding. None: all count.

    Returns
    -------
    loss : float
        The mean over unmasked positions (the sum is accumulated in float64).
    dlogits : ndarray, shape (T, B, V)
        d loss / d logits, with the dtype of logits: (softmax - onehot(target)) / N at unmasked
        positions, exactly 0 at masked ones.

    Raises
    ------
    TypeError
        logits not float32/float64, targets not integer, mask not bool/integer/float.
    ValueError
        Wrong number of dimensions, a dimension of size 0, targets or mask whose (T, B) differs
        from logits', a mask value other than 0/1, a target out of [0, V) at an unmasked
        position, or every position masked.
    """
    logits = float_array(logits, "logits", ("T", "B", "V"))  # not copied yet (see rnn_forward)
    T, B, V = logits.shape
    targets = as_int_array(targets, "targets", ("T", "B"))
    check_shape(targets, "targets", ("T", "B"), (T, B), "(T, B from logits)")
    dtype = native_dtype(logits)
    # The shifted logits and their exponentials (which become the gradient), the masked rows'
    # copies, the row statistics and the range check of targets.
    check_allocation("softmax_cross_entropy", [
        copy_size(logits, "logits", ("T", "B", "V")),
        ("dlogits (T, B, V)", (T, B, V), dtype),
        ("the shifted logits (T, B, V)", (T, B, V), dtype),
        None if mask is None else ("the unmasked rows (T, B, V)", (T, B, V), dtype),
        ("the statistics of each row (8, T, B)", (8, T, B), np.float64)])
    logits = contiguous(logits)
    if mask is None:
        rows = None
        count = T * B
    else:
        mask = _as_mask(mask, (T, B))
        count = int(np.count_nonzero(mask))
        if count == 0:
            raise ValueError(f"mask must leave at least one position unmasked; all {T * B} "
                             f"positions of the (T, B) = {(T, B)} mask are masked")
        rows = None if count == T * B else np.flatnonzero(mask)
    _check_range(targets, "targets", V, "V, the last dimension of logits", where=mask)

    flat_logits = logits.reshape(T * B, V)
    flat_targets = targets.reshape(T * B)
    if rows is not None:  # only unmasked rows are computed: masked ones get exactly 0
        flat_logits = flat_logits[rows]
        flat_targets = flat_targets[rows]
    n = flat_logits.shape[0]

    shifted = flat_logits - flat_logits.max(axis=1, keepdims=True)  # largest entry is 0
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1)  # in [1, V]: log is safe
    picked = np.arange(n)
    nll = np.log(sum_exp) - shifted[picked, flat_targets]  # -log softmax[target], per row
    loss = float(np.sum(nll, dtype=np.float64) / count)

    grad = exp
    grad /= sum_exp[:, None]  # softmax
    grad[picked, flat_targets] -= 1
    grad /= count
    if rows is None:
        dlogits = grad.reshape(T, B, V)
    else:
        dlogits = np.zeros((T * B, V), dtype=logits.dtype)
        dlogits[rows] = grad
        dlogits = dlogits.reshape(T, B, V)
    return loss, dlogits
