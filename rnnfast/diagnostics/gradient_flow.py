"""Gradient flow through time: why vanilla RNNs forget, measured.

Backprop through time multiplies one Jacobian per step (DESIGN.md, "The math"):

    dh_T/dh_t = J_T J_{T-1} ... J_{t+1},     J_k = dh_k/dh_{k-1} = diag(act'(a_k)) W_hh

so the gradient that reaches an early state shrinks or grows roughly geometrically with the lag
T - t. This module measures that product on real sequences, through the package's own backward
pass (``rnn_backward(..., return_norms=True)``), and the two things that set its rate: the size of
W_hh (``spectral_radius``, ``largest_singular_value``) and the derivative of the activation
(``saturation``: tanh' = 1 - h^2 is near 0 where |h| is near 1; relu' is 0 where h is 0).

``jacobian_norms`` gives ||dh_T/dh_t||_F for every step t of every sequence of a batch;
``layer_jacobian_norms`` and ``layer_states`` do the same for each layer of an ``rnnfast.RNN``.
See docs/gradient-flow.md for the math, measured curves and what helps.

Nothing here prints; ``rnnfast diagnose`` (rnnfast/cli/diagnose.py) is the command line.
"""
import numpy as np

from rnnfast import functional
from rnnfast.nn import RNN
from rnnfast.utils.validation import as_float_array, check_choice, check_shape, check_size

__all__ = ["spectral_radius", "largest_singular_value", "jacobian_norms", "saturation",
           "layer_jacobian_norms", "layer_states", "resolve_jacobian_method", "JACOBIAN_METHODS",
           "EXACT_MAX_WORK", "TANH_SATURATION"]

JACOBIAN_METHODS = ("auto", "exact", "probes")

# method="auto" computes the Jacobian exactly when that costs at most this many multiply-adds
# in the forward pass of the replicated batch (T * B*H rows * H*(D + H)); the backward pass costs
# about twice that. 2**30 is about a second of work on a 2-core machine with ~30 GFLOP/s of
# float64 GEMM (rnnfast bench), e.g. T=100, B=8, H=128, D=64. Beyond it the probes' cost,
# n_probes / H of the exact one, wins. When H <= n_probes the exact method is no dearer than the
# probes and has no variance, so "auto" takes it whatever the size.
EXACT_MAX_WORK = 2**30
# The replicated batch is processed in chunks of sequences so that no chunk holds more than
# this many values per (T, rows, H or D) array (16 MiB in float64), whatever B and H. About five
# such arrays are alive at once (the inputs, the states, dout, the backward's da buffer, dx).
_CHUNK_VALUES = 2**21

# |h| above this counts as a saturated tanh unit: there tanh' = 1 - h^2 < 0.0199.
TANH_SATURATION = 0.99


# --------------------------------------------------------------------------------------------
# The size of W_hh
# --------------------------------------------------------------------------------------------
def _square_matrix(W_hh):
    W = as_float_array(W_hh, "W_hh", ("H", "H"))
    check_shape(W, "W_hh", ("H", "H"), (W.shape[0], W.shape[0]), "(square)")
    if not np.isfinite(W).all():
        raise ValueError("W_hh must be finite; it has NaN or inf entries")
    return W.astype(np.float64)


def spectral_radius(W_hh):
    """The spectral radius of W_hh: the largest modulus of its eigenvalues.

    It sets the long-run rate of W_hh^k: ||W_hh^k||^(1/k) -> spectral_radius(W_hh) as k grows
    (Gelfand's formula). In the linear regime (tanh near 0, where tanh' ~ 1) the Jacobian
    dh_T/dh_t is W_hh^(T-t), so gradients vanish over long lags below radius 1 and explode
    above it.

    Parameters
    ----------
    W_hh : array_like, shape (H, H)
        Hidden-to-hidden weights, float32 or float64.

    Returns
    -------
    float
        max |eigenvalue|, computed in float64 with LAPACK (O(H^3): about a second at H = 2000).

    Raises
    ------
    TypeError
        W_hh is not a float32/float64 array.
    ValueError
        W_hh is not a square 2-D matrix, is empty, or has NaN/inf entries.
    """
    return float(np.max(np.abs(np.linalg.eigvals(_square_matrix(W_hh)))))


