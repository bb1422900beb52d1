"""The kernel-comparison helper (tests/kernel_compare.py): its bound is a true bound, it
fails above it and passes below it, and it is exact on known-identical pairs."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from kernel_compare import angle_error_bound, assert_kernels_close, kernel_tolerance

from ntkit import layers as nl

EPS = float(np.finfo(np.float64).eps)
F64 = torch.float64


def _gram(n=6, d=5, seed=0):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return x @ x.T / d


def test_angle_bound_holds_against_high_precision_arccos():
    mpmath.mp.dps = 50
    for eta in (EPS, 4 * EPS, 1e-12, 1e-8, 1e-3):
        for rho in np.concatenate([np.linspace(-1, 1, 41), 1 - np.logspace(-17, -1, 30)]):
            rho = float(min(1.0, rho))
            r0, e = mpmath.mpf(rho), mpmath.mpf(eta)
            true = max(abs(mpmath.acos(r0) - mpmath.acos(r))
                       for r in (max(-1, r0 - e), min(1, r0 + e)))
            bound = float(angle_error_bound(rho, eta))
            # (1 + 1e-12: the bound itself is evaluated in float64)
            assert float(true) <= bound * (1 + 1e-12), (rho, eta, float(true), bound)
    # and it is attained within a few percent at rho = 1 (the bound is not slack there)
    eta = 4 * EPS
    assert float(mpmath.acos(1 - mpmath.mpf(eta))) >= 0.99 * float(angle_error_bound(1.0, eta))


def test_identical_kernels_pass_with_zero_margin():
    k = _gram()
    assert assert_kernels_close(k.clone(), k, identical="diagonal") == 0.0


def test_exact_on_identical_pairs():
    k = _gram()
    one_ulp = k.clone()
    one_ulp[2, 2] = torch.nextafter(k[2, 2], torch.tensor(math.inf, dtype=F64))
    with pytest.raises(AssertionError, match=r"worst at \(2, 2\).*identical pair"):
        assert_kernels_close(one_ulp, k, identical="diagonal", exact_ulps=0)  # bitwise
    assert_kernels_close(one_ulp, k, identical="diagonal")  # default: 4 eps of the scale
    bumped = k.clone()
    bumped[2, 2] += 5 * EPS * k[2, 2]
    with pytest.raises(AssertionError, match=r"worst at \(2, 2\).*identical pair"):
        assert_kernels_close(bumped, k, identical="diagonal")
    assert_kernels_close(bumped, k)  # 5 eps is within the tight bound elsewhere
    # explicit pairs and masks mean the same
    with pytest.raises(AssertionError, match=r"\(2, 2\)"):
        assert_kernels_close(bumped, k, identical=[(2, 2)])
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[2, 2] = True
    with pytest.raises(AssertionError, match=r"\(2, 2\)"):
        assert_kernels_close(bumped, k, identical=mask)


@pytest.mark.parametrize("factor, passes", [(0.9, True), (1.1, False)])
def test_tight_bound_at_moderate_correlation(factor, passes):
    k = _gram()
    t = kernel_tolerance(k)
    i, j = 0, 3
    assert t["rho"][i, j] < 0.9  # far from 1: the arc-cosine part is of order η
    bumped = k.clone()
    bumped[i, j] += factor * t["tol"][i, j]
    if passes:
        assert assert_kernels_close(bumped, k) <= 1.0
    else:
        with pytest.raises(AssertionError, match="correlation = "):
            assert_kernels_close(bumped, k)
    # the tight part is 256 eps of the scale sqrt(K_ii K_jj), not of the entry
    assert t["tight"][i, j] == pytest.approx(256 * EPS * math.sqrt(k[i, i] * k[j, j]))


@pytest.mark.parametrize("factor, passes", [(0.9, True), (1.1, False)])
def test_arccos_bound_near_correlation_one(factor, passes):
    # Rows 0 and 1 are the same example: correlation 1, where sqrt(8 eps) applies.
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    x[1] = x[0]
    k = x @ x.T / 3
    t = kernel_tolerance(k)
    scale = math.sqrt(k[0, 0] * k[1, 1])
    assert t["arccos"][0, 1] == pytest.approx(math.sqrt(8 * EPS) * scale, rel=1e-6)
    bumped = k.clone()
    bumped[0, 1] += factor * t["tol"][0, 1]
    if passes:
        assert_kernels_close(bumped, k)
    else:
        with pytest.raises(AssertionError, match=r"worst at \(0, 1\).*1 - \|correlation\| = "):
            assert_kernels_close(bumped, k)


def test_float32_uses_its_own_epsilon():
    k = _gram()
    k32 = k.float()
    # float32 rounding passes; a float64 comparison of the same numbers would not.
    assert_kernels_close(k32, k)
    with pytest.raises(AssertionError):
        assert_kernels_close(k32.double(), k)


def test_the_real_cross_path_diagonal_is_inside_the_arccos_bound():
    # K(x, x) through the cross path (x2 given as a copy) against x2=None: the entries of
    # an example against itself go through the arc-cosine at correlation 1.
    net = nl.serial(nl.Dense(8), nl.ReLU(), nl.Dense(8), nl.ReLU(), nl.Dense(1))
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    ref = net.kernel(x, get="ntk")
    cross = net.kernel(x, x.clone(), get="ntk")
    assert_kernels_close(cross, ref)


def test_cross_kernel_without_variances_is_tight_everywhere():
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(4), dtype=F64)
    x[4] = x[0]  # a correlation-1 pair inside the cross block (0, 4)...
    k = x @ x.T / 5
    t = kernel_tolerance(k[:, 3:])
    # ...gets no arc-cosine relaxation without variances: only the tight part
    # (the arc-cosine part at correlation 0 is eta = 4 eps of the scale)
    scale = np.sqrt(np.abs(k[:, 3:].numpy()).max(1)[:, None] * np.abs(k[:, 3:].numpy()).max(0))
    np.testing.assert_allclose(t["arccos"], 4 * EPS * scale, rtol=1e-12)
    np.testing.assert_allclose(t["tol"], (256 + 4) * EPS * scale, rtol=1e-12)
    bumped = k[:, 3:].clone()
    bumped[0, 1] += 1.1 * t["tol"][0, 1]
    with pytest.raises(AssertionError):
        assert_kernels_close(bumped, k[:, 3:])
    # with the variances the pair (0, 4) gets its sqrt(8 eps) bound
    d = torch.diagonal(k)
    t = kernel_tolerance(k[:, 3:], var1=d, var2=d[3:])
    assert t["arccos"][0, 1] == pytest.approx(math.sqrt(8 * EPS) * float(d[0]), rel=1e-6)


def test_mismatched_shapes_are_reported():
    k = _gram()
    d = torch.diagonal(k)
    assert_kernels_close(k[:, :4], k[:, :4], var1=d, var2=d[:4])
    with pytest.raises(AssertionError, match="shapes differ"):
        assert_kernels_close(k[:, :4], k)


def test_nonfinite_entries_must_match():
    k = _gram()
    a = k.clone()
    a[1, 2] = float("nan")
    with pytest.raises(AssertionError, match="non-finite"):
        assert_kernels_close(a, k)
    assert_kernels_close(a, a.clone())


def test_spatial_kernels_use_the_largest_position_variance():
    x = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    k = torch.einsum("icp,jcp->ijp", x, x) / 2  # (n, n, L): per-position diagonal storage
    t = kernel_tolerance(k)
    s = torch.diagonal(k, 0, 0, 1).amax(0)  # (L, n): per-example max over positions
    assert t["scale"][0, 1, 2] == pytest.approx(math.sqrt(s[0] * s[1]))
    assert (np.abs(k.numpy()) <= t["scale"] * (1 + 1e-15)).all()
