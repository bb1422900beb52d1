"""Implicit bias of gradient descent: where it ends up among the many interpolants.

Two settings (Woodworth et al. 2020; Soudry et al. 2018):

- Diagonal linear networks (Woodworth et al. 2020, "Kernel and rich regimes in
  overparametrized models"): the model f(x) = ⟨β, x⟩ with β = w₊² − w₋², both
  initialized at α·1, trained by gradient flow on squared loss, converges to

      β_α = argmin Q_α(β)  subject to  Xβ = y,   Q_α(β) = α² Σ_i q(β_i / α²),
      q(z) = 2 − √(4 + z²) + z·arcsinh(z/2).

  As α → 0, Q_α → ‖β‖₁ (up to scale: the "rich" regime, sparse); as α → ∞ it is
  ∝ ‖β‖₂² (the kernel regime, minimum ℓ2 norm).
- Logistic regression on separable data (Soudry et al. 2018): w(t)/‖w(t)‖ → the hard-margin
  SVM direction, with angle O(1/log t).

Inputs may be numpy arrays or torch tensors; results are float64 torch tensors.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["diagonal_net_limit", "max_margin_direction", "q_alpha", "q_function"]


def _array(a, name: str, ndim: int | None = None) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    try:
        arr = np.asarray(a)
    except Exception as exc:   # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be array-like, got {type(a).__name__}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise TypeError(f"alpha must be a real number, got {type(alpha).__name__}")
    a = float(alpha)
    if not (math.isfinite(a) and a > 0):
        raise ValueError(f"alpha must be finite and > 0, got {alpha!r}")
    return a


def q_function(z) -> Tensor:
    """q(z) = 2 − √(4 + z²) + z·arcsinh(z/2), elementwise.

    Convex, q(0) = 0, q'(z) = arcsinh(z/2), q''(z) = 1/√(4 + z²)."""
    z = _array(z, "z")
    # 2 − √(4+z²) = −z²/(2 + √(4+z²)) avoids cancellation for small |z| (α → ∞)
    q = z * np.arcsinh(z / 2.0) - z * z / (2.0 + np.sqrt(4.0 + z * z))
    return torch.as_tensor(np.asarray(q))


def q_alpha(beta, alpha: float) -> Tensor:
    """Q_α(β) = α² Σ_i q(β_i/α²) over the last axis: shape (..., d) → (...)."""
    a2 = _alpha(alpha) ** 2
    beta = _array(beta, "beta")
    if beta.ndim == 0:
        raise ValueError("beta must have at least one axis (..., d)")
    return a2 * q_function(beta / a2).sum(-1)


