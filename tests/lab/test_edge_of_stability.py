"""edge_of_stability in quick mode: outputs and robust consequences of the measurements."""

from __future__ import annotations

import json

import pytest

EXPERIMENT = "edge_of_stability"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["sharpness.png"]
    assert result.figures[0].stat().st_size > 5000
    assert len(result.claims) == 7
    traj = doc["tables"]["trajectories"]
    assert len(traj["step"]) == 2 * (result.config["steps"] // result.config["every"] + 1)


def test_sharpening_and_edge(result):
    for s in (result.tables["summary"][k] for k in ("initial_ratio", "max_ratio",
                                                     "window_ratio_mean")):
        assert len(s) == 2
    summ = result.tables["summary"]
    for init, mx, mean in zip(summ["initial_ratio"], summ["max_ratio"],
                              summ["window_ratio_mean"], strict=True):
        assert init < 0.8            # started well below 2/η ...
        assert mx >= 1.0             # ... sharpened up to it ...
        assert 0.9 < mean < 1.2      # ... and hovers near it late in training
    # late sharpness ∝ 1/η within 15%
    s = summ["final_sharpness"]
    eta = summ["eta"]
    assert s[0] / s[1] == pytest.approx(eta[1] / eta[0], rel=0.15)