def largest_singular_value(W_hh):
    """The largest singular value of W_hh: its spectral (operator 2-) norm.

    It bounds the growth of one step: ||W_hh v|| <= largest_singular_value(W_hh) ||v||, so
    ||dh_T/dh_t||_2 <= (max act' * largest_singular_value(W_hh))^(T-t). It is at least the
    spectral radius, and equal to it for normal matrices (symmetric, orthogonal).

    Parameters
    ----------
    W_hh : array_like, shape (H, H)
        Hidden-to-hidden weights, float32 or float64.

    Returns
    -------
    float
        ||W_hh||_2, computed in float64 by an SVD (O(H^3)).

    Raises
    ------
    TypeError, ValueError
        As ``spectral_radius``.
    """
    return float(np.linalg.norm(_square_matrix(W_hh), 2))


# --------------------------------------------------------------------------------------------
# ||dh_T/dh_t||
# --------------------------------------------------------------------------------------------


def resolve_jacobian_method(method, T, B, D, H, n_probes):
    """The method ``jacobian_norms`` uses for a problem of this shape: "exact" or "probes".

    "auto" is "exact" when H <= n_probes (then the exact method is no dearer than the probes) or
    when the exact method's forward work, T * B*H * H*(D + H) multiply-adds, is at most
    ``EXACT_MAX_WORK``; otherwise "probes".
    """
    check_choice(method, "method", JACOBIAN_METHODS)
    if method != "auto":
        return method
    if H <= n_probes or T * B * H * H * (D + H) <= EXACT_MAX_WORK:
        return "exact"
    return "probes"


