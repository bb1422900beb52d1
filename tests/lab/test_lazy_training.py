"""lazy_training in quick mode: claims, figures and JSON exist; loose sanity bands."""

from __future__ import annotations

import json

EXPERIMENT = "lazy_training"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert set(doc["figures"]) == {"distances_vs_alpha.png", "feature_learning_vs_alpha.png",
                                   "rescaled_paths.png"}
    for f in result.figures:
        assert f.stat().st_size > 5000
    sweep = doc["tables"]["alpha_sweep"]
    assert len(sweep["alpha"]) == len(result.config["alpha_exponents"])
    assert "trajectories" in doc["tables"]


def test_claims(result):
    by = {c.name: c for c in result.claims}
    # an identity (two routes to J0 J0ᵀ), so it must hold
    assert by["J0·J0ᵀ equals ntkit.empirical.empirical_ntk (consistency)"].holds
    d = by["sup_t ‖θ_α(t) − θ0‖ slope in α (eq. 1: O(1/α))"]
    assert -1.4 < d.measured < -0.6, d
    d2 = by["sup_t ‖θ_α(t) − θ_lin(t)‖ slope in α (eq. 2: O(1/α²))"]
    assert -2.6 < d2.measured < -1.4, d2
    sweep = result.tables["alpha_sweep"]
    # the kernel moves much more at the smallest α than at the largest (feature learning)
    assert sweep["ntk_rel_change"][0] > 10 * sweep["ntk_rel_change"][-1]
    assert len(result.claims) == 7
