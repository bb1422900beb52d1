"""Closed-form kernels that the random feature maps of `ntkit.features` estimate.

All functions take batches x: (n1, d), y: (n2, d) (torch tensors or numpy arrays; y=None
means y = x) and return the (n1, n2) kernel matrix as a tensor in ``dtype`` (float64 by
default). Conventions (γ = ``gamma`` > 0, δ = x − y):

- Gaussian:   k(x, y) = exp(−γ ‖δ‖₂²)              (sklearn's ``rbf_kernel``)
- Laplacian:  k(x, y) = exp(−γ ‖δ‖₁)               (sklearn's ``laplacian_kernel``)
- Cauchy:     k(x, y) = Π_i 1 / (1 + γ² δ_i²)
- arc-cosine of degree n (Cho & Saul 2009), weights w ~ N(0, I_d):
      k_n(x, y) = 2 E[Θ(w·x) Θ(w·y) (w·x)ⁿ (w·y)ⁿ] = (1/π) ‖x‖ⁿ ‖y‖ⁿ J_n(θ),
      J_0 = π − θ,  J_1 = sin θ + (π − θ) cos θ,  J_2 = 3 sin θ cos θ + (π − θ)(1 + 2 cos² θ),
  so k_0 = 1 − θ/π, k_1(x, x) = ‖x‖², k_2(x, x) = 3‖x‖⁴.
- two-layer NTK of f(x) = (1/√m) Σ_j a_j σ(w_jᵀx) with w_j ~ N(0, I_d), a_j ~ N(0, 1):
      Θ(x, y) = (xᵀy) E[σ'(u) σ'(v)] + E[σ(u) σ(v)],  (u, v) ~ N(0, [[‖x‖², x·y], [x·y, ‖y‖²]]),
  the second term only when the output weights a are trained. For ReLU this is
  (xᵀy) k_0(x, y)/2 + k_1(x, y)/2.

The angle θ is computed as ``atan2(sqrt(max(‖x‖²‖y‖² − (x·y)², 0)), x·y)`` (never arccos of a
rounded cosine, which is NaN beyond ±1), and for nearly (anti)parallel pairs refined from the
vectors themselves (see `_angle_terms`), so k_0(x, x) = 1 exactly. For a zero vector θ is
undefined; it is set to π, the convention of `ntkit.dual.relu` (Θ(0) = 0, as torch's
``x > 0``): degree 1 and 2 vanish there anyway, and k_0(0, y) = 0 is exactly what the step
features give, since Θ(w·0) = 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ntkit.engine.inputs import as_batch

__all__ = [
    "FOURIER_KINDS",
    "activation_ntk_two_layer",
    "arccos_kernel",
    "cauchy_kernel",
    "check_gamma",
    "fourier_kernel",
    "gaussian_kernel",
    "laplacian_kernel",
    "relu_ntk_two_layer",
]

FOURIER_KINDS = ("gaussian", "laplacian", "cauchy")


def _pair(x, y, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    x = as_batch(x, "x", dtype)
    y = x if y is None else as_batch(y, "y", dtype).to(x.device)
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"x and y have different feature dimensions: {x.shape[1]} vs "
                         f"{y.shape[1]}")
    return x, y


def check_gamma(gamma: Any) -> float:
    """Validate a positive finite bandwidth / scale ``gamma``."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise TypeError(f"gamma must be a real number, got {type(gamma).__name__}")
    gamma = float(gamma)
    if not (gamma > 0.0 and math.isfinite(gamma)):
        raise ValueError(f"gamma must be finite and > 0, got {gamma}")
    return gamma


def gaussian_kernel(x: Any, y: Any = None, gamma: float = 1.0, *, dtype: torch.dtype = torch.float64
                    ) -> Tensor:
    """k(x, y) = exp(−γ ‖x − y‖₂²); returns (n1, n2)."""
    gamma = check_gamma(gamma)
    x, y = _pair(x, y, dtype)
    # Exact differences rather than the ‖x‖² + ‖y‖² − 2x·y expansion: no cancellation,
    # so k(x, x) is exactly 1.
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return torch.exp(-gamma * d2)


