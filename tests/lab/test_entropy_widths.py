"""entropy_widths in quick mode: δ_32n ≤ 3ε_n, equal rates, least-squares scheme."""

from __future__ import annotations

import json
import math

import numpy as np

from ntkit.lab.experiments.entropy_widths import _eval_basis, _harmonic_basis

EXPERIMENT = "entropy_widths"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["widths_entropy.png"]
    assert result.figures[0].stat().st_size > 5000
    assert {"widths", "least_squares_scheme"} <= set(result.tables)
    assert len(result.claims) == 2 * 3 + 2
    assert all(math.isfinite(c.measured) for c in result.claims)


def test_measurements(result):
    w = result.tables["widths"]
    lo, hi = np.array(w["eps_lower"]), np.array(w["eps_upper"])
    assert (lo <= hi * (1 + 1e-12)).all()
    # δ_32n ≤ 3ε_n with a wide margin (the bound is far from tight for ellipsoids)
    assert (np.array(w["delta_32n"]) <= 3 * lo).all()
    s = result.tables["least_squares_scheme"]
    # no linear n-parameter scheme beats the width on the axis f = σ_{n+1}φ_{n+1}
    assert (np.array(s["worst_axis_error"]) >= np.array(s["delta_n"]) * (1 - 1e-9)).all()
    # random functions are much easier than the worst case
    assert (np.array(s["mean_random_error"]) < np.array(s["worst_error"])).all()
    # least squares is never better than the L² projection on the same n functions
    assert (np.array(s["mean_random_error"]) >= np.array(s["mean_projection_error"])).all()


def test_harmonic_basis_is_orthonormal():
    # Addition theorem: N_k functions whose Σ_a φ_a(x)φ_a(y) equals the reproducing kernel
    # Z_k(x, y) = N(d,k) P_k(x·y) of the degree-k harmonics are an orthonormal basis of it.
    import torch

    from ntkit.theory.spectrum import gegenbauer_normalized, multiplicity

    rng = np.random.default_rng(1)
    d = 3
    anchors, maps = _harmonic_basis(d, 6, rng)
    x = rng.standard_normal((60, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    blocks = _eval_basis(x, d, anchors, maps)
    p = gegenbauer_normalized(d, 6, torch.tensor(x @ x.T)).numpy()
    for k, phi in enumerate(blocks):
        assert phi.shape == (60, multiplicity(d, k))
        np.testing.assert_allclose(phi @ phi.T, multiplicity(d, k) * p[k], atol=1e-10)