def jacobian_norms(x, h0, W_xh, W_hh, b, *, nonlinearity="tanh", method="auto", n_probes=32,
                   seed=None, n_threads=None):
    """||dh_T/dh_t||_F, the Frobenius norm of the Jacobian of the final state with respect to
    every earlier state, for every sequence of a batch.

    With ``out, _ = rnn_forward(x, h0, W_xh, W_hh, b)``, entry ``[t, b]`` is the norm of the
    (H, H) Jacobian d out[T-1, b] / d out[t, b]: how much the final state of sequence b moves
    when state ``out[t, b]`` is perturbed and the rest of the sequence runs on. The lag is
    T - 1 - t; at lag 0 the Jacobian is the identity, of norm sqrt(H). Dividing by sqrt(H) gives
    the root-mean-square singular value (1 for an orthogonal Jacobian).

    Why the Frobenius norm: ||J||_F^2 = sum_i ||e_i^T J||^2, a sum of norms of vector-Jacobian
    products, which is exactly what a backward pass computes, so one batched backward pass gives
    it for every t at once (below). The spectral norm ||J||_2 would need an iterative
    eigen-solver per step t, alternating J v and J^T u products (the backward pass gives only
    the second). The two bound each other, ||J||_2 <= ||J||_F <= sqrt(H) ||J||_2, so on a log
    scale over many steps they show the same exponential rate of decay or growth.

    How: each sequence is replicated K times and run forward; the backward pass starts with
    ``dout = 0`` and ``dh_n`` = one direction v_k per replica, so the gradient reaching
    ``out[t]`` in replica k is v_k^T dh_T/dh_t, whose norm ``rnn_backward(...,
    return_norms=True)`` returns. Then

    - ``method="exact"``: v_k = e_k, the H unit vectors (K = H), and ||J_t||_F^2 = sum_k of
      the squared norms, exactly (up to rounding).
    - ``method="probes"``: v_k are ``n_probes`` standard Gaussian vectors, and
      E ||v^T J||^2 = tr(J J^T) = ||J||_F^2 (Hutchinson's trace estimator), so
      sqrt(mean_k ||v_k^T J||^2) estimates ||J||_F. This is an *estimate*: the mean of the
      squares has relative standard deviation sqrt(2 sum s^4 / (sum s^2)^2 / n_probes) for the
      singular values s of J, between sqrt(2 / (H n_probes)) (all s equal) and
      sqrt(2 / n_probes) (one dominant s); the norm's relative spread is about half that, at
      most 1/sqrt(2 n_probes): 12.5% for the default 32 probes. It costs n_probes / H of the
      exact method.
    - ``method="auto"``: "exact" when H <= n_probes, or when the exact forward work
      T * B*H * H*(D + H) is at most ``EXACT_MAX_WORK`` = 2**30 multiply-adds (about a second
      on a small machine); "probes" otherwise. ``resolve_jacobian_method`` tells which.

    The replicated batch is processed in chunks of sequences, so memory stays bounded (about
    80 MiB in float64, 40 in float32) whatever B, H and n_probes.

    Parameters
    ----------
    x : array_like, shape (T, B, D)
    h0 : array_like, shape (B, H), or None
    W_xh : array_like, shape (H, D)
    W_hh : array_like, shape (H, H)
    b : array_like, shape (H,), or None
        The arguments of ``rnn_forward``, with the same rules (one dtype, float32 or float64,
        which is the dtype of the computation).
    nonlinearity : {"tanh", "relu"}
    method : {"auto", "exact", "probes"}
    n_probes : int
        Random directions for ``method="probes"`` (and the threshold of "auto"); >= 1.
    seed : int, numpy Generator or None
        Seeds the probe directions.
    n_threads : int or None
        As in ``rnn_forward``.

    Returns
    -------
    ndarray, shape (T, B), float64
        ``[t, b]`` = ||d out[T-1, b] / d out[t, b]||_F (exact, or its estimate).

    Raises
    ------
    TypeError
        As ``rnn_forward``, or ``n_probes`` is not an int.
    ValueError
        As ``rnn_forward``, an unknown ``method``, or ``n_probes`` below 1.
    """
    check_choice(nonlinearity, "nonlinearity", functional.NONLINEARITIES)
    check_choice(method, "method", JACOBIAN_METHODS)
    n_probes = check_size(n_probes, "n_probes")
    # Checked as rnn_forward checks them; copied (contiguous) only once they passed.
    x, h0, W_xh, W_hh, b = (None if a is None else np.ascontiguousarray(a) for a in
                            functional.check_forward_inputs(x, h0, W_xh, W_hh, b))
    T, B, D = x.shape
    H = W_hh.shape[0]
    method = resolve_jacobian_method(method, T, B, D, H, n_probes)
    if method == "exact":
        directions = np.eye(H, dtype=x.dtype)
    else:
        rng = np.random.default_rng(seed)
        directions = rng.standard_normal((n_probes, H)).astype(x.dtype)
    K = directions.shape[0]

    # Sums of squared norms, in float64: a float32 norm of 1e-20 squared would underflow.
    squares = np.zeros((B, T))
    rows = B * K
    chunk = max(1, _CHUNK_VALUES // (T * max(H, D)))
    for start in range(0, rows, chunk):
        replica = np.arange(start, min(rows, start + chunk))
        sequence, direction = replica // K, replica % K
        out, cache = functional.rnn_forward(
            x[:, sequence], None if h0 is None else h0[sequence], W_xh, W_hh, b,
            nonlinearity=nonlinearity, n_threads=n_threads)
        _, norms = functional.rnn_backward(np.zeros_like(out), cache, directions[direction],
                                           n_threads=n_threads, return_norms=True)
        norms = np.asarray(norms, dtype=np.float64)
        np.add.at(squares, sequence, (norms * norms).T)
    if method == "probes":
        squares /= K
    return np.sqrt(squares.T)


# --------------------------------------------------------------------------------------------
# Saturation
# --------------------------------------------------------------------------------------------
def saturation(out, nonlinearity="tanh", *, per_sequence=False):
    """The fraction of saturated hidden units at every step.

    A saturated unit passes (almost) no gradient: tanh' = 1 - h^2 < 0.02 where
    |h| > ``TANH_SATURATION`` = 0.99; relu' = 0 where h = 0 (a "dead" unit, for this input).

    Parameters
    ----------
    out : array_like, shape (T, B, H)
        Hidden states, as returned by ``rnn_forward`` (float32 or float64). With ``lengths``,
        the zero outputs past a sequence's end count as saturated for relu: pass only the real
        steps.
    nonlinearity : {"tanh", "relu"}
    per_sequence : bool
        Return one fraction per step and sequence instead of per step.

    Returns
    -------
    ndarray, shape (T,), or (T, B) with ``per_sequence``, float64
        Fraction of the units (over B and H, or over H) with |h| > 0.99 (tanh) or h == 0 (relu).

    Raises
    ------
    TypeError
        ``out`` is not a float32/float64 array.
    ValueError
        ``out`` is not 3-D, or ``nonlinearity`` is unknown.
    """
    check_choice(nonlinearity, "nonlinearity", functional.NONLINEARITIES)
    out = as_float_array(out, "out", ("T", "B", "H"))
    saturated = np.abs(out) > TANH_SATURATION if nonlinearity == "tanh" else out == 0
    return saturated.mean(axis=2 if per_sequence else (1, 2), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# The layers of an rnnfast.RNN
# --------------------------------------------------------------------------------------------
def _layer_runs(rnn, x, h0):
    """``rnn.direction_runs(x, h0)``, for an ``rnnfast.RNN`` only."""
    if not isinstance(rnn, RNN):
        raise TypeError(f"rnn must be an rnnfast.RNN; got {type(rnn).__name__}")
    return rnn.direction_runs(x, h0)


def layer_states(rnn, x, h0=None):
    """The hidden states of every layer and direction of an ``rnnfast.RNN`` (no dropout).

    Parameters
    ----------
    rnn : rnnfast.RNN
    x : array_like, shape (T, B, D), or (B, T, D) with ``rnn.batch_first``
    h0 : array_like, shape (num_layers * num_directions, B, H), or None

    Returns
    -------
    ndarray, shape (num_layers, num_directions, T, B, H)
        In time order for both directions (as ``rnn.forward``'s output).
    """
    runs = _layer_runs(rnn, x, h0)
    states = np.empty((rnn.num_layers, rnn.num_directions) + runs[0][3].shape, dtype=rnn.dtype)
    for layer, direction, _, out in runs:
        states[layer, direction] = out[::-1] if direction else out
    return states


def layer_jacobian_norms(rnn, x, h0=None, *, method="auto", n_probes=32, seed=None):
    """``jacobian_norms`` for every layer and direction of an ``rnnfast.RNN``.

    For layer l and a direction, the Jacobian of that direction's final state with respect to
    its state at each step, through its own recurrence (its input, the output of layer l - 1,
    held fixed), in evaluation mode (no dropout). It is the per-layer factor of the gradient
    flow; the gradient of a stacked model also flows between layers.

    Parameters
    ----------
    rnn : rnnfast.RNN
    x : array_like, shape (T, B, D), or (B, T, D) with ``rnn.batch_first``
    h0 : array_like, shape (num_layers * num_directions, B, H), or None
    method, n_probes, seed
        As in ``jacobian_norms``.

    Returns
    -------
    ndarray, shape (num_layers, num_directions, T, B), float64
        In time order: entry t of the forward direction is ||dh_{T-1}/dh_t||_F (lag T - 1 - t);
        the reverse direction ends at t = 0, so its entry t is ||dh_0/dh_t||_F (lag t).
    """
    runs = _layer_runs(rnn, x, h0)
    T, B, _ = runs[0][3].shape
    result = np.empty((rnn.num_layers, rnn.num_directions, T, B))
    for layer, direction, args, _ in runs:
        norms = jacobian_norms(*args, nonlinearity=rnn.nonlinearity, method=method,
                               n_probes=n_probes, seed=seed, n_threads=rnn.n_threads)
        result[layer, direction] = norms[::-1] if direction else norms
    return result
