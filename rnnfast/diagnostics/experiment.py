"""The experiment of `rnnfast diagnose`: gradient flow and learning on the adding problem.

For W_hh drawn as one Gaussian matrix scaled to several spectral radii, and orthogonal, it
measures at initialisation on the longest span how ||dh_T/dh_t|| (``jacobian_norms``) and the
task loss's ||dL/dh_t|| (``RNN.backward(..., return_norms=True)``) change with the lag T - t,
then trains each setting briefly at every span and reports the held-out MSE, the trained W_hh's
spectral radius and the per-step factor of its Jacobians.
"""
import math
from dataclasses import dataclass

import numpy as np

from rnnfast.diagnostics.adding import (EVAL_SEQUENCES, ORTHOGONAL, AddingModel, adding_batch,
                                        recurrent_matrix, train_adding)
from rnnfast.diagnostics.gradient_flow import (jacobian_norms, largest_singular_value,
                                               resolve_jacobian_method, saturation,
                                               spectral_radius)

__all__ = ["ADDING_DEFAULTS", "GRAD_SEQUENCES", "JACOBIAN_SEQUENCES", "Curves", "Outcome",
           "AddingExperiment", "run_adding_experiment", "measure_at_init", "jacobian_curve",
           "relative_gradient", "per_step"]

# The settings of the experiment, as `rnnfast diagnose` runs it by default.
ADDING_DEFAULTS = {"spans": (10, 30, 100), "radii": (0.5, 1.0, 1.5, ORTHOGONAL),
                   "hidden_size": 32, "steps": 2000, "batch_size": 32, "lr": 3e-3,
                   "clip_norm": 1.0}
GRAD_SEQUENCES = 32  # sequences whose loss gradient ||dL/dh_t|| is measured at initialisation
JACOBIAN_SEQUENCES = 4  # sequences whose ||dh_T/dh_t|| is measured
PROBES = 32  # random directions of jacobian_norms' estimate, for large H


def _rms(norms):
    """Root mean square over the batch axis (last) of norms (T, B)."""
    return np.sqrt(np.mean(np.square(norms), axis=-1))


def jacobian_curve(x, h0, W_xh, W_hh, b, nonlinearity="tanh", n_threads=None):
    """The RMS singular value of dh_T/dh_t by lag (lag 0 first), ||dh_T/dh_t||_F / sqrt(H) as
    a root mean square over the sequences of x; and the method of ``jacobian_norms`` that
    measured it ("exact", or "probes": an estimate from PROBES random directions)."""
    T, B, D = np.shape(x)
    H = np.shape(W_hh)[0]
    method = resolve_jacobian_method("auto", T, B, D, H, PROBES)
    norms = jacobian_norms(x, h0, W_xh, W_hh, b, nonlinearity=nonlinearity, method=method,
                           n_probes=PROBES, seed=0, n_threads=n_threads)
    return _rms(norms)[::-1] / np.sqrt(H), method


def relative_gradient(norms):
    """||dL/dh_t|| (T, B) -> its RMS over the batch by lag (lag 0 first), relative to lag 0."""
    gradient = _rms(np.asarray(norms, dtype=np.float64))[::-1]
    return gradient / gradient[0] if gradient[0] > 0 else gradient


def per_step(curve):
    """The geometric mean factor per step over a whole curve by lag: (c[-1] / c[0])^(1 / lag)
    at the largest lag (NaN if a value is zero or not finite)."""
    curve = np.asarray(curve, dtype=np.float64)
    if len(curve) < 2 or not (curve[0] > 0 and curve[-1] > 0) or not np.isfinite(curve).all():
        return math.nan
    return float((curve[-1] / curve[0]) ** (1 / (len(curve) - 1)))


@dataclass
class Curves:
    """Measurements at initialisation, indexed by lag (0 = the last step)."""

    jacobian: np.ndarray  # RMS singular value of dh_T/dh_t over JACOBIAN_SEQUENCES sequences
    gradient: np.ndarray  # ||dL/dh_t|| / ||dL/dh_T|| (RMS over sequences)
    saturation: float  # mean fraction of saturated units over steps and sequences
    radius: float  # spectral radius of W_hh
    sigma: float  # largest singular value of W_hh


