"""Activations whose duals come from 2-D Gauss–Hermite quadrature (or a user's closed
form): `Elementwise` for any torch function, and the smooth activations built on it
(Tanh, Sigmoid, Softplus, SiLU). The closed-form activations are in
`ntkit.layers.activations`, which re-exports these."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ntkit.dual import quadrature as _quad
from ntkit.layers.base import Activation
from ntkit.layers.closed_form import check_forms, closed_form_dual

Dual = tuple[Tensor, Tensor | None]

__all__ = ["Elementwise", "SiLU", "Sigmoid", "Softplus", "Tanh"]


# ---- quadrature ---------------------------------------------------------------

class Elementwise(Activation):
    """Any elementwise activation written in torch; T and Tdot by 2-D quadrature, or from
    a closed form ``nngp_fn`` as in neural-tangents' ``stax.Elementwise``.

    (u, v) = L z with L the Cholesky factor of Σ (clamped, so zero variances and
    |cov| = √(var1 var2) are finite), and a tensor-product rule in z; see
    :mod:`ntkit.dual.quadrature`. Accuracy (relative, at variances in [0.5, 1.5]) with 64
    nodes, |ρ| ≤ 1: ≤ 1e-12 for tanh's T (≤ 6e-11 for Tdot), ≤ 3e-14 for sigmoid,
    softplus, SiLU, erf, GELU. The rule's error grows with the variance (φ(√var·z) has
    its complex poles closer to the real axis), so the default ``deg="auto"`` uses
    ~60·√var_max nodes (at least 64, at most 512, from a fixed ladder so that most tiles
    share one rule): ~1e-10 or better for tanh up to variance ~100.
    Kinked functions converge poorly (~1e-3): use a closed form for those.

    Args:
      fn: φ, an elementwise torch function (Tensor -> Tensor of the same shape).
      fn_deriv: φ'; defaults to autograd of ``fn``.
      deg: nodes per dimension, or "auto" (see above); each entry costs deg² evaluations
        of φ (and of φ').
      rule: "trapezoid" (default: best for functions analytic near the real axis with
        at most polynomial growth, like all common activations) or "hermite"
        (Gauss–Hermite: exact for polynomials, best for fast-growing φ such as exp).
      max_elements: cap on the size of the (chunk, deg, deg) temporary; entries are
        processed in chunks so that memory stays bounded for any kernel size. The
        result does not depend on it.
      nngp_fn: (keyword) ``nngp_fn(cov12, var1, var2)`` -> E[φ(u)φ(v)], elementwise in
        torch; then no quadrature, and ``fn`` (for `build` only) may be None.
      d_nngp_fn: (keyword) E[φ'(u)φ'(v)], same arguments; default ∂nngp_fn/∂cov12 by
        autograd (see :mod:`ntkit.layers.closed_form`).
    """

    remasks = True

    def __init__(self, fn: Callable[[Tensor], Tensor] | None = None,
                 fn_deriv: Callable[[Tensor], Tensor] | None = None,
                 deg: int | str = "auto", rule: str = _quad.DEFAULT_RULE,
                 max_elements: int = _quad.DEFAULT_MAX_ELEMENTS, *,
                 nngp_fn: Callable | None = None, d_nngp_fn: Callable | None = None):
        check_forms(fn, fn_deriv, nngp_fn, d_nngp_fn)
        self._nngp_fn, self._d_nngp_fn = nngp_fn, d_nngp_fn
        if not isinstance(rule, str) or rule not in _quad.RULES:
            raise ValueError(f"rule must be one of {_quad.RULES}, got {rule!r}")
        if isinstance(max_elements, bool) or not isinstance(max_elements, int):
            raise TypeError(f"max_elements must be an int, got {type(max_elements).__name__}")
        if max_elements < 1:
            raise ValueError(f"max_elements must be >= 1, got {max_elements}")
        self._fn = fn
        self._fn_deriv = fn_deriv
        self.deg = deg if deg == "auto" else _quad.check_deg(deg)
        self.rule = rule
        self.max_elements = max_elements

    def fn(self, x: Tensor) -> Tensor:
        if self._fn is None:
            raise ValueError("this Elementwise(nngp_fn=...) has no fn: give fn= to build a "
                             "finite network")
        return self._fn(x)

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        if self._nngp_fn is not None:
            return closed_form_dual(self._nngp_fn, self._d_nngp_fn, var1, cov, var2, need_dot)
        deg = self.deg
        if deg == "auto":
            deg = _auto_deg(max(float(var1.detach().max()), float(var2.detach().max())))
        return _quad.quadrature_dual(self._fn, var1, cov, var2, need_dot,
                                     fn_deriv=self._fn_deriv, deg=deg, rule=self.rule,
                                     max_elements=self.max_elements)

    def __repr__(self) -> str:
        name = getattr(self._fn, "__name__", repr(self._fn))
        if self._nngp_fn is not None:
            return f"{type(self).__name__}(fn={name}, nngp_fn={self._nngp_fn.__name__})"
        return (f"{type(self).__name__}(fn={name}, deg={self.deg}, rule={self.rule!r}, "
                f"max_elements={self.max_elements})")



_DEG_LADDER = (64, 96, 128, 192, 256, 384, 512)


def _auto_deg(var_max: float) -> int:
    """Nodes for ~1e-10 accuracy: the trapezoid error for φ with poles at distance d
    decays like exp(−2πd(n−1)/(16√var)); for tanh (d = π/2) T to 1e-11 needs n ≈ 41√var;
    Tdot (φ′ has double poles) needs ~50% more: measured 2e-10 at 128 nodes, variance 6.
    """
    need = 60.0 * math.sqrt(max(var_max, 0.0)) + 1
    for deg in _DEG_LADDER:
        if deg >= need:
            return deg
    return _DEG_LADDER[-1]


class _Smooth(Elementwise):
    """An `Elementwise` with a fixed function and its analytic derivative."""

    def __init__(self, deg: int | str = "auto", rule: str = _quad.DEFAULT_RULE,
                 max_elements: int = _quad.DEFAULT_MAX_ELEMENTS):
        super().__init__(type(self)._phi, type(self)._dphi, deg=deg, rule=rule,
                         max_elements=max_elements)

    @staticmethod
    def _phi(x: Tensor) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def _dphi(x: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(deg={self.deg}, rule={self.rule!r})"


class Tanh(_Smooth):
    """φ(x) = tanh(x), by quadrature (no closed form exists). Poles at ±iπ/2 make it the
    slowest of the smooth activations: ≤ 1e-12 (T) / 6e-11 (Tdot) at variances in [0.5, 1.5]
    with 64 nodes, ~1e-7 / 4e-6 at variances in [1.5, 4.5] (deg=128: 1e-12 / 1e-10).

    Args:
      deg, rule, max_elements: as for `Elementwise`.
    """

    @staticmethod
    def _phi(x: Tensor) -> Tensor:
        return torch.tanh(x)

    @staticmethod
    def _dphi(x: Tensor) -> Tensor:
        return 1 - torch.tanh(x) ** 2


class Sigmoid(_Smooth):
    """φ(x) = 1/(1 + e^{−x}), by quadrature. (neural-tangents' ``Sigmoid_like`` is an erf
    approximation; this is the exact logistic function.)

    Args:
      deg, rule, max_elements: as for `Elementwise`.
    """

    @staticmethod
    def _phi(x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    @staticmethod
    def _dphi(x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1 - s)


class Softplus(_Smooth):
    """φ(x) = log(1 + eˣ), by quadrature.

    torch's softplus switches to x above ``threshold``; a threshold of 40 makes that
    switch invisible in float64 (the jump is e^{−40} ≈ 4e-18), so φ stays smooth.

    Args:
      deg, rule, max_elements: as for `Elementwise`.
    """

    @staticmethod
    def _phi(x: Tensor) -> Tensor:
        return F.softplus(x, threshold=40.0)

    @staticmethod
    def _dphi(x: Tensor) -> Tensor:
        return torch.sigmoid(x)


class SiLU(_Smooth):
    """φ(x) = x·sigmoid(x) (swish), by quadrature.

    Args:
      deg, rule, max_elements: as for `Elementwise`.
    """

    @staticmethod
    def _phi(x: Tensor) -> Tensor:
        return F.silu(x)

    @staticmethod
    def _dphi(x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        return s * (1 + x * (1 - s))
