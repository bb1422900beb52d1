"""Tests of ntkit.theory.spectrum: closed forms in d = 3, Gram matrices, widths, bad inputs.

Closed forms (derived here; cf. Bach 2017, JMLR 18(19), App. D, and Bietti & Mairal 2019).
In d = 3, μ_k = ½∫ κ P_k dt (Legendre P_k). The degree-0 arc-cosine kernel
κ0(t) = 1 − arccos(t)/π = ½ + arcsin(t)/π has, by Rodrigues' formula and one integration by
parts, ∫ arcsin·P_k = −(I_{k+1} − I_{k−1})/(2k+1) with I_m = ∫ P_m/√(1−t²) = π a_{m/2}² for
even m (0 for odd m), a_j = C(2j, j)/4^j. Hence μ0_0 = ½, μ0_k = (a_{j−1}² − a_j²)/(2(2k+1))
for odd k (j = (k+1)/2), 0 for even k ≥ 2. The degree-1 kernel
κ1(t) = (√(1−t²) + (π − arccos t) t)/π has κ1' = κ0 and P_k = (P_{k+1}' − P_{k−1}')/(2k+1),
so μ1_0 = 3/8 and μ1_k = (μ0_{k−1} − μ0_{k+1})/(2k+1). Multiplying by t shifts degrees:
μ[t·f]_k = (k μ[f]_{k−1} + (k+1) μ[f]_{k+1})/(2k+1).
For serial(Dense(1), ReLU(), Dense(1)) (unit stds, no bias): NNGP = κ1/2 and
NTK = (κ1 + t κ0)/2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkit import layers as nl
from ntkit.engine.threads import torch_threads
from ntkit.theory.spectrum import (
    dot_product_eigenvalues,
    gegenbauer_normalized,
    kernel_of_cosine,
    multiplicity,
    n_widths,
    sorted_axes,
)

EPS = float(np.finfo(np.float64).eps)


def _closed_form_d3(k_max: int) -> tuple[np.ndarray, np.ndarray]:
    from fractions import Fraction

    def a(j):
        return Fraction(math.comb(2 * j, j), 4**j)

    m0 = [Fraction(1, 2)] + [Fraction(0)] * (k_max + 2)
    for k in range(1, k_max + 3):
        if k % 2:
            j = (k + 1) // 2
            m0[k] = (a(j - 1) ** 2 - a(j) ** 2) / (2 * (2 * k + 1))
    m1 = [Fraction(3, 8)] + [(m0[k - 1] - m0[k + 1]) / (2 * k + 1) for k in range(1, k_max + 2)]
    mt = [((k * m0[k - 1]) if k else 0) + (k + 1) * m0[k + 1] for k in range(k_max + 1)]
    mt = [v / (2 * k + 1) for k, v in enumerate(mt)]
    nngp = np.array([float(m1[k] / 2) for k in range(k_max + 1)])
    ntk = np.array([float((m1[k] + mt[k]) / 2) for k in range(k_max + 1)])
    return nngp, ntk


def _relu2():
    return nl.serial(nl.Dense(1), nl.ReLU(), nl.Dense(1))


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_closed_form_relu_d3(kind):
    k_max = 20
    exact = dict(zip(("nngp", "ntk"), _closed_form_d3(k_max), strict=True))[kind]
    s = dot_product_eigenvalues(_relu2(), 3, k_max, kind)
    mu = s.eigenvalues.numpy()
    assert s.multiplicities.tolist() == [2 * k + 1 for k in range(k_max + 1)]
    # Floor: a few ε·μ_0 of absolute error (float64 kernel values, cancellation in the
    # projection of an O(1) function on P_k); above it, 1e-10 relative.
    err = np.abs(mu - exact)
    tol = 1e-10 * np.abs(exact) + 8 * EPS * mu[0]
    assert (err <= tol).all(), np.c_[mu, exact, err / np.maximum(np.abs(exact), 1e-300)]
    # The first 15 nonzero ones to 1e-10 relative, with no floor.
    nz = exact[:16] != 0
    np.testing.assert_allclose(mu[:16][nz], exact[:16][nz], rtol=1e-10, atol=0)
    # Zero by symmetry: odd k ≥ 3 vanish for both (bias-free two-layer ReLU).
    assert np.abs(mu[3::2]).max() < 8 * EPS * mu[0]


def test_kernel_of_cosine_matches_arccos_formula():
    t = torch.linspace(-1, 1, 41, dtype=torch.float64)
    th = torch.arccos(t)
    k1 = (torch.sin(th) + (math.pi - th) * t) / math.pi
    k0 = 1 - th / math.pi
    for d in (2, 3, 10):
        got = kernel_of_cosine(_relu2(), d, t, "ntk")
        torch.testing.assert_close(got, (k1 + t * k0) / 2, rtol=1e-13, atol=1e-15)


def test_multiplicities():
    assert [multiplicity(3, k) for k in range(5)] == [1, 3, 5, 7, 9]
    assert [multiplicity(2, k) for k in range(4)] == [1, 2, 2, 2]
    for d in (4, 5, 10):
        for k in range(2, 8):
            formula = (2 * k + d - 2) * math.comb(k + d - 3, k - 1) // k
            assert multiplicity(d, k) == formula
        # Σ_{k≤K} N(d,k) = dim of polynomials of degree ≤ K restricted to the sphere
        assert sum(multiplicity(d, k) for k in range(7)) == (
            math.comb(6 + d - 1, d - 1) + math.comb(5 + d - 1, d - 1))


def test_gegenbauer_orthogonality_and_sum_rule():
    # Σ_k N(d,k) μ_k = κ(1) (Mercer at x = x') checks the normalization c_d; and
    # the P_k are orthogonal with ∫ P_j P_k dσ = δ_jk / N(d,k).
    net = nl.serial(nl.Dense(1, b_std=0.3), nl.Erf(), nl.Dense(1, b_std=0.1))
    for d in (2, 4, 7):
        s = dot_product_eigenvalues(net, d, 60, "nngp")
        total = float((s.eigenvalues * s.multiplicities.to(torch.float64)).sum())
        k11 = float(kernel_of_cosine(net, d, torch.ones(1), "nngp")[0])
        assert abs(total - k11) < 1e-12 * k11
    # orthogonality: spectrum of κ = P_j itself is δ_jk / N(d, j); use a polynomial
    # activation spec? Check P_k directly by Gauss-Legendre in θ.
    x, w = np.polynomial.legendre.leggauss(200)
    th = torch.tensor((x + 1) * math.pi / 2)
    d = 5
    p = gegenbauer_normalized(d, 6, torch.cos(th))
    c_d = math.gamma(d / 2) / (math.sqrt(math.pi) * math.gamma((d - 1) / 2))
    g = c_d * (p * torch.tensor(w * math.pi / 2) * torch.sin(th) ** (d - 2)) @ p.T
    want = torch.diag(torch.tensor([1.0 / multiplicity(d, k) for k in range(7)],
                                   dtype=torch.float64))
    torch.testing.assert_close(g, want, rtol=0, atol=1e-14)


@pytest.mark.parametrize("d", [3, 5])
def test_gram_matrix_spectrum(d):
    # eig(K/n) of n uniform points → μ_k with multiplicity N(d,k). A two-hidden-layer
    # ReLU NTK with bias: every μ_k > 0. Compare the mean Gram eigenvalue of each
    # multiplicity block; the block sums fluctuate like O(μ_k·√(N_k/n))-ish, so the
    # tolerance is relative 6% for the top blocks with n = 1000.
    net = nl.serial(nl.Dense(1, b_std=0.2), nl.ReLU(), nl.Dense(1, b_std=0.2), nl.ReLU(),
                    nl.Dense(1))
    s = dot_product_eigenvalues(net, d, 12, "ntk")
    mu, mult = s.eigenvalues.numpy(), s.multiplicities.numpy()
    g = torch.Generator().manual_seed(d)
    n = 1000
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(d)
    with torch_threads(1):   # one thread: BLAS oversubscription on a shared 2-core box
        k = net.kernel(x, None, get="ntk")
        ev = torch.linalg.eigvalsh(k / n).flip(0).numpy()
    order = np.argsort(-mu)
    start = 0
    checked = 0
    for kk in order:
        block = ev[start:start + mult[kk]]
        start += mult[kk]
        if start > 60:
            break
        # only blocks well separated from their neighbours
        others = np.delete(mu, kk)
        if np.min(np.abs(others - mu[kk])) < 0.3 * mu[kk]:
            continue
        assert abs(block.mean() - mu[kk]) < 0.06 * mu[kk], (kk, block.mean(), mu[kk])
        checked += 1
    assert checked >= 3


def test_n_widths_and_entropy_bounds():
    mu = torch.tensor([1.0, 0.25, 0.04, 0.0])
    mult = torch.tensor([1, 2, 3, 5])
    np.testing.assert_allclose(sorted_axes(mu, mult), [1, .5, .5, .2, .2, .2, 0, 0, 0, 0, 0])
    w = n_widths(mu, mult, [0, 1, 3, 6, 20])
    np.testing.assert_allclose(w.kolmogorov, [1, .5, .2, 0, 0])
    np.testing.assert_allclose(w.linear, w.kolmogorov)
    assert (w.entropy_lower <= w.entropy_upper + 1e-15).all()
    assert w.entropy_lower[0] == pytest.approx(1.0)   # 1 ball: radius σ_1 needed
    assert w.entropy_upper[0] == pytest.approx(1.0)
    # 1-D ellipsoid [−1, 1] with 2^n intervals: ε_n = 2^{−n} exactly; bounds bracket it.
    w1 = n_widths(torch.tensor([1.0]), torch.tensor([1]), list(range(1, 12)))
    exact = 2.0 ** -np.arange(1, 12)
    assert (w1.entropy_lower <= exact * (1 + 1e-12)).all()
    assert (w1.entropy_upper >= exact).all()
    assert (w1.entropy_upper <= 8 * exact).all()


def test_bad_inputs():
    net = _relu2()
    with pytest.raises(ValueError, match="kind"):
        dot_product_eigenvalues(net, 3, 5, kind="cov1")
    with pytest.raises(ValueError, match="fully-connected"):
        dot_product_eigenvalues(nl.serial(nl.FanOut(2), nl.FanInSum()), 3, 5)
    with pytest.raises(TypeError, match="layer spec"):
        dot_product_eigenvalues(lambda x: x, 3, 5)
    with pytest.raises(ValueError, match="d must be >= 2"):
        dot_product_eigenvalues(net, 1, 5)
    with pytest.raises(TypeError, match="k_max must be an int"):
        dot_product_eigenvalues(net, 3, 5.0)
    with pytest.raises(ValueError, match="k_max must be >= 0"):
        dot_product_eigenvalues(net, 3, -1)
    with pytest.raises(ValueError, match="lie in"):
        kernel_of_cosine(net, 3, torch.tensor([1.5]))
    with pytest.raises(ValueError, match="NaN"):
        n_widths(torch.tensor([1.0, float("nan")]), torch.tensor([1, 3]), 2)
    with pytest.raises(ValueError, match="equal nonzero length"):
        n_widths(torch.tensor([1.0]), torch.tensor([1, 3]), 2)
    with pytest.raises(TypeError, match="integers"):
        n_widths(torch.tensor([1.0]), torch.tensor([1.5]), 2)
    with pytest.raises(ValueError, match=">= 0"):
        n_widths(torch.tensor([1.0, -0.5]), torch.tensor([1, 3]), 2)
    with pytest.raises(TypeError, match="n must be"):
        n_widths(torch.tensor([1.0]), torch.tensor([1]), 1.5)
    with pytest.raises(ValueError, match="n must be >= 0"):
        n_widths(torch.tensor([1.0]), torch.tensor([1]), -1)
