"""Exact ReLU gradient moments (path counting) against closed forms and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkit import layers as nl
from ntkit.empirical import empirical_ntk
from ntkit.theory.path_counting import relu_gradient_moments


def test_closed_forms():
    r = relu_gradient_moments([10, 4, 20, 1])
    assert r["second_moment"] == pytest.approx(0.2)
    assert r["fourth_moment"] == pytest.approx((1 + 5 / 4) * (1 + 5 / 20))
    assert r["beta"] == pytest.approx(5 / 4 + 5 / 20)
    assert r["fourth_moment_scalar"] == pytest.approx(12 / 100 * (1 + 5 / 4) * (1 + 5 / 20))
    assert r["p_dead"] == pytest.approx(1 - (1 - 2**-4) * (1 - 2**-20))
    assert r["ntk_diagonal"] == pytest.approx(2 * 3 / 10)
    # Reference values of the issue: n = 50, L = 10 hidden layers: β = 1, exact log moments
    # −0.517, 1.082 (MC reference −0.51, 1.07); n = 30, L = 30: −2.652, 5.73 (ref −2.65, 5.6).
    r = relu_gradient_moments([10] + [50] * 10 + [1])
    assert r["beta"] == pytest.approx(1.0)
    assert r["log_mean"] == pytest.approx(-0.51, abs=0.01)
    assert r["log_var"] == pytest.approx(1.07, abs=0.02)
    r = relu_gradient_moments([10] + [30] * 30 + [1])
    assert r["log_mean"] == pytest.approx(-2.65, abs=0.01)
    assert r["log_var"] == pytest.approx(5.73, abs=0.01)
    # Large widths: ln Y → N(−β/2, β).
    r = relu_gradient_moments([10] + [2000] * 20 + [1])
    assert r["log_mean"] == pytest.approx(-r["beta"] / 2, rel=0.01)
    assert r["log_var"] == pytest.approx(r["beta"], rel=0.01)


def _he_nets(widths, n_nets, gen):
    return [torch.randn(n_nets, b, a, generator=gen, dtype=torch.float64) * math.sqrt(2 / a)
            for a, b in zip(widths[:-1], widths[1:], strict=True)]


def test_monte_carlo_uneven_widths():
    # Tiny uneven widths (dead layers happen): every exact statement still holds.
    widths, n = [4, 3, 7, 2, 1], 100000
    gen = torch.Generator().manual_seed(0)
    ws = _he_nets(widths, n, gen)
    x = torch.randn(n, widths[0], 1, generator=gen, dtype=torch.float64)
    u = torch.randn(n, widths[0], 1, generator=gen, dtype=torch.float64)
    h, t, masks = x, u, []
    for w in ws[:-1]:
        z = w @ h
        m = (z > 0).double()
        masks.append(m)
        h, t = z * m, (w @ t) * m
    y = widths[0] / widths[-2] * (t**2).sum((1, 2)) / (u**2).sum((1, 2))
    g = ws[-1].transpose(1, 2)                      # backprop of the scalar output
    for w, m in zip(ws[-2::-1], masks[::-1], strict=True):
        g = w.transpose(1, 2) @ (g * m)
    grad2 = (g**2).squeeze(-1)                      # (n, n_0): (∂z/∂x_p)²
    r = relu_gradient_moments(widths)
    per_net = grad2.mean(1)
    assert abs(per_net.mean() - r["second_moment"]) < 4 * per_net.std() / math.sqrt(n)
    y2 = y**2
    assert abs(y2.mean() - r["fourth_moment"]) < 4 * y2.std() / math.sqrt(n)
    alive = y > 0
    assert abs((~alive).double().mean() - r["p_dead"]) < 4 * math.sqrt(r["p_dead"] / n)
    ly = y[alive].log()
    assert abs(ly.mean() - r["log_mean"]) < 4 * ly.std() / math.sqrt(ly.numel())


def _ntk_diag(model, x):
    model.zero_grad()
    model(x).sum().backward()
    return sum(float(p.grad.pow(2).sum()) for p in model.parameters())


def test_ntk_diagonal_on_built_nets():
    # E Θ(x, x) = 2·(weight layers)·‖x‖²/n_0 on ntkit-built nets (NTK parameterization,
    # w_std = √2, no biases); Θ by autograd, checked once against ntkit.empirical_ntk.
    widths, n_nets = [6, 8, 5, 1], 600
    net = nl.serial(nl.Dense(8, w_std=math.sqrt(2), b_std=None), nl.ReLU(),
                    nl.Dense(5, w_std=math.sqrt(2), b_std=None), nl.ReLU(),
                    nl.Dense(1, w_std=math.sqrt(2), b_std=None))
    x = torch.randn(1, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    m0 = net.build(6, seed=0)
    assert _ntk_diag(m0, x) == pytest.approx(float(empirical_ntk(m0, x).reshape(-1)[0]),
                                             rel=1e-12)
    vals = np.array([_ntk_diag(net.build(6, seed=s), x) for s in range(n_nets)])
    pred = relu_gradient_moments(widths)["ntk_diagonal"] * float(x.pow(2).sum())
    assert abs(vals.mean() - pred) < 4 * vals.std() / math.sqrt(n_nets)


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        relu_gradient_moments([5])
    with pytest.raises(TypeError):
        relu_gradient_moments("abc")
    with pytest.raises(ValueError, match=">= 1"):
        relu_gradient_moments([5, 0, 1])
