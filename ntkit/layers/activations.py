"""Activation layer specs: elementwise nonlinearities with their dual activations.

Each spec defines ``fn`` (the torch function the finite network applies) and ``dual``
(T = E[φ(u)φ(v)] and Tdot = E[φ'(u)φ'(v)] for (u, v) ~ N(0, [[var1, cov], [cov, var2]]));
the math lives in :mod:`ntkit.dual`. Names and conventions follow neural-tangents' stax
(``Relu`` → ``ReLU``, ``ABRelu`` → ``ABReLU``, ``LeakyRelu`` → ``LeakyReLU``, ``Gelu`` →
``GELU``, ``ElementwiseNumerical`` → ``Elementwise``).

Closed forms are exact and finite for zero variances, perfect (anti)correlation and
variances from 1e-6 to 1e6 (exp-type activations overflow where the function does).
Kinked activations (ReLU family, sign, step) must use closed forms: quadrature is only
~1e-3 accurate at kinks. Smooth activations without a closed form (``Tanh``,
``Sigmoid``, ``Softplus``, ``SiLU``, or any ``Elementwise(fn)``) use 2-D quadrature,
≤ 1e-10 relative at variances of order one with the default 64 nodes per dimension.

At exactly zero variance (u ≡ 0), T and Tdot are those of the finite network, with
φ'(0) as torch's autograd gives it (ReLU'(0) = 0, sign'(0) = 0, step(0) = 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ntkit.dual import erf as _erf
from ntkit.dual import exponential as _exp
from ntkit.dual import polynomial as _poly
from ntkit.dual import relu as _relu
from ntkit.dual import trig as _trig
from ntkit.layers.base import Activation

# The quadrature-based activations live in ntkit.layers.smooth; re-exported here.
from ntkit.layers.smooth import Elementwise, Sigmoid, SiLU, Softplus, Tanh

Dual = tuple[Tensor, Tensor | None]

__all__ = [
    "ABReLU", "Abs", "Cos", "Elementwise", "Erf", "Exp", "GELU", "Gaussian", "Hermite",
    "Identity", "LeakyReLU", "Monomial", "Polynomial", "ReLU", "Rbf", "RectifiedMonomial",
    "SiLU", "Sigmoid", "Sign", "Sin", "Softplus", "Tanh",
]


# ---- hyperparameter validation ------------------------------------------------------

def _real(name: str, value) -> float:
    """A finite real number (int or float, not bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _positive(name: str, value) -> float:
    value = _real(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _degree(name: str, value, max_degree: int | None = None) -> int:
    """A non-negative int (numpy ints accepted), at most ``max_degree``."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be a non-negative int, got {type(value).__name__}")
    value = int(value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if max_degree is not None and value > max_degree:
        raise ValueError(f"{name} must be <= {max_degree}, got {value}")
    return value


# ---- the ReLU family (closed forms, kinked) ----------------------------------------

class ReLU(Activation):
    """φ(x) = max(x, 0). T = (s + (π − θ) cov)/(2π), Tdot = (π − θ)/(2π) (arc-cosine, n=1)."""

    homogeneous = True

    def fn(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _relu.relu_dual(var1, cov, var2, need_dot)


class ABReLU(Activation):
    """φ(x) = a·min(x, 0) + b·max(x, 0).

    T = (a − b)² s/(2π) + Tdot·cov, Tdot = (a² + b²)/2 − (a − b)² θ/(2π)
    (see :mod:`ntkit.dual.relu`).

    Args:
      a: slope for x < 0.
      b: slope for x > 0.
    """

    homogeneous = True

    def __init__(self, a: float, b: float):
        self.a = _real("a", a)
        self.b = _real("b", b)

    def fn(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, self.b * x, self.a * x)  # φ'(0) = a under autograd

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _relu.abrelu_dual(self.a, self.b, var1, cov, var2, need_dot,
                                 deriv_at_zero=self.a)


class LeakyReLU(Activation):
    """φ(x) = max(x, 0) + alpha·min(x, 0) (ABReLU(alpha, 1)).

    Args:
      alpha: slope for x < 0 (torch's ``negative_slope``).
    """

    homogeneous = True

    def __init__(self, alpha: float):
        self.alpha = _real("alpha", alpha)

    def fn(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.alpha)  # φ'(0) = alpha under autograd

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _relu.abrelu_dual(self.alpha, 1.0, var1, cov, var2, need_dot,
                                 deriv_at_zero=self.alpha)


class Abs(Activation):
    """φ(x) = |x| (ABReLU(−1, 1)): T = 2s/π + (1 − 2θ/π)·cov, Tdot = 1 − 2θ/π."""

    homogeneous = True

    def fn(self, x: Tensor) -> Tensor:
        return torch.abs(x)  # φ'(0) = 0 under autograd

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _relu.abrelu_dual(-1.0, 1.0, var1, cov, var2, need_dot, deriv_at_zero=0.0)


class Sign(Activation):
    """φ(x) = sign(x). T = 1 − 2θ/π (0 at zero variance), Tdot = 0.

    Tdot = 0 matches autograd of the finite network (torch.sign has zero gradient), as
    in neural-tangents: the NTK after Sign is 0.
    """

    def fn(self, x: Tensor) -> Tensor:
        return torch.sign(x)

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _relu.sign_dual(var1, cov, var2, need_dot)


class RectifiedMonomial(Activation):
    """φ(x) = max(x, 0)^degree: the arc-cosine kernel of that degree (Cho & Saul 2009).

    Any non-negative integer degree (computed by a division-free recursion, see
    :mod:`ntkit.dual.relu`): T_n = (2n−1) cov T_{n−1} + (n−1)² s² T_{n−2}, Tdot = n² T_{n−1}.
    On the diagonal, T = (2n−1)!!/2 · var^n. degree = 0 is the step [x > 0] (Tdot = 0).

    Args:
      degree: non-negative int (≤ 100).
    """

    def __init__(self, degree: int):
        self.degree = _degree("degree", degree, _poly.MAX_DEGREE)

    def fn(self, x: Tensor) -> Tensor:
        if self.degree == 0:
            return (x > 0).to(x.dtype)
        if self.degree == 1:
            return torch.relu(x)
        pos = x > 0
        # Inner where keeps pow's gradient finite at x ≤ 0 (no 0·inf).
        return torch.where(pos, torch.where(pos, x, torch.ones_like(x)) ** self.degree,
                           torch.zeros_like(x))

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _relu.rectified_monomial_dual(self.degree, var1, cov, var2, need_dot)


# ---- smooth closed forms ---------------------------------------------------------

class Identity(Activation):
    """φ(x) = x: T = cov, Tdot = 1 (the kernel passes through unchanged)."""

    preserves_gaussian = True

    def fn(self, x: Tensor) -> Tensor:
        return x

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        t = cov.expand(torch.broadcast_shapes(var1.shape, cov.shape, var2.shape))
        return t, (torch.ones_like(t) if need_dot else None)


class Erf(Activation):
    """φ(x) = a·erf(b x) + c. T = a² (2/π) arcsin(2b²cov/√((1+2b²var1)(1+2b²var2))) + c².

    Computed as an atan2 whose denominator is ≥ 1 (see :mod:`ntkit.dual.erf`).

    Args:
      a: output scale. b: input scale. c: output shift.
    """

    remasks = True

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0):
        self.a = _real("a", a)
        self.b = _real("b", b)
        self.c = _real("c", c)

    def fn(self, x: Tensor) -> Tensor:
        return self.a * torch.erf(self.b * x) + self.c

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _erf.erf_dual(self.a, self.b, self.c, var1, cov, var2, need_dot)


class GELU(Activation):
    """φ(x) = x Φ(x) (exact GELU, torch's ``approximate='none'``); closed form in
    :mod:`ntkit.dual.erf`."""

    def fn(self, x: Tensor) -> Tensor:
        return F.gelu(x)

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _erf.gelu_dual(var1, cov, var2, need_dot)


class Sin(Activation):
    """φ(x) = a·sin(b x + c). T = a²/2 (s1 − s2), Tdot = a²b²/2 (s1 + s2),
    s1 = e^{−b²(var1+var2−2cov)/2}, s2 = cos(2c) e^{−b²(var1+var2+2cov)/2}.

    Args:
      a: output scale. b: input scale. c: input phase shift.
    """

    remasks = True

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0):
        self.a = _real("a", a)
        self.b = _real("b", b)
        self.c = _real("c", c)

    def fn(self, x: Tensor) -> Tensor:
        return self.a * torch.sin(self.b * x + self.c)

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _trig.sin_dual(self.a, self.b, self.c, var1, cov, var2, need_dot)


class Cos(Activation):
    """φ(x) = a·cos(b x + c) = a·sin(b x + c + π/2) (see ``Sin``).

    Args:
      a: output scale. b: input scale. c: input phase shift.
    """

    remasks = True

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0):
        self.a = _real("a", a)
        self.b = _real("b", b)
        self.c = _real("c", c)

    def fn(self, x: Tensor) -> Tensor:
        return self.a * torch.cos(self.b * x + self.c)

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _trig.sin_dual(self.a, self.b, self.c + math.pi / 2, var1, cov, var2, need_dot)


class Rbf(Activation):
    """φ(x) = √2 sin(√(2γ) x + π/4), whose NNGP is the RBF kernel
    T = exp(−γ(var1 + var2 − 2cov)) (= exp(−γ‖x − x'‖²/d) after a Dense layer); Tdot = 2γT.

    Args:
      gamma: inverse squared length-scale, γ = 1/(2ℓ²); > 0.
    """

    remasks = True

    def __init__(self, gamma: float = 1.0):
        self.gamma = _positive("gamma", gamma)

    def fn(self, x: Tensor) -> Tensor:
        return math.sqrt(2) * torch.sin(math.sqrt(2 * self.gamma) * x + math.pi / 4)

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _trig.rbf_dual(self.gamma, var1, cov, var2, need_dot)


class Exp(Activation):
    """φ(x) = a·exp(b x). T = a² exp(b²(var1 + var2 + 2cov)/2), Tdot = b² T.

    Overflows to inf where b²(var1 + var2 + 2cov)/2 > ~709 (float64), as φ's moments do.

    Args:
      a: output scale. b: input scale.
    """

    remasks = True

    def __init__(self, a: float = 1.0, b: float = 1.0):
        self.a = _real("a", a)
        self.b = _real("b", b)

    def fn(self, x: Tensor) -> Tensor:
        return self.a * torch.exp(self.b * x)

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _exp.exp_dual(self.a, self.b, var1, cov, var2, need_dot)


class Gaussian(Activation):
    """φ(x) = a·exp(b x²). T = a²/√D, Tdot = 4a²b² cov/D^{3/2},
    D = (1 − 2b var1)(1 − 2b var2) − 4b²cov² (formed without cancellation; ≥ 1 for b ≤ 0).

    For b > 0 the moments exist only while 2b·Σ ≺ I; elsewhere T = inf.

    Args:
      a: output scale. b: exponent scale (usually < 0).
    """

    remasks = True

    def __init__(self, a: float = 1.0, b: float = -1.0):
        self.a = _real("a", a)
        self.b = _real("b", b)

    def fn(self, x: Tensor) -> Tensor:
        return self.a * torch.exp(self.b * x * x)

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _exp.gaussian_dual(self.a, self.b, var1, cov, var2, need_dot)


# ---- polynomials (exact, Mehler expansion) ----------------------------------------

class Polynomial(Activation):
    """φ(x) = Σ_i coef[i] x^i (numpy.polynomial order: lowest degree first).

    Exact for any variances: T = Σ_j h_j(var1) h_j(var2) cov^j (see
    :mod:`ntkit.dual.polynomial`).

    Args:
      coef: non-empty sequence of finite reals, at most 101 of them (degree ≤ 100).
    """

    def __init__(self, coef: Sequence[float]):
        if isinstance(coef, (str, bytes)) or not hasattr(coef, "__len__"):
            raise TypeError(f"coef must be a sequence of real numbers, got "
                            f"{type(coef).__name__}")
        if isinstance(coef, Tensor):
            coef = coef.tolist()
        coef = [c.item() if hasattr(c, "item") and not isinstance(c, (int, float)) else c
                for c in coef]
        if len(coef) == 0:
            raise ValueError("coef must be non-empty")
        if len(coef) > _poly.MAX_DEGREE + 1:
            raise ValueError(f"coef must have at most {_poly.MAX_DEGREE + 1} entries "
                             f"(degree <= {_poly.MAX_DEGREE}), got {len(coef)}")
        self.coef = tuple(_real(f"coef[{i}]", c) for i, c in enumerate(coef))
        self._table = _poly.polynomial_table(self.coef)

    def fn(self, x: Tensor) -> Tensor:
        out = torch.full_like(x, self.coef[-1])
        for a in reversed(self.coef[:-1]):
            out = out * x + a
        return out

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _poly.mehler_dual(self._table, 0.0, var1, cov, var2, need_dot)


class Monomial(Activation):
    """φ(x) = x^degree. T = Σ_m A(p,m)² (p−2m)! (var1 var2)^m cov^{p−2m}, exact.

    Args:
      degree: non-negative int (≤ 100).
    """

    def __init__(self, degree: int):
        self.degree = _degree("degree", degree, _poly.MAX_DEGREE)
        self._table = _poly.polynomial_table((0.0,) * self.degree + (1.0,))

    def fn(self, x: Tensor) -> Tensor:
        return x ** self.degree

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _poly.mehler_dual(self._table, 0.0, var1, cov, var2, need_dot)


class Hermite(Activation):
    """φ(x) = He_k(x)/√k!, the normalized probabilists' Hermite polynomial, k = degree.

    Exact for any input variances (neural-tangents assumes unit variance, where this
    reduces to T = cov^k, Tdot = k cov^{k−1}):
    T = Σ_i C(k, 2i) C(2i, i) 4^{−i} ((var1 − 1)(var2 − 1))^i cov^{k−2i}.

    Args:
      degree: non-negative int (≤ 100).
    """

    remasks = True

    def __init__(self, degree: int):
        self.degree = _degree("degree", degree, _poly.MAX_DEGREE)
        self._table = _poly.hermite_table(self.degree)

    def fn(self, x: Tensor) -> Tensor:
        # Orthonormal recurrence h_{k+1} = (x h_k − √k h_{k−1})/√(k+1): no large
        # coefficients, unlike the monomial expansion.
        prev, cur = torch.zeros_like(x), torch.ones_like(x)
        for k in range(self.degree):
            prev, cur = cur, (x * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)
        return cur

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool) -> Dual:
        return _poly.mehler_dual(self._table, 1.0, var1, cov, var2, need_dot)
