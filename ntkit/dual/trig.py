"""Duals of sinusoids, from the Gaussian characteristic function E[cos(t·u)] = e^{−t² var/2}.

For φ(x) = a sin(b x + c), by sin·sin = [cos(b(u − v)) − cos(b(u + v) + 2c)]/2:

    s1 = exp(−b² (var1 + var2 − 2 cov)/2)        (= E[cos(b(u − v))])
    s2 = cos(2c) exp(−b² (var1 + var2 + 2 cov)/2)  (= E[cos(b(u + v) + 2c)])
    T    = a²/2 · (s1 − s2)
    Tdot = a² b²/2 · (s1 + s2)

cos(b x + c) is sin(b x + c + π/2). The RBF activation √2 sin(√(2γ) x + π/4) has
cos(2c) = 0 exactly, so its dual is written without s2 (no 6e-17 residue of cos(π/2)):

    T = exp(−γ (var1 + var2 − 2 cov)),   Tdot = 2γ T.

The exponents are formed as one sum (var1 + var2 ∓ 2cov ≥ 0 on the PSD cone) so that
nothing overflows for large variances: T decays to its limit instead of forming
inf · 0. For large b²·var the kernel tends to a²/2 · [cov == …] and is, correctly, tiny.
"""

from __future__ import annotations

import math

from torch import Tensor

import ntkit.dual.fused as fused


def sin_dual(a: float, b: float, c: float, var1: Tensor, cov: Tensor, var2: Tensor,
             need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """Dual of φ(x) = a·sin(b x + c) (see module docstring). Shapes broadcast."""
    if fused.wants(var1, cov, var2):
        return fused.run(("sin", a, b, c, need_dot),
                         lambda v1, cv, v2: _sin(a, b, c, v1, cv, v2, need_dot), var1, cov, var2)
    return _sin(a, b, c, var1, cov, var2, need_dot)


def _sin(a, b, c, var1, cov, var2, need_dot):
    b2 = b * b
    total = var1 + var2
    s1 = (-0.5 * b2 * (total - 2 * cov)).exp()
    s2 = math.cos(2 * c) * (-0.5 * b2 * (total + 2 * cov)).exp()
    t = (0.5 * a * a) * (s1 - s2)
    if not need_dot:
        return t, None
    return t, (0.5 * a * a * b2) * (s1 + s2)


def rbf_dual(gamma: float, var1: Tensor, cov: Tensor, var2: Tensor,
             need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """Dual of φ(x) = √2 sin(√(2γ) x + π/4): T = exp(−γ(var1 + var2 − 2cov)), Tdot = 2γT."""
    if fused.wants(var1, cov, var2):
        return fused.run(("rbf", gamma, need_dot),
                         lambda v1, c, v2: _rbf(gamma, v1, c, v2, need_dot), var1, cov, var2)
    return _rbf(gamma, var1, cov, var2, need_dot)


def _rbf(gamma, var1, cov, var2, need_dot):
    t = (-gamma * (var1 + var2 - 2 * cov)).exp()
    return t, ((2 * gamma) * t if need_dot else None)