def laplacian_kernel(x: Any, y: Any = None, gamma: float = 1.0, *,
                     dtype: torch.dtype = torch.float64
                     ) -> Tensor:
    """k(x, y) = exp(−γ ‖x − y‖₁); returns (n1, n2)."""
    gamma = check_gamma(gamma)
    x, y = _pair(x, y, dtype)
    return torch.exp(-gamma * (x[:, None, :] - y[None, :, :]).abs().sum(-1))


def cauchy_kernel(x: Any, y: Any = None, gamma: float = 1.0, *, dtype: torch.dtype = torch.float64
                  ) -> Tensor:
    """k(x, y) = Π_i 1 / (1 + γ² (x_i − y_i)²); returns (n1, n2).

    Normalized so that k(x, x) = 1 (factors such as 2/π in some statements of Rahimi & Recht
    2007, "Random features for large-scale kernel machines", belong to the density
    of the frequencies, not to the kernel).
    """
    gamma = check_gamma(gamma)
    x, y = _pair(x, y, dtype)
    diff = x[:, None, :] - y[None, :, :]
    # Sum of logs instead of a product of d factors: no underflow at large d.
    return torch.exp(-torch.log1p((gamma * diff) ** 2).sum(-1))


# Pairs with |sin θ| below this get their angle recomputed from the vectors (see below).
_REFINE_SIN = 1e-3
_REFINE_CHUNK = 1 << 18


