"""Losses over time and their gradients, each in one vectorised pass (time-major, float32 or
float64): softmax cross-entropy for token models, and the masked mean squared error for tasks
whose outputs are continuous (a memory to hold, a choice to report)."""
import numpy as np

from rnnfast import reference
from rnnfast._kernels import backend as kernels
from rnnfast.utils.memory import check_allocation
from rnnfast.utils.threads import resolve_n_threads
from rnnfast.utils.validation import (as_int_array, check_index_range, check_shape, contiguous,
                                      copy_size, float_array, native_dtype)

__all__ = ["softmax_cross_entropy", "masked_mse"]


def _as_mask(mask, expected_shape, source="(T, B from logits)"):
    """mask as a bool array of expected_shape; accepts bool, or integers/floats equal to 0 or 1.
    source says where the expected shape comes from, for the message."""
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
    check_shape(array, "mask", ("T", "B"), expected_shape, source)
    if array.dtype != np.bool_:
        if not np.all((array == 0) | (array == 1)):
            bad = array[(array != 0) & (array != 1)].flat[0]
            raise ValueError(f"mask must hold only 0 and 1 (or be bool); got the value {bad}")
        array = array != 0
    return array


def softmax_cross_entropy(logits, targets, mask=None, *, n_threads=None, backend="cython"):
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
    n_threads : int or None
        Threads of rnnfast's kernels for the rows (None: every core); each row is computed the
        same way whoever computes it, so the results do not depend on it.
    backend : {"cython", "numpy"}
        rnnfast's kernel (one pass over each row, in row ranges on the kernels' team), or the
        NumPy reference (rnnfast.reference.softmax_cross_entropy_rows).

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
        position, every position masked, an unknown backend or an n_threads that is not a
        positive int.
    """
    logits = float_array(logits, "logits", ("T", "B", "V"))  # not copied yet (see rnn_forward)
    T, B, V = logits.shape
    targets = as_int_array(targets, "targets", ("T", "B"))
    check_shape(targets, "targets", ("T", "B"), (T, B), "(T, B from logits)")
    if backend not in ("cython", "numpy"):
        raise ValueError(f"backend must be 'cython' or 'numpy'; got {backend!r}")
    n_threads = resolve_n_threads(n_threads)
    dtype = native_dtype(logits)
    if backend == "numpy":  # the shifted logits and the masked rows' copies besides
        working = [("the shifted logits (T, B, V)", (T, B, V), dtype),
                   None if mask is None else ("the unmasked rows (T, B, V)", (T, B, V), dtype),
                   ("the statistics of each row (8, T, B)", (8, T, B), np.float64)]
    else:  # each row's loss, the targets as intp
        working = [("the loss of each row (T, B)", (T, B), np.float64),
                   ("targets as intp (T, B)", (T, B), np.intp)]
    check_allocation("softmax_cross_entropy", [
        copy_size(logits, "logits", ("T", "B", "V")),
        ("dlogits (T, B, V)", (T, B, V), dtype),
        ("the range check of targets (3, T, B)", (3, T, B), np.bool_)] + working)
    logits = contiguous(logits)
    if mask is None:
        count = T * B
    else:
        mask = _as_mask(mask, (T, B))
        count = int(np.count_nonzero(mask))
        if count == 0:
            raise ValueError(f"mask must leave at least one position unmasked; all {T * B} "
                             f"positions of the (T, B) = {(T, B)} mask are masked")
        if count == T * B:
            mask = None
    check_index_range(targets, "targets", V, "V, the last dimension of logits", where=mask)

    flat_logits = logits.reshape(T * B, V)
    flat_targets = targets.reshape(T * B)
    flat_mask = None if mask is None else np.ascontiguousarray(mask.reshape(T * B))
    if backend == "numpy":
        loss, dlogits = reference.softmax_cross_entropy_rows(flat_logits, flat_targets,
                                                             flat_mask, count)
        return loss, dlogits.reshape(T, B, V)
    dlogits = np.empty((T * B, V), dtype=dtype)
    nll = np.empty(T * B, dtype=np.float64)
    kernels.softmax_cross_entropy(flat_logits, np.ascontiguousarray(flat_targets, dtype=np.intp),
                                  flat_mask, dlogits, nll, 1.0 / count, n_threads)
    return float(np.sum(nll) / count), dlogits.reshape(T, B, V)


def masked_mse(outputs, targets, mask=None):
    """Mean squared error of outputs against targets over the unmasked steps, and its gradient.

    loss = (1 / (N * O)) * sum over unmasked (t, b) and every o of (outputs - targets)², with N
    the number of unmasked (t, b) positions: the mean over the elements that count, as
    ``torch.nn.MSELoss`` on them.

    Parameters
    ----------
    outputs : array_like, shape (T, B, O)
        float32 or float64.
    targets : array_like, shape (T, B, O)
        Real values; cast to the dtype of outputs. Values at masked positions are ignored.
    mask : array_like, shape (T, B), or None
        True (or 1) where a step counts, False (or 0) where it does not. None: all count.

    Returns
    -------
    loss : float
        Accumulated in float64.
    doutputs : ndarray, shape (T, B, O)
        d loss / d outputs, with the dtype of outputs: 2 (outputs - targets) / (N * O) at
        unmasked positions, exactly 0 at masked ones.

    Raises
    ------
    TypeError
        outputs not float32/float64, targets not real, mask not bool/integer/float.
    ValueError
        Wrong number of dimensions, a dimension of size 0, targets or mask whose shape differs
        from outputs', a mask value other than 0/1, every position masked, or non-finite
        targets at unmasked positions.
    """
    outputs = float_array(outputs, "outputs", ("T", "B", "O"))
    T, B, O = outputs.shape
    dtype = native_dtype(outputs)
    try:
        target_array = np.asarray(targets)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"targets could not be converted to an array: {exc}") from None
    if target_array.dtype.kind not in "fiu":
        raise TypeError(f"targets must hold real numbers; got dtype {target_array.dtype}")
    if target_array.ndim != 3:
        raise ValueError(f"targets must be 3-D with shape (T, B, O); got shape "
                         f"{target_array.shape}")
    check_shape(target_array, "targets", ("T", "B", "O"), (T, B, O), "(the shape of outputs)")
    check_allocation("masked_mse", [copy_size(outputs, "outputs", ("T", "B", "O")),
                                    ("the error and doutputs (2, T, B, O)", (2, T, B, O), dtype)])
    outputs = contiguous(outputs)
    error = outputs - target_array.astype(dtype, copy=False)
    if mask is None:
        count = T * B
    else:
        keep = _as_mask(mask, (T, B), "(T, B from outputs)")
        count = int(np.count_nonzero(keep))
        if count == 0:
            raise ValueError(f"mask must leave at least one step unmasked; all {T * B} (t, b) "
                             f"positions are masked")
        error[~keep] = 0.0  # masked targets may hold anything, NaN included
    if not np.isfinite(error).all() and np.isfinite(outputs).all():
        raise ValueError("targets must be finite at the unmasked steps")
    flat = error.reshape(-1).astype(np.float64, copy=False)
    loss = float(flat @ flat) / (count * O)
    doutputs = error
    doutputs *= dtype.type(2.0 / (count * O))
    return loss, doutputs
