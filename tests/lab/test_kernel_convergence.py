"""kernel_convergence in quick mode: claims, figures and JSON exist; each claim's verdict
follows from its own predicted value, measurement and tolerance as the experiment states
them; the slopes that the quick run is sized to resolve meet the theory's tolerance.
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
    from ntkit.lab.experiments.kernel_convergence import SLOPE_TOL

    cfg = result.config
    slopes = [c for c in result.claims if "init error slope" in c.name]
    drift = [c for c in result.claims if "drift slope" in c.name]
    # Count before filtering: NNGP and NTK per (activation, depth), and per drift activation
    # the O(m^-1/2) bound plus, for smooth activations, the finer -1 rate.
    assert len(slopes) == 2 * len(cfg["activations"]) * len(cfg["depths"])
    assert len(cfg["drift_activations"]) <= len(drift) <= 2 * len(cfg["drift_activations"])
    assert len(result.claims) == len(slopes) + len(drift)
    for c in slopes:
        # The claim is -1/2 ± SLOPE_TOL (stated by the experiment, fixed before the run),
        # and its verdict is exactly that comparison.
        assert c.predicted == -0.5 and c.tolerance == SLOPE_TOL == 0.15
        assert c.holds == (abs(c.measured - c.predicted) <= c.tolerance), c
        assert c.holds, c
    for c in drift:
        if isinstance(c.predicted, str):            # one-sided: slope <= -1/2 + SLOPE_TOL
            assert c.predicted == f"≤ {-0.5 + SLOPE_TOL:+.2f}"
            assert c.holds == (c.measured <= -0.5 + SLOPE_TOL), c
        else:                                       # the smooth-activation rate, -1 ± 0.2
            assert c.holds == (abs(c.measured - c.predicted) <= c.tolerance), c
        assert c.measured < 0.0, c          # the NTK moves less in wider nets
    rows = result.tables["ntk_drift"]
    assert max(rows["final_train_loss"]) < 0.5   # training did fit (loss starts near 0.5)
