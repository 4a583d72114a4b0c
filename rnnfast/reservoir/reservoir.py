"""`Reservoir`: a fixed random leaky RNN driven by an input series, run forward only.

    h_t = (1 - leak) h_{t-1} + leak f(W h_{t-1} + W_in u_t + bias)

with W (H, H) sparse or dense, W_in (H, D), as in ReservoirPy (W @ x, Win @ u: rnnfast's
W_hh and W_xh). A run keeps nothing for a gradient. Sparse reservoirs step on the sparse
matrix where that is faster (rnnfast.reservoir.sliced, the one place the switch lives), dense
ones on rnnfast's dense kernels through rnn_forward(need_grad=False).
"""
import numbers

import numpy as np
import scipy.sparse

from rnnfast.functional import NONLINEARITIES, check_leak, rnn_forward
from rnnfast.reservoir import sliced
from rnnfast.reservoir.weights import bias_weights, input_weights, recurrent_weights
from rnnfast.utils.memory import check_allocation
from rnnfast.utils.validation import (check_choice, check_float_dtype, check_real, check_shape,
                                      check_size, contiguous, float_array, native_dtype,
                                      random_generator)

__all__ = ["Reservoir"]

_ADVICE = "run the series in chunks, passing h0 = the last states of the chunk before"


def _check_square(W):
    """W as a float ndarray or a canonical CSR copy (scipy.sparse input), square, not empty."""
    if scipy.sparse.issparse(W):
        if W.dtype not in (np.float32, np.float64):
            raise TypeError(f"W must have dtype float32 or float64; got {W.dtype}")
        if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] == 0:
            raise ValueError(f"W must be a square (H, H) matrix with H >= 1; got shape "
                             f"{W.shape}")
        csr = scipy.sparse.csr_array(W, copy=True)
        csr.sum_duplicates()
        for array in (csr.data, csr.indices, csr.indptr):
            array.flags.writeable = False
        return csr
    W = float_array(W, "W", ("H", "H"))
    check_shape(W, "W", ("H", "H"), (W.shape[0],) * 2, "(square)")
    W = np.array(W, dtype=native_dtype(W))  # the reservoir's own copy
    W.flags.writeable = False
    return W


def _own(array):
    """A read-only copy of a checked array, C-contiguous in native byte order."""
    array = np.array(contiguous(array))
    array.flags.writeable = False
    return array


