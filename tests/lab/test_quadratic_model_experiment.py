"""quadratic_model in quick mode: outputs, the Taylor-model identities, robust scalings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import ntkit.lab as lab
from ntkit.lab.experiments.quadratic_model import _jacobian, _TwoLayer
from ntkit.linearize import taylor_expand


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return lab.run("quadratic_model", quick=True, seed=0, out=out, progress=False, threads=1)


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["taylor_models.png"]
    assert result.figures[0].stat().st_size > 5000
    assert len(result.claims) == 7
    runs = doc["tables"]["runs"]
    assert len(runs["width"]) == len(result.config["widths"]) * result.config["seeds"]


def test_taylor_identities_are_round_off(result):
    c = result.claims[0]
    assert c.holds and c.measured < 1e-12, c


def test_errors_shrink_with_width_and_quadratic_is_closer(result):
    bw = result.tables["by_width"]
    e1, e2, dn = (np.array(bw[k]) for k in ("err_1", "err_2", "ntk_change_net"))
    assert np.all(np.diff(e1) < 0) and np.all(np.diff(dn) < 0)
    assert np.all(e2 < e1)
    # far from the seed's worst-case m^-1/2 and close to the O(1/m) of the power counting
    slopes = dict(zip(result.tables["slopes"]["quantity"], result.tables["slopes"]["slope"],
                      strict=True))
    assert -1.4 < slopes["err_1"] < -0.7
    assert -1.4 < slopes["ntk_change_net"] < -0.6


def test_quadratic_model_of_a_small_tanh_net_matches_a_third_order_finite_difference():
    """f(θ0 + εδ) − f_quad(θ0 + εδ) = O(ε³): halving ε divides it by ≈ 8 (while the linear
    model's error is O(ε²) and divides by ≈ 4) — an independent check of the degree."""
    g = torch.Generator().manual_seed(3)
    net = _TwoLayer(5, 7, g)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64)
    delta = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in net.parameters()]

    def errors(eps: float) -> tuple[float, float]:
        lin, quad = taylor_expand(net, 1), taylor_expand(net, 2)
        shifted = {}
        with torch.no_grad():
            for (name, p), dl in zip(net.named_parameters(), delta, strict=True):
                shifted[name] = p + eps * dl
                lin.params[name].add_(eps * dl)
                quad.params[name].add_(eps * dl)
            f = torch.func.functional_call(net, shifted, (x,))
            return float((f - lin(x)).norm()), float((f - quad(x)).norm())

    (l1, q1), (l2, q2) = errors(0.02), errors(0.01)
    assert math.log2(l1 / l2) == pytest.approx(2.0, abs=0.05)
    assert math.log2(q1 / q2) == pytest.approx(3.0, abs=0.05)


def test_jacobian_helper_matches_autograd():
    g = torch.Generator().manual_seed(4)
    net = _TwoLayer(4, 6, g)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    rows = []
    for i in range(3):
        gr = torch.autograd.grad(net(x)[i], list(net.parameters()))
        rows.append(torch.cat([t.reshape(-1) for t in gr]))
    torch.testing.assert_close(_jacobian(net, x), torch.stack(rows), rtol=1e-12, atol=1e-14)
