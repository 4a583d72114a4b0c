"""`Ridge`: the readout of an echo state network, linear least squares with an L2 penalty,
solved in closed form from accumulated sums, so that a series too long for memory is fitted
chunk by chunk (``partial_fit``) to the same result as in one go.

With X (N, F) the features (reservoir states) and Y (N, O) the targets, and fit_bias:
    coef = argmin ||Y - X coef^T - 1 b^T||^2 + ridge ||coef||^2,
the bias b not penalised: the data are centred, coef^T = (Xc^T Xc + ridge I)^-1 Xc^T Yc and
b = mean(Y) - coef mean(X), as in ReservoirPy and scikit-learn.
"""
import numpy as np
import scipy.linalg

from rnnfast.utils.memory import check_allocation
from rnnfast.utils.validation import check_bool, check_real, float_array

__all__ = ["Ridge"]


class Ridge:
    """Ridge regression in closed form, fitted at once (``fit``) or over chunks
    (``partial_fit``).

    Parameters
    ----------
    ridge : float
        The L2 penalty on the coefficients, >= 0 (0: ordinary least squares, which needs
        linearly independent features).
    fit_bias : bool
        Fit an intercept, unpenalised (the data are centred).

    Attributes
    ----------
    coef_ : ndarray, shape (O, F)
        W_out: prediction = X @ coef_.T + intercept_ (solved when first read after a fit).
    intercept_ : ndarray, shape (O,)
    n_samples_ : int
        The rows fitted so far.

    Streaming: each chunk's mean and centred scatter matrix X_c^T X_c (and X_c^T Y_c) are
    merged into the totals exactly (the pairwise update of Chan, Golub and LeVeque), so no
    N x F matrix is ever kept, and the result equals the one-shot fit's up to rounding. This
    is S^T S - N mean mean^T computed without its cancellation (states have means far from
    0 next to their spread). Sums are kept in float64 whatever the features' dtype; the
    system is solved by Cholesky (scipy.linalg.solve, assume_a="pos"), never inverted.
    """

    def __init__(self, ridge=1e-6, fit_bias=True):
        self.ridge = check_real(ridge, "ridge", low=0.0)
        self.fit_bias = check_bool(fit_bias, "fit_bias")
        self.reset()

    def reset(self):
        """Forget everything fitted."""
        self.n_samples_ = 0
        self._mean_x = self._mean_y = self._xx = self._xy = None
        self._solution = None
        self._targets_1d = None

    def fit(self, X, Y):
        """Fit on X (N, F) and Y (N, O) or (N,), forgetting earlier fits. Returns self."""
        self.reset()
        return self.partial_fit(X, Y)

    def partial_fit(self, X, Y):
        """Add the rows X (N, F), Y (N, O) or (N,) to the fit (same F and O each time).
        Returns self."""
        X, Y = self._check_data(X, Y)
        N, F = X.shape
        check_allocation("Ridge.partial_fit", [("the centred features in float64 (N, F)",
                                                (N, F), np.dtype(np.float64))],
                         "fit in smaller chunks")
        X = X.astype(np.float64)
        Y = Y.astype(np.float64)
        if self.fit_bias:
            mean_x, mean_y = X.mean(axis=0), Y.mean(axis=0)
            X -= mean_x
            Y -= mean_y
        xx, xy = X.T @ X, X.T @ Y
        if self.n_samples_ == 0:
            self._xx, self._xy = xx, xy
            if self.fit_bias:
                self._mean_x, self._mean_y = mean_x, mean_y
        else:
            self._xx += xx
            self._xy += xy
            if self.fit_bias:  # the chunk's centred sums moved to the common mean
                total = self.n_samples_ + N
                dx, dy = mean_x - self._mean_x, mean_y - self._mean_y
                weight = self.n_samples_ * N / total
                self._xx += weight * np.outer(dx, dx)
                self._xy += weight * np.outer(dx, dy)
                self._mean_x += dx * (N / total)
                self._mean_y += dy * (N / total)
        self.n_samples_ += N
        self._solution = None
        return self

    def _check_data(self, X, Y):
        X = float_array(X, "X", ("N", "F"))
        Y = np.asarray(Y) if not isinstance(Y, np.ndarray) else Y
        targets_1d = Y.ndim == 1
        Y = float_array(Y, "Y", ("N",) if targets_1d else ("N", "O"))
        Y = Y[:, None] if targets_1d else Y
        if Y.shape[0] != X.shape[0]:
            raise ValueError(f"X and Y must have the same number of rows N; got X {X.shape} "
                             f"and Y {Y.shape}")
        if self.n_samples_:
            if X.shape[1] != self._xx.shape[0]:
                raise ValueError(f"X must have the F = {self._xx.shape[0]} columns of the "
                                 f"rows fitted before; got {X.shape}")
            if Y.shape[1] != self._xy.shape[1] or targets_1d != self._targets_1d:
                raise ValueError(f"Y must have the shape of the targets fitted before, "
                                 f"(N,{'' if self._targets_1d else f' {self._xy.shape[1]}'})"
                                 f"; got {Y.shape if not targets_1d else (Y.shape[0],)}")
        self._targets_1d = targets_1d
        return X, Y

    def _solve(self):
        if self.n_samples_ == 0:
            raise ValueError("this Ridge is not fitted yet: call fit or partial_fit first")
        if self._solution is None:
            if not (np.all(np.isfinite(self._xx)) and np.all(np.isfinite(self._xy))):
                raise ValueError("the data fitted hold NaN or inf: the readout cannot be "
                                 "solved")
            gram = self._xx + self.ridge * np.eye(self._xx.shape[0])
            try:
                W = scipy.linalg.solve(gram, self._xy, assume_a="pos")
            except np.linalg.LinAlgError:
                raise np.linalg.LinAlgError(
                    f"X^T X + ridge I ({gram.shape[0]} x {gram.shape[0]}, with data centred "
                    f"if fit_bias) is not positive definite: the features are linearly "
                    f"dependent (or fewer than F = {gram.shape[0]} rows) and ridge = "
                    f"{self.ridge:g}; use ridge > 0") from None
            coef = np.ascontiguousarray(W.T)
            intercept = (self._mean_y - coef @ self._mean_x if self.fit_bias
                         else np.zeros(coef.shape[0]))
            self._solution = (coef, intercept)
        return self._solution

    @property
    def coef_(self):
        return self._solve()[0]

    @property
    def intercept_(self):
        return self._solve()[1]

    def predict(self, X):
        """X (N, F) @ coef_.T + intercept_: (N, O), or (N,) if fitted on 1-D targets; in X's
        dtype."""
        coef, intercept = self._solve()
        X = float_array(X, "X", ("N", "F"))
        if X.shape[1] != coef.shape[1]:
            raise ValueError(f"X must have the F = {coef.shape[1]} columns fitted; got "
                             f"{X.shape}")
        Y = X @ coef.T.astype(X.dtype) + intercept.astype(X.dtype)
        return Y[:, 0] if self._targets_1d else Y

    def __repr__(self):
        return f"Ridge(ridge={self.ridge:g}, fit_bias={self.fit_bias})"
