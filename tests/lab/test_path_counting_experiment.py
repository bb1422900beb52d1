"""path_counting in quick mode, and its batched nets against autograd on ntkit-built nets."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ntkit import layers as nl
from ntkit.lab.experiments.path_counting import PROFILES, forward_backward, he_weights

EXPERIMENT = "path_counting"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["path_counting.png"]
    assert len(result.claims) == 2 * len(PROFILES)
    assert all(math.isfinite(c.measured) for c in result.claims)


def test_measurements(result):
    # Robust consequence: each MC mean within 25% of its exact prediction (the claims use
    # 99% CIs, which fail 1% of the time by design).
    t = result.tables["path_counting"]
    for mc, pred in zip(t["E_grad2_mc"] + t["E_ntk_over_x2_mc"],
                        t["E_grad2_pred"] + t["E_ntk_over_x2_pred"], strict=True):
        assert abs(mc / pred - 1) < 0.25


def test_batched_nets_match_autograd_on_built_module():
    widths = [5, 7, 3, 1]
    gen = torch.Generator().manual_seed(0)
    ws = he_weights(widths, 2, gen)
    x = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    r = forward_backward(ws, x)
    net = nl.serial(nl.Dense(7, w_std=math.sqrt(2), b_std=None), nl.ReLU(),
                    nl.Dense(3, w_std=math.sqrt(2), b_std=None), nl.ReLU(),
                    nl.Dense(1, w_std=math.sqrt(2), b_std=None))
    for i in range(2):
        model = net.build(5, seed=0)
        dense = [m for m in model.modules() if type(m).__name__ == "DenseModule"]
        with torch.no_grad():
            for d, w in zip(dense, ws, strict=True):
                d.weight.copy_(w[i] * math.sqrt(d.in_features / 2.0))   # Ŵ = W/√(2/n)
        xi = x[i:i + 1].clone().requires_grad_(True)
        out = model(xi).sum()
        grads = torch.autograd.grad(out, [xi, *model.parameters()])
        assert out.item() == pytest.approx(float(r["out"][i]), rel=1e-12)
        assert torch.allclose(grads[0][0], r["grad_x"][i], rtol=1e-12, atol=1e-14)
        ntk = sum(float(g.pow(2).sum()) for g in grads[1:])
        assert ntk == pytest.approx(float(r["ntk"][i]), rel=1e-12)
