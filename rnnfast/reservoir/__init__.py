"""Reservoir computing: echo state networks at kernel speed.

``Reservoir`` (a fixed random leaky RNN, run forward on the sparse step or the dense kernels),
``Ridge`` (the closed-form readout, fitted at once or chunk by chunk), ``ESN`` (the two
together: fit, predict, closed-loop generate), the classic series (``datasets``) and
``nrmse``. Nothing here prints.
"""
from rnnfast.reservoir import datasets
from rnnfast.reservoir.esn import ESN
from rnnfast.reservoir.metrics import NORMS, nrmse
from rnnfast.reservoir.reservoir import Reservoir
from rnnfast.reservoir.ridge import Ridge
from rnnfast.reservoir.weights import spectral_radius

__all__ = ["Reservoir", "Ridge", "ESN", "datasets", "nrmse", "NORMS", "spectral_radius"]