def _angle_terms(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(‖x‖‖y‖ sin θ, x·y, θ, ‖x‖‖y‖) for all pairs, each (n1, n2).

    θ = atan2(sqrt(max(‖x‖²‖y‖² − (x·y)², 0)), x·y). Near θ = 0 or π, the rounding error of
    x·y alone (≈ ε‖x‖‖y‖) puts an error of ≈ √ε ≈ 1e-8 into θ; k_1 and k_2 are flat there
    (error O(θ³)), but k_0 = 1 − θ/π is not. So for the (usually few) pairs with
    |sin θ| < 1e-3 the angle is recomputed by Kahan's formula
    θ = 2 atan2(‖x̂ − ŷ‖, ‖x̂ + ŷ‖) from the unit vectors, accurate to round-off everywhere.
    """
    nx2 = (x * x).sum(1)[:, None]
    ny2 = (y * y).sum(1)[None, :]
    dot = x @ y.T
    prod2 = nx2 * ny2
    nn = torch.sqrt(prod2)
    s = torch.sqrt(torch.clamp(prod2 - dot * dot, min=0.0))
    theta = torch.atan2(s, dot)
    zero = prod2 == 0
    near = (s < _REFINE_SIN * nn) & ~zero
    if bool(near.any()):
        xh = x / torch.sqrt(nx2).clamp_min(torch.finfo(x.dtype).tiny)
        yh = y / torch.sqrt(ny2[0])[:, None].clamp_min(torch.finfo(y.dtype).tiny)
        ii, jj = near.nonzero(as_tuple=True)
        th = torch.empty(ii.shape[0], dtype=x.dtype, device=x.device)
        for a in range(0, ii.shape[0], _REFINE_CHUNK):  # bounded memory for many such pairs
            i, j = ii[a:a + _REFINE_CHUNK], jj[a:a + _REFINE_CHUNK]
            u, v = xh[i], yh[j]
            th[a:a + _REFINE_CHUNK] = 2 * torch.atan2((u - v).norm(dim=1), (u + v).norm(dim=1))
        theta = theta.index_put((ii, jj), th)
        s = s.index_put((ii, jj), nn[ii, jj] * torch.sin(th))
    # atan2(0, 0) = 0 would call a zero vector parallel to everything; θ = π instead, the
    # convention Θ(0) = 0 of ntkit.dual (see the module docstring).
    theta = torch.where(zero, torch.full_like(theta, math.pi), theta)
    return s, dot, theta, nn


def arccos_kernel(x: Any, y: Any = None, degree: int = 1, *,
                  dtype: torch.dtype = torch.float64) -> Tensor:
    """Arc-cosine kernel k_n(x, y) = (1/π) ‖x‖ⁿ‖y‖ⁿ J_n(θ) of degree n ∈ {0, 1, 2}.

    Equals 2 E_w[Θ(w·x)Θ(w·y)(w·x)ⁿ(w·y)ⁿ] with w ~ N(0, I_d): the expectation of
    φ(x)·φ(y) for the random step (n = 0) and ReLU (n = 1) features of
    `ArcCosineFeatures`. Degree 2 is provided for variance formulas.

    Args:
      x: (n1, d); y: (n2, d) or None (y = x); degree: 0, 1 or 2.

    Returns:
      (n1, n2) tensor; finite everywhere, including at zero vectors.
    """
    if degree not in (0, 1, 2) or isinstance(degree, bool):
        raise ValueError(f"arccos_kernel degree must be 0, 1 or 2, got {degree!r}")
    x, y = _pair(x, y, dtype)
    s, dot, theta, nn = _angle_terms(x, y)
    if degree == 0:
        return 1.0 - theta / math.pi
    if degree == 1:
        # ‖x‖‖y‖ J_1 = ‖x‖‖y‖ sin θ + (π − θ) x·y, written without dividing by the norms.
        return (s + (math.pi - theta) * dot) / math.pi
    # ‖x‖²‖y‖² J_2 = 3 (‖x‖‖y‖ sin θ)(x·y) + (π − θ)(‖x‖²‖y‖² + 2 (x·y)²)
    return (3.0 * s * dot + (math.pi - theta) * (nn * nn + 2.0 * dot * dot)) / math.pi


def relu_ntk_two_layer(x: Any, y: Any = None, *, train_output: bool = True,
                       dtype: torch.dtype = torch.float64) -> Tensor:
    """Analytic NTK of f(x) = (1/√m) Σ a_j ReLU(w_jᵀx), w_j ~ N(0, I), a_j ~ N(0, 1), m → ∞.

    Θ(x, y) = (xᵀy)(π − θ)/(2π) [W part] + k_1(x, y)/2 [a part, if ``train_output``].
    Returns (n1, n2).
    """
    x, y = _pair(x, y, dtype)
    s, dot, theta, _ = _angle_terms(x, y)
    k = dot * (math.pi - theta) / (2.0 * math.pi)
    if train_output:
        k = k + (s + (math.pi - theta) * dot) / (2.0 * math.pi)
    return k


def activation_ntk_two_layer(activation: Any, x: Any, y: Any = None, *, train_output: bool = True,
                             dtype: torch.dtype = torch.float64) -> Tensor:
    """Analytic two-layer NTK (module docstring) for any ntkit `Activation` spec, via its dual."""
    x, y = _pair(x, y, dtype)
    nx2 = (x * x).sum(1)[:, None].expand(x.shape[0], y.shape[0])
    ny2 = (y * y).sum(1)[None, :].expand(x.shape[0], y.shape[0])
    dot = x @ y.T
    t, tdot = activation.dual(nx2, dot, ny2, need_dot=True)
    k = dot * tdot
    return k + t if train_output else k


def fourier_kernel(kind: str, x: Any, y: Any = None, gamma: float = 1.0, *,
                   dtype: torch.dtype = torch.float64) -> Tensor:
    """The shift-invariant kernel named ``kind`` ('gaussian', 'laplacian', 'cauchy')."""
    fns = {"gaussian": gaussian_kernel, "laplacian": laplacian_kernel, "cauchy": cauchy_kernel}
    if kind not in fns:
        raise ValueError(f"unknown Fourier kernel {kind!r}; expected one of {FOURIER_KINDS}")
    return fns[kind](x, y, gamma, dtype=dtype)
