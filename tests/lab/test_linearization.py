"""linearization in quick mode, and the pieces it relies on."""

from __future__ import annotations

import json
import math

import torch

from ntkit import layers as nl
from ntkit.lab.experiments.linearization import ACTIVATIONS, TwoLayerNet, limit_ntk
from ntkit.linearize import linearize

EXPERIMENT = "linearization"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["linearization_vs_width.png"]
    assert result.figures[0].stat().st_size > 5000
    runs = doc["tables"]["runs"]
    n = len(result.config["widths"]) * result.config["seeds"] * len(
        result.config["activations"])
    assert len(runs["width"]) == n
    assert len(result.claims) == 3 * len(result.config["activations"])


def test_claims(result):
    by = {c.name: c for c in result.claims}
    # β‖W − W0‖²/(2√m) is a deterministic inequality for ‖x‖ ≤ 1, |a_j| ≤ 1: it must hold
    smooth = by["tanh: sup|f − f_lin| ≤ β‖W−W0‖²/(2√m) at every width and seed"]
    assert smooth.holds and 0 < smooth.measured <= 1.0
    for act in result.config["activations"]:
        b = by[f"‖W_T − W_0‖_F slope in m ({act})"]
        assert abs(b.measured) < 0.3, b        # O(1) in m: loose band
        gap = by[f"{act}: sup-gap decays at least at the bound's rate m^("
                 + ("−1/2" if act == "tanh" else "−1/6") + ")"]
        assert gap.measured < -0.1, gap        # the gap does shrink with width
    rows = result.tables["runs"]
    assert all(s > 0 for s in rows["sup_lin_error"])
    assert max(rows["final_train_loss"]) < 0.5


def test_closed_form_linearization_matches_ntkit():
    """f_lin from ntkit.linearize equals the notes' closed form for the two-layer model."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    net = TwoLayerNet(5, 16, nl.Tanh(), g)
    lin = linearize(net)
    w0 = net.weight.detach().clone()
    w = w0 + 0.3 * torch.randn(w0.shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        next(iter(lin.parameters())).copy_(w)
        z0 = x @ w0.T
        sech2 = 1 - torch.tanh(z0) ** 2
        closed = (torch.tanh(z0) + sech2 * (x @ (w - w0).T)) @ net.a / math.sqrt(16)
        assert torch.allclose(lin(x), closed, atol=1e-12)
        net.weight.copy_(w)
        gap = (net(x) - lin(x)).abs().max()
    beta = ACTIVATIONS["tanh"][1]
    assert gap <= beta * float((w - w0).norm()) ** 2 / (2 * math.sqrt(16))


def test_limit_ntk_matches_wide_empirical():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    act = nl.ReLU()
    net = TwoLayerNet(4, 20000, act, g)
    z = x @ net.weight.detach().T
    emp = (x @ x.T) * ((z > 0).double() @ (z > 0).double().T) / 20000
    assert torch.allclose(emp, limit_ntk(act, x), atol=0.03)
