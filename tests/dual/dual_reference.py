"""Shared pieces for the dual-activation tests: the specs under test and independent
reference integrals built only from each spec's ``fn`` (never from its ``dual``).

- ``quad2d``: 2-D Gauss–Hermite of fn and its autograd derivative (smooth activations).
- ``angular``: for positively homogeneous φ (φ(rx) = r^p φ(x), r > 0: the whole ReLU
  family, sign, step, max(x,0)^p), polar coordinates separate the expectation into a
  closed-form radial moment and an angular integral
      E[φ(u)φ(v)] = 2^p Γ(p+1)/(2π) ∫₀^{2π} φ(l11 cos α) φ(l21 cos α + l22 sin α) dα,
  whose integrand is smooth between the four angles where u or v changes sign. Splitting
  there and using Gauss–Legendre on each arc gives ~1e-15 even though φ is kinked.
  (Tdot is the same with φ' and degree p − 1.)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ntkit.dual.quadrature import derivative, gauss_hermite, quadrature_dual
from ntkit.layers import activations as A

F64 = torch.float64

# (id, spec, homogeneity degree or None for smooth)
KINKED = [
    ("ReLU", A.ReLU(), 1),
    ("LeakyReLU", A.LeakyReLU(0.1), 1),
    ("ABReLU", A.ABReLU(-0.4, 1.7), 1),
    ("Abs", A.Abs(), 1),
    ("Sign", A.Sign(), 0),
    ("Step", A.RectifiedMonomial(0), 0),
    ("RectMono1", A.RectifiedMonomial(1), 1),
    ("RectMono2", A.RectifiedMonomial(2), 2),
    ("RectMono3", A.RectifiedMonomial(3), 3),
    ("RectMono6", A.RectifiedMonomial(6), 6),
]
SMOOTH = [
    ("Identity", A.Identity()),
    ("Erf", A.Erf()),
    ("Erf_abc", A.Erf(1.5, 0.6, 0.3)),
    ("GELU", A.GELU()),
    ("Sin", A.Sin()),
    ("Sin_abc", A.Sin(1.3, 1.7, 0.4)),
    ("Cos", A.Cos()),
    ("Cos_abc", A.Cos(0.7, 1.2, -0.5)),
    ("Exp", A.Exp()),
    ("Exp_ab", A.Exp(0.5, -0.6)),
    ("Gaussian", A.Gaussian()),
    ("Gaussian_ab", A.Gaussian(2.0, -0.3)),
    ("Gaussian_pos", A.Gaussian(1.0, 0.1)),
    ("Rbf", A.Rbf(0.7)),
    ("Monomial0", A.Monomial(0)),
    ("Monomial1", A.Monomial(1)),
    ("Monomial4", A.Monomial(4)),
    ("Monomial7", A.Monomial(7)),
    ("Polynomial", A.Polynomial([0.3, -1.0, 0.5, 0.2])),
    ("Polynomial_const", A.Polynomial([2.0])),
    ("Hermite0", A.Hermite(0)),
    ("Hermite1", A.Hermite(1)),
    ("Hermite3", A.Hermite(3)),
    ("Hermite6", A.Hermite(6)),
]
# Activations whose functions grow fast enough that huge variances overflow.
OVERFLOWING = {"Exp", "Exp_ab", "Gaussian_pos", "Monomial7", "Hermite6", "RectMono6"}


def points(n: int = 6, seed: int = 0, scale: float = 1.0):
    """n random (var1, cov, var2) triples as 1-D float64 tensors, |ρ| up to 0.97."""
    g = torch.Generator().manual_seed(seed)
    v1 = (0.3 + 1.4 * torch.rand(n, generator=g, dtype=F64)) * scale
    v2 = (0.3 + 1.4 * torch.rand(n, generator=g, dtype=F64)) * scale
    rho = (2 * torch.rand(n, generator=g, dtype=F64) - 1) * 0.97
    return v1, rho * (v1 * v2).sqrt(), v2


def quad2d(fn, v1, c, v2, deg: int = 200):
    """(T, Tdot) by 2-D Gauss–Hermite of fn and autograd(fn)."""
    return quadrature_dual(fn, v1, c, v2, True, deg=deg, rule="hermite")


def angular(fn, p: int, v1: float, c: float, v2: float, n: int = 80) -> tuple[float, float]:
    """(T, Tdot) of a positively homogeneous fn of degree p by split polar quadrature."""
    l11 = math.sqrt(v1)
    l21 = c / l11
    l22 = math.sqrt(max(v2 - l21 * l21, 0.0))
    a0 = math.atan2(-l21, l22) % math.pi  # v = 0 along α = a0 and a0 + π
    cuts = sorted({0.0, 2 * math.pi, math.pi / 2, 3 * math.pi / 2, a0, a0 + math.pi})
    x, w = np.polynomial.legendre.leggauss(n)
    alphas, weights = [], []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        if hi - lo < 1e-15:
            continue
        alphas.append(0.5 * (hi - lo) * x + 0.5 * (hi + lo))
        weights.append(0.5 * (hi - lo) * w)
    alpha = torch.as_tensor(np.concatenate(alphas), dtype=F64)
    wt = torch.as_tensor(np.concatenate(weights), dtype=F64)
    u = l11 * torch.cos(alpha)
    v = l21 * torch.cos(alpha) + l22 * torch.sin(alpha)

    def radial(q: int) -> float:  # E[r^{2q}] / (2π) for r² ~ χ²₂
        return 2.0**q * math.gamma(q + 1) / (2 * math.pi)

    t = radial(p) * float((fn(u) * fn(v) * wt).sum())
    if p == 0:
        return t, 0.0  # φ' = 0 almost everywhere (and under autograd)
    d = derivative(fn)
    tdot = radial(p - 1) * float((d(u) * d(v) * wt).sum())
    return t, tdot


def half_line_moment(q: float) -> float:
    """E[z^q 1{z > 0}] for z ~ N(0, 1)."""
    return 2.0 ** (q / 2 - 1) * math.gamma((q + 1) / 2) / math.sqrt(math.pi)


def one_d(fn, var: float, deg: int = 200) -> float:
    """E[fn(u)], u ~ N(0, var), by Gauss–Hermite with an even number of nodes (so a step
    at 0 is integrated exactly by symmetry)."""
    x, w = gauss_hermite(deg + deg % 2)
    return float((fn(math.sqrt(var) * x) * w).sum())
