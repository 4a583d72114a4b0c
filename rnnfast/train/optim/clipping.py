"""Gradient clipping, in place, as ``torch.nn.utils.clip_grad_value_`` and
``clip_grad_norm_``: every entry to a bound, or all gradients together to a global norm."""
import math
from collections.abc import Mapping

import numpy as np

from rnnfast.utils.validation import check_real, check_writable_float_arrays

__all__ = ["clip_grad_value", "clip_grad_norm", "CLIP_NORM_EPS"]

# torch.nn.utils.clip_grad_norm_ divides max_norm by (total_norm + 1e-6).
CLIP_NORM_EPS = 1e-6


def _clip_bound(value, name):
    """A clipping bound: > 0; +inf is allowed (no clipping, as in torch)."""
    return check_real(value, name, 0.0, math.inf, include_low=False, include_high=True)


def _check_grads_for_clipping(grads, function):
    """The gradient arrays of a clipping call, checked: float ndarrays that can be written."""
    if not isinstance(grads, Mapping):
        raise TypeError(f"{function}: grads must be a dict mapping names to gradient arrays; "
                        f"got {type(grads).__name__}")
    try:
        return list(check_writable_float_arrays(grads, "grads", "clipped").values())
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{function}: {exc}") from None


def clip_grad_value(grads, clip_value):
    """Clip every gradient entry, in place, to [-clip_value, clip_value].

    As ``torch.nn.utils.clip_grad_value_``. NaN entries stay NaN.

    Parameters
    ----------
    grads : dict of str to ndarray
        Gradients, float32 or float64, writable. Modified in place; dtypes are kept.
    clip_value : float
        Bound, > 0 (inf leaves the gradients unchanged).

    Raises
    ------
    TypeError
        ``grads`` is not a dict, a gradient is not a float32/float64 ndarray, or
        ``clip_value`` is not a real number.
    ValueError
        A gradient is read-only, or ``clip_value`` is not > 0.
    """
    clip_value = _clip_bound(clip_value, "clip_value")
    for grad in _check_grads_for_clipping(grads, "clip_grad_value"):
        np.clip(grad, -clip_value, clip_value, out=grad)


def clip_grad_norm(grads, max_norm):
    """Scale all gradients, in place, so that their global L2 norm is at most max_norm.

    As ``torch.nn.utils.clip_grad_norm_`` (norm_type=2, error_if_nonfinite=False): the total
    norm N is that of all gradients concatenated into one vector, and every gradient is
    multiplied by min(max_norm / (N + 1e-6), 1). The 1e-6 keeps the division finite when
    N = 0; it also means a clipped norm comes out slightly below max_norm.

    Non-finite gradients are not an error, as in torch: if N is inf, the factor is 0 (finite
    entries become 0, infinite ones NaN); if N is NaN (or both N and max_norm are inf), the
    factor is NaN and every entry becomes NaN. Check the returned norm with
    ``math.isfinite`` to skip such a step.

    Parameters
    ----------
    grads : dict of str to ndarray
        Gradients, float32 or float64, writable. Modified in place; dtypes are kept.
    max_norm : float
        Largest allowed global norm, > 0. inf only computes the norm (nothing is scaled, unless
        N is not finite).

    Returns
    -------
    float
        The total norm N before clipping (0.0 for an empty dict), accumulated in float64.

    Raises
    ------
    TypeError
        ``grads`` is not a dict, a gradient is not a float32/float64 ndarray, or ``max_norm``
        is not a real number.
    ValueError
        A gradient is read-only, or ``max_norm`` is not > 0.
    """
    max_norm = _clip_bound(max_norm, "max_norm")
    arrays = _check_grads_for_clipping(grads, "clip_grad_norm")
    sum_of_squares = 0.0
    for grad in arrays:
        flat = grad.astype(np.float64, copy=False).ravel()
        sum_of_squares += float(flat @ flat)
    total_norm = math.sqrt(sum_of_squares)
    coef = max_norm / (total_norm + CLIP_NORM_EPS)  # nan when both are inf
    # torch multiplies by clamp(coef, max=1) unconditionally; a factor of exactly 1 changes
    # nothing, so it is skipped. NaN fails `coef < 1` but must still be applied, as in torch.
    if coef < 1.0 or math.isnan(coef):
        with np.errstate(invalid="ignore"):  # inf * 0 = NaN here is documented, as in torch
            for grad in arrays:
                grad *= coef
    return total_norm
