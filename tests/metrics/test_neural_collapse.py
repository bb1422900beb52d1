"""neural_collapse: exact simplex ETF, a closed-form NC1, brute-force loops, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ntkit.metrics import neural_collapse


def _brute(h, y, w, b):
    """Papyan et al.'s definitions with explicit loops (independent of the vectorized code)."""
    classes = sorted(set(y.tolist()))
    c, n = len(classes), len(y)
    mu_g = sum(h[i] for i in range(n)) / n
    mu = {k: np.mean([h[i] for i in range(n) if y[i] == k], axis=0) for k in classes}
    sw = sum(np.outer(h[i] - mu[y[i]], h[i] - mu[y[i]]) for i in range(n)) / n
    sb = sum(np.outer(mu[k] - mu_g, mu[k] - mu_g) for k in classes) / c
    nc1 = np.trace(sw @ np.linalg.pinv(sb)) / c
    m = np.stack([mu[k] - mu_g for k in classes])
    nc3 = np.sum((w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2)
    mism = 0
    for i in range(n):
        net = int(np.argmax(w @ h[i] + b))
        ncc = int(np.argmin([np.linalg.norm(h[i] - mu[k]) for k in classes]))
        mism += net != ncc
    return nc1, nc3, mism / n


def test_simplex_etf_is_fully_collapsed():
    c = 5
    etf = np.eye(c) - 1.0 / c                 # centered simplex, rows = class means
    h = np.repeat(etf, 4, axis=0)
    y = np.repeat(np.arange(c), 4)
    out = neural_collapse(h, y, classifier=2.0 * etf)
    for key in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc2_maxangle", "nc3", "nc4",
                "nc2_equinorm_w", "nc2_equiangular_w", "nc2_maxangle_w"):
        assert abs(out[key]) < 1e-12, key


def test_nc1_closed_form_two_classes():
    # 1-D, means ±1, within-class deviations exactly ±s: Σ_W = s², Σ_B = 1 → NC1 = s²/2
    s = 0.3
    h = np.array([[1 + s], [1 - s], [-1 + s], [-1 - s]])
    y = np.array([0, 0, 1, 1])
    assert neural_collapse(h, y)["nc1"] == pytest.approx(s ** 2 / 2, rel=1e-14)


def test_matches_brute_force_on_random_features():
    rng = np.random.default_rng(0)
    c, p, n = 4, 6, 37
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)
    h = rng.standard_normal((n, p)) + 2 * rng.standard_normal((c, p))[y]
    lin = nn.Linear(p, c).double()
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    out = neural_collapse(torch.tensor(h), torch.tensor(y), classifier=lin)
    nc1, nc3, nc4 = _brute(h, y, w, b)
    assert out["nc1"] == pytest.approx(nc1, rel=1e-10)
    assert out["nc3"] == pytest.approx(nc3, rel=1e-10)
    assert out["nc4"] == pytest.approx(nc4, abs=0)
    assert neural_collapse(h, y, classifier=(w, b)) == out
    assert np.isnan(neural_collapse(h, y)["nc3"])


def test_errors():
    h, y = np.array([[1.0, 0], [1, 0], [-1, 0], [-1, 0]]), np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="rows"):
        neural_collapse(h, y[:3])
    with pytest.raises(ValueError, match="2 classes"):
        neural_collapse(h, np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="NaN"):
        neural_collapse(np.full((4, 2), np.nan), y)
    with pytest.raises(ValueError, match="2-D"):
        neural_collapse(np.zeros(4), y)
    with pytest.raises(TypeError, match="integers"):
        neural_collapse(h, np.array([0.5, 0, 1, 1]))
    with pytest.raises(ValueError, match="classifier"):
        neural_collapse(h, y, classifier=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="spread"):
        neural_collapse(np.zeros((4, 2)), y)
