"""One step of a vanilla or leaky RNN as a map of the hidden state: the system whose fixed
points rnnfast.dynamics finds.

    F(h) = (1 - α) h + α f(W_hh h + W_xh x + b)          f = tanh or relu, α in (0, 1]

With a constant input x, a fixed point is a state h* with F(h*) = h*. Near it the map is its
linearisation, the Jacobian

    dF/dh = (1 - α) I + α diag(f'(a)) W_hh,      a = W_hh h + W_xh x + b

whose eigenvalues say how perturbations grow (|λ| > 1) or decay (|λ| < 1) step after step. α may
be one number or one per unit (then (1 - α) I and α diag(...) are diagonal matrices of them).
Everything is computed in float64, whatever the dtype of the weights.
"""
import numbers

import numpy as np

from rnnfast.functional import NONLINEARITIES
from rnnfast.utils.validation import as_float_array, check_choice, check_shape

__all__ = ["StepMap"]


def _finite_matrix(value, name, layout):
    array = as_float_array(value, name, layout).astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite; it has {int(np.sum(~np.isfinite(array)))} NaN "
                         f"or inf entries")
    array.flags.writeable = False
    return array


def _leak(value, H):
    """α as a float (one for every unit) or a read-only (H,) float64 array, each in (0, 1]."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"leak must be a number in (0, 1] or an (H,) array of them; got {value!r}")
    if isinstance(value, numbers.Real):
        if not 0 < value <= 1:
            raise ValueError(f"leak must lie in (0, 1]; got {value!r}")
        return float(value)
    leak = _finite_matrix(value, "leak", ("H",))
    check_shape(leak, "leak", ("H",), (H,), "(H from W_hh)")
    if not np.all((leak > 0) & (leak <= 1)):
        bad = leak[~((leak > 0) & (leak <= 1))][0]
        raise ValueError(f"every entry of leak must lie in (0, 1]; got {bad!r}")
    return leak


class StepMap:
    """F(h) = (1 - α) h + α f(W_hh h + W_xh x + b): one step of a vanilla (α = 1) or leaky RNN.

    Parameters
    ----------
    W_hh : array_like, shape (H, H)
        Recurrent weights (``weight_hh_l0`` of torch.nn.RNN).
    W_xh : array_like, shape (H, D), or None
        Input weights (``weight_ih_l0``); None: the map has no input (D = 0).
    b : array_like, shape (H,), or None
        Bias (``bias_ih_l0 + bias_hh_l0``); None: no bias.
    leak : float or array_like of shape (H,)
        α, in (0, 1]: 1 is the plain RNN, smaller values a leaky (discretised continuous-time)
        unit that keeps 1 - α of its state each step.
    nonlinearity : {"tanh", "relu"}

    The arrays are copied to float64 and kept read-only. Calling the map, ``F(h, x)``, takes one
    step from a batch of states; ``jacobian`` linearises it; ``run`` iterates it over inputs.
    """

    def __init__(self, W_hh, W_xh=None, b=None, leak=1.0, nonlinearity="tanh"):
        self.W_hh = _finite_matrix(W_hh, "W_hh", ("H", "H"))
        H = self.W_hh.shape[0]
        check_shape(self.W_hh, "W_hh", ("H", "H"), (H, H), "(square)")
        self.W_xh = None
        if W_xh is not None:
            self.W_xh = _finite_matrix(W_xh, "W_xh", ("H", "D"))
            check_shape(self.W_xh, "W_xh", ("H", "D"), (H, self.W_xh.shape[1]), "(H from W_hh)")
        self.b = None
        if b is not None:
            self.b = _finite_matrix(b, "b", ("H",))
            check_shape(self.b, "b", ("H",), (H,), "(H from W_hh)")
        self.leak = _leak(leak, H)
        self.nonlinearity = check_choice(nonlinearity, "nonlinearity", NONLINEARITIES)

    @property
    def hidden_size(self):
        return self.W_hh.shape[0]

    @property
    def input_size(self):
        """D, the size of x (0 when the map has no input weights)."""
        return 0 if self.W_xh is None else self.W_xh.shape[1]

    def __repr__(self):
        leak = self.leak if isinstance(self.leak, float) else f"array of {self.hidden_size}"
        return (f"StepMap(hidden_size={self.hidden_size}, input_size={self.input_size}, "
                f"bias={self.b is not None}, leak={leak}, nonlinearity={self.nonlinearity!r})")

    # -- the pieces the solver uses ------------------------------------------------------------

    def drive(self, inputs=None):
        """The constant part of the pre-activation, W_xh x + b, for one input.

        Parameters
        ----------
        inputs : array_like, shape (D,), or None
            The constant input x; None means zero (and is the only choice when D = 0).

        Returns
        -------
        ndarray, shape (H,), float64
        """
        c = np.zeros(self.hidden_size) if self.b is None else self.b.copy()
        if inputs is None:
            return c
        if self.W_xh is None:
            raise ValueError("inputs must be None: this map has no input weights (W_xh is None)")
        x = _finite_matrix(inputs, "inputs", ("D",))
        check_shape(x, "inputs", ("D",), (self.input_size,), "(D from W_xh)")
        return c + self.W_xh @ x

    def activate(self, a):
        """f(a) and f'(a), elementwise."""
        if self.nonlinearity == "tanh":
            f = np.tanh(a)
            return f, 1.0 - f * f
        return np.maximum(a, 0.0), (a > 0).astype(np.float64)

    def residual(self, h, drive):
        """r = F(h) - h = α (f(a) - h) for states h (K, H), and f'(a) (K, H)."""
        f, slope = self.activate(h @ self.W_hh.T + drive)
        return self.leak * (f - h), slope

    # -- the public map --------------------------------------------------------------------------

    def _states(self, h):
        """h as a float64 (K, H) or (H,) array of this map's H."""
        layout = ("H",) if np.ndim(h) == 1 else ("K", "H")
        states = _finite_matrix(h, "h", layout)
        check_shape(states, "h", layout, states.shape[:-1] + (self.hidden_size,),
                    "(H from W_hh)")
        return states

    def __call__(self, h, inputs=None):
        """F(h): one step from each state.

        Parameters
        ----------
        h : array_like, shape (K, H) or (H,)
        inputs : array_like, shape (D,), or None (zero)

        Returns
        -------
        ndarray, the shape of h, float64
        """
        h = self._states(h)
        r, _ = self.residual(np.atleast_2d(h), self.drive(inputs))
        return h + r.reshape(h.shape)

    def jacobian(self, h, inputs=None):
        """dF/dh = (1 - α) I + α diag(f'(a)) W_hh at each state.

        Parameters
        ----------
        h : array_like, shape (K, H) or (H,)
        inputs : array_like, shape (D,), or None (zero)

        Returns
        -------
        ndarray, shape (K, H, H) (or (H, H) for one state), float64
            J[k, i, j] = dF_i/dh_j at state k.
        """
        h = self._states(h)
        states = np.atleast_2d(h)
        _, slope = self.activate(states @ self.W_hh.T + self.drive(inputs))
        J = self.residual_jacobian(slope)
        J[:, np.arange(self.hidden_size), np.arange(self.hidden_size)] += 1.0
        return J[0] if h.ndim == 1 else J

    def residual_jacobian(self, slope):
        """d(F(h) - h)/dh = α (diag(f'(a)) W_hh - I), for f'(a) (K, H): (K, H, H)."""
        H = self.hidden_size
        alpha = np.broadcast_to(self.leak, (H,))
        J = (alpha * slope)[:, :, None] * self.W_hh
        J[:, np.arange(H), np.arange(H)] -= alpha
        return J

    def run(self, inputs=None, h0=None, *, steps=None):
        """Iterate the map: h_t = F(h_{t-1}, x_t), the states of an RNN over a sequence.

        Parameters
        ----------
        inputs : array_like, shape (T, B, D), or None
            Inputs, time-major (as rnnfast.rnn_forward); None: zero input for ``steps`` steps.
        h0 : array_like, shape (B, H), or None (zeros)
        steps : int, only without inputs
            T.

        Returns
        -------
        ndarray, shape (T, B, H), float64
            The state after each step (``out[-1]`` is the last).
        """
        if inputs is None:
            if steps is None or isinstance(steps, bool) or not isinstance(
                    steps, numbers.Integral) or steps < 1:
                raise ValueError(f"without inputs, steps must be an int >= 1; got {steps!r}")
            B = 1 if h0 is None else np.shape(h0)[0]
            drives = np.broadcast_to(self.drive(None), (steps, B, self.hidden_size))
        else:
            if self.W_xh is None:
                raise ValueError("inputs must be None: this map has no input weights")
            x = _finite_matrix(inputs, "inputs", ("T", "B", "D"))
            check_shape(x, "inputs", ("T", "B", "D"), x.shape[:2] + (self.input_size,),
                        "(D from W_xh)")
            drives = x @ self.W_xh.T + (0.0 if self.b is None else self.b)
        T, B, H = drives.shape
        h = np.zeros((B, H)) if h0 is None else _finite_matrix(h0, "h0", ("B", "H"))
        check_shape(h, "h0", ("B", "H"), (B, H), "(B from inputs, H from W_hh)")
        out = np.empty((T, B, H))
        for t in range(T):
            r, _ = self.residual(h, drives[t])
            h = out[t] = h + r
        return out
