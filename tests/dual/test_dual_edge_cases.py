"""Edge cases: zero variance, perfect (anti)correlation, tiny and huge variances, float32.

Measured float32 errors (relative to √(T11·T22), random Σ with variances 0.1–10 and
|ρ| up to 1 − 1e-8): T ≤ 2e-6 for every closed form; Tdot ≤ 1e-6 for smooth ones and
≤ 3e-4 for the ReLU family (and T of sign/step), whose Tdot is a √-singular function of ρ
at ρ = ±1 (conditioning √eps_f32 ≈ 2.4e-4, inherent to rounding cov to float32).
"""

from __future__ import annotations

import math

import pytest
import torch
from dual_reference import KINKED, OVERFLOWING, SMOOTH, half_line_moment, one_d, points, quad2d

from ntkit.dual.quadrature import derivative
from ntkit.layers import activations as A

F64, F32 = torch.float64, torch.float32
ALL = [(name, spec) for name, spec, _ in KINKED] + SMOOTH
IDS = [n for n, _ in ALL]
DEGREE = {name: p for name, _, p in KINKED}


def _t(*xs, dtype=F64):
    return tuple(torch.tensor(x, dtype=dtype) for x in xs)


def _phi0(spec) -> tuple[float, float]:
    """φ(0) and φ'(0) as the finite network computes them (autograd for φ')."""
    z = torch.zeros(1, dtype=F64)
    return spec.fn(z).item(), derivative(spec.fn)(z).item()


def _edge_grid(dtype):
    vs = [0.0, 1e-6, 1.0, 1e6]
    v1, c, v2 = [], [], []
    for a in vs:
        for b in vs:
            r = math.sqrt(a * b)
            for rho in (0.0, 1.0, -1.0, 0.5, -0.5):
                v1.append(a)
                c.append(rho * r)
                v2.append(b)
    return (torch.tensor(v1, dtype=dtype), torch.tensor(c, dtype=dtype),
            torch.tensor(v2, dtype=dtype))


@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("name,spec", ALL, ids=IDS)
def test_finite_on_edge_grid(name, spec, dtype):
    """Var 0, 1e-6, 1, 1e6 × ρ ∈ {0, ±0.5, ±1}: finite, or +inf only where φ's moments are."""
    v1, c, v2 = _edge_grid(dtype)
    t, td = spec.dual(v1, c, v2, True)
    assert t.dtype == dtype and td.dtype == dtype
    huge = (v1 >= 1e6) | (v2 >= 1e6)
    if name in OVERFLOWING:
        # exp(b x), exp(b x²) with b > 0 and high powers overflow with the moments of the
        # function itself (E[e^{u+v}] = e^{2e6}; E[u⁷v⁷] ~ 1e42 > float32's max), where
        # the result may be inf or, for polynomials (inf·0 in Horner's rule), NaN.
        assert t[~huge].isfinite().all() and td[~huge].isfinite().all()
        if not name.startswith(("Monomial", "Hermite", "RectMono")):
            assert not t.isnan().any() and not td.isnan().any()
    else:
        assert t.isfinite().all() and td.isfinite().all()
    # The diagonal call (one tensor for all three) must also be finite.
    v = torch.tensor([0.0, 1e-6, 1.0, 1e6], dtype=dtype)
    tv, _ = spec.dual(v, v, v, False)
    if name not in OVERFLOWING:
        assert tv.isfinite().all()


@pytest.mark.parametrize("name,spec", ALL, ids=IDS)
def test_zero_variance_matches_finite_network(name, spec):
    """u ≡ 0: T = φ(0)·E[φ(v)] and Tdot = φ'(0)·E[φ'(v)] with torch's φ(0), φ'(0)."""
    f0, d0 = _phi0(spec)
    dphi = derivative(spec.fn)
    for v2 in (0.7, 2.0):
        t, td = spec.dual(*_t(0.0, 0.0, v2), True)
        ef, ed = one_d(spec.fn, v2), one_d(dphi, v2)
        assert abs(t.item() - f0 * ef) <= 1e-12 * (1 + abs(f0 * ef)), (t, f0, ef)
        assert abs(td.item() - d0 * ed) <= 1e-12 * (1 + abs(d0 * ed)), (td, d0, ed)
        # and symmetrically
        t2, td2 = spec.dual(*_t(v2, 0.0, 0.0), True)
        assert t2.item() == pytest.approx(t.item(), rel=1e-14, abs=1e-300)
        assert td2.item() == pytest.approx(td.item(), rel=1e-14, abs=1e-300)
    t, td = spec.dual(*_t(0.0, 0.0, 0.0), True)
    assert t.item() == pytest.approx(f0 * f0, rel=1e-14, abs=1e-300)
    assert td.item() == pytest.approx(d0 * d0, rel=1e-14, abs=1e-300)


