"""Criticality: fixed points, χ∥/χ⊥, depth scales, critical initializations, phase diagrams."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize

from ntkit.dual import quadrature_dual
from ntkit.layers.activations import GELU, Erf, ReLU, SiLU, Tanh
from ntkit.layers.base import Activation
from ntkit.theory import (
    chi_parallel,
    chi_perp,
    correlation_fixed_points,
    correlation_map,
    critical_initialization,
    critical_points,
    depth_scale,
    depth_scales,
    measure_propagation,
    order_chaos_boundary,
    phase_diagram,
    plot_phase_diagram,
    propagate,
    variance_fixed_point,
    variance_fixed_points,
    variance_map,
)

F64 = torch.float64


class QuadErf(Activation):
    """erf(x) through generic quadrature (an independent route to the closed form)."""

    def fn(self, x):
        return torch.erf(x)

    def dual(self, var1, cov, var2, need_dot):
        return quadrature_dual(torch.erf, var1, cov, var2, need_dot, deg=96)


# ------------------------------------------------------------ critical initializations
def test_relu_critical_is_he():
    p = critical_initialization(ReLU())
    assert p.C_b == 0.0
    assert p.C_w == pytest.approx(2.0, abs=1e-12)
    assert p.degenerate  # every K* ≥ 0 is a fixed point at (0, 2)
    assert p.chi_par == pytest.approx(1.0, abs=1e-12) and p.chi_perp == pytest.approx(1.0)
    assert critical_initialization(ReLU(), K0=3.5).K_star == 3.5


@pytest.mark.parametrize("act,cw", [(Tanh(), 1.0), (Erf(), math.pi / 4),
                                    (Erf(2.0, 0.5), math.pi / 4), (Erf(1.0, 2.0), math.pi / 16),
                                    (QuadErf(), math.pi / 4)])
def test_odd_smooth_activations_critical_at_zero(act, cw):
    """tanh, erf: K* = 0, C_b = 0 and C_w = 1/σ'(0)² (erf(bx)·a: σ'(0) = 2ab/√π)."""
    pts = critical_points(act)
    assert len(pts) == 1
    p = pts[0]
    assert p.K_star == 0.0 and p.C_b == 0.0 and not p.degenerate and p.attracting
    assert p.C_w == pytest.approx(cw, rel=1e-9)
    assert p.chi_par == pytest.approx(1.0, abs=1e-9) and p.chi_perp == pytest.approx(1.0, abs=1e-9)
    # ... and at (C_b, C_w) the recursion indeed goes to K* = 0
    assert variance_fixed_point(act, p.C_w, 0.0, 1.0) == 0.0


def test_gelu_and_swish_critical_points_match_roberts_yaida():
    """Roberts & Yaida (PDLT §5.4): GELU K* = (3 + √17)/2, C_b ≈ 0.17292239, C_w ≈ 1.98305826;
    SWISH (SiLU) K* ≈ 14.32017362, C_b ≈ 0.55514317, C_w ≈ 1.98800468."""
    p0, p = critical_points(GELU())
    assert p0.K_star == 0.0 and p0.C_w == pytest.approx(4.0) and not p0.attracting
    assert not p.attracting  # half-stable
    assert p.K_star == pytest.approx((3 + math.sqrt(17)) / 2, rel=1e-10)
    assert p.C_b == pytest.approx(0.17292239, abs=1e-8)
    assert p.C_w == pytest.approx(1.98305826, abs=1e-8)
    assert p.chi_par == pytest.approx(1.0, abs=1e-10) and p.chi_perp == pytest.approx(1.0)
    p = critical_points(SiLU(deg=128))[-1]
    assert p.K_star == pytest.approx(14.32017362, rel=1e-7)
    assert p.C_b == pytest.approx(0.55514317, abs=1e-7)
    assert p.C_w == pytest.approx(1.98800468, abs=1e-7)


# ------------------------------------------------------------------------- χ values
@pytest.mark.parametrize("act", [ReLU(), Tanh(), Erf(), GELU()])
def test_chi_parallel_autograd_vs_finite_difference(act):
    ks = torch.tensor([0.0, 1e-3, 0.1, 0.5, 1.0, 2.5], dtype=F64)
    a = chi_parallel(act, 1.7, ks)
    fd = chi_parallel(act, 1.7, ks, method="fd")
    torch.testing.assert_close(a, fd, rtol=1e-8, atol=1e-10)
    # and a plain central difference of the public variance map (h = 1e-5)
    for k in (0.1, 1.0, 2.5):
        h = 1e-5
        slope = (variance_map(act, 1.7, 0.2, k + h) - variance_map(act, 1.7, 0.2, k - h)) / (2 * h)
        assert float(chi_parallel(act, 1.7, k)) == pytest.approx(float(slope), rel=1e-7)


def test_chi_closed_forms_for_erf_and_relu():
    """erf: V(K) = (2/π) arcsin(2K/(1+2K)), so V'(K) = (4/π)/((1+2K)√(1+4K)), and
    E[σ'(z)²] = (4/π) E[e^{−2z²}] = (4/π)/√(1+4K). ReLU: V = K/2, E[σ'²] = 1/2."""
    ks = torch.tensor([0.0, 0.01, 0.3, 1.0, 7.0], dtype=F64)
    cw = 1.3
    # (generic quadrature loses digits at large variance: 1e-8 at K = 7 with 96 nodes)
    for act, rtol in ((Erf(), 1e-11), (QuadErf(), 1e-7)):
        ref_par = cw * (4 / math.pi) / ((1 + 2 * ks) * torch.sqrt(1 + 4 * ks))
        ref_perp = cw * (4 / math.pi) / torch.sqrt(1 + 4 * ks)
        torch.testing.assert_close(chi_parallel(act, cw, ks), ref_par, rtol=rtol, atol=1e-12)
        torch.testing.assert_close(chi_perp(act, cw, ks), ref_perp, rtol=rtol, atol=1e-12)
    torch.testing.assert_close(chi_parallel(ReLU(), cw, ks), torch.full_like(ks, cw / 2))
    torch.testing.assert_close(chi_perp(ReLU(), cw, ks), torch.full_like(ks, cw / 2))


@pytest.mark.parametrize("act,cw,cb", [(Tanh(), 2.0, 0.05), (Tanh(), 1.2, 0.3), (Erf(), 3.0, 0.1),
                                       (ReLU(), 1.6, 0.2), (GELU(), 1.8, 0.1)])
def test_chis_match_wide_random_layers(act, cw, cb):
    """χ∥ and χ⊥ at K* vs ratios measured in wide random layers (n = 1000, 16 draws).

    Inputs are n-vectors with i.i.d. N(0, K*) entries (the layer-l pre-activations at the
    fixed point), pushed through one random layer z' = b + W σ(z), W ~ N(0, C_w/n),
    b ~ N(0, C_b). χ∥: z± = (1 ± ε) z, ratio of the change of the measured variance
    ‖z'‖²/n to that of ‖z‖²/n (central difference, bias O(ε²)). χ⊥: z₂ = z + ε ξ with an
    independent ξ, ratio ‖z₁' − z₂'‖² / ‖z₁ − z₂‖² (bias O(ε²)). Common random weights make
    both ratios O(1/√n)-accurate; the test is |mean − χ| < 4.5 standard errors of the mean
    over draws, with the standard error itself below 3%.
    """
    k = variance_fixed_point(act, cw, cb)
    chi_p = float(chi_parallel(act, cw, k))
    chi_q = float(chi_perp(act, cw, k))
    n, reps, eps = 1000, 16, 1e-4
    gen = torch.Generator().manual_seed(1)
    par, perp = [], []
    for _ in range(reps):
        w = torch.randn(n, n, generator=gen, dtype=F64) * math.sqrt(cw / n)
        b = torch.randn(n, generator=gen, dtype=F64) * math.sqrt(cb)
        z = torch.randn(n, generator=gen, dtype=F64) * math.sqrt(k)
        xi = torch.randn(n, generator=gen, dtype=F64) * math.sqrt(k)
        zs = torch.stack([(1 + eps) * z, (1 - eps) * z, z, z + eps * xi])
        out = act.fn(zs) @ w.T + b
        sq_in, sq_out = (zs * zs).sum(1), (out * out).sum(1)
        par.append(float((sq_out[0] - sq_out[1]) / (sq_in[0] - sq_in[1])))
        d_out, d_in = out[2] - out[3], zs[2] - zs[3]
        perp.append(float((d_out @ d_out) / (d_in @ d_in)))
    for meas, chi in ((np.array(par), chi_p), (np.array(perp), chi_q)):
        se = meas.std(ddof=1) / math.sqrt(reps)
        assert se < 0.03 * chi
        assert abs(meas.mean() - chi) < 4.5 * se, (meas.mean(), chi, se)


@pytest.mark.parametrize("method,depth,width,nets", [
    pytest.param("weights", 8, 300, 8, marks=pytest.mark.slow), ("gaussian", 30, 2000, 16)])
def test_deep_network_measurements_match_propagate(method, depth, width, nets):
    """Random deep nets: layer moments within 4.5 SE + O(1/n) of `propagate`.

    "weights" draws the weight matrices; "gaussian" samples the same process exactly in
    law (so the two methods are tested against the same prediction).
    """
    x1 = torch.tensor([1.0, 0.5, -0.3, 0.8], dtype=F64)
    x2 = torch.tensor([0.2, -1.0, 0.4, 0.9], dtype=F64)
    for act, cw, cb in ((Tanh(), 1.8, 0.05), (ReLU(), 2.0, 0.0), (Erf(), 1.2, 0.2)):
        pred = propagate(act, cw, cb, depth, x1=x1, x2=x2)
        meas = measure_propagation(act, cw, cb, depth, width, x1, x2, n_nets=nets, seed=3,
                                   method=method)
        for f in ("K11", "K22", "K12"):
            p, m, se = getattr(pred, f), getattr(meas, f), getattr(meas, f + "_se")
            assert np.all(np.abs(m - p) < 4.5 * se + 3.0 * np.abs(p) / width), (act, f, m, p)
        assert np.all(np.abs(meas.rho - pred.rho) < 4.5 * meas.rho_se + 3.0 / width)


# --------------------------------------------------------------------- fixed points
def test_variance_fixed_points():
    # ReLU: F(K) = C_b + C_w K/2, so K* = C_b/(1 − C_w/2) when C_w < 2; divergence when > 2.
    assert variance_fixed_point(ReLU(), 1.5, 0.1) == pytest.approx(0.4, rel=1e-13)
    assert variance_fixed_point(ReLU(), 2.5, 0.1) == math.inf
    fp = variance_fixed_points(ReLU(), 2.0, 0.0)
    assert fp.degenerate and fp.points == ()
    assert variance_fixed_point(ReLU(), 2.0, 0.0, K0=3.0) == 3.0
    # tanh, C_b = 0: K = 0 is always a fixed point with χ∥ = C_w; stable iff C_w < 1.
    fp = variance_fixed_points(Tanh(), 0.5, 0.0)
    assert [p.value for p in fp.points] == [0.0]
    assert fp.points[0].slope == pytest.approx(0.5, rel=1e-9) and fp.points[0].stable
    fp = variance_fixed_points(Tanh(), 2.0, 0.0)
    assert len(fp.points) == 2 and fp.points[0].value == 0.0 and not fp.points[0].stable
    k = fp.points[1].value
    assert fp.points[1].stable
    assert float(variance_map(Tanh(), 2.0, 0.0, k)) == pytest.approx(k, rel=1e-13)
    assert variance_fixed_point(Tanh(), 2.0, 0.0, K0=5.0) == pytest.approx(k, rel=1e-13)
    assert variance_fixed_point(Tanh(), 2.0, 0.0, K0=1e-3) == pytest.approx(k, rel=1e-13)
    # erf closed form: K* = C_b + C_w (2/π) arcsin(2K*/(1 + 2K*))
    k = variance_fixed_point(Erf(), 2.5, 0.3)
    assert k == pytest.approx(0.3 + 2.5 * (2 / math.pi) * math.asin(2 * k / (1 + 2 * k)),
                              rel=1e-14)


def test_correlation_fixed_points_and_phases():
    # ordered (χ⊥ < 1): ρ = 1 is the only, stable, fixed point
    ds = depth_scales(Tanh(), 1.2, 0.3)
    assert ds.phase == "ordered" and ds.rho_star == 1.0 and ds.xi_c == ds.xi_perp > 0
    pts = correlation_fixed_points(Tanh(), 1.2, 0.3, ds.K_star)
    assert [p.value for p in pts] == [1.0] and pts[0].stable
    # chaotic: ρ = 1 unstable; a stable ρ* < 1 with slope χ_c < 1
    ds = depth_scales(Tanh(), 2.0, 0.05)
    assert ds.phase == "chaotic" and ds.xi_perp < 0 and 0 < ds.xi_c < math.inf
    pts = correlation_fixed_points(Tanh(), 2.0, 0.05, ds.K_star)
    assert pts[-1].value == 1.0 and not pts[-1].stable
    inner = [p for p in pts if p.value < 1]
    assert len(inner) == 1 and inner[0].stable
    assert inner[0].value == pytest.approx(ds.rho_star, abs=1e-12)
    assert inner[0].slope == pytest.approx(ds.chi_c, rel=1e-10)
    rho = torch.tensor([ds.rho_star, 1.0], dtype=F64)
    c = correlation_map(Tanh(), 2.0, 0.05, ds.K_star, rho)
    torch.testing.assert_close(c, rho, rtol=1e-12, atol=1e-12)
    # chaotic with C_b = 0 and odd σ: ρ* = 0 exactly (orthogonal inputs stay orthogonal)
    ds = depth_scales(Tanh(), 2.0, 0.0)
    assert ds.rho_star == pytest.approx(0.0, abs=1e-15)
    # critical ReLU: everything at 1, depth scales infinite
    ds = depth_scales(ReLU(), 2.0, 0.0)
    assert ds.phase == "critical" and ds.xi_par == ds.xi_perp == ds.xi_c == math.inf


def test_depth_scale_conventions():
    assert depth_scale(1.0) == math.inf
    assert depth_scale(1.0 + 1e-14) == math.inf
    assert depth_scale(math.exp(-0.5)) == pytest.approx(2.0)
    assert depth_scale(math.exp(0.25)) == pytest.approx(-4.0)
    assert depth_scale(0.0) == 0.0
    np.testing.assert_allclose(depth_scale(np.array([0.0, math.exp(-1), 1.0])), [0.0, 1.0, np.inf])
    with pytest.raises(ValueError):
        depth_scale(-0.1)


def test_depth_scales_govern_propagation():
    """Away from criticality, K_l − K* ∝ χ∥^l and 1 − ρ_l ∝ χ⊥^l (ordered phase)."""
    act, cw, cb = Erf(), 1.5, 0.4
    ds = depth_scales(act, cw, cb)
    p = propagate(act, cw, cb, 60, K11=ds.K_star * 1.05, K22=ds.K_star * 1.05,
                  K12=ds.K_star * 0.9)
    # ξ∥ ≈ 0.72 here, so K reaches round-off by layer ~20: fit early layers for it.
    lk, lr = slice(5, 12), slice(30, 55)
    slope_k = np.polyfit(p.layers[lk], np.log(np.abs(p.K11[lk] - ds.K_star)), 1)[0]
    slope_r = np.polyfit(p.layers[lr], np.log(1 - p.rho[lr]), 1)[0]
    assert -1 / slope_k == pytest.approx(ds.xi_par, rel=1e-4)
    assert -1 / slope_r == pytest.approx(ds.xi_perp, rel=1e-3)


# ------------------------------------------------------------------------- power laws
def test_relu_at_criticality_correlation_power_law():
    """He init: 1 − ρ_l ≈ 9π²/(2l²), approached from below with O(log l / l) corrections."""
    p = propagate(ReLU(), 2.0, 0.0, 3000, K11=1.0, K22=2.0, K12=0.3)
    np.testing.assert_allclose(p.K11, 1.0, rtol=1e-13)  # variance exactly preserved
    np.testing.assert_allclose(p.K22, 2.0, rtol=1e-13)
    c = p.layers**2 * (1 - p.rho)
    target = 9 * math.pi**2 / 2
    assert c[99] < c[999] < c[2999] < target * 1.001
    assert c[2999] == pytest.approx(target, rel=0.02)  # 1.1% low at l = 3000 from ρ¹ = 0.21


def test_tanh_at_criticality_variance_power_law():
    """C_b = 0, C_w = 1: K_{l+1} = K_l − 2K_l² + O(K³), so K_l ≈ 1/(2l)."""
    p = propagate(Tanh(), 1.0, 0.0, 600, K11=1.0, K22=1.0, K12=0.5)
    c = 2 * p.layers * p.K11
    assert c[99] > c[599] and c[599] == pytest.approx(1.0, rel=1e-2)  # 1.006: log l / l
    assert np.all(np.diff(p.K11) < 0)


def test_propagate_with_layer_block_matches_activation_path():
    from ntkit.layers.branching import serial
    from ntkit.layers.dense import Dense

    cw, cb = 1.7, 0.1
    x1 = torch.tensor([1.0, 2.0, -0.5], dtype=F64)
    x2 = torch.tensor([0.3, -1.0, 1.5], dtype=F64)
    a = propagate(Tanh(), cw, cb, 25, x1=x1, x2=x2)
    b = propagate(serial(Tanh(), Dense(1, math.sqrt(cw), math.sqrt(cb))), cw, cb, 25, x1=x1,
                  x2=x2)
    for f in ("K11", "K22", "K12"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-13)
    assert a.K11[0] == pytest.approx(cb + cw * float(x1 @ x1) / 3)


# --------------------------------------------------------------------- phase diagram
def _erf_boundary_closed_form(k):
    """χ⊥ = σ_w² (4/π)/√(1 + 4K*) = 1 and K* = σ_b² + σ_w² (2/π) arcsin(2K*/(1 + 2K*)):
    σ_w² = (π/4)√(1 + 4K*), σ_b² = K* − (√(1 + 4K*)/2) arcsin(2K*/(1 + 2K*))."""
    k = np.asarray(k, dtype=np.float64)
    sw2 = (math.pi / 4) * np.sqrt(1 + 4 * k)
    return sw2, k - np.sqrt(1 + 4 * k) / 2 * np.arcsin(2 * k / (1 + 2 * k))


def test_erf_order_chaos_boundary_closed_form():
    ks = np.linspace(0, 6, 41)
    sw_ref, sb_ref = _erf_boundary_closed_form(ks)
    assert np.all(np.diff(sb_ref) > 0)  # σ_b²(K*) increasing: one boundary point per σ_b²
    for act, rtol in ((Erf(), 1e-12), (QuadErf(), 1e-8)):  # quadrature: 6e-10 at K* = 6
        sw, sb = order_chaos_boundary(act, torch.tensor(ks))
        np.testing.assert_allclose(sw, sw_ref, rtol=rtol)
        np.testing.assert_allclose(sb, sb_ref, rtol=rtol, atol=1e-12)
    # Independent route: for given σ_b², find σ_w² with χ⊥(K*) = 1 by iterating the
    # variance map to K* and root-finding on σ_w² (no parametrization by K*).
    for sb2 in (0.0, 0.05, 0.3, 1.0):
        kb = 0.0 if sb2 == 0 else optimize.brentq(
            lambda k, s=sb2: _erf_boundary_closed_form(k)[1] - s, 1e-9, 50, xtol=1e-15)
        sw_closed = float(_erf_boundary_closed_form(kb)[0])
        if sb2 == 0:
            sw_found = math.pi / 4  # K* = 0 for all σ_w² ≤ π/4: check both sides below
            assert depth_scales(Erf(), sw_found * 0.999, 0.0).phase == "ordered"
            assert depth_scales(Erf(), sw_found * 1.001, 0.0).phase == "chaotic"
        else:
            sw_found = optimize.brentq(
                lambda w, s=sb2: depth_scales(Erf(), w, s).chi_perp - 1, 0.3, 10, xtol=1e-13)
        assert sw_found == pytest.approx(sw_closed, rel=1e-9)


def test_phase_diagram_data_and_plot(tmp_path):
    w = np.linspace(0.6, 3.0, 13)
    b = np.linspace(0.0, 0.4, 5)
    diagrams = []
    for name, act in (("tanh", Tanh()), ("erf", Erf())):
        d = phase_diagram(act, w, b, name=name)
        assert d.chi_perp.shape == (5, 13) and np.isfinite(d.chi_perp).all()
        # the sign of log χ⊥ flips across the boundary curve, at the curve's σ_w²
        for i, sb2 in enumerate(b):
            row = d.chi_perp[i]
            sw_line = np.interp(sb2, d.boundary_b2, d.boundary_w2)
            assert np.all((row < 1) == (w < sw_line)), (name, sb2, row, sw_line)
        chaotic = d.chi_perp > 1
        assert np.all(d.rho_star[chaotic] < 1) and np.all(d.rho_star[~chaotic] == 1)
        assert np.all(d.chi_c[chaotic] < 1)  # the inner fixed point is stable
        diagrams.append(d)
    # tanh at σ_b² = 0: boundary at σ_w² = 1, K* = 0 in the ordered part
    assert np.interp(0.0, diagrams[0].boundary_b2, diagrams[0].boundary_w2) == pytest.approx(1.0)
    assert np.all(diagrams[0].K_star[0, w < 1] == 0)
    out = plot_phase_diagram(diagrams, tmp_path / "phase.png", title="order/chaos")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


# ------------------------------------------------------------------------ validation
def test_validation_errors():
    with pytest.raises(ValueError, match="C_w"):
        variance_map(Tanh(), 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="C_b"):
        variance_map(Tanh(), 1.0, -0.1, 1.0)
    with pytest.raises(ValueError, match="K must be >= 0"):
        chi_perp(Tanh(), 1.0, -1.0)
    with pytest.raises(ValueError, match="NaN"):
        chi_perp(Tanh(), 1.0, float("nan"))
    with pytest.raises(TypeError, match="Activation"):
        chi_perp("tanh", 1.0, 1.0)
    with pytest.raises(ValueError, match="K\\* > 0"):
        correlation_map(Tanh(), 1.0, 0.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="rho"):
        correlation_map(Tanh(), 1.0, 0.0, 1.0, 1.5)
    with pytest.raises(ValueError, match="depth"):
        propagate(Tanh(), 1.0, 0.0, 0, K11=1, K22=1, K12=0)
    with pytest.raises(ValueError, match="not a covariance"):
        propagate(Tanh(), 1.0, 0.0, 3, K11=1, K22=1, K12=2)
    with pytest.raises(ValueError, match="either"):
        propagate(Tanh(), 1.0, 0.0, 3, x1=torch.ones(3))
    with pytest.raises(ValueError, match="method"):
        chi_parallel(Tanh(), 1.0, 1.0, method="price")
    with pytest.raises(ValueError, match="no critical initialization"):
        from ntkit.layers.activations import Sigmoid

        critical_initialization(Sigmoid())
