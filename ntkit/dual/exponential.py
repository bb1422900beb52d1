"""Duals of exponentials, from Gaussian moment-generating functions.

φ(x) = a·exp(b x):  E[e^{b(u+v)}] = e^{b² Var(u+v)/2}, so

    T = a² exp(b² (var1 + var2 + 2 cov)/2),   Tdot = b² T.

It overflows (inf) once b²·(var1 + var2 + 2cov)/2 exceeds ~709 in float64 (~88 in
float32), as the function itself does: e.g. var = 1e6 with b = 1.

φ(x) = a·exp(b x²):  E[e^{b(u² + v²)}] = det(I − 2bΣ)^{−1/2}, with

    D    = (1 − 2b var1)(1 − 2b var2) − 4b² cov² = 1 − 2b(var1 + var2) + 4b²·det,
    det  = max(var1 var2 − cov², 0),
    T    = a² / √D,    Tdot = 4 a² b² cov / D^{3/2}.

For b < 0 (the usual Gaussian bump), D ≥ 1 everywhere, including the diagonal and zero
variance (neural-tangents returns NaN on the diagonal). For b > 0 the expectation is
finite only while I − 2bΣ is positive definite; outside that region T and Tdot are +inf
(Tdot takes cov's sign there). a = 0 gives T = Tdot = 0 everywhere.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import ntkit.dual.fused as fused


def exp_dual(a: float, b: float, var1: Tensor, cov: Tensor, var2: Tensor,
             need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """Dual of φ(x) = a·exp(b x) (see module docstring). Shapes broadcast."""
    if fused.wants(var1, cov, var2):
        return fused.run(("exp", a, b, need_dot),
                         lambda v1, c, v2: _exp(a, b, v1, c, v2, need_dot), var1, cov, var2)
    return _exp(a, b, var1, cov, var2, need_dot)


def _exp(a, b, var1, cov, var2, need_dot):
    t = (a * a) * (0.5 * b * b * (var1 + var2 + 2 * cov)).exp()
    return t, ((b * b) * t if need_dot else None)


def gaussian_dual(a: float, b: float, var1: Tensor, cov: Tensor, var2: Tensor,
                  need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """Dual of φ(x) = a·exp(b x²) (see module docstring). Shapes broadcast."""
    if fused.wants(var1, cov, var2):
        return fused.run(("gaussian", a, b, need_dot),
                         lambda v1, c, v2: _gaussian(a, b, v1, c, v2, need_dot), var1, cov, var2)
    return _gaussian(a, b, var1, cov, var2, need_dot)


def _gaussian(a, b, var1, cov, var2, need_dot):
    det = (var1 * var2 - cov * cov).clamp_min(0)
    d = 1 - 2 * b * (var1 + var2) + 4 * b * b * det
    if a == 0:  # φ ≡ 0: no infinities even where the Gaussian integral diverges
        z = torch.zeros_like(d)
        return z, (z if need_dot else None)
    if b > 0:
        # Finite iff I − 2bΣ ≻ 0: both diagonal entries and the determinant positive.
        ok = (d > 0) & (1 - 2 * b * var1 > 0) & (1 - 2 * b * var2 > 0)
        d = torch.where(ok, d, torch.ones_like(d))
    else:
        ok = None
    root = d.sqrt()
    t = (a * a) / root
    dot = (4 * a * a * b * b) * cov / (d * root) if need_dot else None
    if ok is not None:
        inf = torch.full_like(t, math.inf)
        t = torch.where(ok, t, inf)
        if dot is not None:
            dot = torch.where(ok, dot, torch.copysign(inf, cov))
    return t, dot
