"""Gradients of the dual activations (ntkit.dual.autodiff).

Truth: finite differences of the (unchanged) no-grad dual, closed forms (Price's theorem
∂T/∂cov = Tdot; ReLU's ∂T/∂var1 = s/(4π var1)), and torch's gradcheck/gradgradcheck at
generic covariances. At |ρ| = 1, the values the module docstring promises.
"""

from __future__ import annotations

import math

import pytest
import torch

from ntkit import dual
from ntkit.layers import activations as act

D = torch.float64


def _sigma(n: int = 5, seed: int = 0, dtype=D, scale: float = 1.0):
    """Generic covariances: var1 (n, 1), cov (n, n), var2 (1, n), |ρ| < 1."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 3, generator=g, dtype=D) * scale
    b = torch.randn(n, 3, generator=g, dtype=D)
    var1 = (a * a).sum(1, keepdim=True) / 3
    var2 = ((b * b).sum(1) / 3)[None]
    cov = a @ b.T / 3
    return [t.to(dtype).requires_grad_(True) for t in (var1, cov, var2)]


SPECS = {
    "relu": act.ReLU(),
    "leaky": act.LeakyReLU(0.2),
    "abs": act.Abs(),
    "relu2": act.RectifiedMonomial(2),
    "step": act.RectifiedMonomial(0),
    "sign": act.Sign(),
    "erf": act.Erf(),
    "gelu": act.GELU(),
    "tanh": act.Tanh(deg=48),  # ∂T by the rule: ~1e-7 at variances ≤ 2.5, measured
}


@pytest.mark.parametrize("name", list(SPECS))
def test_gradcheck_generic(name):
    spec = SPECS[name]
    need_dot = name not in ("step", "sign")  # their Tdot is 0 (autograd of a step)

    def f(v1, c, v2):
        t, dot = spec.dual(v1, c, v2, need_dot=need_dot)
        return (t, dot) if need_dot else t

    # Quadrature: 2 examples at variances ≤ 0.6 (third derivatives by nested autograd of
    # φ on deg² nodes are the cost; the rule is accurate to ~1e-12 there).
    args = _sigma(2, scale=0.5) if name == "tanh" else _sigma(3)
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


@pytest.mark.parametrize("name", list(SPECS))
def test_forward_unchanged_under_autograd(name):
    # Duals with a custom backward run their no-grad code in forward: bitwise equal.
    # erf and GELU keep plain autograd (their formulas have no singular intermediates)
    # through their out-of-place branch, which rounds differently from the in-place one.
    spec = SPECS[name]
    v1, c, v2 = _sigma(6, seed=1)
    t, dot = spec.dual(v1, c, v2, need_dot=True)
    with torch.no_grad():
        t0, dot0 = spec.dual(v1, c, v2, need_dot=True)
    if name in ("erf", "gelu"):
        torch.testing.assert_close(t.detach(), t0, rtol=4e-16, atol=0)
        torch.testing.assert_close(dot.detach(), dot0, rtol=4e-16, atol=0)
    else:
        assert torch.equal(t.detach(), t0)
        assert torch.equal(dot.detach(), dot0)


@pytest.mark.parametrize("name", ["relu", "leaky", "abs", "relu2", "erf", "gelu", "tanh"])
def test_price_theorem_by_autograd(name):
    # ∂T/∂cov = Tdot: the backward's closed form against the forward's Tdot.
    spec = SPECS[name]
    v1, c, v2 = _sigma(5, seed=2)
    t, dot = spec.dual(v1, c, v2, need_dot=True)
    (gc,) = torch.autograd.grad(t.sum(), c)
    tol = 1e-6 if name == "tanh" else 1e-13  # quadrature: its rule's accuracy at deg 48
    torch.testing.assert_close(gc, dot.detach(), rtol=tol, atol=tol)


def _diag_args(v: float, rho: float, dtype=D):
    """var1 = var2 = v, cov = ρ v, bitwise exact at ρ = ±1."""
    var = torch.tensor([[v]], dtype=dtype)
    cov = var * rho
    return var.clone().requires_grad_(True), cov.requires_grad_(True), \
        var.clone().requires_grad_(True)


@pytest.mark.parametrize("rho", [1.0, -1.0])
def test_relu_gradient_at_perfect_correlation(rho):
    # T = (s + (π − θ) cov)/(2π): ∂T/∂var = s/(4π var) = 0, ∂T/∂cov = (π − θ)/(2π).
    v1, c, v2 = _diag_args(1.7, rho)
    t, dot = dual.relu_dual(v1, c, v2, need_dot=True)
    g1, gc, g2 = torch.autograd.grad(t.sum(), (v1, c, v2), retain_graph=True)
    assert g1.item() == 0.0 and g2.item() == 0.0
    assert gc.item() == pytest.approx(0.5 if rho > 0 else 0.0, abs=1e-15)
    # Tdot's θ-derivative: the subgradient 0 (module docstring of ntkit.dual.autodiff).
    gd = torch.autograd.grad(dot.sum(), (v1, c, v2))
    assert all(g.item() == 0.0 for g in gd)


def test_relu_variance_gradient_one_sided_limit():
    # Approaching ρ = 1 from inside the cone, the closed form s/(4π var1) → 0; the
    # finite differences of T (no-grad dual) in var1 at ρ = 1 − 1e-6 agree with it.
    v = 1.3
    for rho in (1 - 1e-4, 1 - 1e-6):
        v1, c, v2 = _diag_args(v, rho)
        t, _ = dual.relu_dual(v1, c, v2, need_dot=False)
        (g1,) = torch.autograd.grad(t.sum(), v1)
        s = v * math.sqrt(1 - rho * rho)
        assert g1.item() == pytest.approx(s / (4 * math.pi * v), rel=1e-10)
        # A step well inside the cone (det changes by 1e-3 of itself): truncation ~1e-6,
        # rounding ~eps·T/h ≤ 1e-7 relative.
        h = 1e-3 * s * s / v
        with torch.no_grad():
            fp = dual.relu_dual(v1 + h, c, v2, False)[0]
            fm = dual.relu_dual(v1 - h, c, v2, False)[0]
        fd = ((fp - fm) / (2 * h)).item()
        assert fd == pytest.approx(g1.item(), rel=1e-3, abs=1e-12)


@pytest.mark.parametrize("name", ["tanh", "erf", "gelu"])
@pytest.mark.parametrize("rho", [1.0, -1.0])
def test_smooth_gradient_at_perfect_correlation(name, rho):
    # T is smooth in Σ for smooth φ: the gradient at ρ = ±1 is the one-sided limit.
    # Compare with the gradient just inside the cone (ρ ∓ 1e-7): a C¹ function moves by
    # O(1e-7) there.
    spec = SPECS[name]
    v1, c, v2 = _diag_args(0.9, rho)
    t, dot = spec.dual(v1, c, v2, need_dot=True)
    grads = torch.autograd.grad(t.sum() + dot.sum(), (v1, c, v2))
    assert all(torch.isfinite(g).all() for g in grads)
    w1, d, w2 = _diag_args(0.9, rho * (1 - 1e-7))
    t, dot = spec.dual(w1, d, w2, need_dot=True)
    near = torch.autograd.grad(t.sum() + dot.sum(), (w1, d, w2))
    for g, h in zip(grads, near, strict=True):
        assert g.item() == pytest.approx(h.item(), rel=1e-5, abs=1e-6)


def test_quadrature_diagonal_call_gradient():
    # The diagonal call T(v, v, v) (an example's own variance): d/dv by autograd against
    # a central difference of the no-grad dual. 128 nodes: φ'' (in ∂T/∂var) needs more
    # nodes than φ for the same accuracy (measured 3e-6 relative at 48 nodes, v = 1.4).
    spec = act.Tanh(deg=128)
    v = torch.tensor([0.7, 1.4], dtype=D, requires_grad=True)
    t, _ = spec.dual(v, v, v, need_dot=False)
    (g,) = torch.autograd.grad(t.sum(), v)
    h = 1e-6
    with torch.no_grad():
        vp, vm = v + h, v - h
        fd = (spec.dual(vp, vp, vp, False)[0] - spec.dual(vm, vm, vm, False)[0]) / (2 * h)
    torch.testing.assert_close(g, fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("rho", [1.0, -1.0])
def test_float32_finite_at_perfect_correlation(name, rho):
    spec = SPECS[name]
    v1, c, v2 = _diag_args(2.5, rho, dtype=torch.float32)
    need_dot = name not in ("step", "sign")
    t, dot = spec.dual(v1, c, v2, need_dot=need_dot)
    out = t.sum() + (dot.sum() if need_dot else 0)
    grads = torch.autograd.grad(out, (v1, c, v2))
    assert torch.isfinite(t).all()
    assert all(torch.isfinite(g).all() for g in grads)


def test_zero_variance_gradient_is_finite():
    var1 = torch.tensor([[0.0]], dtype=D, requires_grad=True)
    cov = torch.tensor([[0.0]], dtype=D, requires_grad=True)
    var2 = torch.tensor([[1.0]], dtype=D, requires_grad=True)
    for spec in (SPECS["relu"], SPECS["abs"], SPECS["relu2"], SPECS["tanh"]):
        t, dot = spec.dual(var1, cov, var2, need_dot=True)
        grads = torch.autograd.grad(t.sum() + dot.sum(), (var1, cov, var2))
        assert all(torch.isfinite(g).all() for g in grads)
