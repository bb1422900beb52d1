"""deep_linear in quick mode; its product sampler and Fuss–Catalan numbers."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ntkit.lab.experiments.deep_linear import fuss_catalan, sample_log_norms
from ntkit.theory.random_matrix import product_log_norm_moments

EXPERIMENT = "deep_linear"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert sorted(doc["figures"]) == ["log_norm_moments.png", "singular_values.png"]
    assert all(math.isfinite(c.measured) for c in result.claims)


def test_measurements(result):
    t = result.tables["log_norm_moments"]
    for mc, ex in zip(t["mc_var"], t["exact_var"], strict=True):
        assert abs(mc / ex - 1) < 0.3
    ks = result.tables["lognormal_limit"]["ks_standardized_vs_gaussian"]
    assert ks[-1] < ks[0]                      # Gaussian limit at fixed L/n
    s = result.tables["singular_value_moments"]
    for mc, fc in zip(s["mc_moment"], s["fuss_catalan"], strict=True):
        assert abs(mc / fc - 1) < 0.2


def test_fuss_catalan_known_values():
    assert [fuss_catalan(1, k) for k in range(1, 5)] == [1, 2, 5, 14]       # Catalan
    assert [fuss_catalan(2, k) for k in range(1, 5)] == [1, 3, 12, 55]


def test_sampler_one_layer_n2_is_log_exponential():
    # n = 2, L = 1: ‖Wu‖²/‖u‖² = χ²_2/2 ~ Exp(1): E ln = −γ, Var = π²/6.
    ln = sample_log_norms(2, 1, 40000, torch.Generator().manual_seed(0))
    ex = product_log_norm_moments([2, 2])
    assert abs(ln.mean() - ex.mean) < 4 * ln.std() / math.sqrt(ln.size)
    assert ex.mean == pytest.approx(-0.5772156649, abs=1e-9)
