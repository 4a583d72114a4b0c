"""The loss of a token model: softmax cross-entropy over time, and its gradient, in one
vectorised pass (time-major, float32 or float64)."""
import numpy as np

from rnnfast.utils.memory import check_allocation
from rnnfast.utils.validation import (as_int_array, check_index_range, check_shape, contiguous,
                                      copy_size, float_array, native_dtype)

__all__ = ["softmax_cross_entropy"]


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
    check_index_range(targets, "targets", V, "V, the last dimension of logits", where=mask)

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
