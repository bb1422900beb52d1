"""Quadrature rules and the `Elementwise` dual: nodes, accuracy, chunking, degeneracies.

Measured (relative to max |T|, variances in [0.5, 1.5], |ρ| ≤ 1, default 64-node trapezoid
rule, against a 400-node Gauss–Hermite reference): tanh T ≤ 1e-12, Tdot ≤ 6e-11; sigmoid,
softplus, SiLU ≤ 3e-14 (truncation of the tails at ±8). Gauss–Hermite at 64 nodes gives
only ~2e-8 for tanh.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ntkit.dual.quadrature import gauss_hermite, quadrature_dual, trapezoid_rule
from ntkit.layers import activations as A

F64 = torch.float64


def _double_factorial(k: int) -> int:
    return math.prod(range(k, 0, -2))


@pytest.mark.parametrize("deg", [1, 2, 7, 64, 200])
def test_gauss_hermite_integrates_polynomials_exactly(deg):
    x, w = gauss_hermite(deg)
    assert x.dtype == F64 and w.sum().item() == pytest.approx(1.0, abs=1e-15)
    for k in range(0, min(2 * deg, 60)):  # E[z^k] exact for k ≤ 2·deg − 1
        exact = 0.0 if k % 2 else float(_double_factorial(k - 1))
        got = float((w * x**k).sum())
        scale = float((w * x.abs() ** k).sum())  # rounding of the sum is relative to this
        assert abs(got - exact) <= 1e-13 * scale, k


def test_gauss_hermite_matches_numpy_where_numpy_works():
    x, w = gauss_hermite(60)
    xn, wn = np.polynomial.hermite_e.hermegauss(60)
    np.testing.assert_allclose(x.numpy(), xn, rtol=0, atol=1e-13)
    np.testing.assert_allclose(w.numpy(), wn / wn.sum(), rtol=1e-11, atol=0)


@pytest.mark.parametrize("deg", [301, 500, 1000])
def test_gauss_hermite_high_degree_is_finite(deg):
    # numpy's hermegauss returns NaN weights past ~300 nodes; Golub–Welsch does not.
    x, w = gauss_hermite(deg)
    assert x.isfinite().all() and w.isfinite().all() and (w >= 0).all()
    assert (x[1:] > x[:-1]).all()  # distinct, sorted
    assert float((w * x**2).sum()) == pytest.approx(1.0, rel=1e-13)
    assert float((w * x**4).sum()) == pytest.approx(3.0, rel=1e-13)


def test_trapezoid_rule_moments():
    x, w = trapezoid_rule(64)
    # Errors come from cutting the tails at ±8: E[z^k; |z| > 8] ≈ 2·8^{k−1}·φ(8).
    for k, exact, tol in [(0, 1.0, 1e-15), (2, 1.0, 1e-13), (4, 3.0, 1e-12), (6, 15.0, 1e-10)]:
        assert float((w * x**k).sum()) == pytest.approx(exact, rel=tol)
    # Exactly symmetric nodes and weights: odd moments vanish up to summation rounding.
    assert torch.equal(x, -x.flip(0)) and torch.equal(w, w.flip(0))
    assert abs(float((w * x**3).sum())) < 1e-16


def test_bad_degree_and_rule():
    with pytest.raises(ValueError, match="deg"):
        gauss_hermite(0)
    with pytest.raises(TypeError, match="deg"):
        gauss_hermite(3.0)
    with pytest.raises(ValueError, match="rule"):
        quadrature_dual(torch.tanh, torch.ones(1), torch.ones(1), torch.ones(1), False,
                        rule="simpson")


def _grid(seed=0, n=8, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    v1 = (torch.rand(n, 1, generator=g, dtype=F64) + 0.5) * scale
    v2 = (torch.rand(1, n, generator=g, dtype=F64) + 0.5) * scale
    rho = 2 * torch.rand(n, n, generator=g, dtype=F64) - 1
    rho[0, 0], rho[1, 1], rho[2, 2] = 1.0, -1.0, 1 - 1e-9
    return v1, rho * (v1 * v2).sqrt(), v2


@pytest.mark.parametrize("spec,tol_t,tol_d", [
    (A.Elementwise(torch.tanh), 1e-11, 2e-10),
    (A.Tanh(), 1e-11, 2e-10),
    (A.Sigmoid(), 1e-13, 1e-13),
    (A.Softplus(), 1e-13, 1e-13),
    (A.SiLU(), 1e-13, 1e-13),
], ids=["Elementwise(tanh)", "Tanh", "Sigmoid", "Softplus", "SiLU"])
def test_default_degree_accuracy(spec, tol_t, tol_d):
    v1, c, v2 = _grid()
    t, td = spec.dual(v1, c, v2, True)
    # Reference: 400-node Gauss–Hermite of the same functions (a different rule).
    tr, tdr = quadrature_dual(spec.fn, v1, c, v2, True, deg=400, rule="hermite")
    assert ((t - tr).abs().max() / tr.abs().max()).item() < tol_t
    assert ((td - tdr).abs().max() / tdr.abs().max()).item() < tol_d


def test_hermite_rule_is_worse_for_tanh_at_equal_cost():
    # Why the default rule is the trapezoid: tanh's poles at ±iπ/2.
    v1, c, v2 = _grid()
    tr, _ = quadrature_dual(torch.tanh, v1, c, v2, False, deg=400, rule="hermite")
    tt, _ = quadrature_dual(torch.tanh, v1, c, v2, False, deg=64, rule="trapezoid")
    th, _ = quadrature_dual(torch.tanh, v1, c, v2, False, deg=64, rule="hermite")
    assert (th - tr).abs().max() > 100 * (tt - tr).abs().max()


def test_larger_variance_needs_more_nodes():
    v1, c, v2 = _grid(scale=3.0)
    tr, _ = quadrature_dual(torch.tanh, v1, c, v2, False, deg=400, rule="hermite")
    t128, _ = A.Tanh(deg=128).dual(v1, c, v2, False)
    assert ((t128 - tr).abs().max() / tr.abs().max()).item() < 1e-11


def test_chunking_does_not_change_the_result():
    v1, c, v2 = _grid(n=13)
    ref = A.Tanh(max_elements=1 << 30).dual(v1, c, v2, True)
    for max_elements in (1, 3 * 64 * 64 + 7, 50 * 64 * 64):
        got = A.Tanh(max_elements=max_elements).dual(v1, c, v2, True)
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_autograd_derivative_matches_analytic_derivative():
    v1, c, v2 = _grid()
    a = A.Elementwise(torch.tanh).dual(v1, c, v2, True)
    b = A.Elementwise(torch.tanh, lambda x: 1 - torch.tanh(x) ** 2).dual(v1, c, v2, True)
    torch.testing.assert_close(a[1], b[1], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("fn,closed", [
    (torch.erf, A.Erf()),
    (F.gelu, A.GELU()),
    (torch.sin, A.Sin()),
], ids=["erf", "gelu", "sin"])
def test_quadrature_matches_closed_forms_including_degenerate_entries(fn, closed):
    v1, c, v2 = _grid()
    v1 = v1.clone()
    v1[3, 0] = 0.0  # a zero-variance row
    c = c.clone()
    c[3] = 0.0
    t, td = A.Elementwise(fn).dual(v1, c, v2, True)
    tc, tdc = closed.dual(v1, c, v2, True)
    assert t.isfinite().all() and td.isfinite().all()
    torch.testing.assert_close(t, tc, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(td, tdc, rtol=1e-12, atol=1e-13)


def test_hermite_rule_is_exact_for_polynomials():
    v1, c, v2 = _grid()
    t, td = A.Elementwise(lambda x: x**3 - 2 * x, deg=4, rule="hermite").dual(v1, c, v2, True)
    tc, tdc = A.Polynomial([0, -2, 0, 1]).dual(v1, c, v2, True)
    torch.testing.assert_close(t, tc, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(td, tdc, rtol=1e-13, atol=1e-13)


def test_diagonal_call_uses_1d_rule_consistently():
    v = torch.tensor([0.0, 0.3, 1.0, 2.5], dtype=F64)
    spec = A.Tanh()
    t_diag, td_diag = spec.dual(v, v, v, True)  # one tensor: the 1-D path
    t_2d, td_2d = spec.dual(v.clone(), v.clone(), v.clone(), True)  # the 2-D path
    torch.testing.assert_close(t_diag, t_2d, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(td_diag, td_2d, rtol=1e-13, atol=1e-15)
    # tanh(0)² = 0 and tanh'(0)² = 1, to the rounding of the weights' sum.
    assert t_diag[0] == 0.0 and abs(td_diag[0] - 1.0) < 1e-15


def test_price_theorem_through_quadrature():
    v1, c, v2 = _grid()
    cc = c.clone().requires_grad_(True)
    t, _ = A.SiLU().dual(v1, cc, v2, False)
    (g,) = torch.autograd.grad(t.sum(), cc)
    _, td = A.SiLU().dual(v1, c, v2, True)
    inner = (c.abs() < 0.999 * (v1 * v2).sqrt())  # the Cholesky map is not smooth at |ρ| = 1
    torch.testing.assert_close(g[inner], td[inner], rtol=1e-10, atol=1e-12)


def test_float32_inputs():
    v1, c, v2 = _grid()
    t64, td64 = A.Tanh().dual(v1, c, v2, True)
    t32, td32 = A.Tanh().dual(v1.float(), c.float(), v2.float(), True)
    assert t32.dtype == torch.float32 and td32.dtype == torch.float32
    assert ((t32.double() - t64).abs().max() / t64.abs().max()).item() < 1e-6
    assert ((td32.double() - td64).abs().max() / td64.abs().max()).item() < 1e-6
