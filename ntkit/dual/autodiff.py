"""Gradients of dual activations that stay finite where the formulas' intermediates blow up.

A dual T(var1, cov, var2) = E[φ(u)φ(v)] is evaluated from intermediates that are singular
on the boundary of the PSD cone (perfect correlation ρ = ±1, e.g. duplicate inputs),
although T itself is often smooth there:

- arc-cosine duals go through s = √(var1 var2 − cov²) and θ = atan2(s, cov), whose
  derivatives ~1/s are infinite at s = 0 while, for ReLU, ∂T/∂var1 = s/(4π var1) → 0;
- quadrature duals go through the Cholesky entry l22 = √(var2 − cov²/var1), whose
  derivative is infinite at l22 = 0 while T is smooth (analytic) in Σ there.

Autograd through those intermediates gives NaN (0·∞) at ρ = ±1 and large rounding errors
near it. Here each dual gets an ``autograd.Function`` whose forward is the unchanged dual
(so values are bitwise those of the no-grad path) and whose backward uses closed forms
that have no such intermediates:

- Price's theorem: ∂T/∂cov = E[φ'(u)φ'(v)] = Tdot, and ∂T/∂var1 = ½E[φ''(u)φ(v)];
- for positively homogeneous φ of degree n (ReLU^n): n·T = 2 var1 ∂T/∂var1 + cov ∂T/∂cov
  (scale u by α and differentiate at α = 1), so ∂T/∂var1 = (n T − cov ∂T/∂cov)/(2 var1);
  for the arc-cosine family (a·min(x,0) + b·max(x,0)), this is k·s/(2 var1), k = (a−b)²/2π.

This module holds the generic machinery and the arc-cosine family's rules; it imports
no other dual module (the rules get the duals they need as arguments), and the
quadrature rule (`Derivatives`, `gauss_expect`) lives in `ntkit.dual.quadrature`.

Backward formulas are written with differentiable torch ops (and call the same Functions),
so second derivatives (``gradgradcheck``) work at generic points.

What the gradient is at the singular points (documented contract):

- T of ReLU-like φ (ABReLU, LeakyReLU, Abs, ReLU^n with n ≥ 1), and every smooth φ (by
  quadrature): T is differentiable at ρ = ±1 and the gradient returned is its exact value
  there (the one-sided limit, which is the derivative).
- Tdot of the arc-cosine family, T of the step and sign (all functions of θ alone): near
  ρ = 1, θ ≈ √(2(1 − ρ)), so they have a |·| kink in the inputs (for x' = x + εh,
  θ ≈ ε|h⊥|/|x|, with h⊥ the part of h orthogonal to x). The θ-part of the gradient is
  set to 0 at s = 0: the minimum-norm element of the Clarke subdifferential (the kink is
  symmetric, so both one-sided derivatives along ±h⊥ equal −|h⊥|/|x|·∂/∂θ, and the
  symmetric difference quotient is 0). Along directions that keep ρ = ±1 (scaling an
  input, or moving x1 = x2 together) the function is differentiable and the returned
  gradient is exact.
- "At ρ = ±1" means to rounding: see `theta_grads`.
- Zero variance (an all-zero input with no bias): ∂/∂var1 of √var1-type behavior is
  infinite; the gradient there is set to 0 (and θ-derivatives as above).
- Second derivatives at ρ = ±1 are genuinely infinite for ReLU (T ∝ (1 − ρ)^{3/2} term);
  they are not regularized: use second derivatives at generic points only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

_TWO_PI = 2.0 * math.pi


def reduce_grad(g: Tensor | None, like: Tensor) -> Tensor | None:
    """Sum a broadcast-shaped gradient down to the shape of the input it belongs to."""
    if g is None:
        return None
    if g.shape != like.shape:
        g = g.sum_to_size(like.shape)
    return g


def _safe_div(num: Tensor, den: Tensor, mask: Tensor) -> Tensor:
    """num/den where mask, 0 elsewhere; differentiable (no 0/0 in either branch)."""
    safe = torch.where(mask, den, torch.ones_like(den))
    return torch.where(mask, num / safe, torch.zeros_like(num / safe))


def _sine(var1: Tensor, cov: Tensor, var2: Tensor) -> tuple[Tensor, Tensor]:
    """(s, s > 0) with s = √max(var1 var2 − cov², 0), with a zero (not NaN) gradient at 0."""
    det = (var1 * var2 - cov * cov).clamp_min(0)
    live = det > 0
    s = torch.where(live, torch.where(live, det, torch.ones_like(det)).sqrt(),
                    torch.zeros_like(det))
    return s, live


def _theta(var1: Tensor, cov: Tensor, var2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(θ, s, live): θ = atan2(s, cov), π at zero variance (as `ntkit.dual.relu.angle`)."""
    s, live = _sine(var1, cov, var2)
    pos = (var1 > 0) & (var2 > 0)
    c_safe = torch.where(pos, cov, torch.ones_like(cov))
    theta = torch.where(pos, torch.atan2(s, c_safe), torch.full_like(s, math.pi))
    return theta, s, live


#: var1·var2 − cov² below this many ulps of var1·var2 is rounding, not an angle: the
#: determinant of a duplicate pair computed by two routes (a matmul for cov, a sum of
#: squares for the variances) comes out ~eps·var1·var2, not 0.
ROUNDING_ULPS = 16


