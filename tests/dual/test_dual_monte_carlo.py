"""Monte Carlo: T and Tdot against sample means over 10⁶ draws of (u, v) ~ N(0, Σ).

The tolerance is 5 standard errors of the mean, computed from the same samples, so the
test tightens or loosens with each activation's own variance (e.g. the heavy tails of
exp) and stays meaningful: a formula off by more than ~5e-3·scale fails.
"""

from __future__ import annotations

import pytest
import torch
from dual_reference import KINKED, SMOOTH

ALL = [(name, spec) for name, spec, _ in KINKED] + SMOOTH
N = 1_000_000
# (var1, cov, var2): a positive and a negative correlation, unequal variances.
CASES = [(0.8, 0.5, 1.1), (1.3, -0.9, 0.9)]


@pytest.fixture(scope="module")
def z():
    g = torch.Generator().manual_seed(1234)
    return torch.randn(2, N, generator=g, dtype=torch.float64)


def _mean_and_se(x: torch.Tensor) -> tuple[float, float]:
    return x.mean().item(), (x.std() / N**0.5).item()


def _check(spec, cases, z):
    for v1, c, v2 in cases:
        u = v1**0.5 * z[0]
        l21 = c / v1**0.5
        v = l21 * z[0] + (v2 - l21 * l21) ** 0.5 * z[1]
        t, td = spec.dual(*(torch.tensor(a, dtype=torch.float64) for a in (v1, c, v2)), True)
        # One forward pass gives φ and, by autograd, φ' at the samples.
        with torch.enable_grad():
            uv = torch.stack([u, v]).requires_grad_(True)
            y = spec.fn(uv)
            dy = (torch.autograd.grad(y.sum(), uv)[0] if y.requires_grad
                  else torch.zeros_like(uv))
        m, se = _mean_and_se((y[0] * y[1]).detach())
        assert abs(t.item() - m) <= 5 * se + 1e-12, (v1, c, v2, t.item(), m, se)
        m, se = _mean_and_se(dy[0] * dy[1])
        assert abs(td.item() - m) <= 5 * se + 1e-12, (v1, c, v2, td.item(), m, se)


@pytest.mark.parametrize("i", range(len(ALL)), ids=[n for n, _ in ALL])
def test_dual_matches_monte_carlo(i, z):
    # One covariance per activation (alternating) keeps the default run short.
    _check(ALL[i][1], [CASES[i % 2]], z)


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(ALL)), ids=[n for n, _ in ALL])
def test_dual_matches_monte_carlo_all_cases(i, z):
    _check(ALL[i][1], CASES, z)