@pytest.mark.parametrize("name,spec", ALL, ids=IDS)
def test_small_variance_is_continuous(name, spec):
    """T is continuous as a variance → 0 (for all but sign and step, whose φ jumps at 0)."""
    if DEGREE.get(name) == 0:
        pytest.skip("φ is discontinuous at 0: T has no limit at zero variance")
    t0, _ = spec.dual(*_t(0.0, 0.0, 1.3), False)
    t, _ = spec.dual(*_t(1e-14, 0.3e-7, 1.3), False)
    assert abs(t.item() - t0.item()) < 1e-6


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["rho=+1", "rho=-1"])
@pytest.mark.parametrize("name,spec", ALL, ids=IDS)
def test_perfect_correlation(name, spec, sign):
    """cov = ±√(var1 var2): v = ±√(var2/var1)·u, a 1-D expectation."""
    v1, v2 = 0.8, 1.7
    a, b = math.sqrt(v1), sign * math.sqrt(v2)
    t, td = spec.dual(*_t(v1, sign * math.sqrt(v1 * v2), v2), True)
    dphi = derivative(spec.fn)
    p = DEGREE.get(name)
    if p is not None:
        # Homogeneous φ: E[φ(a z)φ(b z)] = m_{2p}·(φ(a)φ(b) + φ(−a)φ(−b)), m_q = E[z^q; z>0].
        def pair(f, q):
            x = torch.tensor([a, -a], dtype=F64)
            y = torch.tensor([b, -b], dtype=F64)
            return half_line_moment(2 * q) * float((f(x) * f(y)).sum())

        t_ref = pair(spec.fn, p)
        td_ref = pair(dphi, p - 1) if p >= 1 else 0.0
    else:
        t_ref = one_d(lambda x: spec.fn(x) * spec.fn(b / a * x), v1)
        td_ref = one_d(lambda x: dphi(x) * dphi(b / a * x), v1)
    assert t.item() == pytest.approx(t_ref, rel=1e-11, abs=1e-14)
    assert td.item() == pytest.approx(td_ref, rel=1e-11, abs=1e-14)
    # Rounding just outside the PSD cone (|cov| > √(var1 var2) by a few ulps) is clamped.
    c_out = sign * math.sqrt(v1 * v2) * (1 + 4e-16)
    t_out, td_out = spec.dual(*_t(v1, c_out, v2), True)
    assert t_out.isfinite() and td_out.isfinite()
    assert t_out.item() == pytest.approx(t.item(), rel=1e-12, abs=1e-14)


HOMOGENEOUS = [(name, spec, p) for name, spec, p in KINKED] + [
    ("Monomial4", A.Monomial(4), 4), ("Identity", A.Identity(), 1)]


