"""Duals of polynomial activations, exactly, through Mehler's (Hermite) expansion.

If φ(√var · z) = Σ_j var^{j/2} g_j(var) He_j(z) for z ~ N(0, 1), with g_j polynomials,
then, since E[He_j(z1) He_k(z2)] = δ_jk k! ρ^k for standard normals with correlation ρ,

    T    = Σ_j h_j(var1) h_j(var2) cov^j,           h_j = √(j!) g_j,
    Tdot = Σ_{j≥1} j h_j(var1) h_j(var2) cov^{j−1}   (= ∂T/∂cov: Price's theorem).

No square roots or divisions: exact at zero variance and at |cov| = √(var1 var2),
and valid for any variances (not only unit-variance inputs).

- Polynomial Σ_i a_i x^i: with x^i = Σ_m A(i, m) He_{i−2m}(x), A(i, m) = i!/(m! 2^m (i−2m)!),
  g_j(var) = Σ_m a_{j+2m} A(j+2m, m) var^m.
- Normalized Hermite He_k/√k!: by the multiplication theorem
  He_k(γx) = Σ_i γ^{k−2i} (γ² − 1)^i A(k, i) He_{k−2i}(x),
  g_{k−2i}(var) = A(k, i) (var − 1)^i / √k!, so
  T = Σ_i C(k, 2i) C(2i, i) 4^{−i} ((var1 − 1)(var2 − 1))^i cov^{k−2i}.
  Written in (var − 1), it has no cancellation near unit variance, where it reduces to
  T = cov^k (the neural-tangents formula, which assumes unit variance).

Degrees are capped at ``MAX_DEGREE`` (the coefficients then stay within float64).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from torch import Tensor

import ntkit.dual.fused as fused

MAX_DEGREE = 100

# A Mehler table: for each j, the coefficients (lowest power first) of h_j as a
# polynomial in (var − shift).
MehlerTable = tuple[tuple[float, ...], ...]


def _hermite_a(i: int, m: int) -> int:
    """A(i, m) = i! / (m! 2^m (i − 2m)!): coefficient of He_{i−2m} in x^i."""
    return math.factorial(i) // (math.factorial(m) * 2**m * math.factorial(i - 2 * m))


def polynomial_table(coef: Sequence[float]) -> MehlerTable:
    """Mehler table (shift 0) of φ(x) = Σ_i coef[i] x^i."""
    return _polynomial_table(tuple(float(a) for a in coef))


@lru_cache(maxsize=64)
def _polynomial_table(coef: tuple[float, ...]) -> MehlerTable:
    n = len(coef)
    table = []
    for j in range(n):
        sq = math.sqrt(math.factorial(j))
        table.append(tuple(coef[j + 2 * m] * _hermite_a(j + 2 * m, m) * sq
                           for m in range((n - 1 - j) // 2 + 1)))
    return tuple(table)


@lru_cache(maxsize=64)
def hermite_table(degree: int) -> MehlerTable:
    """Mehler table (shift 1) of the normalized Hermite polynomial He_k(x)/√k!, k = degree."""
    k = degree
    table: list[tuple[float, ...]] = [() for _ in range(k + 1)]
    for i in range(k // 2 + 1):
        # h_{k−2i} = √((k−2i)!) A(k, i) / √k!, computed in logs (no huge intermediates).
        log_h = (0.5 * (math.lgamma(k + 1) - math.lgamma(k - 2 * i + 1))
                 - math.lgamma(i + 1) - i * math.log(2))
        table[k - 2 * i] = (0.0,) * i + (math.exp(log_h),)
    return tuple(table)


def _horner(coefs: Sequence[float], x: Tensor) -> Tensor | float:
    out: Tensor | float = 0.0
    for a in reversed(coefs):
        out = out * x + a
    return out


def mehler_dual(table: MehlerTable, shift: float, var1: Tensor, cov: Tensor, var2: Tensor,
                need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """T and Tdot from a Mehler table (see module docstring); Horner's rule in cov.

    Args:
      table: table[j] = coefficients of h_j as a polynomial in (var − shift).
      shift: 0 for plain polynomials, 1 for the Hermite form.
      var1, cov, var2: broadcastable tensors.
    """
    if fused.wants(var1, cov, var2):
        return fused.run(("mehler", table, shift, need_dot),
                         lambda v1, c, v2: _mehler(table, shift, v1, c, v2, need_dot),
                         var1, cov, var2)
    return _mehler(table, shift, var1, cov, var2, need_dot)


def _mehler(table, shift, var1, cov, var2, need_dot):
    x1 = var1 - shift if shift else var1
    x2 = var2 - shift if shift else var2
    zero = cov * 0  # broadcast shape, dtype and device (and keeps autograd's graph)
    t: Tensor = zero
    dot: Tensor = zero
    for j in range(len(table) - 1, -1, -1):
        if table[j]:
            pj = _horner(table[j], x1) * _horner(table[j], x2)
        else:
            pj = 0.0
        if need_dot and j >= 1:
            dot = dot * cov + j * pj
        t = t * cov + pj
    return t + zero, (dot + zero if need_dot else None)


def polynomial_dual(coef: Sequence[float], var1: Tensor, cov: Tensor, var2: Tensor,
                    need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """Dual of φ(x) = Σ_i coef[i] x^i (exact; see module docstring)."""
    return mehler_dual(polynomial_table(coef), 0.0, var1, cov, var2, need_dot)


def monomial_dual(degree: int, var1: Tensor, cov: Tensor, var2: Tensor,
                  need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """Dual of φ(x) = x^degree: T = Σ_m A(p, m)² (p−2m)! (var1 var2)^m cov^{p−2m}."""
    return polynomial_dual((0.0,) * degree + (1.0,), var1, cov, var2, need_dot)


def hermite_dual(degree: int, var1: Tensor, cov: Tensor, var2: Tensor,
                 need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """Dual of φ(x) = He_k(x)/√k! for any input variances (exact)."""
    return mehler_dual(hermite_table(degree), 1.0, var1, cov, var2, need_dot)
