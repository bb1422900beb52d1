"""ntk_positivity in quick mode: λ_min > 0, polynomial rank bounds, Du et al. convergence."""

from __future__ import annotations

import json
import math
from math import comb

import torch

from ntkit import layers as nl
from ntkit.lab.experiments.ntk_positivity import _net, polynomial_rank_bound, unit_sphere

EXPERIMENT = "ntk_positivity"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert sorted(doc["figures"]) == ["du_convergence.png", "spectra_and_rank.png"]
    assert all(p.stat().st_size > 5000 for p in result.figures)
    assert {"nonpolynomial_lambda_min", "polynomial_rank", "du_training"} <= set(result.tables)
    assert all(math.isfinite(c.measured) for c in result.claims)


def test_theorem_claims_hold(result):
    # λ_min > 0 of the analytic NTK on distinct unit inputs (non-polynomial σ) and the exact
    # rank of polynomial NTKs are theorems about the very quantity computed: they must hold.
    theorem = [c for c in result.claims
               if "λ_min of analytic NTK" in c.name or "NTK rank" in c.name
               or "ranks = min(n, bound)" in c.name]
    assert len(theorem) == 10 + 4 + 1
    assert all(c.holds for c in theorem), [c for c in theorem if not c.holds]


def test_du_measurements(result):
    rows = result.tables["du_training"]
    # training converges at every width, and the kernel moves less at larger width
    assert max(rows["final_loss_ratio"]) < 1e-3
    dk = rows["kernel_change"]
    assert dk[-1] < dk[0]
    by = {c.name: c for c in result.claims}
    slope = next(c for n, c in by.items() if n.startswith("relative kernel change"))
    assert slope.measured < -0.5


def test_rank_bound_formula():
    # dim of polynomials of degree ≤ p on S^{d−1}: hom_p ⊕ hom_{p−1}
    assert polynomial_rank_bound(2, 3, True) == 6
    assert polynomial_rank_bound(2, 3, False) == 6 + 3
    assert polynomial_rank_bound(3, 4, False) == comb(6, 3) + comb(5, 2)


def test_monomial_rank_small_case():
    # d = 3, x²: rank saturates at C(4, 2) = 6 = dim of quadratic forms on R³
    x = unit_sphere(15, 3, torch.Generator().manual_seed(1))
    ev = torch.linalg.eigvalsh(_net(nl.Monomial(2), 1).kernel(x, get="ntk"))
    assert int((ev > 1e-9 * ev[-1]).sum()) == 6
