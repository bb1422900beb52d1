"""random_features in quick mode: m^-1/2 kernel approximation, RF ridge → KRR, RF vs NT."""

from __future__ import annotations

import json
import math

from ntkit.lab.experiments.random_features import KERNELS

EXPERIMENT = "random_features"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert sorted(doc["figures"]) == ["kernel_approximation.png", "rf_vs_ntk_features.png",
                                      "ridge_vs_krr.png"]
    assert all(p.stat().st_size > 5000 for p in result.figures)
    assert {"kernel_approximation", "ridge_regression", "rf_vs_ntk"} <= set(result.tables)
    assert len(result.claims) == len(KERNELS) + 4 + 3
    assert all(math.isfinite(c.measured) for c in result.claims)


def test_measurements(result):
    # Statistical claims: check only robust consequences, not the tolerances.
    by = {c.name: c for c in result.claims}
    for kind, _ in KERNELS:
        slope = by[f"{kind}: log-log slope of sup|K̂ − K| in m"].measured
        assert -0.8 < slope < -0.3, (kind, slope)
    rows = result.tables["ridge_regression"]
    for kind in ("fourier_gaussian", "relu"):
        gaps = [g for k, g in zip(rows["kind"], rows["rms_rf_minus_krr"], strict=True)
                if k == kind]
        assert gaps[-1] < 0.5 * gaps[0]
    gh = result.tables["rf_vs_ntk"]
    assert gh["risk_nt_N"][-1] < gh["risk_rf_N"][-1]
