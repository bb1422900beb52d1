"""Marchenko–Pastur pdf/cdf and exact log-norm moments of Gaussian matrix products."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from ntkit.theory.random_matrix import (
    marchenko_pastur_cdf,
    marchenko_pastur_edges,
    marchenko_pastur_pdf,
    product_log_norm_moments,
)

RATIOS = [0.1, 0.5, 1.0, 2.0]


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("sigma2", [1.0, 0.34])
def test_pdf_integrates_to_continuous_mass(ratio, sigma2):
    a, b = marchenko_pastur_edges(ratio, sigma2)
    mass, err = integrate.quad(lambda x: marchenko_pastur_pdf(x, ratio, sigma2), a, b,
                               limit=200)
    assert mass == pytest.approx(min(1.0, 1.0 / ratio), abs=1e-7)


@pytest.mark.parametrize("ratio", RATIOS)
def test_cdf_matches_quadrature_of_pdf(ratio):
    sigma2 = 0.7
    a, b = marchenko_pastur_edges(ratio, sigma2)
    atom = max(0.0, 1 - 1 / ratio)
    for x in np.linspace(a, b, 9)[1:]:
        q, _ = integrate.quad(lambda s: marchenko_pastur_pdf(s, ratio, sigma2), a, x, limit=200)
        assert marchenko_pastur_cdf(x, ratio, sigma2) == pytest.approx(atom + q, abs=1e-7)
    assert marchenko_pastur_cdf(-1.0, ratio, sigma2) == 0.0
    assert marchenko_pastur_cdf(b + 1, ratio, sigma2) == pytest.approx(1.0, abs=1e-12)


def test_mp_moments_closed_form():
    # Mean σ², second moment σ⁴(1 + λ) (Narayana polynomials), over the whole law.
    for lam in (0.3, 1.0):
        a, b = marchenko_pastur_edges(lam, 2.0)

        def pdf(x, lam=lam):
            return marchenko_pastur_pdf(x, lam, 2.0)

        m1 = integrate.quad(lambda x: x * pdf(x), a, b)[0]
        m2 = integrate.quad(lambda x: x * x * pdf(x), a, b)[0]
        assert m1 == pytest.approx(2.0, rel=1e-7)
        assert m2 == pytest.approx(4.0 * (1 + lam), rel=1e-7)


def test_mp_against_sampled_spectrum():
    rng = np.random.default_rng(0)
    p, n = 300, 600
    x = rng.standard_normal((p, n))
    ev = np.linalg.eigvalsh(x @ x.T / n)
    grid = np.sort(ev)
    ks = np.max(np.abs(np.arange(1, p + 1) / p - marchenko_pastur_cdf(grid, p / n)))
    assert ks < 0.03   # finite-p fluctuations of the empirical spectral CDF are O(1/p)


def test_mp_bad_input():
    with pytest.raises(ValueError, match="ratio"):
        marchenko_pastur_pdf(1.0, -1.0)
    with pytest.raises(ValueError, match="NaN"):
        marchenko_pastur_cdf([1.0, float("nan")], 0.5)
    with pytest.raises(TypeError, match="sigma2"):
        marchenko_pastur_pdf(1.0, 0.5, sigma2="1")


def test_product_moments_closed_forms():
    # One square layer: ln(χ²_n/n), E = ψ(n/2) + ln(2/n), Var = ψ'(n/2); n = 2: χ²_2/2 ~ Exp(1)
    # so E ln = −γ (Euler), Var = π²/6.
    m = product_log_norm_moments([2, 2])
    assert m.mean == pytest.approx(-0.5772156649015329, abs=1e-12)
    assert m.var == pytest.approx(math.pi**2 / 6, abs=1e-12)
    # Additivity over layers and large-width approximations −L/n, 2L/n.
    m = product_log_norm_moments([400] * 11)
    assert m.mean == pytest.approx(10 * product_log_norm_moments([400, 400]).mean, rel=1e-12)
    assert m.mean_approx == pytest.approx(-10 / 400)
    assert m.var_approx == pytest.approx(20 / 400)
    assert m.mean == pytest.approx(m.mean_approx, rel=1e-2)
    assert m.var == pytest.approx(m.var_approx, rel=1e-2)


def test_product_moments_monte_carlo():
    rng = np.random.default_rng(1)
    widths, sigma2, n_mc = [5, 3, 7, 4], 1.7, 20000
    u = rng.standard_normal(widths[0])
    u2 = float(u @ u)
    logs = np.empty(n_mc)
    for s in range(n_mc):
        v = u
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            v = rng.standard_normal((b, a)) * math.sqrt(sigma2 / a) @ v
        logs[s] = math.log(float(v @ v) / u2)
    m = product_log_norm_moments(widths, sigma2)
    se_mean = logs.std() / math.sqrt(n_mc)
    assert abs(logs.mean() - m.mean) < 4 * se_mean
    se_var = math.sqrt(np.mean((logs - logs.mean()) ** 4) - logs.var() ** 2) / math.sqrt(n_mc)
    assert abs(logs.var() - m.var) < 4 * se_var


def test_product_moments_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        product_log_norm_moments([3])
    with pytest.raises(TypeError, match="ints"):
        product_log_norm_moments([3, 2.5])
    with pytest.raises(ValueError, match=">= 1"):
        product_log_norm_moments([3, 0])
