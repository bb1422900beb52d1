"""kernel_convergence in quick mode: claims, figures and JSON exist; loose sanity bands.

Fitted slopes at finite sizes are reported, not asserted to the theory's tolerance; the
bands below only catch a broken measurement (e.g. no convergence at all).
"""

from __future__ import annotations

import json

EXPERIMENT = "kernel_convergence"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete" and doc["config"]["quick"] is True
    assert set(doc["figures"]) == {"init_kernel_convergence.png", "ntk_entries_scatter.png",
                                   "ntk_drift_vs_width.png"}
    for f in result.figures:
        assert f.is_file() and f.stat().st_size > 5000
    assert {"init_kernel_errors", "init_kernel_rms", "ntk_drift"} <= set(doc["tables"])
    assert (result.run_dir / "report.html").is_file()
    assert result.summary


def test_claims(result):
    slopes = [c for c in result.claims if "init error slope" in c.name]
    cfg = result.config
    assert len(slopes) == 2 * len(cfg["activations"]) * len(cfg["depths"])
    for c in slopes:
        assert c.predicted == -0.5 and c.tolerance == 0.15
        assert -0.9 < c.measured < -0.2, c
    drift = [c for c in result.claims if "drift slope" in c.name]
    assert len(drift) >= len(cfg["drift_activations"])
    for c in drift:
        assert c.measured < 0.0, c          # the NTK moves less in wider nets
    rows = result.tables["ntk_drift"]
    assert max(rows["final_train_loss"]) < 0.5   # training did fit (loss starts near 0.5)
