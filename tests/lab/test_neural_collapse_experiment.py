"""neural_collapse (lab) in quick mode: outputs and robust consequences."""

from __future__ import annotations

import json

import numpy as np

EXPERIMENT = "neural_collapse"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["collapse.png"]
    assert result.figures[0].stat().st_size > 5000
    assert len(result.claims) == 6
    m = doc["tables"]["metrics"]
    assert len(m["step"]) == result.config["steps"] // result.config["every"] + 1


def test_terminal_phase_trends(result):
    m = {k: np.asarray(v, dtype=float) for k, v in result.tables["metrics"].items()}
    assert m["train_accuracy"][-1] == 1.0
    assert m["nc4"][-1] <= 0.01                  # decisions = nearest class center
    assert m["nc1"][-1] < 0.5 * m["nc1"][0]      # less within-class variability than at init
    assert m["nc3"][-1] < 0.5 * m["nc3"][0]      # classifier closer to the class means
