"""quadratic_model in quick mode: outputs, the Taylor-model identities, robust scalings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ntkit.lab.experiments.quadratic_model import _jacobian, _TwoLayer
from ntkit.linearize import taylor_expand

# The quick run (tests taking `result`) is marked slow to keep the default suite
# under its time limit; the library code it exercises is tested directly in
# tests/test_linearize.py and this file's helper tests.
EXPERIMENT = "quadratic_model"


@pytest.mark.slow
def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["taylor_models.png", "catapult.png", "relu_taylor_models.png"]
    assert all(f.stat().st_size > 5000 for f in result.figures)
    assert len(result.claims) == 15
    assert sum(c.name.startswith("ReLU") for c in result.claims) == 5
    runs = doc["tables"]["runs"]
    assert len(runs["width"]) == len(result.config["widths"]) * result.config["seeds"]
    relu = doc["tables"]["relu_runs"]
    assert len(relu["width"]) == len(result.config["relu_widths"]) * result.config["relu_seeds"]
    assert result.config["activations"] == ["tanh", "relu"]


@pytest.mark.slow
def test_taylor_identities_are_round_off(result):
    c = result.claims[0]
    assert c.holds and c.measured < 1e-12, c


@pytest.mark.slow
def test_ntk_rate_at_init_is_exact(result):
    c = next(c for c in result.claims if "dΘ/dt at t = 0" in c.name)
    assert c.holds and c.measured < 1e-12, c


@pytest.mark.slow
def test_catapult_linear_diverges_quadratic_and_net_converge(result):
    cat = result.tables["catapult"]
    row = {m: {k: v[i] for k, v in cat.items()} for i, m in enumerate(cat["model"])}
    steps = result.config["catapult_steps"]
    assert row["linear"]["steps_run"] < steps and row["linear"]["final_loss"] > 1e10
    for m in ("quadratic", "net"):
        assert row[m]["steps_run"] == steps
        assert row[m]["final_loss"] < row[m]["initial_loss"]
    # η λ₀ = 3 by construction
    assert result.config["catapult_eta"] * result.config["catapult_lambda0"] == \
        pytest.approx(3.0, rel=1e-12)


@pytest.mark.slow
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
    assert slopes["err_3"] < slopes["err_1"]          # the cubic model falls faster


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


@pytest.mark.slow
def test_relu_arm_frozen_pattern_identity_and_flip_statistics(result):
    ident = next(c for c in result.claims if "frozen at θ0" in c.name)
    assert ident.holds and ident.measured < 1e-12, ident
    bw = {k: np.array(v) for k, v in result.tables["relu_by_width"].items()}
    # fewer sign flips at larger width, but never none (else the quadratic model is exact)
    assert np.all(np.diff(bw["flip_fraction"]) < 0) and np.all(bw["flip_fraction"] > 0)
    assert np.all(bw["static_err_2"] > 0) and np.all(bw["err_2"] > 0)
    assert np.all((bw["kink_cancel_ratio"] >= 0) & (bw["kink_cancel_ratio"] <= 1))
    # the quadratic model's own NTK change is the smooth O(1/m) part: it falls with m
    assert np.all(np.diff(bw["ntk_change_2"]) < 0)
    # the table is the seed mean of the runs
    runs = result.tables["relu_runs"]
    m0 = result.config["relu_widths"][0]
    first = [e for w, e in zip(runs["width"], runs["err_1"], strict=True) if w == m0]
    assert bw["err_1"][0] == pytest.approx(np.mean(first), rel=1e-12)


def _relu_net_and_shift(scale: float):
    g = torch.Generator().manual_seed(5)
    net = _TwoLayer(6, 40, g, activation="relu")
    x = torch.randn(8, 6, generator=g, dtype=torch.float64)
    delta = {k: scale * torch.randn(p.shape, generator=g, dtype=torch.float64)
             for k, p in net.named_parameters()}
    return net, x, delta


def _shifted(model, delta):
    with torch.no_grad():
        for k, dl in delta.items():
            model.params[k].add_(dl)
    return model


def test_relu_quadratic_model_is_the_frozen_pattern_net_and_equals_the_cubic():
    """Independent of the experiment's code path: the autodiff Taylor model of degree 2 of
    a ReLU net equals Σ v·1[p0>0]·p/√m (written out by hand) at a displacement large
    enough to flip many signs, and the degree-3 model adds nothing (relu has no second or
    third derivative off the kinks)."""
    net, x, delta = _relu_net_and_shift(0.7)
    p0 = net.preactivations(x).detach()
    quad, cubic = _shifted(taylor_expand(net, 2), delta), _shifted(taylor_expand(net, 3), delta)
    u, v = net.U.detach() + delta["U"], net.v.detach() + delta["v"]
    p = x @ u.T / math.sqrt(x.shape[1])
    frozen = ((p0 > 0).double() * p) @ v / math.sqrt(v.shape[0])
    true = torch.relu(p) @ v / math.sqrt(v.shape[0])
    assert ((p > 0) != (p0 > 0)).any()                      # the check is not vacuous
    with torch.no_grad():
        torch.testing.assert_close(quad(x), frozen, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(cubic(x), quad(x), rtol=1e-12, atol=1e-12)
        assert (quad(x) - true).abs().max() > 1e-3           # and it is not the net


def test_relu_quadratic_model_is_exact_without_sign_flips():
    net, x, delta = _relu_net_and_shift(1e-4)
    p0 = net.preactivations(x).detach()
    u = net.U.detach() + delta["U"]
    assert torch.equal(x @ u.T > 0, p0 > 0)
    quad, lin = _shifted(taylor_expand(net, 2), delta), _shifted(taylor_expand(net, 1), delta)
    with torch.no_grad():
        f = torch.func.functional_call(net, {k: p.detach() + delta[k] for k, p in
                                             net.named_parameters()}, (x,))
        torch.testing.assert_close(quad(x), f, rtol=1e-13, atol=1e-14)
        assert (lin(x) - f).abs().max() > 1e-10                # the bilinear term is missing


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="activation"):
        _TwoLayer(3, 4, torch.Generator().manual_seed(0), activation="gelu")
