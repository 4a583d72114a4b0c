"""Optimizers (SGD with momentum, Adagrad, Adam) and gradient clipping, in plain NumPy.

The update rules, defaults and clipping formulas are those of ``torch.optim`` and
``torch.nn.utils.clip_grad_*_`` (single-tensor code path, ``maximize=False``, no ``amsgrad``, no
SGD dampening, no Adagrad ``lr_decay``), so a run here and the same run in PyTorch agree up to
float rounding.

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
import math
import numbers
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from rnnfast.utils.validation import FLOAT_DTYPES, check_allocation, check_keys, may_overlap_itself

__all__ = ["Optimizer", "SGD", "Adagrad", "Adam", "clip_grad_value", "clip_grad_norm"]

# torch.nn.utils.clip_grad_norm_ divides max_norm by (total_norm + 1e-6).
CLIP_NORM_EPS = 1e-6


# --------------------------------------------------------------------------------------------
# Validation of scalars.
# --------------------------------------------------------------------------------------------
def _real(value, name):
    """value as a Python float; TypeError unless it is a real number (bools are not)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    return float(value)


def _positive(value, name):
    value = _real(value, name)
    if not (0.0 < value < math.inf):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return value


def _non_negative(value, name):
    value = _real(value, name)
    if not (0.0 <= value < math.inf):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return value


def _unit_interval(value, name):
    value = _real(value, name)
    if not (0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1); got {value!r}")
    return value


def _boolean(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {type(value).__name__} {value!r}")
    return bool(value)


def _clip_bound(value, name):
    """A clipping bound: > 0; +inf is allowed (no clipping, as in torch)."""
    value = _real(value, name)
    if not value > 0.0:
        raise ValueError(f"{name} must be > 0 (inf allowed); got {value!r}")
    return value


def _scalar(value, name):
    """Unwrap a 0-d array or NumPy scalar (what np.load returns) into a Python scalar."""
    if isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise TypeError(f"state[{name!r}] must be a scalar; got an array of shape "
                            f"{value.shape}")
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------------------------
# Validation of arrays.
# --------------------------------------------------------------------------------------------
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
    checked = _writable_float_arrays(params, "params", "updated")
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


def _writable_float_arrays(arrays, label, action):
    """dict name -> array of ``arrays``, each checked to be a writable float32/float64 ndarray
    (``action``: what is done to it in place, for the messages)."""
    checked = {}
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{label}[{name!r}] must be a NumPy array (it is {action} in place); "
                            f"got {type(array).__name__}")
        if array.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{label}[{name!r}] must have dtype float32 or float64 (native byte "
                            f"order); got {array.dtype}")
        if not array.flags.writeable:
            raise ValueError(f"{label}[{name!r}] is read-only; it is {action} in place")
        if may_overlap_itself(array):  # each element would be updated once per alias
            raise ValueError(f"{label}[{name!r}] has elements that share memory (strides "
                             f"{array.strides} for shape {array.shape}, as np.broadcast_to or "
                             f"as_strided make); it is {action} in place, element by element")
        checked[name] = array
    return checked


