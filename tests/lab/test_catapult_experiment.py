"""catapult in quick mode: outputs, the exactness identity, robust phase consequences."""

from __future__ import annotations

import json

import pytest

EXPERIMENT = "catapult"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert set(doc["figures"]) == {"exactness.png", "phases.png"}
    for f in result.figures:
        assert f.stat().st_size > 5000
    assert {"uv_sweep", "mlp_sweep"} <= set(doc["tables"])
    assert len(result.claims) == 7


def test_exactness_is_an_identity(result):
    c = result.claims[0]
    assert c.holds and c.measured < 1e-12, c      # an algebraic identity: round-off only


def test_phases(result):
    uv = result.tables["uv_sweep"]
    for c, ratio, div in zip(uv["eta_lam0"], uv["lam_ratio"], uv["diverged"], strict=True):
        if c < 2:
            assert abs(ratio - 1) < 0.05 and not div
        elif c < 4:
            assert not div and ratio < 2 / c           # catapulted below 2/η
        else:
            assert div                                  # above 4/λ₀ the uv model diverges
    mlp = result.tables["mlp_sweep"]
    assert not any(d for c, d in zip(mlp["eta_lam0"], mlp["diverged"], strict=True) if c < 4)
    assert mlp["diverged"][-1]                           # η·λ₀ = 14 diverges


def test_mlp_threshold_is_reported_against_the_measured_lambda0(result):
    mlp = result.tables["mlp_sweep"]
    first_div = min(c for c, d in zip(mlp["eta_lam0"], mlp["diverged"], strict=True) if d)
    assert result.config["mlp_eta_max_over_4_lambda0"] == first_div / 4.0
    assert result.config["mlp_eta_max"] * result.config["mlp_lambda0"] == \
        pytest.approx(first_div, rel=1e-12)
    assert not any("≈ 12" in c.name or c.predicted == 12.0 for c in result.claims)