@dataclass
class Outcome:
    """One setting at one span: the held-out MSE before and after training, and W_hh after."""

    mse_before: float
    mse_after: float
    losses: list  # training loss per step
    stopped: object  # None, or why training stopped early (non-finite values)
    radius_after: float = math.nan  # spectral radius of the trained W_hh
    per_step_after: float = math.nan  # per-step factor of |J| over the span, after training


@dataclass
class AddingExperiment:
    """The settings, the curves at the longest span (by radius) and the outcomes (by (radius,
    span))."""

    settings: dict
    curves: dict
    outcomes: dict


def _weights64(model):
    """The RNN's (W_xh, W_hh, b) in float64 (b summed in float64)."""
    return model.astype(np.float64).rnn.direction_weights(0)


def measure_at_init(model, T, seed):
    """Curves on the adding problem at span T for an untrained model, computed in float64
    (float32 would round the smallest norms, 1e-30 and below, to zero)."""
    model64 = model.astype(np.float64)
    x, y = adding_batch(T, GRAD_SEQUENCES, np.random.default_rng([seed, T, 3]), dtype=np.float64)
    _, out, norms = model64.loss_and_backward(x, y, return_norms=True)
    W_xh, W_hh, b = model64.rnn.direction_weights(0)
    jacobian, _ = jacobian_curve(x[:, :JACOBIAN_SEQUENCES], None, W_xh, W_hh, b)
    return Curves(jacobian, relative_gradient(norms[0, 0]), float(saturation(out).mean()),
                  spectral_radius(W_hh), largest_singular_value(W_hh))


def _train(model, T, settings, seed):
    """Train, then measure the trained W_hh."""
    x_eval, y_eval = adding_batch(T, EVAL_SEQUENCES, np.random.default_rng([seed, T, 4]))
    trained = train_adding(model, T, steps=settings["steps"], batch_size=settings["batch_size"],
                           lr=settings["lr"], clip_norm=settings["clip_norm"], seed=seed,
                           eval_x=x_eval, eval_y=y_eval)
    outcome = Outcome(trained.mse_before, trained.mse_after, trained.losses, trained.stopped)
    if trained.stopped is None:
        W_xh, W_hh, b = _weights64(model)
        outcome.radius_after = spectral_radius(W_hh)
        jacobian, _ = jacobian_curve(x_eval[:, :JACOBIAN_SEQUENCES].astype(np.float64), None,
                                     W_xh, W_hh, b)
        outcome.per_step_after = per_step(jacobian)
    return outcome


def run_adding_experiment(settings=None, seed=0, on_run=None):
    """Every setting at every span.

    Parameters
    ----------
    settings : dict or None
        Keys of ADDING_DEFAULTS (missing ones take its values): spans (each >= 2), radii
        (spectral radii > 0 and/or ORTHOGONAL), hidden_size, steps (0: no training),
        batch_size, lr, clip_norm (0: no clipping).
    seed : int
        Seeds the weights (one Gaussian W_hh for all radii) and the data.
    on_run : callable or None
        Called as on_run(radius, T) after each training run.

    Returns
    -------
    AddingExperiment
    """
    s = {**ADDING_DEFAULTS, **(settings or {})}
    H = s["hidden_size"]
    gaussian = np.random.default_rng([seed, 0]).standard_normal((H, H))
    longest = max(s["spans"])
    curves, outcomes = {}, {}
    for radius in s["radii"]:
        W_hh = recurrent_matrix(radius, gaussian)
        for T in s["spans"]:
            model = AddingModel(H, W_hh, seed=seed)
            if T == longest:
                curves[radius] = measure_at_init(model, T, seed)
            outcomes[radius, T] = _train(model, T, s, seed)
            if on_run is not None:
                on_run(radius, T)
    return AddingExperiment(s, curves, outcomes)
