"""depth_separation in quick mode; the explicit shallow constructions."""

from __future__ import annotations

import json

import pytest
import torch

from ntkit.geometry import count_linear_regions, tent_power
from ntkit.lab.experiments.depth_separation import l1_bound, shallow_exact, shallow_truncated

EXPERIMENT = "depth_separation"


def test_outputs_and_exact_claims(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["depth_separation.png"]
    t = result.tables["sawtooth_pieces"]
    assert t["pieces"] == [2**k for k in t["k"]]
    # The bound is a theorem: every fitted net must respect it.
    f = result.tables["shallow_fits"]
    assert all(e >= b for e, b in zip(f["l1_error"], f["lower_bound"], strict=True))
    # Count before filtering, so that renamed claims fail here instead of passing vacuously:
    # three exact-representation claims, one bound claim per width where the bound is
    # positive, the closed form of the constructed nets and the piece count of the fits.
    cfg = result.config
    n_bound = sum(l1_bound(cfg["k_fit"], m) > 0 for m in cfg["shallow_widths"])
    assert n_bound == 3                      # widths 4, 8, 16 (the bound is 0 at 32)
    assert len(result.claims) == 3 + n_bound + 2
    exact = [c for c in result.claims if "≥ bound" in c.name or "pieces" in c.name]
    assert len(exact) == n_bound + 2
    assert all(c.holds for c in exact)


@pytest.mark.parametrize("k", [3, 5])
def test_constructions(k):
    x = torch.rand(2000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    with torch.no_grad():
        assert torch.allclose(shallow_exact(k)(x)[:, 0],
                              torch.tensor(tent_power(x.numpy(), k)[:, 0]), atol=1e-12)
    m = 2 ** (k - 1)
    net = shallow_truncated(k, m)
    r = count_linear_regions(net, torch.zeros(1), torch.ones(1))
    assert r.count == m          # m kinks, the first at x = 0 (the segment start)
    assert l1_bound(k, m) == 0 and l1_bound(k, 1) > 0
