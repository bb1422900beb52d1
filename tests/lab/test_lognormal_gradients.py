"""lognormal_gradients in quick mode; its sampler against the exact law at tiny widths."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ntkit.lab.experiments.lognormal_gradients import sample_log_y
from ntkit.theory.path_counting import relu_gradient_moments

# The quick run (tests taking `result`) is marked slow to keep the default suite
# under its time limit; the library code it exercises is tested directly in
# tests/theory/test_path_counting.py and this file's sampler test.
EXPERIMENT = "lognormal_gradients"


@pytest.mark.slow
def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["lognormal_gradients.png"]
    assert len(result.tables["law_of_log_y"]["n"]) == 3
    assert all(math.isfinite(c.measured) for c in result.claims)
    # moments are compared with the exact finite-width values only (3 × mean, var, KS;
    # the variance slope; one fourth moment in quick mode)
    assert len(result.claims) == 11
    assert not any("reference" in c.name for c in result.claims)


@pytest.mark.slow
def test_measurements(result):
    t = result.tables["law_of_log_y"]
    for mc, ex, beta in zip(t["mc_mean"], t["exact_mean"], t["beta"], strict=True):
        assert abs(mc - ex) < 0.2 * beta          # robust: well inside 5 SE
    for mc, ex in zip(t["mc_var"], t["exact_var"], strict=True):
        assert abs(mc / ex - 1) < 0.3
    rows = result.tables["variance_vs_sum_inverse_width"]
    ratio = np.array(rows["mc_var"]) / np.array(rows["sum_inv_width"])
    assert np.all((ratio > 3.5) & (ratio < 8.0))   # Var/Σ(1/n) ≈ 5, not ∝ L or const


def test_sampler_matches_exact_law_small_widths():
    # Width 4, 3 layers: dead layers have probability 1 − (15/16)³; E[Y] = 1, E[Y²] exact.
    y = sample_log_y(4, 3, 40000, torch.Generator().manual_seed(0))
    r = relu_gradient_moments([10, 4, 4, 4, 1])
    assert abs(y.mean() - 1) < 4 * y.std() / math.sqrt(y.size)
    assert abs((y**2).mean() - r["fourth_moment"]) < 4 * (y**2).std() / math.sqrt(y.size)
    assert abs((y == 0).mean() - r["p_dead"]) < 4 * math.sqrt(r["p_dead"] / y.size)
