"""implicit_bias: Q_α, the diagonal-net limit (KKT, a second solver, both limits), max margin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize

from ntkit.theory.implicit_bias import (
    diagonal_net_limit,
    max_margin_direction,
    q_alpha,
    q_function,
)


def _problem(n=5, d=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    beta = np.zeros(d)
    beta[:2] = [1.5, -0.7]
    return x, x @ beta


def test_q_function_values_and_derivatives():
    assert float(q_function(np.array(0.0))) == 0.0
    z = np.linspace(-6, 6, 25)
    assert np.all(q_function(z).numpy() >= 0)            # convex with minimum q(0) = 0
    # q'(z) = arcsinh(z/2): compare with a central difference (error O(h²) ≈ 1e-10)
    h = 1e-5
    dq = (q_function(z + h).numpy() - q_function(z - h).numpy()) / (2 * h)
    assert np.allclose(dq, np.arcsinh(z / 2), atol=1e-8)
    # α → ∞: Q_α ≈ ‖β‖²/(4α²);  α → 0: Q_α ≈ ‖β‖₁ log(1/α²) to leading order
    beta = np.array([0.3, -1.2, 2.0])
    assert float(q_alpha(beta, 1e3)) == pytest.approx(beta @ beta / (4 * 1e6), rel=1e-6)
    small = float(q_alpha(beta, 1e-6))
    assert small / np.log(1 / 1e-12) == pytest.approx(np.abs(beta).sum(), rel=0.1)
    assert q_alpha(np.stack([beta, beta]), 1.0).shape == (2,)
    assert float(q_alpha(torch.tensor(beta), 1.0)) == pytest.approx(float(q_alpha(beta, 1.0)))


@pytest.mark.parametrize("alpha", [0.05, 1.0, 20.0])
def test_diagonal_net_limit_kkt_and_second_solver(alpha):
    x, y = _problem()
    beta = diagonal_net_limit(x, y, alpha).numpy()
    assert np.linalg.norm(x @ beta - y) <= 1e-8 * np.linalg.norm(y)
    # KKT: ∇Q_α(β) = arcsinh(β/(2α²)) lies in the row space of X
    g = np.arcsinh(beta / (2 * alpha ** 2))
    resid = g - x.T @ np.linalg.lstsq(x.T, g, rcond=None)[0]
    assert np.linalg.norm(resid) <= 1e-7 * max(np.linalg.norm(g), 1.0)
    # an independent solver (SLSQP on the primal) reaches no smaller objective
    res = minimize(lambda b: float(q_alpha(b, alpha)), np.linalg.pinv(x) @ y, method="SLSQP",
                   constraints=[{"type": "eq", "fun": lambda b: x @ b - y}],
                   options={"ftol": 1e-14, "maxiter": 500})
    assert float(q_alpha(beta, alpha)) <= float(q_alpha(res.x, alpha)) + 1e-8 * abs(res.fun)
    assert np.linalg.norm(beta - res.x) <= 1e-3 * np.linalg.norm(beta)


def test_diagonal_net_limits_l1_and_l2():
    x, y = _problem(seed=1)
    d = x.shape[1]
    lp = linprog(np.ones(2 * d), A_eq=np.hstack([x, -x]), b_eq=y, bounds=[(0, None)] * (2 * d),
                 method="highs")
    l1 = lp.x[:d] - lp.x[d:]
    l2 = np.linalg.pinv(x) @ y
    b_small = diagonal_net_limit(x, y, 1e-12).numpy()
    b_big = diagonal_net_limit(x, y, 1e3).numpy()
    assert np.linalg.norm(b_small - l1) < 1e-4 * np.linalg.norm(l1)   # measured 5e-6
    assert np.linalg.norm(b_big - l2) < 1e-4 * np.linalg.norm(l2)


def test_max_margin_direction_against_kkt_and_brute_force():
    rng = np.random.default_rng(3)
    w_true = np.array([1.0, -2.0, 0.5])
    x = rng.standard_normal((40, 3))
    y = np.sign(x @ w_true)
    x = x + 0.3 * y[:, None] * w_true / np.linalg.norm(w_true)    # a clear margin
    w, margin = max_margin_direction(x, y, return_margin=True)
    w = w.numpy()
    assert abs(np.linalg.norm(w) - 1) < 1e-12
    margins = y * (x @ w)
    assert margins.min() == pytest.approx(margin, rel=1e-9)
    # brute force: no direction on a fine random sample of the sphere has a larger margin
    dirs = rng.standard_normal((200000, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    best = ((y[:, None] * (x @ dirs.T)).min(0)).max()
    assert best <= margin + 1e-12
    assert best >= margin - 0.05        # and the sample gets close to it
    # labels in {0, 1} and torch inputs work the same way
    w2 = max_margin_direction(torch.tensor(x), torch.tensor((y > 0).astype(float)))
    assert np.allclose(w2.numpy(), w, atol=1e-9)


def test_errors():
    x, y = _problem()
    with pytest.raises(ValueError, match="alpha"):
        diagonal_net_limit(x, y, -1.0)
    with pytest.raises(ValueError, match="rows"):
        diagonal_net_limit(x, y[:-1], 1.0)
    with pytest.raises(ValueError, match="full row rank"):
        diagonal_net_limit(np.vstack([x, x[:1]]), np.append(y, 0.0), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        q_alpha(np.array([np.nan]), 1.0)
    with pytest.raises(TypeError, match="numeric"):
        q_alpha(np.array(["a"]), 1.0)
    with pytest.raises(ValueError, match="separable"):
        max_margin_direction(np.array([[1.0], [1.0]]), np.array([1, -1]))
    with pytest.raises(ValueError, match="two values"):
        max_margin_direction(np.eye(3), np.array([0, 1, 2]))


@pytest.mark.parametrize("alpha", [10.0, 100.0])
def test_diagonal_net_limit_converges_at_large_alpha(alpha):
    # The lab's full-mode problem size (n = 20, d = 80). The dual D(ν) is ~2α²d there, so
    # a line search on D itself stalled at ‖Xβ − y‖ ≈ 1e-6 for α = 10 (it now uses
    # D's change, formed without cancellation).
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 80))
    beta0 = np.zeros(80)
    beta0[:4] = rng.standard_normal(4)
    y = x @ beta0
    beta = diagonal_net_limit(x, y, alpha).numpy()
    assert np.linalg.norm(x @ beta - y) <= 1e-10 * np.linalg.norm(y)
    # α → ∞: Q_α(β) = ‖β‖²/(4α²) − O(β⁴/α⁶), so the limit tends to the min-ℓ2 interpolant
    # with relative corrections of order (‖β‖∞/α²)².
    l2 = np.linalg.lstsq(x, y, rcond=None)[0]
    scale = (np.abs(l2).max() / alpha**2) ** 2
    assert np.linalg.norm(beta - l2) / np.linalg.norm(l2) <= 10 * scale
