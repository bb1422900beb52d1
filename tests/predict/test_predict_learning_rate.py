"""max_learning_rate: discrete gradient descent converges below it and diverges above."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ntkit.predict as P


def _linear_model_gd(x, y, lr, steps, momentum=0.0):
    """Full-batch (heavy-ball) GD of f(x) = x·w / √d on 0.5·mean((f - y)²).

    Its NTK is x xᵀ / d exactly (the model is linear), so max_learning_rate applies
    exactly. The gradient is written out (numpy): autograd on tensors this small costs
    far more than the arithmetic. Returns the final loss (inf once it overflows).
    """
    d = x.shape[1]
    w = np.zeros((d, y.shape[1]))
    v = np.zeros_like(w)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            g = x.T @ (x @ w / d ** 0.5 - y) / (d ** 0.5 * y.size)
            v = momentum * v - lr * g
            w = w + v
            if not np.isfinite(w).all():
                return np.inf
        return float(0.5 * ((x @ w / d ** 0.5 - y) ** 2).mean())


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_converges_below_and_diverges_above(momentum):
    g = torch.Generator().manual_seed(3)
    n, d, k = 12, 40, 3
    x = torch.randn(n, d, generator=g, dtype=torch.float64).numpy()
    y = torch.randn(n, k, generator=g, dtype=torch.float64).numpy()
    lr = P.max_learning_rate(x @ x.T / d, y_train_size=y.size, momentum=momentum)
    loss0 = float(0.5 * (y ** 2).mean())
    steps = 4000
    assert _linear_model_gd(x, y, 0.5 * lr, steps, momentum) < 1e-12 * loss0
    assert _linear_model_gd(x, y, 0.95 * lr, steps, momentum) < 1e-6 * loss0
    assert _linear_model_gd(x, y, 1.05 * lr, steps, momentum) > 1e6 * loss0
    assert _linear_model_gd(x, y, 3.0 * lr, 300, momentum) > 1e20 * loss0


def test_formula_and_default_size():
    k = torch.diag(torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64))
    assert P.max_learning_rate(k) == pytest.approx(2 * 3 / 4.0, rel=1e-11)
    assert P.max_learning_rate(k, y_train_size=6, momentum=0.5) == pytest.approx(
        2 * 1.5 * 6 / 4.0, rel=1e-11)
