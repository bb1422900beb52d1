"""Random-matrix laws: Marchenko–Pastur, and log-norms of products of Gaussian matrices.

Conventions.

- **Marchenko–Pastur.** X is p×n with i.i.d. entries of mean 0 and variance σ², and
  S = X Xᵀ/n (p×p). As p, n → ∞ with p/n → ``ratio`` = λ, the eigenvalue distribution of S
  tends to the MP law with edges a, b = σ²(1 ∓ √λ)² and density

      ρ(x) = √((b − x)(x − a)) / (2π σ² λ x)   on [a, b],

  plus an atom of mass 1 − 1/λ at 0 when λ > 1 (S then has rank n < p).
  `marchenko_pastur_pdf` is the density of the absolutely continuous part (it integrates to
  min(1, 1/λ)); `marchenko_pastur_cdf` includes the atom.
- **Products.** ``widths = [n_0, …, n_L]``; W_l is n_l × n_{l−1} with i.i.d. N(0, σ²/n_{l−1})
  entries (fan-in scaling), u ≠ 0 fixed. By rotation invariance, ‖W_l v‖²/‖v‖² is
  σ² χ²_{n_l}/n_{l−1}, independent across layers, so

      ln(‖W_L⋯W_1 u‖²/‖u‖²) = Σ_l [ln(σ²/n_{l−1}) + ln χ²_{n_l}],

  with E ln χ²_k = ψ(k/2) + ln 2 and Var ln χ²_k = ψ'(k/2) (ψ the digamma function).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, polygamma

__all__ = ["LogNormMoments", "marchenko_pastur_cdf", "marchenko_pastur_edges",
           "marchenko_pastur_pdf", "product_log_norm_moments"]


def _check_ratio_sigma(ratio: float, sigma2: float) -> tuple[float, float]:
    for name, v in (("ratio", ratio), ("sigma2", sigma2)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
        if not (math.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"{name} must be finite and > 0, got {v}")
    return float(ratio), float(sigma2)


def _as_array(x, name: str = "x") -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be real numbers, got {type(x).__name__}") from e
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr


def marchenko_pastur_edges(ratio: float, sigma2: float = 1.0) -> tuple[float, float]:
    """The support [a, b] of the MP law's continuous part: σ²(1 ∓ √ratio)²."""
    lam, s2 = _check_ratio_sigma(ratio, sigma2)
    return s2 * (1 - math.sqrt(lam)) ** 2, s2 * (1 + math.sqrt(lam)) ** 2


def marchenko_pastur_pdf(x, ratio: float, sigma2: float = 1.0) -> np.ndarray:
    """Density of the continuous part of the Marchenko–Pastur law (see module doc).

    Args:
      x: points (any shape, real, no NaN).
      ratio: λ = p/n > 0 (rows/columns of X in S = XXᵀ/n).
      sigma2: entry variance σ² > 0.

    Returns:
      float64 array of x's shape; 0 outside [a, b] (and at x = 0, where the atom sits when
      λ > 1). Integrates to min(1, 1/λ).
    """
    lam, s2 = _check_ratio_sigma(ratio, sigma2)
    x = _as_array(x)
    a, b = marchenko_pastur_edges(lam, s2)
    inside = (x > a) & (x < b) & (x > 0)
    out = np.zeros_like(x)
    xi = x[inside]
    out[inside] = np.sqrt((b - xi) * (xi - a)) / (2 * math.pi * s2 * lam * xi)
    return out


def _mp_antiderivative(t: np.ndarray, a: float, b: float) -> np.ndarray:
    """G with G' = √((b − t)(t − a))/t on [a, b] (checked by differentiation).

    The arcsines are written as atan2 of (numerator, 2r·scale), which stays accurate at the
    edges where the arcsine's argument is ±1 (there asin loses half the digits).
    """
    r = np.sqrt(np.clip((b - t) * (t - a), 0.0, None))
    g = r + 0.5 * (a + b) * np.arctan2(2 * t - a - b, 2 * r)
    sab = math.sqrt(a * b)
    if sab > 0:
        g = g - sab * np.arctan2((a + b) * t - 2 * a * b, 2 * sab * r)
    return g


