"""Ridge regression on random features, and exact kernel ridge regression to compare with.

Both minimize the sklearn ``KernelRidge``/``Ridge`` objective (no 1/n, no intercept):

- random features:  min_θ ‖y − Φθ‖² + α ‖θ‖²,   f(x) = φ(x)·θ,
  θ = (ΦᵀΦ + αI)⁻¹Φᵀy = Φᵀ(ΦΦᵀ + αI)⁻¹y  (whichever system is smaller is solved);
- kernel ridge:     f(x) = k(x, X)(K + αI)⁻¹y.

Since φ(x)·φ(y) → k(x, y), the random-features predictions converge to the kernel-ridge
predictions as the feature count grows. α = 0 gives the minimum-norm interpolant (solved
by least squares, never by a singular inverse).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data
from torch import Tensor

from ntkit.engine.inputs import as_batch
from ntkit.features.samplers import KINDS, exact_kernel, make_features

__all__ = [
    "RandomFeaturesRegressor",
    "kernel_ridge",
]


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise TypeError(f"alpha must be a real number, got {type(alpha).__name__}")
    alpha = float(alpha)
    if not (alpha >= 0.0 and np.isfinite(alpha)):
        raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
    return alpha


def _solve_psd(a: Tensor, b: Tensor, alpha: float) -> Tensor:
    """Solve (A + αI) x = b for symmetric PSD A: Cholesky, least squares when α = 0 or it fails."""
    n = a.shape[0]
    if alpha > 0:
        m = a + alpha * torch.eye(n, dtype=a.dtype, device=a.device)
        chol, info = torch.linalg.cholesky_ex(m)
        if int(info) == 0:
            return torch.cholesky_solve(b, chol)
        a = m
    # Singular or nearly so: minimum-norm least squares through the eigendecomposition,
    # with eigenvalues below a relative cutoff treated as zero (a pseudo-inverse).
    evals, evecs = torch.linalg.eigh(a)
    cutoff = evals.abs().max().clamp_min(torch.finfo(a.dtype).tiny) * n * torch.finfo(a.dtype).eps
    inv = torch.where(evals > cutoff, 1.0 / evals.clamp_min(cutoff), torch.zeros_like(evals))
    return evecs @ (inv[:, None] * (evecs.T @ b))


def kernel_ridge(x_train: Any, y_train: Any, x_test: Any, kind: str = "fourier_gaussian",
                 alpha: float = 1.0, gamma: float = 1.0) -> Tensor:
    """Exact kernel ridge regression with the closed-form kernel of ``kind``.

    Args:
      x_train: (n, d); y_train: (n,) or (n, k); x_test: (t, d) (numpy arrays or tensors).
      kind: one of `KINDS` (kernel conventions as in `exact_kernel`).
      alpha: ridge α ≥ 0 (objective ‖y − f‖² + α‖f‖²_H, as sklearn's KernelRidge).
      gamma: kernel parameter γ > 0.

    Returns:
      Predictions k(x_test, X)(K + αI)⁻¹y, shaped like y with t rows: a numpy array when
      x_test is one, else a float64 tensor.
    """
    alpha = _check_alpha(alpha)
    xtr = as_batch(x_train, "x_train", torch.float64)
    xte = as_batch(x_test, "x_test", torch.float64)
    y = torch.as_tensor(np.asarray(y_train) if not isinstance(y_train, Tensor) else y_train,
                        dtype=torch.float64)
    if y.ndim not in (1, 2) or y.shape[0] != xtr.shape[0]:
        raise ValueError(f"y_train must have shape ({xtr.shape[0]},) or ({xtr.shape[0]}, k), "
                         f"got {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y_train contains NaN or inf")
    k_train = exact_kernel(kind, xtr, None, gamma)
    k_test = exact_kernel(kind, xte, xtr, gamma)
    y2 = y[:, None] if y.ndim == 1 else y
    pred = k_test @ _solve_psd(k_train, y2, alpha)
    pred = pred[:, 0] if y.ndim == 1 else pred
    return pred.numpy() if isinstance(x_test, np.ndarray) else pred


class RandomFeaturesRegressor(RegressorMixin, BaseEstimator):
    """Ridge regression on random features (sklearn estimator; float64 inside).

    Args:
      kind: 'fourier_gaussian', 'fourier_laplacian', 'fourier_cauchy', 'relu', 'step' or
        'ntk' (see `ntkit.features.make_features` and `exact_kernel` for the kernels).
      n_features: number of random features m (for 'ntk': the hidden width, giving
        m·(d + 1) Jacobian features).
      alpha: ridge α ≥ 0; objective ‖y − Φθ‖² + α‖θ‖² (sklearn's Ridge convention).
      gamma: kernel parameter γ > 0.
      random_state: None, int or ``np.random.RandomState``; seeds the features.

    Attributes (after ``fit``):
      features_: the fitted `RandomFeatureMap`.
      coef_: (m_total,) or (m_total, k) weights θ when the primal system was solved, else None.
      dual_coef_: (n,) or (n, k) when the dual system was solved (more features than rows);
        predictions are then φ(x)·Φᵀc, computed through ``features_.gram``.
      n_features_in_: input dimension d.
    """

    def __init__(self, kind: str = "fourier_gaussian", n_features: int = 512,
                 alpha: float = 1.0, gamma: float = 1.0, random_state: Any = None):
        self.kind = kind
        self.n_features = n_features
        self.alpha = alpha
        self.gamma = gamma
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y may be (n, k); predictions keep its shape
        return tags

    def fit(self, X: Any, y: Any) -> RandomFeaturesRegressor:
        """Fit on X: (n, d), y: (n,) or (n, k). Returns self."""
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             dtype=np.float64)
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {KINDS}")
        alpha = _check_alpha(self.alpha)
        n_features = self.n_features
        if isinstance(n_features, (np.integer,)):
            n_features = int(n_features)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        sampler = make_features(self.kind, X.shape[1], n_features, float(self.gamma), seed)
        xt = torch.tensor(X)  # a copy: X may be a read-only view
        yt = torch.tensor(np.asarray(y, dtype=np.float64))
        y2 = yt[:, None] if yt.ndim == 1 else yt
        self.features_ = sampler
        self._y_1d = yt.ndim == 1
        if sampler.n_features <= X.shape[0]:
            phi = sampler(xt)
            if alpha == 0.0:
                # Minimum-norm least squares (gelsd) rather than normal equations: the
                # normal equations would square the condition number.
                coef = torch.linalg.lstsq(phi, y2, driver="gelsd").solution
            else:
                coef = _solve_psd(phi.T @ phi, phi.T @ y2, alpha)
            self.coef_ = coef[:, 0].numpy() if self._y_1d else coef.numpy()
            self.dual_coef_ = None
            self._x_fit = None
        else:
            gram = sampler.gram(xt)
            c = _solve_psd(gram, y2, alpha)
            self.coef_ = None
            self.dual_coef_ = c[:, 0].numpy() if self._y_1d else c.numpy()
            self._x_fit = xt
        return self

    def predict(self, X: Any) -> Any:
        """Predictions (n,) or (n, k) for X: (n, d)."""
        check_is_fitted(self, "features_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        xt = torch.tensor(X)  # a copy: X may be a read-only view
        if self.coef_ is not None:
            coef = torch.from_numpy(np.asarray(self.coef_))
            return (self.features_(xt) @ coef).numpy()
        c = torch.from_numpy(np.asarray(self.dual_coef_))
        return (self.features_.gram(xt, self._x_fit) @ c).numpy()
