"""The normalised root-mean-square error, with the two normalisations the literature uses."""
import numpy as np

from rnnfast.utils.validation import check_choice

__all__ = ["nrmse", "NORMS"]

NORMS = ("std", "range")


def nrmse(y, y_hat, norm="std"):
    """sqrt(mean((y - y_hat)^2)) / norm(y), over every element.

    Parameters
    ----------
    y, y_hat : array_like, the same shape
        Targets and predictions.
    norm : {"std", "range"}
        "std": divide by the standard deviation of y (so predicting y's mean scores 1; the
        square root of Jaeger's NMSE). "range": divide by max(y) - min(y) (ReservoirPy's
        default, ``norm="minmax"``; its ``norm="var"`` divides by the variance instead).
        Figures with one are not comparable with the other: say which.
    """
    check_choice(norm, "norm", NORMS)
    y, y_hat = np.asarray(y, dtype=np.float64), np.asarray(y_hat, dtype=np.float64)
    if y.shape != y_hat.shape:
        raise ValueError(f"y and y_hat must have the same shape; got {y.shape} and "
                         f"{y_hat.shape}")
    if y.size == 0:
        raise ValueError("y is empty")
    scale = np.std(y) if norm == "std" else np.ptp(y)
    if not scale > 0:
        raise ValueError(f"the targets y are constant (their {norm} is {scale}): the error "
                         f"cannot be normalised by it")
    return float(np.sqrt(np.mean((y - y_hat) ** 2)) / scale)
