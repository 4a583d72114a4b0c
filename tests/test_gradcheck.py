"""Analytic gradients agree with central finite differences in float64.

The loss is L = sum(out * G) + sum(out[-1] * G_n), whose gradient with respect to out is G
(plus G_n on the last step), i.e. rnn_backward(G, cache, dh_n=G_n). Each check perturbs an input
of rnn_forward and watches L move: it tests the backward pass against the forward pass's own
definition, element by element on tiny shapes and along a random direction on larger ones.
"""
import numpy as np
import pytest

import rnnfast
from rnn_helpers import (
    FD_EPS,
    TOL,
    assert_close,
    make_problem,
    make_problem_away_from_kink,
)

# Each input of rnn_forward that has a gradient, with the field of RNNGrads that holds it.
INPUTS = {"x": "dx", "h0": "dh0", "W_xh": "dW_xh", "W_hh": "dW_hh", "b": "db"}
# Keeps every relu pre-activation this far from the kink: far more than a perturbation of
# FD_EPS moves any of them (|da| <= FD_EPS * sum of |weights and inputs| ~ 1e-5).
RELU_MARGIN = 1e-3


def problem(seed, shape, nonlinearity, **kwargs):
    if nonlinearity == "relu":
        return make_problem_away_from_kink(seed, *shape, RELU_MARGIN, **kwargs)
    return make_problem(seed, *shape, **kwargs)


def loss(inputs, G, G_n, nonlinearity, backend):
    """L = sum(out * G) + sum(h_T * G_n), computed with rnn_forward on a dict of its inputs."""
    out, _ = rnnfast.rnn_forward(inputs["x"], inputs["h0"], inputs["W_xh"], inputs["W_hh"],
                                 inputs["b"], nonlinearity=nonlinearity, backend=backend)
    L = np.sum(out * G)
    if G_n is not None:
        L += np.sum(out[-1] * G_n)
    return L


def analytic_grads(p, nonlinearity, backend):
    _, cache = rnnfast.rnn_forward(*p.args, nonlinearity=nonlinearity, backend=backend)
    return rnnfast.rnn_backward(p.dout, cache, dh_n=p.dh_n)


def inputs_of(p, zero_h0):
    """The inputs as a dict of fresh copies; h0 None becomes zeros when we differentiate it."""
    h0 = np.zeros((p.shape[1], p.shape[3])) if p.h0 is None and zero_h0 else p.h0
    inputs = {"x": p.x, "h0": h0, "W_xh": p.W_xh, "W_hh": p.W_hh, "b": p.b}
    return {k: None if v is None else v.copy() for k, v in inputs.items()}


def numeric_gradient(p, name, nonlinearity, backend):
    """dL/d(input `name`), entry by entry, by central differences."""
    inputs = inputs_of(p, zero_h0=name == "h0")
    target = inputs[name]
    grad = np.empty_like(target)
    for idx in np.ndindex(target.shape):
        saved = target[idx]
        target[idx] = saved + FD_EPS
        up = loss(inputs, p.dout, p.dh_n, nonlinearity, backend)
        target[idx] = saved - FD_EPS
        down = loss(inputs, p.dout, p.dh_n, nonlinearity, backend)
        target[idx] = saved
        grad[idx] = (up - down) / (2 * FD_EPS)
    return grad


TINY_SHAPES = [(1, 1, 1, 1), (3, 2, 3, 4), (4, 1, 2, 5)]


@pytest.mark.parametrize("with_dh_n", [True, False], ids=["dh_n", "no_dh_n"])
@pytest.mark.parametrize("with_h0", [True, False], ids=["h0", "h0_None"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("shape", TINY_SHAPES,
                         ids=["T{}B{}D{}H{}".format(*s) for s in TINY_SHAPES])
def test_elementwise(backend, shape, nonlinearity, with_h0, with_dh_n):
    """Every entry of every gradient; with h0=None, dh0 is the gradient at h0 = 0."""
    p = problem(10, shape, nonlinearity, h0=with_h0, dh_n=with_dh_n)
    grads = analytic_grads(p, nonlinearity, backend)
    for name, field in INPUTS.items():
        numeric = numeric_gradient(p, name, nonlinearity, backend)
        assert_close(getattr(grads, field), numeric, TOL["finite_difference"], err_msg=field)


def test_elementwise_without_bias(backend):
    """Without a bias the other gradients are unchanged in meaning and db is None."""
    p = make_problem(11, 3, 2, 3, 4, bias=False)
    grads = analytic_grads(p, "tanh", backend)
    assert grads.db is None
    for name, field in INPUTS.items():
        if name != "b":
            numeric = numeric_gradient(p, name, "tanh", backend)
            assert_close(getattr(grads, field), numeric, TOL["finite_difference"], err_msg=field)


LARGER_SHAPES = [(6, 4, 7, 20), (4, 3, 5, 37), (8, 2, 3, 16)]


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("shape", LARGER_SHAPES,
                         ids=["T{}B{}D{}H{}".format(*s) for s in LARGER_SHAPES])
@pytest.mark.parametrize("seed", [20, 21])
def test_directional(backend, shape, nonlinearity, seed):
    """dL along a random direction V of all inputs at once equals <grads, V>."""
    p = problem(seed, shape, nonlinearity)
    grads = analytic_grads(p, nonlinearity, backend)
    rng = np.random.default_rng(seed + 1000)
    inputs = inputs_of(p, zero_h0=False)
    V = {k: rng.standard_normal(v.shape) for k, v in inputs.items()}
    up = {k: inputs[k] + FD_EPS * V[k] for k in inputs}
    down = {k: inputs[k] - FD_EPS * V[k] for k in inputs}
    numeric = (loss(up, p.dout, p.dh_n, nonlinearity, backend)
               - loss(down, p.dout, p.dh_n, nonlinearity, backend)) / (2 * FD_EPS)
    analytic = sum(np.sum(getattr(grads, INPUTS[k]) * V[k]) for k in inputs)
    # The directional derivative is a sum of many terms of order 1: compare at their scale.
    scale = sum(np.sum(np.abs(getattr(grads, INPUTS[k]) * V[k])) for k in inputs)
    assert abs(analytic - numeric) <= TOL["finite_difference"] * max(1.0, scale), (
        analytic, numeric)