def _check_xy(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = _array(X, "X", 2)
    y = _array(y, "y", 1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} entries")
    return X, y


def diagonal_net_limit(X, y, alpha: float, *, tol: float = 1e-12,
                       max_iter: int = 200) -> Tensor:
    """argmin Q_α(β) subject to Xβ = y: the gradient-flow limit of a diagonal linear net.

    Solved through the dual. Stationarity gives ∇Q_α(β) = arcsinh(β/(2α²)) = Xᵀν, so
    β(ν) = 2α² sinh(Xᵀν), and ν minimizes the smooth convex D(ν) = 2α² Σ cosh(Xᵀν) − yᵀν,
    whose gradient X β(ν) − y is the constraint violation. Damped Newton on D converges
    quadratically (steps capped while far from the solution); we iterate until
    ‖Xβ − y‖ ≤ tol·max(‖y‖, 1) (so ≤ 1e-8 easily).

    Args:
      X: (n, d) with full row rank (n ≤ d, interpolation possible). y: (n,). alpha > 0.

    Returns:
      β: (d,) float64.
    """
    X, y = _check_xy(X, y)
    a2 = _alpha(alpha) ** 2
    n, d = X.shape
    if n > d or np.linalg.matrix_rank(X) < n:
        raise ValueError(f"X (shape {X.shape}) must have full row rank n ≤ d so that Xβ = y "
                         "is solvable for every y")
    nu = np.zeros(n)
    target = tol * max(float(np.linalg.norm(y)), 1.0)

    def change(s: np.ndarray, ds: np.ndarray, dv: np.ndarray) -> float:
        # D(ν + dv) − D(ν) with s = Xᵀν, ds = Xᵀdv, formed without cancellation:
        # cosh(s + ds) − cosh(s) = 2 sinh(s + ds/2) sinh(ds/2). (D itself is ~2α²d, so
        # near the solution its change is below D's rounding and a line search on D
        # stalls: α = 10 stopped at ‖Xβ − y‖ = 1.6e-6.)
        with np.errstate(over="ignore"):
            dc = 2.0 * np.sinh(s + ds / 2) * np.sinh(ds / 2)
            return float(2 * a2 * dc.sum() - y @ dv)

    for _ in range(max_iter):
        s = X.T @ nu
        beta = 2 * a2 * np.sinh(s)
        g = X @ beta - y
        if np.linalg.norm(g) <= target:
            return torch.from_numpy(beta)
        hess = (X * (2 * a2 * np.cosh(s))) @ X.T
        step = np.linalg.solve(hess, g)
        # cap the move of s = Xᵀν per step (a trust region): for small α the first Newton
        # steps would otherwise jump by ~1/α² and overflow cosh
        xs = X.T @ step
        move = float(np.abs(xs).max())
        t = min(1.0, 2.0 / move) if move > 0 else 1.0
        while t > 1e-12 and not change(s, -t * xs, -t * step) <= -0.25 * t * float(g @ step):
            t *= 0.5
        nu = nu - t * step
    s = X.T @ nu
    beta = 2 * a2 * np.sinh(s)
    viol = float(np.linalg.norm(X @ beta - y))
    if viol <= max(target, 1e-8 * max(float(np.linalg.norm(y)), 1.0)):
        return torch.from_numpy(beta)
    raise RuntimeError(f"diagonal_net_limit did not converge: ‖Xβ − y‖ = {viol:.3g} after "
                       f"{max_iter} Newton steps (alpha = {alpha:g} may be too extreme)")


def max_margin_direction(X, y, *, return_margin: bool = False) -> Tensor | tuple[Tensor, float]:
    """Unit direction of the hard-margin SVM through the origin (no bias):
    w* = argmin ‖w‖ subject to y_i x_iᵀ w ≥ 1, returned as w*/‖w*‖.

    Feasibility is checked by a linear program (ValueError if not separable through the
    origin); the QP is solved by SLSQP, then polished: on the active set S (the support
    vectors) w = Z_Sᵀ (Z_S Z_Sᵀ)⁺ 1 with Z = diag(y) X, and the KKT conditions (dual
    multipliers ≥ 0, all margins ≥ 1) are verified.

    Args:
      X: (n, d). y: (n,) labels in {−1, +1} (any two-valued labels are mapped, the larger
        one to +1).
      return_margin: also return the geometric margin 1/‖w*‖.
    """
    from scipy.optimize import linprog, minimize

    X, y = _check_xy(X, y)
    vals = np.unique(y)
    if vals.size != 2:
        raise ValueError(f"y must take exactly two values, got {vals.size}")
    s = np.where(y == vals[1], 1.0, -1.0)
    z = s[:, None] * X
    n, d = z.shape
    lp = linprog(np.zeros(d), A_ub=-z, b_ub=-np.ones(n), bounds=[(None, None)] * d,
                 method="highs")
    if lp.status != 0:
        raise ValueError("the data are not linearly separable through the origin")
    res = minimize(lambda w: 0.5 * w @ w, lp.x, jac=lambda w: w, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda w: z @ w - 1.0,
                                 "jac": lambda w: z}],
                   options={"ftol": 1e-15, "maxiter": 1000})
    w = res.x
    margins = z @ w
    w_best = w
    for rel in (1e-6, 1e-5, 1e-4, 1e-3):
        active = np.where(margins <= 1.0 + rel)[0]
        if active.size == 0:
            continue
        zs = z[active]
        lam = np.linalg.lstsq(zs @ zs.T, np.ones(active.size), rcond=None)[0]
        cand = zs.T @ lam
        if (np.all(z @ cand >= 1.0 - 1e-9) and np.all(lam >= -1e-9 * max(lam.max(), 1.0))
                and np.allclose(zs @ cand, 1.0, atol=1e-9)):
            w_best = cand
            break
    norm = float(np.linalg.norm(w_best))
    direction = torch.from_numpy(w_best / norm)
    return (direction, 1.0 / norm) if return_margin else direction
