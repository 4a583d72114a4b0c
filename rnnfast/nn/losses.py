"""The mean squared error over time with a mask: the loss of tasks whose outputs are continuous
(a memory to hold, a choice to report), beside the cross-entropy of softmax_cross_entropy."""
import numpy as np

from rnnfast.nn.parts import _as_mask
from rnnfast.utils.validation import (check_allocation, check_shape, contiguous, copy_size,
                                      float_array, native_dtype)

__all__ = ["masked_mse"]


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
        if np.ndim(mask) != 2 or np.shape(mask) != (T, B):
            raise ValueError(f"mask must have shape (T, B) = {(T, B)} (T, B from outputs); got "
                             f"shape {np.shape(mask)}")
        keep = _as_mask(mask, (T, B))
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
