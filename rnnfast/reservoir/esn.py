"""`ESN`: an echo state network, a Reservoir with a Ridge readout trained in closed form.

The ESN keeps the reservoir's state between calls, as a ReservoirPy model does: ``fit`` starts
from zeros and leaves the state where training ended, ``predict`` continues from there (so a
test series that follows the training series is predicted with the state it left), and
``generate`` runs closed-loop from the current state.
"""
import numbers

import numpy as np

from rnnfast.reservoir.reservoir import Reservoir
from rnnfast.reservoir.ridge import Ridge
from rnnfast.utils.validation import check_int, check_shape, float_array

__all__ = ["ESN"]

# Long series are run this many state numbers (steps x series x units) at a time, so that a fit
# or a prediction never holds more than one chunk of states (32 MiB in float64).
CHUNK_STATES = 1 << 22


class ESN:
    """An echo state network: ``reservoir`` (fixed) and a ridge readout (trained).

    Parameters
    ----------
    reservoir : Reservoir
    ridge : float or Ridge
        The readout's L2 penalty (a Ridge with fit_bias=True is made), or the Ridge itself.

    Attributes
    ----------
    reservoir : Reservoir
    readout : Ridge
    state : ndarray, shape (H,) or (B, H), or None
        The reservoir's state after the last call (None: zeros, before any call or after
        ``reset``); assign to set it.
    """

    def __init__(self, reservoir, ridge=1e-6):
        if not isinstance(reservoir, Reservoir):
            raise TypeError(f"reservoir must be an rnnfast.reservoir.Reservoir; got "
                            f"{type(reservoir).__name__}")
        if isinstance(ridge, Ridge):
            readout = ridge
        elif isinstance(ridge, numbers.Real) and not isinstance(ridge, (bool, np.bool_)):
            readout = Ridge(ridge)
        else:
            raise TypeError(f"ridge must be a number >= 0 or an rnnfast.reservoir.Ridge; got "
                            f"{type(ridge).__name__} {ridge!r}")
        self.reservoir, self.readout = reservoir, readout
        self._state = None  # (B, H), or None for zeros
        self._single = True  # whether the last call took one series (T, D)

    # -- the state ---------------------------------------------------------------------------

    @property
    def state(self):
        if self._state is None:
            return None
        return self._state[0].copy() if self._single else self._state.copy()

    @state.setter
    def state(self, value):
        if value is None:
            self._state = None
            return
        array = np.asarray(value) if not isinstance(value, np.ndarray) else value
        single = array.ndim == 1
        layout = ("H",) if single else ("B", "H")
        array = float_array(array, "state", layout)
        H = self.reservoir.units
        check_shape(array, "state", layout, (H,) if single else (array.shape[0], H),
                    "(H from the reservoir)")
        self._state = np.array(array, dtype=self.reservoir.dtype).reshape(-1, H)
        self._single = single

    def reset(self):
        """Set the state to zeros (None)."""
        self._state = None

    # -- training and prediction -------------------------------------------------------------

    def fit(self, u, y, warmup=0):
        """Train the readout on u (T, D) or (T, B, D) and the targets y (T, O) or (T, B, O),
        from a zero state, discarding the first ``warmup`` steps of every series (their states
        still depend on the zero start). Forgets earlier fits; leaves the state where the
        series ends. Returns self."""
        self.readout.reset()
        self.reset()
        self.partial_fit(u, y, warmup)
        self.readout.coef_  # solved now (a singular fit raises here, not at the first predict)
        return self

    def partial_fit(self, u, y, warmup=0):
        """Continue training on the next chunk of the series (u, y as in ``fit``), from the
        current state; the first ``warmup`` steps of this chunk are discarded. Returns self.

        A series that does not fit in memory is fitted chunk by chunk: ``fit`` on the first
        (with the warm-up), then ``partial_fit`` on the others; the readout equals the one
        fitted on the whole series up to rounding."""
        x, single = self._series(u, "u")
        targets, targets_single = self._series(y, "y")
        if targets_single != single or targets.shape[:2] != x.shape[:2]:
            raise ValueError(f"y must have the steps (and series) of u: u has shape "
                             f"{np.shape(u)}, y {np.shape(y)}")
        T = x.shape[0]
        warmup = check_int(warmup, "warmup", low=0, high=T - 1)
        self._check_state(x.shape[1], single)
        for start, states in self._run_chunks(x):
            stop = start + len(states)
            skip = max(0, warmup - start)
            if skip < len(states):
                features = states[skip:].reshape(-1, self.reservoir.units)
                self.readout.partial_fit(features,
                                         targets[start + skip:stop].reshape(len(features), -1))
        return self

    def predict(self, u):
        """The readout's outputs for u (T, D) or (T, B, D), from the current state (where the
        last call left it): (T, O) or (T, B, O). Updates the state."""
        x, single = self._series(u, "u")
        self.readout.coef_  # fitted? (raises otherwise, before running the reservoir)
        self._check_state(x.shape[1], single)
        outputs = []
        for _, states in self._run_chunks(x):
            flat = states.reshape(-1, self.reservoir.units)
            outputs.append(self._readout(flat).reshape(states.shape[0], states.shape[1], -1))
        y = np.concatenate(outputs)
        return y[:, 0] if single else y

    def generate(self, n_steps):
        """Run closed-loop for n_steps: each output is fed back as the next input (the
        readout must have as many outputs as the reservoir has inputs).

        It starts from the current state, h (after the last input the ESN was given, e.g. by
        ``predict`` on a warm-up series u_1..u_T), and its first output is the readout of h:
        the forecast of the step after that series, y_{T+1}; y_{T+1} is then the input of the
        next step, whose readout is y_{T+2}, and so on. So ``generate(n)`` continues the series
        u_1..u_T by n values (its first equals ``predict(u)[-1]``), and two calls in a row
        continue each other. Returns (n_steps, O), or (n_steps, B, O) after a batched call;
        updates the state.
        """
        n_steps = check_int(n_steps, "n_steps", low=1)
        coef = self.readout.coef_
        if coef.shape[0] != self.reservoir.input_size:
            raise ValueError(f"generate feeds the outputs back as inputs: the readout has "
                             f"{coef.shape[0]} outputs, the reservoir "
                             f"{self.reservoir.input_size} inputs")
        h = (self._state if self._state is not None
             else np.zeros((1, self.reservoir.units), dtype=self.reservoir.dtype))
        outputs = np.empty((n_steps,) + (h.shape[0], coef.shape[0]), dtype=self.reservoir.dtype)
        for k in range(n_steps):
            outputs[k] = self._readout(h)
            h = self.reservoir.run(outputs[k][None], h0=h)[0]
        self._state = h
        return outputs[:, 0] if self._single else outputs

    # -- helpers -----------------------------------------------------------------------------

    def _readout(self, states):
        """The readout's outputs (N, O) for states (N, H)."""
        y = self.readout.predict(states)
        return y[:, None] if y.ndim == 1 else y

    def _series(self, value, name):
        """value (T, F) or (T, B, F) as a (T, B, F) float array in the reservoir's dtype, and
        whether it was one series."""
        array = np.asarray(value) if not isinstance(value, np.ndarray) else value
        if array.ndim not in (2, 3):
            raise ValueError(f"{name} must be 2-D (T, {'D' if name == 'u' else 'O'}) or 3-D "
                             f"(T, B, {'D' if name == 'u' else 'O'}); got a {array.ndim}-D "
                             f"array with shape {array.shape}")
        single = array.ndim == 2
        features = "D" if name == "u" else "O"
        array = float_array(array, name, ("T", features) if single else ("T", "B", features))
        array = array[:, None] if single else array
        return np.asarray(array, dtype=self.reservoir.dtype), single

    def _check_state(self, B, single):
        if self._state is not None and self._state.shape[0] != B:
            raise ValueError(f"the ESN's state holds {self._state.shape[0]} series; this call "
                             f"has B = {B}: call reset() first, or set state")
        self._single = single

    def _run_chunks(self, x):
        """(first step, states (steps, B, H)) of the reservoir over x (T, B, D), chunk by chunk
        from the current state, which ends at the last states."""
        T, B, _ = x.shape
        steps = max(1, CHUNK_STATES // (B * self.reservoir.units))
        for start in range(0, T, steps):
            states = self.reservoir.run(x[start:start + steps], h0=self._state)
            self._state = states[-1].copy()  # not a view that would keep the chunk
            yield start, states