def theta_grads(var1: Tensor, cov: Tensor, var2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(∂θ/∂var1, ∂θ/∂cov, ∂θ/∂var2) = (cov/(2 s var1), −1/s, cov/(2 s var2)), 0 at s = 0.

    0 at s = 0 is the subgradient convention of the module docstring; it is used wherever
    s² = var1 var2 − cov² is within `ROUNDING_ULPS` ulps of var1·var2 (|ρ| = 1 to
    rounding, θ ≲ 4√eps: ~6e-8 in float64, ~1.4e-3 in float32), where 1/s would be an
    artefact of rounding.
    """
    s, live = _sine(var1, cov, var2)
    eps = torch.finfo(s.dtype).eps
    live = live & (s * s > ROUNDING_ULPS * eps * (var1 * var2).abs())
    inv_s = _safe_div(torch.ones_like(s), s, live)
    d1 = _safe_div(cov * inv_s, 2 * var1, live)
    d2 = _safe_div(cov * inv_s, 2 * var2, live)
    return d1, -inv_s, d2


class _DualFunction(torch.autograd.Function):
    """T (and Tdot) of a dual with a rule-supplied backward (see module docstring)."""

    @staticmethod
    def forward(ctx, rule, need_dot, var1, cov, var2):
        t, dot = rule.value(var1, cov, var2, need_dot)
        ctx.rule, ctx.need_dot = rule, need_dot
        ctx.save_for_backward(var1, cov, var2)
        # Fresh outputs (never an input returned as is: autograd would alias it).
        t = t.clone() if t is var1 or t is cov or t is var2 else t
        return (t, dot) if need_dot else t

    @staticmethod
    def backward(ctx, g_t, g_dot=None):
        var1, cov, var2 = ctx.saved_tensors
        g1, gc, g2 = ctx.rule.grads(var1, cov, var2, g_t, g_dot if ctx.need_dot else None)
        return None, None, reduce_grad(g1, var1), reduce_grad(gc, cov), reduce_grad(g2, var2)


def dual_with_grad(rule, var1: Tensor, cov: Tensor, var2: Tensor,
                   need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """Apply ``rule`` (an object with ``value`` and ``grads``) through `_DualFunction`."""
    out = _DualFunction.apply(rule, need_dot, var1, cov, var2)
    return (out[0], out[1]) if need_dot else (out, None)


def _acc(total: Tensor | None, term: Tensor) -> Tensor:
    return term if total is None else total + term


class ABReLURule:
    """φ = a·min(x,0) + b·max(x,0): T = k s + dot·cov, dot = (a² + b²)/2 − kθ.

    ∂T = (k s/(2 var1), dot, k s/(2 var2)); ∂dot = −k ∂θ (subgradient 0 at s = 0).
    """

    def __init__(self, a: float, b: float, value: Callable):
        self.a, self.b, self.value = a, b, value

    def grads(self, var1, cov, var2, g_t, g_dot):
        k = (self.a - self.b) ** 2 / _TWO_PI
        m2 = (self.a**2 + self.b**2) / 2
        theta, s, _ = _theta(var1, cov, var2)
        gc = g_t * (m2 - k * theta)
        g1 = g_t * _safe_div(k * s, 2 * var1, var1 > 0)
        g2 = g_t * _safe_div(k * s, 2 * var2, var2 > 0)
        if g_dot is not None and k:
            d1, dc, d2 = theta_grads(var1, cov, var2)
            g1, gc, g2 = g1 - k * g_dot * d1, gc - k * g_dot * dc, g2 - k * g_dot * d2
        return g1, gc, g2


def monomial_grads(degree: int, var1: Tensor, cov: Tensor, var2: Tensor,
                   dual: Callable) -> tuple[Tensor, Tensor, Tensor]:
    """(∂T_n/∂var1, ∂T_n/∂cov, ∂T_n/∂var2) for T_n the dual of max(x, 0)^n.

    n ≥ 1: ∂/∂cov = n² T_{n−1} (Price), ∂/∂var1 = (n T_n − cov n² T_{n−1})/(2 var1)
    (homogeneity). n = 0 (the step, T_0 = (π − θ)/(2π)): −∂θ/(2π). ``dual(n, var1, cov,
    var2, need_dot)`` is the no-grad dual of degree n (`ntkit.dual.relu`).
    """
    if degree == 0:
        d1, dc, d2 = theta_grads(var1, cov, var2)
        return -d1 / _TWO_PI, -dc / _TWO_PI, -d2 / _TWO_PI
    t, dot = dual(degree, var1, cov, var2, need_dot=True)
    rest = degree * t - cov * dot
    return (_safe_div(rest, 2 * var1, var1 > 0), dot, _safe_div(rest, 2 * var2, var2 > 0))


class MonomialRule:
    """φ = max(x, 0)^n: T = T_n, Tdot = n² T_{n−1} (see `monomial_grads`)."""

    def __init__(self, degree: int, value: Callable, dual: Callable):
        self.degree, self.value, self.dual = degree, value, dual

    def grads(self, var1, cov, var2, g_t, g_dot):
        n = self.degree
        d1, dc, d2 = monomial_grads(n, var1, cov, var2, self.dual)
        g1, gc, g2 = g_t * d1, g_t * dc, g_t * d2
        if g_dot is not None and n >= 1:
            e1, ec, e2 = monomial_grads(n - 1, var1, cov, var2, self.dual)
            g1, gc, g2 = g1 + n * n * g_dot * e1, gc + n * n * g_dot * ec, g2 + n * n * g_dot * e2
        return g1, gc, g2


class SignRule:
    """φ = sign: T = 1 − 2θ/π (0 at zero variance), Tdot = 0."""

    def __init__(self, value: Callable):
        self.value = value

    def grads(self, var1, cov, var2, g_t, g_dot):
        d1, dc, d2 = theta_grads(var1, cov, var2)
        c = -2 / math.pi
        return g_t * c * d1, g_t * c * dc, g_t * c * d2
