"""linear_regions in quick mode: flat-in-depth counts, training, slices, Zaslavsky."""

from __future__ import annotations

import json
import math

import torch

from ntkit.geometry import count_linear_regions
from ntkit.lab.experiments.linear_regions import he_net

EXPERIMENT = "linear_regions"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert sorted(doc["figures"]) == ["regions_vs_depth_and_training.png", "slices_2d.png"]
    assert all(math.isfinite(c.measured) for c in result.claims)


def test_measurements(result):
    t = result.tables["regions_at_init"]
    per = t["switches_per_unit_length"]
    assert max(per) / min(per) < 4          # nowhere near 2^7 growth
    z = result.tables["zaslavsky"]
    assert z["regions_found"] == z["zaslavsky"]   # exact combinatorics
    assert all(r > 1 for r in result.tables["slices_2d"]["regions"])


def test_depth_one_count_is_sign_changes_of_first_layer():
    # One hidden layer: boundaries on a segment are exactly the neurons whose affine
    # pre-activation changes sign between the endpoints (an independent count).
    m = he_net(5, [20], seed=3)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 5, generator=g, dtype=torch.float64) * 2
    lin = m.layers[0]
    za, zb = lin(a[None])[0], lin(b[None])[0]
    assert count_linear_regions(m, a, b).count == int((za * zb < 0).sum()) + 1
