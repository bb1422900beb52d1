"""implicit_bias (lab) in quick mode: outputs and robust consequences."""

from __future__ import annotations

import json

import numpy as np
import pytest

# The quick run (tests taking `result`) is marked slow to keep the default suite
# under its time limit; the library code it exercises is tested directly in
# tests/theory/test_implicit_bias.py (diagonal-net limit, max margin).
EXPERIMENT = "implicit_bias"


@pytest.mark.slow
def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["implicit_bias.png"]
    assert result.figures[0].stat().st_size > 5000
    assert len(result.claims) == 9
    assert {"diagonal_net", "logistic"} <= set(doc["tables"])


@pytest.mark.slow
def test_diagonal_net(result):
    dn = result.tables["diagonal_net"]
    assert max(dn["residual"]) < 1e-8                       # every run interpolates
    assert max(dn["rel_err_to_limit"]) < 2e-3               # GD ≈ argmin Q_α
    assert dn["rel_dist_l2"][-1] < dn["rel_dist_l2"][0]     # larger α: closer to min-ℓ2


@pytest.mark.slow
def test_logistic_data_and_trajectory(result):
    # the data were drawn in the regime the asymptotics need
    assert result.config["logit_lambda_min"] >= 1.0 - 1e-9
    assert result.config["logit_min_margin_non_sv"] >= 2.0
    lg = result.tables["logistic"]
    res = np.asarray(lg["residual"])
    n = len(res)
    assert np.all(np.diff(res[n // 2:]) < 0)                # w − ŵ log t → w̃ ...
    assert res[-1] < 0.01 * res[0]                           # ... by orders of magnitude
    assert np.all(np.diff(lg["norm"]) > 0)                  # ‖w‖ grows without bound
