"""marchenko_pastur in quick mode; the outlier formula and KS helper."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ntkit.lab.experiments.marchenko_pastur import MU, VAR, ks_to_mp, relu_outlier

EXPERIMENT = "marchenko_pastur"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["spectra.png"]
    assert all(math.isfinite(c.measured) for c in result.claims)


def test_measurements(result):
    t = result.tables["spectra"]
    for kind, ks in zip(t["kind"], t["ks"], strict=True):
        if kind == "gaussian" or kind.startswith("relu, iid"):
            assert ks < 0.03
    by = {c.name: c for c in result.claims}
    naive = next(c for n, c in by.items() if "naive" in n)
    assert naive.measured > 0.05          # the naive σ² = E relu² is visibly wrong


def test_helpers():
    assert MU**2 + VAR == pytest.approx(0.5)
    # Strong spike: outlier ≈ μ²p + σ²(1 + c) + …
    p, n = 1000, 2000
    assert relu_outlier(p, n) == pytest.approx(MU**2 * p + VAR * (1 + p / n), rel=1e-3)
    ks = ks_to_mp(np.array([0.5, 1.0, 1.5]), 0.25, 1.0)
    assert 0 < ks <= 1
