"""The gradients that rnn_backward returns, shared by both backends."""
from typing import NamedTuple, Optional

import numpy as np


class RNNGrads(NamedTuple):
    """Gradients of the loss, each with the shape and dtype of the input it belongs to.

    dx (T, B, D), dh0 (B, H) (also when h0 was None: the gradient on the zero initial state),
    dW_xh (H, D), dW_hh (H, H), db (H,) or None when the forward pass had no bias.
    """

    dx: np.ndarray
    dh0: np.ndarray
    dW_xh: np.ndarray
    dW_hh: np.ndarray
    db: Optional[np.ndarray]