class Reservoir:
    """A random leaky reservoir (echo state network), as ReservoirPy's ``Reservoir``.

    Parameters
    ----------
    units : int
        H, the number of units.
    spectral_radius : float
        W is scaled to this largest eigenvalue modulus (> 0; below 1 for the echo state
        property of most inputs).
    leak : float or array_like, shape (H,)
        The leak rate alpha in (0, 1], one for every unit or one per unit (ReservoirPy's lr).
    input_scaling : float or array_like, shape (D,)
        W_in's weights are +-input_scaling (one per input: an array of D).
    bias_scaling : float
        The bias is uniform in [-bias_scaling, bias_scaling]; 0 (the default): no bias.
    connectivity : float
        The fraction of W's entries that are not zero, in (0, 1]; 1 gives a dense W.
    input_connectivity : float
        The fraction of the units each input reaches (at least one), in (0, 1].
    nonlinearity : {"tanh", "relu"}
    seed : int, None or numpy.random.Generator
        Seeds W, W_in and the bias (each its own stream, so W does not depend on D).
    dtype : float32 or float64
    input_size : int or None
        D; None: taken from the first series run (W_in is drawn then).

    W is standard normal on its nonzero entries (their positions uniform without replacement),
    scaled to the spectral radius (ARPACK, as ReservoirPy): a CSR matrix below connectivity 1.
    """

    def __init__(self, units, *, spectral_radius=0.9, leak=1.0, input_scaling=1.0,
                 bias_scaling=0.0, connectivity=0.1, input_connectivity=0.1,
                 nonlinearity="tanh", seed=None, dtype=np.float64, input_size=None):
        H = check_size(units, "units")
        radius = check_real(spectral_radius, "spectral_radius", low=0.0, include_low=False)
        connectivity = check_real(connectivity, "connectivity", 0.0, 1.0, include_low=False,
                                  include_high=True)
        self._input_connectivity = check_real(input_connectivity, "input_connectivity", 0.0,
                                              1.0, include_low=False, include_high=True)
        bias_scaling = check_real(bias_scaling, "bias_scaling", low=0.0)
        self._input_scaling = _check_input_scaling(input_scaling)
        dtype = check_float_dtype(dtype)
        rng = random_generator(seed)
        W_rng, self._input_rng, bias_rng = rng.spawn(3)
        self._set(recurrent_weights(H, connectivity, radius, W_rng, dtype), None,
                  bias_weights(H, bias_scaling, bias_rng, dtype), leak, nonlinearity)
        if input_size is not None:
            self._draw_input_weights(check_size(input_size, "input_size"))

    @classmethod
    def from_weights(cls, W, W_in, bias=None, *, leak=1.0, nonlinearity="tanh"):
        """A reservoir with weights made elsewhere, e.g. a ReservoirPy reservoir's
        ``W, Win, bias, lr``.

        Parameters
        ----------
        W : ndarray or scipy.sparse matrix, shape (H, H)
            Float32 or float64: the reservoir's dtype. Sparse matrices are kept sparse (as
            CSR, duplicate entries summed).
        W_in : array_like or scipy.sparse matrix, shape (H, D)
            Of W's dtype.
        bias : None, a real number, or array_like, shape (H,)
            Of W's dtype; None or 0: no bias.
        leak, nonlinearity : as in the constructor.

        The arrays are copied: changing them later does not change the reservoir.
        """
        W = _check_square(W)
        H, dtype = W.shape[0], W.dtype
        if scipy.sparse.issparse(W_in):
            W_in = W_in.toarray()
        W_in = float_array(W_in, "W_in", ("H", "D"))
        check_shape(W_in, "W_in", ("H", "D"), (H, W_in.shape[1]), "(H from W)")
        if isinstance(bias, numbers.Real) and not isinstance(bias, (bool, np.bool_)):
            bias = None if bias == 0 else np.full(H, bias, dtype=dtype)
        elif bias is not None:
            bias = float_array(bias, "bias", ("H",))
            check_shape(bias, "bias", ("H",), (H,), "(H from W)")
        for name, array in (("W_in", W_in), ("bias", bias)):
            if array is not None and native_dtype(array) != dtype:
                raise TypeError(f"{name} must have the dtype of W, {dtype}; got {array.dtype}")
        reservoir = cls.__new__(cls)
        reservoir._input_scaling = reservoir._input_connectivity = reservoir._input_rng = None
        reservoir._set(W, _own(W_in), None if bias is None else _own(bias), leak, nonlinearity)
        return reservoir

    def _set(self, W, W_in, bias, leak, nonlinearity):
        self._W, self._W_in, self._bias = W, W_in, bias
        self._dtype = np.dtype(W.dtype)
        H = W.shape[0]
        self._leak = check_leak(leak, H, self._dtype)  # None: no leak
        if self._leak is not None:
            self._leak = _own(self._leak)
        self._nonlinearity = check_choice(nonlinearity, "nonlinearity", NONLINEARITIES)
        self._nnz = int(W.nnz) if scipy.sparse.issparse(W) else H * H
        self._sliced = self._dense = None  # the step matrices, made when first needed

    def _draw_input_weights(self, D):
        scaling = self._input_scaling
        if np.ndim(scaling) and len(scaling) != D:
            raise ValueError(f"input_scaling has {len(scaling)} values, one per input; the "
                             f"input has D = {D}")
        self._W_in = _own(input_weights(self.units, D, self._input_connectivity, scaling,
                                        self._input_rng, self._dtype))

    # -- what it is --------------------------------------------------------------------------

    @property
    def units(self):
        """H, the number of units."""
        return self._W.shape[0]

    @property
    def input_size(self):
        """D, or None until the first run of a reservoir made without input_size."""
        return None if self._W_in is None else self._W_in.shape[1]

    @property
    def W(self):
        """The recurrent weights (H, H), read-only: a CSR matrix, or an ndarray if dense."""
        return self._W

    @property
    def W_in(self):
        """The input weights (H, D), read-only (None until D is known)."""
        return self._W_in

    @property
    def bias(self):
        """The bias (H,), read-only, or None for none."""
        return self._bias

    @property
    def leak(self):
        """The leak per unit (H,), read-only, or 1.0 for none."""
        return 1.0 if self._leak is None else self._leak

    @property
    def nonlinearity(self):
        return self._nonlinearity

    @property
    def dtype(self):
        return self._dtype

    @property
    def nnz(self):
        """The number of stored entries of W (H^2 if dense)."""
        return self._nnz

    def step_path(self, B=1):
        """Which step a run of B series takes: "sparse" or "dense"."""
        return "sparse" if sliced.use_sparse_step(self.units, self._nnz, B) else "dense"

    def __repr__(self):
        if self._leak is None or np.ptp(self._leak) == 0:
            leak = f"{float(np.max(self.leak)):g}"
        else:
            leak = "per unit"
        return (f"Reservoir(units={self.units}, input_size={self.input_size}, "
                f"nnz={self._nnz}, leak={leak}, nonlinearity={self._nonlinearity!r}, "
                f"dtype={self._dtype})")

    # -- running -----------------------------------------------------------------------------

    def run(self, u, h0=None):
        """The states of the reservoir driven by u, forward only.

        Parameters
        ----------
        u : array_like, shape (T, D) or (T, B, D)
            One series, or B series side by side (time-major), float32 or float64 (cast to
            the reservoir's dtype).
        h0 : array_like, shape (H,) (for u (T, D)) or (B, H), or None
            The state before the first step; None: zeros. To run a long series in chunks,
            pass the last states of the chunk before.

        Returns
        -------
        states : ndarray, shape (T, H) or (T, B, H)
            states[t] is the state after input u[t]; the caller's own (writable).
        """
        x, h0, single = self._inputs(u, h0)
        if sliced.use_sparse_step(self.units, self._nnz, x.shape[1]):
            states = sliced.sparse_forward(self._sliced_matrix(), x, h0, self._W_in,
                                           self._bias, self._leak,
                                           self._nonlinearity == "relu")
        else:
            states, _ = rnn_forward(x, h0, self._W_in, self._dense_matrix(), self._bias,
                                    nonlinearity=self._nonlinearity,
                                    leak=1.0 if self._leak is None else self._leak,
                                    need_grad=False)
        return states[:, 0] if single else states

    def _inputs(self, u, h0):
        """u as (T, B, D) and h0 as (B, H) or None, checked, contiguous, in the dtype; and
        whether u was one series (T, D)."""
        array = np.asarray(u) if not isinstance(u, np.ndarray) else u
        if array.ndim not in (2, 3):
            raise ValueError(f"u must be 2-D (T, D) or 3-D (T, B, D); got a {array.ndim}-D "
                             f"array with shape {array.shape}")
        single = array.ndim == 2
        x = float_array(array, "u", ("T", "D") if single else ("T", "B", "D"))
        x = x[:, None] if single else x
        D = x.shape[2]
        if self._W_in is None:
            self._draw_input_weights(D)
        elif D != self.input_size:
            raise ValueError(f"u has D = {D} inputs (shape {array.shape}); this reservoir "
                             f"takes {self.input_size}")
        T, B, _ = x.shape
        copy = (None if x.flags.c_contiguous and x.dtype == self._dtype
                else ("a contiguous copy of u in the reservoir's dtype", x.shape, self._dtype))
        check_allocation("Reservoir.run", [copy, ("the states (T, B, H)", (T, B, self.units),
                                                  self._dtype)], _ADVICE)
        x = np.ascontiguousarray(x, dtype=self._dtype)
        if h0 is not None:
            layout = ("H",) if single else ("B", "H")
            h0 = float_array(h0, "h0", layout)
            expected = (self.units,) if single else (x.shape[1], self.units)
            check_shape(h0, "h0", layout, expected, "(B from u, H from the reservoir)")
            h0 = np.ascontiguousarray(h0, dtype=self._dtype).reshape(x.shape[1], self.units)
        return x, h0, single

    def _sliced_matrix(self):
        if self._sliced is None:
            self._sliced = sliced.sliced_matrix(self._W, self._dtype)
        return self._sliced

    def _dense_matrix(self):
        if self._dense is None:
            if scipy.sparse.issparse(self._W):
                check_allocation("Reservoir.run", [("a dense copy of W (H, H)", self._W.shape,
                                                    self._dtype)], "use a sparser W")
                self._dense = self._W.toarray()
            else:
                self._dense = self._W
        return self._dense


def _check_input_scaling(scaling):
    """input_scaling as a float, or a 1-D float64 array (one per input) of finite numbers."""
    if isinstance(scaling, numbers.Real) and not isinstance(scaling, (bool, np.bool_)):
        return check_real(scaling, "input_scaling")
    array = np.asarray(scaling)
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "fiu":
        raise TypeError(f"input_scaling must be a real number or a 1-D array of them, one per "
                        f"input; got {type(scaling).__name__} of shape {array.shape}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"input_scaling must hold finite numbers; got {array}")
    return array
