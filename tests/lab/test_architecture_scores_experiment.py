"""architecture_scores in quick mode: outputs, and the reported correlations recomputed
independently (scipy.stats.spearmanr) from the recorded table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import kendalltau, rankdata, spearmanr

from ntkit.lab.experiments.architecture_scores import bootstrap_ci, spearman

# The quick run (tests taking `result`) is marked slow to keep the default suite
# under its time limit; the library code it exercises is tested directly in
# tests/metrics/test_architecture.py (naswot_score, ntk_spectrum, condition number).
EXPERIMENT = "architecture_scores"


@pytest.mark.slow
def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["scores_vs_accuracy.png"]
    assert all(p.stat().st_size > 5000 for p in result.figures)
    assert {"architectures", "correlations"} <= set(result.tables)
    assert len(result.claims) == 4
    assert all(math.isfinite(c.measured) for c in result.claims[:3])


@pytest.mark.slow
def test_table_consistent(result):
    t = result.tables["architectures"]
    n = result.config["n_architectures"]
    assert len(t["depth"]) == n
    acc = np.array(t["test_accuracy"])
    assert ((acc >= 0) & (acc <= 1)).all()
    assert acc.max() > 0.8   # brief training does train (digits, chance is 0.1)
    relu = np.array([a == "relu" for a in t["activation"]])
    assert relu.sum() == n // 2
    nas = _naswot(t)
    assert (np.isfinite(nas[relu]) | (nas[relu] == -np.inf)).all()
    assert np.isnan(nas[~relu]).all()
    assert (_kappa(t) >= 0).all()   # κ ≥ 1 by definition


def _naswot(t) -> np.ndarray:
    # JSON stores NaN (non-ReLU nets) and −inf (singular K_H) as null; the flag tells which
    return np.array([-np.inf if sing else (np.nan if v is None else v)
                     for v, sing in zip(t["naswot"], t["naswot_singular"], strict=True)])


def _kappa(t) -> np.ndarray:
    return np.array([np.inf if v is None else v for v in t["log10_kappa"]], dtype=float)


def _residual_partial(a, b, z) -> float:
    """Partial rank correlation by regressing ranks on the ranks of z (a second route)."""
    ra, rb, rz = (rankdata(v) for v in (a, b, z))
    design = np.stack([np.ones_like(rz), rz], axis=1)
    ea = ra - design @ np.linalg.lstsq(design, ra, rcond=None)[0]
    eb = rb - design @ np.linalg.lstsq(design, rb, rcond=None)[0]
    return float(ea @ eb / np.sqrt((ea @ ea) * (eb @ eb)))


@pytest.mark.slow
def test_correlations_recomputed(result):
    t = result.tables["architectures"]
    cols = result.tables["correlations"]
    st = {s: {k: cols[k][i] for k in cols} for i, s in enumerate(cols["score"])}
    acc = np.array(t["test_accuracy"])
    lp = np.log10(np.array(t["params"], dtype=float))
    lk = _kappa(t)
    assert st["kappa"]["tau"] == pytest.approx(kendalltau(lk, acc).statistic, abs=1e-12)
    assert st["kappa"]["spearman"] == pytest.approx(spearmanr(lk, acc).statistic, abs=1e-12)
    assert st["kappa"]["partial_given_log_params"] == pytest.approx(
        _residual_partial(lk, acc, lp), abs=1e-10)
    relu = np.array([a == "relu" for a in t["activation"]])
    nas = _naswot(t)[relu]
    assert st["naswot"]["tau"] == pytest.approx(kendalltau(nas, acc[relu]).statistic,
                                                abs=1e-12)
    for v in st.values():
        assert -1 <= v["lo"] <= v["hi"] <= 1
    by = {c.name: c for c in result.claims}
    tenas = [c for n, c in by.items() if n.startswith("TE-NAS")]
    assert tenas[0].holds == (st["kappa"]["hi"] < 0)
    assert tenas[1].holds == (st["kappa"]["partial_hi"] < 0)
    naswot = [c for n, c in by.items() if n.startswith("NASWOT")]
    assert naswot[0].holds == (st["naswot"]["lo"] > 0)
    # one init scale, the best learning rate chosen on validation, not test, accuracy
    assert result.config["init_scale"] == 1.0
    lrs = result.config["learning_rates"]
    for i, best in enumerate(t["best_lr"]):
        vals = [t[f"val_accuracy_lr_{lr:g}"][i] for lr in lrs]
        assert t[f"val_accuracy_lr_{best:g}"][i] == max(vals)


def test_bootstrap_ci_helper():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(200)
    b = a + 0.5 * rng.standard_normal(200)
    lo, hi = bootstrap_ci(a, b, np.random.default_rng(1))
    rho = spearman(a, b)
    assert lo < rho < hi and hi - lo < 0.15
    # independent data: the CI covers 0 (a 95% interval; fixed seeds, not flaky)
    lo0, hi0 = bootstrap_ci(a, rng.standard_normal(200), np.random.default_rng(2))
    assert lo0 < 0 < hi0
    # with ties the ranks are averages, as spearmanr's
    c = np.array([1.0, 1.0, 2.0, 3.0, 3.0, 5.0])
    d = np.array([2.0, 1.0, 2.0, 4.0, 3.0, 7.0])
    assert spearman(c, d) == pytest.approx(spearmanr(c, d).statistic, abs=1e-12)
