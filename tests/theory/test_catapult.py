"""The catapult recursion (Lewkowycz et al. 2020) against exact gradient descent on a real
ReLU net, and its phases."""

from __future__ import annotations

import math

import pytest
import torch

from ntkit.theory.catapult import (
    catapult_step,
    catapult_trajectory,
    phase,
    phase_boundaries,
    relu_net_state,
)


def _gd_relu(m=2048, d=5, eta_factor=1.5, steps=8, seed=0, y=0.4):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(m, d, generator=g, dtype=torch.float64)
    v = torch.randn(m, generator=g, dtype=torch.float64)
    x = torch.randn(d, generator=g, dtype=torch.float64)
    # keep every pre-activation at least 0.5 away from the kink, so a few steps flip none
    a = u @ x / math.sqrt(d)
    u = u + ((torch.sign(a) * 0.5 - a) * (a.abs() < 0.5))[:, None] * x * math.sqrt(d) / (x @ x)
    z0, lam0, kappa, act0 = relu_net_state(u, v, x)
    eta = eta_factor / lam0
    traj = [(z0, lam0)]
    for _ in range(steps):
        uu, vv = u.clone().requires_grad_(True), v.clone().requires_grad_(True)
        z = (vv * torch.relu(uu @ x / math.sqrt(d))).sum() / math.sqrt(m)
        gu, gv = torch.autograd.grad(0.5 * (z - y) ** 2, (uu, vv))
        u, v = u - eta * gu, v - eta * gv
        zt, lt, _, act = relu_net_state(u, v, x)
        if not torch.equal(act, act0):            # a ReLU flipped: the recursion no longer applies
            break
        traj.append((zt, lt))
    return traj, eta, kappa, y


def test_relu_state_ntk_matches_autograd():
    g = torch.Generator().manual_seed(1)
    u = torch.randn(30, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    v = torch.randn(30, generator=g, dtype=torch.float64).requires_grad_(True)
    x = torch.randn(4, generator=g, dtype=torch.float64)
    z = ((v * torch.relu(u @ x / 2.0)).sum() / math.sqrt(30))
    gu, gv = torch.autograd.grad(z, (u, v))
    z2, lam, kappa, _ = relu_net_state(u.detach(), v.detach(), x)
    assert z2 == pytest.approx(float(z.detach()), rel=1e-14)
    assert lam == pytest.approx(float((gu ** 2).sum() + (gv ** 2).sum()), rel=1e-13)
    assert kappa == pytest.approx(float(x @ x) / 4 / 30, rel=1e-15)


@pytest.mark.parametrize("eta_factor", [0.7, 2.5, 3.5])
def test_recursion_equals_gradient_descent(eta_factor):
    traj, eta, kappa, y = _gd_relu(eta_factor=eta_factor)
    assert len(traj) >= 4                         # at least 3 steps before any sign change
    r, lam = traj[0][0] - y, traj[0][1]
    for z_true, lam_true in traj[1:]:
        r, lam = catapult_step(r, lam, target=y, eta=eta, kappa=kappa)
        assert r + y == pytest.approx(z_true, rel=1e-10, abs=1e-12)
        assert lam == pytest.approx(lam_true, rel=1e-10)


def test_phases_of_the_uv_model():
    m, lam0, z0 = 10_000, 1.0, 0.5
    kappa = 1.0 / m
    lo, hi = phase_boundaries(lam0)
    assert (lo, hi) == (2.0, 4.0)
    lazy = catapult_trajectory(z0, lam0, target=0.0, eta=1.5, kappa=kappa, steps=300)
    assert abs(float(lazy.ntk[-1]) - lam0) < 0.01 and float(lazy.loss[-1]) < 1e-12
    cat = catapult_trajectory(z0, lam0, target=0.0, eta=3.0, kappa=kappa, steps=600)
    assert not cat.diverged
    assert float(cat.loss.max()) > 100 * float(cat.loss[0])       # the loss spikes ...
    assert float(cat.ntk[-1]) < 2 / 3.0                           # ... and λ ends below 2/η
    assert float(cat.loss[-1]) < 1e-10
    div = catapult_trajectory(z0, lam0, target=0.0, eta=4.3, kappa=kappa, steps=2000)
    assert div.diverged
    assert [phase(e, lam0) for e in (1.0, 3.0, 5.0)] == ["lazy", "catapult", "divergent"]


def test_errors():
    with pytest.raises(ValueError, match="finite"):
        catapult_step(float("nan"), 1.0, target=0.0, eta=1.0, kappa=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        catapult_step(0.1, 1.0, target=0.0, eta=-1.0, kappa=0.1)
    with pytest.raises(TypeError, match="real number"):
        catapult_step("a", 1.0, target=0.0, eta=1.0, kappa=0.1)
    with pytest.raises(ValueError, match="> 0"):
        phase_boundaries(0.0)
    with pytest.raises(ValueError, match="steps"):
        catapult_trajectory(0.1, 1.0, target=0.0, eta=1.0, kappa=0.1, steps=-1)
    with pytest.raises(ValueError, match="expected u"):
        relu_net_state(torch.zeros(3, 2), torch.zeros(4), torch.zeros(2))
