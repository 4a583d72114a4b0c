"""The base of the optimizers: parameters, step count, buffers and state dicts.

Conventions
-----------
- Parameters are a dict ``name -> ndarray`` (float32 or float64, writable), for example a layer's
  parameter dict. An optimizer keeps references to those arrays and updates them **in place**, so
  whatever holds the arrays sees each step. Every computation runs in the parameter's own dtype.
- ``step(grads)`` takes a dict ``name -> gradient`` with exactly the parameters' keys, each of the
  parameter's shape and dtype. Gradients are never modified by a step.
- ``state_dict()`` is a flat dict of scalars and arrays, ready for ``np.savez``::

      {"optimizer": "Adam", "step": 3, "lr": 0.001, "beta1": 0.9, ...,
       "exp_avg/weight_hh_l0": ndarray, "exp_avg_sq/weight_hh_l0": ndarray, ...}

  Buffers are keyed ``"<buffer>/<parameter name>"``. ``load_state_dict`` accepts that dict, or
  the same after a trip through ``np.savez`` / ``np.load`` (scalars come back as 0-d arrays).
"""
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from rnnfast.utils.memory import check_allocation
from rnnfast.utils.validation import (check_entries, check_int, check_keys, check_real,
                                      check_writable_float_arrays, unwrap_scalar)

__all__ = ["Optimizer"]


