"""The update rules: SGD with (Nesterov) momentum, Adagrad and Adam, as ``torch.optim``'s.

The update rules and defaults are those of ``torch.optim`` (single-tensor code path,
``maximize=False``, no ``amsgrad``, no SGD dampening, no Adagrad ``lr_decay``), so a run here and
the same run in PyTorch agree up to float rounding. Each computes in its parameter's dtype.
"""
import numpy as np

from rnnfast.train.optim._adam import adam_update
from rnnfast.train.optim.optimizer import Optimizer
from rnnfast.utils.validation import check_bool, check_real

__all__ = ["SGD", "Adagrad", "Adam", "adam_update_numpy"]


def _positive(value, name):
    return check_real(value, name, 0.0, include_low=False)


def _non_negative(value, name):
    return check_real(value, name, 0.0)


def _unit_interval(value, name):
    return check_real(value, name, 0.0, 1.0)


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
                 "nesterov": check_bool(nesterov, "nesterov")}
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

    Each parameter is updated in one compiled pass (rnnfast/train/optim/_adam.pyx) when it is
    contiguous, else by ``adam_update_numpy``: the same bits either way.
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
        m, v = buffers["exp_avg"], buffers["exp_avg_sq"]
        # The compiled pass where every array is one flat run of its dtype (a model's
        # parameters and the buffers made for them) and the gradient is not a view into the
        # parameter; the NumPy update, with the same bits, elsewhere.
        if (param.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous
                and not np.may_share_memory(grad, param)):
            flat_grad = np.ascontiguousarray(grad, dtype=param.dtype).reshape(-1)
            adam_update(param.reshape(-1), flat_grad, m.reshape(-1), v.reshape(-1),
                        1.0 - beta1, beta2, self._hyper["weight_decay"],
                        (1.0 - beta2 ** step) ** 0.5, self._hyper["eps"],
                        lr / (1.0 - beta1 ** step))
        else:
            adam_update_numpy(param, grad, m, v, step, **self._hyper)


def adam_update_numpy(param, grad, exp_avg, exp_avg_sq, step, *, lr, beta1, beta2, eps,
                      weight_decay):
    """Adam's step t = ``step`` on one parameter, in place, in NumPy: the reference of the
    compiled pass (rnnfast/train/optim/_adam.pyx), which gives the same bits."""
    d = grad if weight_decay == 0.0 else grad + weight_decay * param
    m, v = exp_avg, exp_avg_sq
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
    update += eps
    np.divide(m, update, out=update)
    update *= step_size
    param -= update
