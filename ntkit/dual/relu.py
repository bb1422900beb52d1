"""The arc-cosine family: positively homogeneous activations with a kink at 0.

All of these depend on Σ = [[var1, cov], [cov, var2]] through the angle θ between the
two inputs and the "sine" s = √(var1 var2) sin θ:

    s = √max(var1·var2 − cov², 0),    θ = atan2(s, cov) ∈ [0, π].

The angle is computed with atan2, never as arccos(cov / √(var1 var2)): the ratio can
exceed 1 by rounding (NaN in arccos) and arccos loses half the digits near ±1, exactly
where deep networks live (1 − ρ_ℓ ≈ 9π²/(2ℓ²) for deep ReLU nets).

Zero variance (var1·var2 = 0, so u ≡ 0 or v ≡ 0) is a point where θ is undefined. We
set θ = π there, which is the convention H(0) = 0 for the Heaviside step H: it makes
E[H(u)H(v)] = (π − θ)/(2π) exactly 0 when u ≡ 0, as for the finite network's
``x > 0`` step and torch's ReLU derivative at 0. Values that are continuous at zero
variance (T of ReLU-like activations, which tends to 0) are unaffected by the choice.

Closed forms (Cho & Saul 2009 for the rectified monomials; the ABReLU form as in
neural-tangents' ``ABRelu``):

- step H:          T = (π − θ)/(2π)
- ReLU:            T = (s + (π − θ)·cov)/(2π)
- ReLU^n:          T_n = (2n − 1)·cov·T_{n−1} + (n − 1)²·s²·T_{n−2}    (n ≥ 2)
                   (an integration by parts of T_n = n!/(2π) ∫₀^{π−θ}(√(v1v2)cos t + cov)^n dt;
                   it needs no division, so it is finite at s = 0 and at zero variance)
- a·min(x,0) + b·max(x,0):
                   Tdot = (a² + b²)/2 − (a − b)²·θ/(2π),   T = (a − b)²·s/(2π) + Tdot·cov
- sign:            T = 1 − 2θ/π  (0 at zero variance: sign(0) = 0), Tdot = 0.

Price's theorem, ∂T/∂cov = Tdot, links them: ∂T_n/∂cov = n² T_{n−1}.

Precision: near cov = ±√(var1 var2), var1·var2 − cov² suffers cancellation (absolute error
~eps·var1·var2), so θ ≈ s/cov carries an error ~√eps. That is the conditioning of the
problem itself (the angle is a square-root function of the correlation there, and the
inputs carry relative error eps), not of the formula: expect T to ~eps·√(var1 var2) and
Tdot to ~√eps near perfect correlation (about 3e-4 in float32, 1e-8 in float64).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import ntkit.dual.fused as fused
import ntkit.dual.native as native
from ntkit.dual.autodiff import ABReLURule, MonomialRule, SignRule, dual_with_grad
from ntkit.dual.gram import gram_det, inplace_ok

_TWO_PI = 2.0 * math.pi


def angle(var1: Tensor, cov: Tensor, var2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """θ = atan2(s, cov), s = √max(var1 var2 − cov², 0), and the mask var1·var2 > 0.

    var1·var2 − cov² is exactly 0 on the diagonal (var1 = var2 = cov: the same two
    products), so the diagonal has θ = 0 and Tdot exactly (a² + b²)/2 in any dtype;
    forms like √var1·√var2 − |cov| are off by ~eps there, which makes θ ~ √eps and
    compounds over layers (1e-3 in a depth-100 float32 NTK).

    Below float64, the squares would overflow for variances above ~1e19 (a deep float32
    ReLU net whose variances grow like 2^depth gets there at depth ~64), so the inputs
    are first scaled by a power of two 2^−e with 2^e ≥ max variance: exact in floating
    point (it keeps the diagonal exact), and overflow-free while the variances are finite.

    Args:
      var1, cov, var2: broadcastable tensors (e.g. (n1, 1), (n1, n2), (1, n2)).

    Returns:
      (theta, s, pos), of the broadcast shape; theta = π where ``pos`` is False
      (zero variance, see module docstring).
    """
    if torch.finfo(cov.dtype).max > 1e300 and moderate(var1, var2):
        # The hot loop of every arc-cosine kernel: gram_det works in place where it can.
        s = gram_det(var1, cov, var2).sqrt_()
    elif torch.finfo(cov.dtype).max > 1e300:
        # Variances beyond 2^±480 (inputs scaled by 1e-100 or 1e100): var1·var2 would
        # underflow to 0 or overflow to inf. Scale each side by an even power of two,
        # 4^−m1 and 4^−m2, and cov by 2^−(m1+m2): exact, so the diagonal stays exactly
        # var1·var2 − cov² = 0; s is scaled back by 2^(m1+m2).
        m1, m2 = _half_exponent(var1), _half_exponent(var2)
        s = gram_det(torch.ldexp(var1, -2 * m1), torch.ldexp(cov, -(m1 + m2)),
                     torch.ldexp(var2, -2 * m2)).sqrt()
        s = torch.ldexp(s, m1 + m2)
    else:
        vmax = torch.maximum(var1.detach().abs().amax(), var2.detach().abs().amax())
        kappa = torch.ldexp(torch.ones_like(vmax), -torch.frexp(vmax).exponent)
        s = gram_det(var1 * kappa, cov * kappa, var2 * kappa).sqrt() / kappa
    theta = torch.atan2(s, cov)
    if cov.device.type == "cpu" and not _is_compiling():
        if bool((var1 > 0).all()) and bool((var2 > 0).all()):
            # No zero variance (the usual case): skip the masking passes; the mask is
            # all-True.
            return theta, s, torch.ones((), dtype=torch.bool, device=cov.device)
        pos = (var1 > 0) & (var2 > 0)  # not var1·var2 > 0: it underflows
    else:
        # Branch-free, with the same values as the branch above: under torch.compile a
        # data-dependent ``if`` is a graph break (and every Dense layer's Kernel would
        # then guard a resumed frame: recompiles), and on a GPU ``bool(...)`` is a host
        # sync per layer and tile. The fused where costs less than either.
        all_pos = (var1 > 0).all() & (var2 > 0).all()
        pos = all_pos | ((var1 > 0) & (var2 > 0))
    theta = torch.where(pos, theta, torch.full_like(s, math.pi))
    return theta, s, pos


_LIMIT = 2.0**480  # var1·var2 and cov² stay normal floats for variances within 2^±480


def moderate(var1: Tensor, var2: Tensor) -> bool:
    """Whether every nonzero variance is within 2^±480 (the fast path is exact there)."""
    if _is_compiling() or var1.device.type != "cpu":
        return True  # no host sync; such variances need inputs scaled by ~1e±70
    if not (var1.requires_grad or var2.requires_grad):
        a = native.within(var1, 1.0 / _LIMIT, _LIMIT)
        b = None if a is None else native.within(var2, 1.0 / _LIMIT, _LIMIT)
        if b is not None:
            return a and b
    v = torch.cat([var1.detach().abs().reshape(-1), var2.detach().abs().reshape(-1)])
    v = v[v > 0]
    return not v.numel() or bool((v.amax() < _LIMIT) & (v.amin() > 1.0 / _LIMIT))


def _half_exponent(v: Tensor) -> Tensor:
    """m with v·4^−m in [1/4, 1) (0 where v is 0): an even power of two per entry."""
    e = torch.frexp(v.detach()).exponent
    return torch.div(e + 1, 2, rounding_mode="floor")


def _is_compiling() -> bool:
    """True while torch.compile (dynamo) traces the caller."""
    fn = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return bool(fn()) if fn is not None else False


def abrelu_dual(a: float, b: float, var1: Tensor, cov: Tensor, var2: Tensor,
                need_dot: bool, deriv_at_zero: float | None = None
                ) -> tuple[Tensor, Tensor | None]:
    """Dual of φ(x) = a·min(x, 0) + b·max(x, 0) (ReLU: a=0, b=1; |x|: a=−1, b=1).

    T = (a − b)² s/(2π) + Tdot·cov,  Tdot = (a² + b²)/2 − (a − b)² θ/(2π).
    On the diagonal this is (a² + b²)/2 · var; at zero variance T = 0.

    Args:
      deriv_at_zero: φ'(0) as the finite network's autograd sees it (e.g. a for
        ``where(x > 0, b x, a x)``, 0 for ``torch.abs``). When given, Tdot at zero
        variance is the exact E[φ'(u)φ'(v)] of that network: φ'(0)·E[φ'(v)], with
        E[φ'(v)] = (a + b)/2 for var2 > 0 and φ'(0) for var2 = 0 (and symmetrically).
        When None, the θ = π convention gives a·b there.

    Under autograd, the gradient is the closed form of `ntkit.dual.autodiff.ABReLURule`
    (finite at |ρ| = 1 and zero variance; see that module for the values there).
    """
    if not inplace_ok(var1, cov, var2):

        def value(v1, c, v2, nd):
            return abrelu_dual(a, b, v1, c, v2, nd, deriv_at_zero)

        return dual_with_grad(ABReLURule(a, b, value), var1, cov, var2, need_dot)
    if fused.wants(var1, cov, var2) and moderate(var1, var2):
        return fused.run(("abrelu", a, b, need_dot, deriv_at_zero),
                         lambda v1, c, v2: _abrelu(a, b, v1, c, v2, need_dot, deriv_at_zero),
                         var1, cov, var2)
    return _abrelu(a, b, var1, cov, var2, need_dot, deriv_at_zero)


def _abrelu(a, b, var1, cov, var2, need_dot, deriv_at_zero):
    theta, s, pos = angle(var1, cov, var2)
    k = (a - b) ** 2 / _TWO_PI
    dot = (a * a + b * b) / 2 - k * theta
    t = k * s + dot * cov
    if not need_dot:
        return t, None
    mean = (a + b) / 2
    if deriv_at_zero is not None and (deriv_at_zero * mean != a * b
                                      or deriv_at_zero**2 != a * b):
        m, d0 = cov.new_tensor(mean), cov.new_tensor(deriv_at_zero)  # cov's dtype, not float32
        d1 = torch.where(var1 > 0, m, d0)
        d2 = torch.where(var2 > 0, m, d0)
        dot = torch.where(pos, dot, d1 * d2)
    return t, dot


def relu_dual(var1: Tensor, cov: Tensor, var2: Tensor,
              need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """Dual of ReLU: T = (s + (π − θ) cov)/(2π), Tdot = (π − θ)/(2π).

    Under autograd: ∂T = (s/(4π var1), Tdot, s/(4π var2)), finite (0) at |ρ| = 1; Tdot's
    θ-derivative is set to 0 there (see `ntkit.dual.autodiff`).
    """
    if not inplace_ok(var1, cov, var2):

        return dual_with_grad(ABReLURule(0.0, 1.0, relu_dual), var1, cov, var2, need_dot)
    if fused.wants(var1, cov, var2) and moderate(var1, var2):
        return fused.run(("relu", need_dot), lambda v1, c, v2: _relu(v1, c, v2, need_dot),
                         var1, cov, var2)
    return _relu(var1, cov, var2, need_dot)


def _relu(var1, cov, var2, need_dot):
    theta, s, _ = angle(var1, cov, var2)
    rest = theta.neg_().add_(math.pi)  # theta is ours: reuse its buffer for π − θ
    t = s.addcmul_(rest, cov).mul_(1 / _TWO_PI)
    return t, (rest.mul_(1 / _TWO_PI) if need_dot else None)


def sign_dual(var1: Tensor, cov: Tensor, var2: Tensor,
              need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """Dual of sign(x): T = 1 − 2θ/π, 0 at zero variance (sign(0) = 0); Tdot = 0.

    Tdot = 0 matches autograd of a finite network (torch.sign has zero derivative), not
    the distributional derivative 2δ(x).
    """
    if not inplace_ok(var1, cov, var2):

        return dual_with_grad(SignRule(sign_dual), var1, cov, var2, need_dot)
    if fused.wants(var1, cov, var2) and moderate(var1, var2):
        return fused.run(("sign", need_dot), lambda v1, c, v2: _sign(v1, c, v2, need_dot),
                         var1, cov, var2)
    return _sign(var1, cov, var2, need_dot)


def _sign(var1, cov, var2, need_dot):
    theta, _, pos = angle(var1, cov, var2)
    t = torch.where(pos, 1 - theta * (2 / math.pi), torch.zeros_like(theta))
    return t, (torch.zeros_like(t) if need_dot else None)


def rectified_monomial_duals(degree: int, var1: Tensor, cov: Tensor,
                             var2: Tensor) -> tuple[Tensor, Tensor | None]:
    """(T_n, T_{n−1}) for φ_n(x) = max(x, 0)^n (n = degree; T_{−1} is None for n = 0).

    φ_0 is the step H(x) = [x > 0]. Uses the division-free recursion of the module
    docstring, started at T_0 = (π − θ)/(2π) and T_1 = (s + (π − θ) cov)/(2π).
    """
    theta, s, _ = angle(var1, cov, var2)
    rest = math.pi - theta
    t0 = rest / _TWO_PI
    if degree == 0:
        return t0, None
    t1 = (s + rest * cov) / _TWO_PI
    det = s * s
    prev, cur = t0, t1
    for n in range(2, degree + 1):
        prev, cur = cur, (2 * n - 1) * cov * cur + (n - 1) ** 2 * det * prev
    return cur, prev


def rectified_monomial_dual(degree: int, var1: Tensor, cov: Tensor, var2: Tensor,
                            need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """Dual of max(x, 0)^degree (arc-cosine kernel of that degree, times 1/(2π)·…).

    T = T_n, Tdot = n² T_{n−1} (Tdot = 0 for the step, n = 0, as autograd gives).
    On the diagonal T_n = (2n − 1)!!/2 · var^n.
    """
    if not inplace_ok(var1, cov, var2):

        def value(v1, c, v2, nd):
            return rectified_monomial_dual(degree, v1, c, v2, nd)

        return dual_with_grad(MonomialRule(degree, value, rectified_monomial_dual), var1, cov, var2,
                              need_dot)
    if fused.wants(var1, cov, var2) and moderate(var1, var2):
        return fused.run(("relu^n", degree, need_dot),
                         lambda v1, c, v2: _rectified_monomial(degree, v1, c, v2, need_dot),
                         var1, cov, var2)
    return _rectified_monomial(degree, var1, cov, var2, need_dot)


def _rectified_monomial(degree, var1, cov, var2, need_dot):
    t, t_prev = rectified_monomial_duals(degree, var1, cov, var2)
    if not need_dot:
        return t, None
    if degree == 0:
        return t, torch.zeros_like(t)
    return t, degree * degree * t_prev
