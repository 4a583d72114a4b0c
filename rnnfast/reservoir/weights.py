"""The random weights of a reservoir: W (sparse or dense) at a chosen spectral radius, the input
weights W_in and the bias, each drawn from its own seeded generator."""
import inspect

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg

__all__ = ["spectral_radius", "recurrent_weights", "input_weights", "bias_weights"]

# Below this size the eigenvalues come from LAPACK (ARPACK needs k < H - 1 and gains nothing).
_ARPACK_MIN_SIZE = 64


def spectral_radius(W):
    """The spectral radius of W (an (H, H) ndarray or scipy.sparse matrix): the largest modulus
    of its eigenvalues, in float64.

    From ARPACK's Arnoldi iteration for the one eigenvalue of largest modulus (as ReservoirPy
    computes it, from the same start vector of ones, so it is reproducible), on the sparse
    matrix itself; from all of LAPACK's eigenvalues for H < 64 or if ARPACK does not converge.
    """
    H = W.shape[0]
    if H >= _ARPACK_MIN_SIZE:
        matrix = W.astype(np.float64)
        try:
            value = scipy.sparse.linalg.eigs(matrix, k=1, which="LM", maxiter=20 * H,
                                             return_eigenvectors=False,
                                             v0=np.ones(H, dtype=np.float64))
            return float(np.max(np.abs(value)))
        except scipy.sparse.linalg.ArpackNoConvergence:
            pass
    dense = W.toarray() if scipy.sparse.issparse(W) else np.asarray(W)
    return float(np.max(np.abs(scipy.linalg.eigvals(dense.astype(np.float64)))))


def _sparse_random(shape, density, rng):
    """scipy.sparse.random_array in CSR with normal values, for SciPy's old and new seeding."""
    seeding = ({"rng": rng} if "rng" in inspect.signature(scipy.sparse.random_array).parameters
               else {"random_state": rng})
    return scipy.sparse.random_array(shape, density=density, format="csr",
                                     data_sampler=rng.standard_normal, **seeding)


def recurrent_weights(units, connectivity, radius, rng, dtype):
    """W (units, units): a fraction ``connectivity`` of its entries standard normal, at
    positions drawn uniformly without replacement (a CSR matrix; a dense ndarray for
    connectivity 1), then scaled to the spectral radius ``radius``, in dtype. A W whose
    eigenvalues are all 0 (one too sparse to hold a cycle) is kept as drawn."""
    if connectivity >= 1:
        W = rng.standard_normal((units, units))
    else:
        W = _sparse_random((units, units), connectivity, rng)
    has_entries = W.nnz > 0 if scipy.sparse.issparse(W) else True
    current = spectral_radius(W) if has_entries else 0.0
    if current > 0:
        W = W * (radius / current)
    return W.astype(dtype)


def input_weights(units, D, connectivity, scaling, rng, dtype):
    """W_in (units, D): each input reaches round(connectivity * units) units (at least one),
    drawn at random, with weights +-1 (equally likely) times its scaling (a number, or one
    per input, (D,)). Dense: inputs are few."""
    W_in = np.zeros((units, D))
    reached = max(1, int(round(connectivity * units)))
    for d in range(D):
        rows = rng.choice(units, size=reached, replace=False)
        W_in[rows, d] = rng.choice((-1.0, 1.0), size=reached)
    return (W_in * scaling).astype(dtype)


def bias_weights(units, scaling, rng, dtype):
    """The bias (units,): uniform in [-scaling, scaling]; None for scaling 0 (no bias)."""
    if scaling == 0:
        return None
    return (scaling * rng.uniform(-1, 1, units)).astype(dtype)
