"""implicit_bias (lab) in quick mode: outputs and robust consequences."""

from __future__ import annotations

import json

import numpy as np

EXPERIMENT = "implicit_bias"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["implicit_bias.png"]
    assert result.figures[0].stat().st_size > 5000
    assert len(result.claims) == 6
    assert {"diagonal_net", "logistic"} <= set(doc["tables"])


def test_diagonal_net_and_logistic(result):
    dn = result.tables["diagonal_net"]
    assert max(dn["residual"]) < 1e-8                       # every run interpolates
    assert max(dn["rel_err_to_limit"]) < 2e-3               # GD ≈ argmin Q_α
    assert dn["rel_dist_l2"][-1] < dn["rel_dist_l2"][0]     # larger α: closer to min-ℓ2
    lg = result.tables["logistic"]
    ang = np.asarray(lg["angle"])
    assert np.all(np.diff(ang[len(ang) // 2:]) < 0)        # the direction keeps turning ...
    assert ang[-1] < 0.8 * ang[len(ang) // 2]              # ... slowly (O(1/log t))
    assert np.all(np.diff(lg["norm"]) > 0)                  # ‖w‖ grows without bound