@pytest.mark.parametrize("lam", [1e-6, 1e6])
@pytest.mark.parametrize("name,spec,p", HOMOGENEOUS, ids=[n for n, _, _ in HOMOGENEOUS])
def test_homogeneous_scaling_tiny_and_huge(name, spec, p, lam):
    """T(λΣ) = λ^p T(Σ), Tdot(λΣ) = λ^(p−1) Tdot(Σ) at λ = 1e-6 and 1e6, to ~1e-13."""
    v1, c, v2 = points()
    t, td = spec.dual(v1, c, v2, True)
    ts, tds = spec.dual(lam * v1, lam * c, lam * v2, True)
    torch.testing.assert_close(ts, lam**p * t, rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(tds, lam ** max(p - 1, 0) * td if p else td,
                               rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name,spec", SMOOTH, ids=[n for n, _ in SMOOTH])
def test_smooth_tiny_variances_match_quadrature(name, spec):
    v1, c, v2 = points(scale=1e-6)
    t, td = spec.dual(v1, c, v2, True)
    tq, tdq = quad2d(spec.fn, v1, c, v2, deg=40)
    torch.testing.assert_close(t, tq, rtol=1e-11, atol=1e-15)
    torch.testing.assert_close(td, tdq, rtol=1e-11, atol=1e-15)


def test_huge_variance_limits():
    """Erf → its sign-like limit, GELU/λ → ReLU, Sin/Rbf decay: finite and consistent."""
    v1, c, v2 = points()
    lam = 1e6
    # erf(b x) for huge variance is sign(x): T → a²(1 − 2θ/π) + c², with O(1/√λ) error.
    e = A.Erf(1.5, 0.6, 0.3)
    t, _ = e.dual(lam * v1, lam * c, lam * v2, False)
    ts, _ = A.Sign().dual(v1, c, v2, False)
    torch.testing.assert_close(t, 1.5**2 * ts + 0.3**2, rtol=0, atol=1e-5)
    # GELU(x) = x Φ(x) → ReLU at large scale: T(λΣ)/λ → T_ReLU(Σ), O(1/√λ).
    t, td = A.GELU().dual(lam * v1, lam * c, lam * v2, True)
    tr, tdr = A.ReLU().dual(v1, c, v2, True)
    torch.testing.assert_close(t / lam, tr, rtol=0, atol=1e-3)
    torch.testing.assert_close(td, tdr, rtol=0, atol=1e-3)
    # Sinusoids at huge variance: T → 0 off the diagonal, a²/2 (1 − 0) on it.
    t, _ = A.Sin(1.3, 1.7, 0.4).dual(lam * v1, lam * c, lam * v2, False)
    assert t.isfinite().all() and t.abs().max() < 1e-12
    tv, _ = A.Sin(1.3, 1.7, 0.4).dual(lam * v1, lam * v1, lam * v1, False)
    torch.testing.assert_close(tv, torch.full_like(tv, 1.3**2 / 2), rtol=1e-12, atol=0)


FLOAT32_TOL = {"ReLU": 3e-4, "LeakyReLU": 3e-4, "ABReLU": 3e-4, "Abs": 4e-4, "Sign": 4e-4,
               "Step": 4e-4, "RectMono1": 3e-4}


@pytest.mark.parametrize("name,spec", [a for a in ALL if a[0] != "Gaussian_pos"],
                         ids=[n for n in IDS if n != "Gaussian_pos"])
def test_float32_error_against_float64(name, spec):
    g = torch.Generator().manual_seed(5)
    n = 2000
    v1 = 10 ** (2 * torch.rand(n, generator=g, dtype=F64) - 1)  # 0.1 .. 10
    v2 = 10 ** (2 * torch.rand(n, generator=g, dtype=F64) - 1)
    rho = 2 * torch.rand(n, generator=g, dtype=F64) - 1
    rho[:200] = 1 - 10 ** (-8 * torch.rand(200, generator=g, dtype=F64))  # |ρ| → 1
    rho[200:400] = -rho[:200]
    c = rho * (v1 * v2).sqrt()
    t, td = spec.dual(v1, c, v2, True)
    t32, td32 = spec.dual(v1.float(), c.float(), v2.float(), True)
    assert t32.dtype == F32
    s1, d1 = spec.dual(v1, v1, v1, True)
    s2, d2 = spec.dual(v2, v2, v2, True)
    st, sd = (s1.abs() * s2.abs()).sqrt(), (d1.abs() * d2.abs()).sqrt()
    tol_t = FLOAT32_TOL.get(name, 2e-6) if name in ("Sign", "Step") else 2e-6
    assert ((t32.double() - t).abs() <= tol_t * st).all()
    tol_d = FLOAT32_TOL.get(name, 2e-6)
    assert ((td32.double() - td).abs() <= tol_d * sd + 1e-30).all()


def _deep(spec, x, depth, w2, b2, dtype):
    """nngp/ntk of depth × (Dense(w², b²) → spec), written out with the dual directly."""
    x = x.to(dtype)
    d = x.shape[1]
    cov = (x * x).sum(1) / d
    nngp = x @ x.T / d
    nngp.diagonal().copy_(cov)  # same-input entries exactly equal to the variances
    ntk = torch.zeros_like(nngp)
    for _ in range(depth):
        nngp, cov = w2 * nngp + b2, w2 * cov + b2
        ntk = nngp + w2 * ntk
        t, td = spec.dual(cov[:, None], nngp, cov[None, :], True)
        cov = spec.dual(cov, cov, cov, False)[0]
        nngp, ntk = t, ntk * td
    return nngp, ntk


@pytest.mark.parametrize("name,spec,w2,b2", [
    ("ReLU", A.ReLU(), 2.0, 0.0),
    ("ReLU_exploding", A.ReLU(), 4.0, 0.0),  # variances ~2^100 ≈ 1e30: v1·v2 > f32 max
    ("ReLU_bias", A.ReLU(), 2.0, 0.1),
    ("Erf", A.Erf(), 1.0, 0.05),
    ("GELU", A.GELU(), 2.0, 0.0),
    ("Abs", A.Abs(), 1.0, 0.0),
], ids=lambda v: v if isinstance(v, str) else "")
def test_deep_network_float32_is_finite_and_close(name, spec, w2, b2):
    """Depth 100 in float32 (neural-tangents gives NaN for deep Erf/ReLU in float32)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 10, generator=g, dtype=F64)
    x[5] = 0.0  # a zero input: zero variance all the way down (without bias)
    n64, k64 = _deep(spec, x, 100, w2, b2, F64)
    n32, k32 = _deep(spec, x, 100, w2, b2, F32)
    assert n32.isfinite().all() and k32.isfinite().all()
    assert ((n32.double() - n64).norm() / n64.norm()).item() < 1e-5
    assert ((k32.double() - k64).norm() / k64.norm()).item() < 1e-4
    # PSD to within round-off of the norm
    assert torch.linalg.eigvalsh(n64).min() > -1e-12 * n64.abs().max()