def _check_grads_for_clipping(grads, function):
    """The gradient arrays of a clipping call, checked: float ndarrays that can be written."""
    if not isinstance(grads, Mapping):
        raise TypeError(f"{function}: grads must be a dict mapping names to gradient arrays; "
                        f"got {type(grads).__name__}")
    try:
        return list(_writable_float_arrays(grads, "grads", "clipped").values())
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{function}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Optimizers.
# --------------------------------------------------------------------------------------------
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
        self._hyper["lr"] = _positive(value, "lr")

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
        kind = _scalar(state.get("optimizer"), "optimizer")
        if kind != type(self).__name__:
            raise ValueError(f"state['optimizer'] must be {type(self).__name__!r}; got {kind!r}")
        scalar_keys = ("optimizer", "step") + self.HYPERPARAMETERS
        missing = [key for key in scalar_keys if key not in state]
        if missing:
            raise ValueError(f"state is missing the keys {missing}")
        step = _scalar(state["step"], "step")
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"state['step'] must be an int; got {type(step).__name__} {step!r}")
        if step < 0:
            raise ValueError(f"state['step'] must be >= 0; got {step}")
        try:
            hyper = self._check_hyperparameters(
                **{key: _scalar(state[key], key) for key in self.HYPERPARAMETERS})
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"state: {exc}") from None
        fills = self._buffer_fills(hyper)
        expected = list(scalar_keys) + [f"{buffer}/{name}" for name in self._params
                                        for buffer in fills]
        check_keys(state, expected, f"the state of this {type(self).__name__}")

        new_state = {}
        for name, param in self._params.items():
            new_state[name] = {}
            for buffer in fills:
                key = f"{buffer}/{name}"
                array = np.asarray(state[key])
                if array.dtype.kind != "f":
                    raise TypeError(f"state[{key!r}] must be a floating-point array; got dtype "
                                    f"{array.dtype}")
                if array.shape != param.shape:
                    raise ValueError(f"state[{key!r}] must have the shape of params[{name!r}], "
                                     f"{param.shape}; got {array.shape}")
                new_state[name][buffer] = array.astype(param.dtype, copy=True)
        self._hyper, self._step_count, self._state = hyper, int(step), new_state

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


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    With d = g + weight_decay * p, at step t::

        b_1 = d,  b_t = momentum * b_{t-1} + d            (only when momentum > 0)
        u   = d + momentum * b_t  (nesterov),  b_t  (momentum > 0),  d  (momentum == 0)
        p  <- p - lr * u

    Parameters
    ----------
    params : dict of str to ndarray
        Parameters, float32 or float64, writable; updated in place.
    lr : float
        Learning rate, > 0. Required, as in torch (which defaults it to 1e-3).
    momentum : float, default 0.0
        Momentum factor, >= 0.
    weight_decay : float, default 0.0
        L2 penalty, >= 0, added to the gradient.
    nesterov : bool, default False
        Use Nesterov momentum; requires momentum > 0.

    Notes
    -----
    The state dict has the buffers ``momentum_buffer/<name>`` when momentum > 0 (before the
    first step they hold zeros, which the first step overwrites with d, as torch's lazily created
    buffer is).
    """

    HYPERPARAMETERS = ("lr", "momentum", "weight_decay", "nesterov")

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         nesterov=nesterov)

    def _check_hyperparameters(self, lr, momentum, weight_decay, nesterov):
        hyper = {"lr": _positive(lr, "lr"), "momentum": _non_negative(momentum, "momentum"),
                 "weight_decay": _non_negative(weight_decay, "weight_decay"),
                 "nesterov": _boolean(nesterov, "nesterov")}
        if hyper["nesterov"] and hyper["momentum"] == 0.0:
            raise ValueError("nesterov=True requires momentum > 0; got momentum=0.0")
        return hyper

    def _buffer_fills(self, hyper):
        return {"momentum_buffer": 0.0} if hyper["momentum"] != 0.0 else {}

    def _update(self, param, grad, buffers, step):
        lr, momentum = self._hyper["lr"], self._hyper["momentum"]
        weight_decay = self._hyper["weight_decay"]
        d = grad if weight_decay == 0.0 else grad + weight_decay * param
        if momentum != 0.0:
            buf = buffers["momentum_buffer"]
            if step == 1:
                buf[...] = d  # torch: the buffer starts as a copy of the first d
            else:
                buf *= momentum
                buf += d
            d = d + momentum * buf if self._hyper["nesterov"] else buf
        param -= lr * d


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad`` (without ``lr_decay``).

    With d = g + weight_decay * p::

        s <- s + d * d                        (s starts at initial_accumulator_value)
        p <- p - lr * d / (sqrt(s) + eps)

    Parameters
    ----------
    params : dict of str to ndarray
        Parameters, float32 or float64, writable; updated in place.
    lr : float, default 0.01
        Learning rate, > 0.
    eps : float, default 1e-10
        Added to the denominator, > 0.
    initial_accumulator_value : float, default 0.0
        Initial value of every sum of squares, >= 0.
    weight_decay : float, default 0.0
        L2 penalty, >= 0, added to the gradient.

    Notes
    -----
    The state dict has the buffers ``sum/<name>``.
    """

    HYPERPARAMETERS = ("lr", "eps", "initial_accumulator_value", "weight_decay")

    def __init__(self, params, lr=0.01, eps=1e-10, initial_accumulator_value=0.0,
                 weight_decay=0.0):
        super().__init__(params, lr=lr, eps=eps,
                         initial_accumulator_value=initial_accumulator_value,
                         weight_decay=weight_decay)

    def _check_hyperparameters(self, lr, eps, initial_accumulator_value, weight_decay):
        return {"lr": _positive(lr, "lr"), "eps": _positive(eps, "eps"),
                "initial_accumulator_value": _non_negative(initial_accumulator_value,
                                                           "initial_accumulator_value"),
                "weight_decay": _non_negative(weight_decay, "weight_decay")}

    def _buffer_fills(self, hyper):
        return {"sum": hyper["initial_accumulator_value"]}

    def _update(self, param, grad, buffers, step):
        weight_decay = self._hyper["weight_decay"]
        d = grad if weight_decay == 0.0 else grad + weight_decay * param
        total = buffers["sum"]
        total += d * d
        update = np.sqrt(total)
        update += self._hyper["eps"]
        np.divide(d, update, out=update)
        update *= self._hyper["lr"]
        param -= update


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (L2 weight decay added to the gradient, no amsgrad).

    With d = g + weight_decay * p, at step t (m and v start at zero)::

        m <- beta1 * m + (1 - beta1) * d
        v <- beta2 * v + (1 - beta2) * d * d
        p <- p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    params : dict of str to ndarray
        Parameters, float32 or float64, writable; updated in place.
    lr : float, default 1e-3
        Learning rate, > 0.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment estimates, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator, > 0.
    weight_decay : float, default 0.0
        L2 penalty, >= 0, added to the gradient (this is Adam, not AdamW).

    Notes
    -----
    The state dict stores the betas as ``beta1`` and ``beta2``, and the buffers
    ``exp_avg/<name>`` (m) and ``exp_avg_sq/<name>`` (v).
    """

    HYPERPARAMETERS = ("lr", "beta1", "beta2", "eps", "weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2); got {betas!r}")
        super().__init__(params, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps,
                         weight_decay=weight_decay)

    @property
    def betas(self):
        """(beta1, beta2)."""
        return self._hyper["beta1"], self._hyper["beta2"]

    def _check_hyperparameters(self, lr, beta1, beta2, eps, weight_decay):
        return {"lr": _positive(lr, "lr"), "beta1": _unit_interval(beta1, "betas[0] (beta1)"),
                "beta2": _unit_interval(beta2, "betas[1] (beta2)"), "eps": _positive(eps, "eps"),
                "weight_decay": _non_negative(weight_decay, "weight_decay")}

    def _buffer_fills(self, hyper):
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def _update(self, param, grad, buffers, step):
        lr, beta1, beta2 = self._hyper["lr"], self._hyper["beta1"], self._hyper["beta2"]
        weight_decay = self._hyper["weight_decay"]
        d = grad if weight_decay == 0.0 else grad + weight_decay * param
        m, v = buffers["exp_avg"], buffers["exp_avg_sq"]
        # m <- beta1 m + (1 - beta1) d, written as torch's lerp_(d, 1 - beta1) computes it, so
        # the two agree to the last bit more often (and beta1 = 0 gives m = d exactly).
        weight = 1.0 - beta1
        if weight < 0.5:
            m += weight * (d - m)
        else:
            m[...] = d - (d - m) * (1.0 - weight)
        v *= beta2
        v += (1.0 - beta2) * d * d
        step_size = lr / (1.0 - beta1 ** step)
        update = np.sqrt(v)
        update /= (1.0 - beta2 ** step) ** 0.5
        update += self._hyper["eps"]
        np.divide(m, update, out=update)
        update *= step_size
        param -= update


# --------------------------------------------------------------------------------------------
# Gradient clipping.
# --------------------------------------------------------------------------------------------
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
