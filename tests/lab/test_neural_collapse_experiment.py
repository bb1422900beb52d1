"""neural_collapse (lab) in quick mode: outputs and the measured terminal-phase facts."""

from __future__ import annotations

import json

import numpy as np
import pytest

# The quick run (tests taking `result`) is marked slow to keep the default suite
# under its time limit; the library code it exercises is tested directly in
# tests/metrics/test_neural_collapse.py (the NC metrics).
EXPERIMENT = "neural_collapse"


@pytest.mark.slow
def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["collapse.png"]
    assert result.figures[0].stat().st_size > 5000
    assert len(result.claims) == 7
    m = doc["tables"]["metrics"]
    assert set(m["arm"]) == {"mse", "ce"}


def _arm(result, arm):
    m = result.tables["metrics"]
    keep = [i for i, a in enumerate(m["arm"]) if a == arm]
    return {k: np.asarray([v[i] for i in keep], dtype=float) for k, v in m.items()
            if k != "arm"}


@pytest.mark.slow
def test_mse_terminal_phase(result):
    m = _arm(result, "mse")
    zero = result.config["zero_error_step_mse"]
    i0 = int(np.nonzero(m["step"] == zero)[0][0])
    assert m["train_accuracy"][i0:].min() == 1.0     # zero error once reached, stays
    assert m["nc4"][-1] <= 0.01                      # decisions = nearest class center
    # variability keeps falling after zero error under MSE (measured, not just claimed)
    assert m["nc1"][-1] < m["nc1"][i0] < m["nc1"][0]
    assert m["nc3"][-1] < m["nc3"][i0]


@pytest.mark.slow
def test_claims_record_the_table(result):
    m = _arm(result, "mse")
    by = {c.name: c for c in result.claims}
    i0 = int(np.nonzero(m["step"] == result.config["zero_error_step_mse"])[0][0])
    assert by["[MSE] NC1 end / NC1 at the zero-error step"].measured == \
        m["nc1"][-1] / m["nc1"][i0]
    assert by["[MSE] NC1 end / NC1 at initialization"].measured == m["nc1"][-1] / m["nc1"][0]
