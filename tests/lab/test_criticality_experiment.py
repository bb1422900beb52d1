"""criticality in quick mode: deep finite nets vs the NNGP recursion, fixed points, phases."""

from __future__ import annotations

import json
import math

import pytest

# The quick run (tests taking `result`) is marked slow to keep the default suite
# under its time limit; the library code it exercises is tested directly in
# tests/theory/test_criticality.py (propagate, fixed points, phases).
EXPERIMENT = "criticality"


@pytest.mark.slow
def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert sorted(doc["figures"]) == ["critical_power_laws.png", "phase_diagram.png",
                                      "variance_and_correlation.png"]
    assert all(p.stat().st_size > 5000 for p in result.figures)
    depth = result.config["depth"]
    assert len(result.tables["layerwise"]["layer"]) == 6 * depth
    assert len(result.tables["fixed_points_and_depth_scales"]["setting"]) == 6
    assert all(math.isfinite(c.measured) for c in result.claims)


@pytest.mark.slow
def test_exact_claims_hold(result):
    # Identities of the exact quantities (no sampling): these must hold.
    by = {c.name: c for c in result.claims}
    exact = [by["analytic kernel (net.kernel) = NNGP recursion (propagate), layer by layer"],
             by["tanh critical initialization: C_w (C_b = 0, K* = 0)"],
             by["erf critical initialization: C_w = π/4 (C_b = 0)"],
             next(c for n, c in by.items() if n.startswith("erf order-to-chaos line"))]
    assert all(c.holds for c in exact), exact


@pytest.mark.slow
def test_phases(result):
    table = result.tables["fixed_points_and_depth_scales"]
    phase = dict(zip(table["setting"], table["phase"], strict=True))
    assert phase["relu_critical"] == "critical" and phase["tanh_critical"] == "critical"
    assert phase["tanh_ordered"] == "ordered" and phase["tanh_chaotic"] == "chaotic"
    by = {c.name: c for c in result.claims}
    # the recursion's own asymptotics (deterministic, long depth)
    relu = next(c for n, c in by.items() if n.startswith("ReLU (2, 0): (1 − ρ_ℓ)"))
    assert relu.holds, relu
    rate = next(c for n, c in by.items() if "asymptotic decay rate" in n)
    assert rate.holds, rate
