"""Three routes to one dual activation: closed form, quadrature of φ, and autodiff.

For every closed form, T and Tdot must agree with
  1. a quadrature that only uses the spec's ``fn`` (2-D Gauss–Hermite for smooth φ;
     polar quadrature split at the kinks for the positively homogeneous, kinked φ);
  2. Price's theorem ∂T/∂cov = Tdot, by autograd of the closed-form T and by a central
     finite difference in float64.
Errors are measured against the natural scale of each entry, √(T(v1,v1,v1)·T(v2,v2,v2))
(the Cauchy–Schwarz bound on |T|), and likewise for Tdot.
"""

from __future__ import annotations

import math

import pytest
import torch
from dual_reference import KINKED, SMOOTH, angular, points, quad2d

ALL = [(name, spec) for name, spec, _ in KINKED] + SMOOTH
DEGREE = {name: p for name, _, p in KINKED}


def _scales(spec, v1, v2):
    """Per-entry Cauchy–Schwarz scales for T and Tdot."""
    t1, d1 = spec.dual(v1, v1, v1, True)
    t2, d2 = spec.dual(v2, v2, v2, True)
    return (t1.abs() * t2.abs()).sqrt(), (d1.abs() * d2.abs()).sqrt()


@pytest.mark.parametrize("name,spec", SMOOTH, ids=[n for n, _ in SMOOTH])
def test_smooth_closed_form_matches_quadrature(name, spec):
    v1, c, v2 = points()
    t, td = spec.dual(v1, c, v2, True)
    tq, tdq = quad2d(spec.fn, v1, c, v2, deg=200)
    st, sd = _scales(spec, v1, v2)
    assert ((t - tq).abs() <= 1e-9 * st + 1e-15).all(), (t, tq)
    assert ((td - tdq).abs() <= 1e-9 * sd + 1e-15).all(), (td, tdq)


@pytest.mark.parametrize("name,spec,p", KINKED, ids=[n for n, _, _ in KINKED])
def test_kinked_closed_form_matches_split_quadrature(name, spec, p):
    v1, c, v2 = points()
    t, td = spec.dual(v1, c, v2, True)
    st, sd = _scales(spec, v1, v2)
    for i in range(len(v1)):
        tr, tdr = angular(spec.fn, p, v1[i].item(), c[i].item(), v2[i].item())
        assert abs(t[i].item() - tr) <= 1e-12 * st[i].item() + 1e-15, (i, t[i], tr)
        assert abs(td[i].item() - tdr) <= 1e-12 * sd[i].item() + 1e-15, (i, td[i], tdr)


@pytest.mark.parametrize("name,spec,p", KINKED, ids=[n for n, _, _ in KINKED])
def test_kinked_plain_quadrature_is_only_roughly_right(name, spec, p):
    # Documents why kinked activations need closed forms: unsplit 2-D Gauss–Hermite of a
    # kinked φ is only ~1e-3 accurate for T even at 200 nodes per dimension (and worse
    # for Tdot, a step). The bound below still catches a wrong closed form.
    v1, c, v2 = points()
    t, _ = spec.dual(v1, c, v2, False)
    tq, _ = quad2d(spec.fn, v1, c, v2, deg=200)
    st, _ = _scales(spec, v1, v2)
    err = ((t - tq).abs() / st).max().item()
    assert err < 0.05
    if p >= 1:
        assert err > 1e-12  # it really is the kink that limits the quadrature


@pytest.mark.parametrize("name,spec", ALL, ids=[n for n, _ in ALL])
def test_price_theorem_autograd(name, spec):
    v1, c, v2 = points(seed=1)
    cc = c.clone().requires_grad_(True)
    t, _ = spec.dual(v1, cc, v2, False)
    (grad,) = torch.autograd.grad(t.sum(), cc, allow_unused=True)
    grad = torch.zeros_like(c) if grad is None else grad
    _, td = spec.dual(v1, c, v2, True)
    _, sd = _scales(spec, v1, v2)
    if DEGREE.get(name) == 0:
        # Sign and step: autograd's φ' = 0 (Tdot = 0), but T's derivative is the
        # distributional one: ∂T/∂cov = E[φ'(u)φ'(v)] with φ' = jump · δ, i.e.
        # jump² · p(0, 0) = jump² / (2π √(var1 var2 − cov²)).
        jump = 2.0 if name == "Sign" else 1.0
        expected = jump**2 / (2 * math.pi * (v1 * v2 - c * c).sqrt())
        torch.testing.assert_close(grad, expected, rtol=1e-12, atol=0)
        assert (td == 0).all()
    else:
        assert ((grad - td).abs() <= 1e-12 * sd + 1e-15).all(), (grad, td)


@pytest.mark.parametrize("name,spec", ALL, ids=[n for n, _ in ALL])
def test_price_theorem_finite_difference(name, spec):
    v1, c, v2 = points(seed=2)
    h = 1e-5 * (v1 * v2).sqrt()
    tp, _ = spec.dual(v1, c + h, v2, False)
    tm, _ = spec.dual(v1, c - h, v2, False)
    fd = (tp - tm) / (2 * h)
    _, td = spec.dual(v1, c, v2, True)
    _, sd = _scales(spec, v1, v2)
    if DEGREE.get(name) == 0:
        jump = 2.0 if name == "Sign" else 1.0
        td = jump**2 / (2 * math.pi * (v1 * v2 - c * c).sqrt())
        sd = td.abs()
    # Error budget: O(h²) truncation plus O(eps·T/h) rounding, both < 1e-7 here.
    assert ((fd - td).abs() <= 1e-7 * sd + 1e-12).all(), (fd, td)