def marchenko_pastur_cdf(x, ratio: float, sigma2: float = 1.0) -> np.ndarray:
    """Distribution function of the MP law, atom at 0 included (closed form).

    F(x) = (1 − 1/λ)₊·1[x ≥ 0] + (G(x) − G(a))/(2πσ²λ) for a ≤ x ≤ b, with
    G(t) = r + (a+b)/2·asin((2t − a − b)/(b − a)) − √(ab)·asin(((a+b)t − 2ab)/((b − a)t)),
    r = √((b − t)(t − a)). Shapes and arguments as in `marchenko_pastur_pdf`.
    """
    lam, s2 = _check_ratio_sigma(ratio, sigma2)
    x = _as_array(x)
    a, b = marchenko_pastur_edges(lam, s2)
    atom = max(0.0, 1.0 - 1.0 / lam)
    t = np.clip(x, a, b)
    tt = np.where(t > 0, t, b)   # avoid 0/0 inside G when a = 0 (value replaced below)
    g_a = -0.25 * math.pi * (a + b) + 0.5 * math.pi * math.sqrt(a * b)   # G(a), exactly
    cont = _mp_antiderivative(tt, a, b) - g_a
    cont = np.where(t > 0, cont / (2 * math.pi * s2 * lam), 0.0)
    out = np.where(x >= 0, atom, 0.0) + np.where(x >= a, cont, 0.0)
    return np.clip(out, 0.0, 1.0)


@dataclass(frozen=True)
class LogNormMoments:
    """Moments of ln(‖W_L⋯W_1 u‖²/‖u‖²): exact, and the large-width approximations.

    Attributes:
      mean, var: exact (digamma/trigamma of the chi-square degrees of freedom).
      mean_approx: Σ_l [ln(σ² n_l/n_{l−1}) − 1/n_l] (ψ(k/2) + ln 2 ≈ ln k − 1/k).
      var_approx: Σ_l 2/n_l (ψ'(k/2) ≈ 2/k).
      per_layer_mean, per_layer_var: the exact terms, layer by layer (shape (L,)).
    """

    mean: float
    var: float
    mean_approx: float
    var_approx: float
    per_layer_mean: np.ndarray
    per_layer_var: np.ndarray


def check_widths(widths: Sequence[int], min_len: int = 2) -> list[int]:
    """``widths`` as a list of ints >= 1 with at least ``min_len`` entries (else a
    TypeError/ValueError naming the problem), e.g. ``check_widths([64, 128, 10])``."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence | np.ndarray):
        raise TypeError(f"widths must be a sequence of ints, got {type(widths).__name__}")
    out = []
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)):
            raise TypeError(f"widths must be ints, got {w!r}")
        if w < 1:
            raise ValueError(f"widths must be >= 1, got {w}")
        out.append(int(w))
    if len(out) < min_len:
        raise ValueError(f"widths needs at least {min_len} entries, got {len(out)}")
    return out


def product_log_norm_moments(widths: Sequence[int], sigma2: float = 1.0) -> LogNormMoments:
    """Exact mean and variance of ln(‖W_L⋯W_1 u‖²/‖u‖²) for Gaussian W_l (module doc).

    Args:
      widths: [n_0, n_1, …, n_L] (input dimension, then each matrix's output dimension).
      sigma2: W_l entries are N(0, sigma2/n_{l−1}).

    For square products of width n: mean ≈ −L/n and variance ≈ 2L/n, both ∝ L/n.
    """
    w = check_widths(widths)
    _, s2 = _check_ratio_sigma(1.0, sigma2)
    n_in = np.array(w[:-1], dtype=np.float64)
    n_out = np.array(w[1:], dtype=np.float64)
    pm = np.log(s2 / n_in) + digamma(n_out / 2) + math.log(2.0)
    pv = polygamma(1, n_out / 2)
    return LogNormMoments(
        mean=float(pm.sum()), var=float(pv.sum()),
        mean_approx=float(np.sum(np.log(s2 * n_out / n_in) - 1 / n_out)),
        var_approx=float(np.sum(2 / n_out)), per_layer_mean=pm, per_layer_var=pv)