def _check_params(params):
    """A new dict name -> array of the optimizer's parameters, checked (not copied)."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict mapping parameter names to NumPy arrays; got "
                        f"{type(params).__name__}")
    if not params:
        raise ValueError("params is empty: an optimizer needs at least one parameter")
    for name in params:
        if not isinstance(name, str):
            raise TypeError(f"params keys must be str (parameter names); got {name!r} of type "
                            f"{type(name).__name__}")
    checked = check_writable_float_arrays(params, "params", "updated")
    names = list(checked)
    for i, first in enumerate(names):  # a shared array would be updated twice per step
        for second in names[i + 1:]:
            if _overlap(checked[first], checked[second]):
                raise ValueError(f"params[{first!r}] and params[{second!r}] share memory; each "
                                 f"parameter must be a separate array")
    return checked


def _overlap(a, b):
    if not np.may_share_memory(a, b):
        return False
    try:
        return np.shares_memory(a, b, max_work=10_000)
    except np.exceptions.TooHardError:  # pragma: no cover - exotic strides
        return True


class Optimizer:
    """Base class: parameters, step count, per-parameter buffers and their (de)serialisation.

    A subclass defines ``HYPERPARAMETERS`` (the names of its scalar settings, as in its state
    dict), ``_check_hyperparameters`` (validate and normalise them), ``_buffer_fills`` (which
    buffers each parameter has and their initial value) and ``_update`` (one parameter's step).
    """

    HYPERPARAMETERS = ()

    def __init__(self, params, **hyperparameters):
        self._params = _check_params(params)
        self._hyper = self._check_hyperparameters(**hyperparameters)
        self._step_count = 0
        buffers = list(self._buffer_fills(self._hyper))
        if buffers:
            elements = sum(param.size * param.itemsize for param in self._params.values())
            check_allocation(type(self).__name__, [
                (f"its buffers {', '.join(buffers)} (buffers, bytes of the parameters)",
                 (len(buffers), elements), np.uint8)])
        self._state = self._new_state(self._hyper)

    # -- public API ---------------------------------------------------------------------------
    @property
    def params(self):
        """The parameters (read-only view of the dict; the arrays themselves are updated)."""
        return MappingProxyType(self._params)

    @property
    def step_count(self):
        """Number of steps taken (restored by ``load_state_dict``)."""
        return self._step_count

    @property
    def hyperparameters(self):
        """The scalar settings, by the names they have in the state dict (a copy)."""
        return dict(self._hyper)

    @property
    def lr(self):
        """The learning rate. May be set between steps (e.g. by a schedule); must be > 0."""
        return self._hyper["lr"]

    @lr.setter
    def lr(self, value):
        self._hyper["lr"] = check_real(value, "lr", 0.0, include_low=False)

    def step(self, grads):
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : dict of str to array_like
            The gradient of the loss with respect to each parameter, with exactly the keys of
            ``params``; each must have its parameter's shape and dtype. Not modified.

        Raises
        ------
        TypeError
            ``grads`` is not a dict, or a gradient's dtype differs from its parameter's.
        ValueError
            Missing or extra keys, or a gradient's shape differs from its parameter's.

        Nothing is updated when an error is raised: every gradient is checked first.
        """
        grads = self._check_grads(grads)
        self._step_count += 1
        for name, param in self._params.items():
            self._update(param, grads[name], self._state[name], self._step_count)

    def state_dict(self):
        """The optimizer's state as a flat dict of scalars and arrays (copies).

        Returns
        -------
        dict
            ``"optimizer"`` (the class name), ``"step"`` (int), one entry per hyperparameter
            (float or bool), and one array per buffer and parameter, keyed
            ``"<buffer>/<parameter name>"``, with the parameter's shape and dtype. Later steps do
            not change the returned arrays. ``np.savez(file, **opt.state_dict())`` stores it.
        """
        state = {"optimizer": type(self).__name__, "step": self._step_count}
        state.update(self._hyper)
        for name, buffers in self._state.items():
            for buffer, array in buffers.items():
                state[f"{buffer}/{name}"] = array.copy()
        return state

    def load_state_dict(self, state):
        """Restore a state saved by ``state_dict`` (possibly through ``np.savez``/``np.load``).

        The step count, the buffers and the hyperparameters are restored, as in
        ``torch.optim``: after loading, the optimizer continues exactly as the saved one would.
        To change a setting on resume (say the learning rate), set ``opt.lr`` after loading.
        Buffers are copied, and cast to their parameter's dtype.

        Parameters
        ----------
        state : mapping
            Scalars may be Python scalars, NumPy scalars or 0-d arrays.

        Raises
        ------
        TypeError
            ``state`` is not a mapping, a scalar entry is an array or of the wrong type, or a
            buffer is not a floating-point array.
        ValueError
            The state is of another optimizer class, has missing or extra keys (for instance
            buffers of a parameter this optimizer does not have), a buffer of the wrong shape,
            or an invalid value.

        Nothing changes when an error is raised: everything is checked before anything is set.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict (from state_dict()); got "
                            f"{type(state).__name__}")
        kind = unwrap_scalar(state.get("optimizer"), "state['optimizer']")
        if kind != type(self).__name__:
            raise ValueError(f"state['optimizer'] must be {type(self).__name__!r}; got {kind!r}")
        scalar_keys = ("optimizer", "step") + self.HYPERPARAMETERS
        missing = [key for key in scalar_keys if key not in state]
        if missing:
            raise ValueError(f"state is missing the keys {missing}")
        step = check_int(unwrap_scalar(state["step"], "state['step']"), "state['step']", low=0)
        try:
            hyper = self._check_hyperparameters(
                **{key: unwrap_scalar(state[key], key) for key in self.HYPERPARAMETERS})
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"state: {exc}") from None
        fills = self._buffer_fills(hyper)
        shapes = {f"{buffer}/{name}": param.shape for name, param in self._params.items()
                  for buffer in fills}
        check_keys(state, list(scalar_keys) + list(shapes),
                   f"the state of this {type(self).__name__}")
        buffers = check_entries(state, shapes, "state", kinds="f",
                                kind_text="floating-point numbers")
        new_state = {name: {buffer: buffers[f"{buffer}/{name}"].astype(param.dtype, copy=True)
                            for buffer in fills}
                     for name, param in self._params.items()}
        self._hyper, self._step_count, self._state = hyper, step, new_state

    def __repr__(self):
        settings = ", ".join(f"{key}={value!r}" for key, value in self._hyper.items())
        return (f"{type(self).__name__}({settings}; {len(self._params)} parameters, "
                f"step {self._step_count})")

    # -- internals ----------------------------------------------------------------------------
    def _new_state(self, hyper):
        fills = self._buffer_fills(hyper)
        return {name: {buffer: np.full_like(param, fill) for buffer, fill in fills.items()}
                for name, param in self._params.items()}

    def _check_grads(self, grads):
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads must be a dict mapping parameter names to gradients; got "
                            f"{type(grads).__name__}")
        check_keys(grads, self._params, "grads")
        checked = {}
        for name, param in self._params.items():
            try:
                grad = np.asarray(grads[name])
            except (TypeError, ValueError) as exc:
                raise TypeError(f"grads[{name!r}] could not be converted to an array: "
                                f"{exc}") from None
            if grad.dtype.newbyteorder("=") != param.dtype:  # either byte order
                raise TypeError(f"grads[{name!r}] must have dtype {param.dtype} (that of "
                                f"params[{name!r}]); got {grad.dtype}")
            if grad.shape != param.shape:
                raise ValueError(f"grads[{name!r}] must have shape {param.shape} (that of "
                                 f"params[{name!r}]); got {grad.shape}")
            checked[name] = grad
        return checked

    def _check_hyperparameters(self, **hyper):  # pragma: no cover - abstract
        raise NotImplementedError

    def _buffer_fills(self, hyper):  # pragma: no cover - abstract
        raise NotImplementedError

    def _update(self, param, grad, buffers, step):  # pragma: no cover - abstract
        raise NotImplementedError
