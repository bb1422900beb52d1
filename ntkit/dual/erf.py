"""Duals of Gaussian-CDF-type activations: a·erf(b x) + c, and GELU = x Φ(x).

Both follow from E[Φ-type integrals] of Gaussians; the formulas are written so that
every square root has an argument ≥ 1 by construction (no clamping needed there):

erf (Williams 1997), with q_i = 2b²var_i and det = max(var1 var2 − cov², 0):

    D    = (1 + q1)(1 + q2) − (2b² cov)² = 1 + q1 + q2 + 4b⁴·det   ≥ 1
    T    = a² (2/π) atan2(2b² cov, √D) + c²       (= (2/π) arcsin(2b²cov/√((1+q1)(1+q2))))
    Tdot = a² (4b²/π) / √D

GELU (Tsuchida et al. 2021; the form used by neural-tangents' ``Gelu``), with
P = (1 + var1)(1 + var2) and δ² = P − cov² = 1 + var1 + var2 + det ≥ 1:

    θ    = atan2(cov, δ)
    T    = cov/4 + [cov θ + (cov² + var1 var2 δ²)/(P δ)] / (2π)
    Tdot = 1/4 + θ/(2π) + cov/(2π δ) · [1 + (1 − var1 var2)/P + 1/δ²]

Writing D and δ² with det rather than as a difference of products keeps them ≥ 1 at
perfect (anti)correlation and zero variance, where neural-tangents can take √ of a
negative number in float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import ntkit.dual.fused as fused
from ntkit.dual.gram import gram_det, inplace_ok


def erf_dual(a: float, b: float, c: float, var1: Tensor, cov: Tensor, var2: Tensor,
             need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """Dual of φ(x) = a·erf(b x) + c (see module docstring). Shapes broadcast."""
    b2 = b * b
    if not inplace_ok(var1, cov, var2):
        d = 1 + 2 * b2 * (var1 + var2) + 4 * b2 * b2 * gram_det(var1, cov, var2)
        root = d.sqrt()
        t = (a * a * 2 / math.pi) * (2 * b2 * cov).atan2(root) + c * c
        return t, ((a * a * 4 * b2 / math.pi) / root if need_dot else None)
    if fused.wants(var1, cov, var2):
        return fused.run(("erf", a, b, c, need_dot),
                         lambda v1, cv, v2: _erf(a, b, c, v1, cv, v2, need_dot), var1, cov, var2)
    return _erf(a, b, c, var1, cov, var2, need_dot)


def _erf(a, b, c, var1, cov, var2, need_dot):
    b2 = b * b
    # In-place chain over the (n1, n2) tile (this is a hot loop): D, then √D, then T.
    d = gram_det(var1, cov, var2).mul_(4 * b2 * b2)
    d.add_(var1 * (2 * b2) + 1).add_(var2 * (2 * b2))
    root = d.sqrt_()
    t = torch.atan2(cov * (2 * b2), root).mul_(a * a * 2 / math.pi)
    if c:
        t.add_(c * c)
    if not need_dot:
        return t, None
    return t, root.reciprocal_().mul_(a * a * 4 * b2 / math.pi)


def gelu_dual(var1: Tensor, cov: Tensor, var2: Tensor,
              need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """Dual of GELU φ(x) = x Φ(x) (the exact, erf-based GELU). Shapes broadcast."""
    if fused.wants(var1, cov, var2):
        return fused.run(("gelu", need_dot), lambda v1, c, v2: _gelu(v1, c, v2, need_dot),
                         var1, cov, var2)
    return _gelu(var1, cov, var2, need_dot)


def _gelu(var1, cov, var2, need_dot):
    p = (1 + var1) * (1 + var2)
    prod = var1 * var2
    delta2 = 1 + var1 + var2 + gram_det(var1, cov, var2)
    delta = delta2.sqrt()
    theta = cov.atan2(delta)
    t = cov / 4 + (cov * theta + (cov * cov + prod * delta2) / (p * delta)) / (2 * math.pi)
    if not need_dot:
        return t, None
    dot = 0.25 + theta / (2 * math.pi) + cov / (2 * math.pi * delta) * (
        1 + (1 - prod) / p + 1 / delta2)
    return t, dot
