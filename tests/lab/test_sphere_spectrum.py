"""sphere_spectrum in quick mode: decay exponents, parity zeros, Gram agreement."""

from __future__ import annotations

import json
import math

import numpy as np

EXPERIMENT = "sphere_spectrum"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert sorted(doc["figures"]) == ["gram_vs_mu.png", "spectra.png"]
    assert all(p.stat().st_size > 5000 for p in result.figures)
    assert {"spectra", "decay_slopes", "parity", "gram_vs_mu"} <= set(result.tables)
    assert len(result.claims) == 6 + 2 + 2
    assert all(math.isfinite(c.measured) for c in result.claims)


def test_measurements(result):
    by = {c.name: c for c in result.claims}
    # d = 3 exponents are deep in the asymptotic regime: robustly within 0.1.
    name = "{} d = 3: decay exponent of μ_k (Γ-shape fit, worst over depths 1–4, parities)"
    assert abs(by[name.format("ntk")].measured + 3) < 0.1
    assert abs(by[name.format("nngp")].measured + 5) < 0.1
    # the NNGP decays faster than the NTK in every dimension and depth
    t = result.tables["decay_slopes"]
    sl = {(d, k, L, p): s for d, k, L, p, s in zip(t["d"], t["kind"], t["depth"], t["parity"],
                                                  t["slope"], strict=True)}
    for (d, k, L, p), s in sl.items():
        if k == "nngp" and (d, "ntk", L, p) in sl:
            assert s < sl[(d, "ntk", L, p)] - 0.5
    par = result.tables["parity"]
    two = [v for v, L in zip(par["max_odd_ge3_over_mu0"], par["depth"], strict=True) if L == 1]
    assert max(two) < 1e-13
    g = result.tables["gram_vs_mu"]
    rel = np.abs(np.array(g["gram_block_mean"]) - np.array(g["mu"])) / np.array(g["mu"])
    assert np.median(rel) < 0.1
    # the Gram bias shrinks with n for every block measured at all three n
    n = np.array(g["n"])
    for k in set(g["k"]):
        means = {m: np.mean([b for b, kk, nn in zip(g["gram_block_mean"], g["k"], n,
                                                    strict=True) if kk == k and nn == m])
                 for m in (500, 2000)}
        mu = next(v for v, kk in zip(g["mu"], g["k"], strict=True) if kk == k)
        if abs(means[500] / mu - 1) > 0.02:       # a bias well above the spread
            assert abs(means[2000] / mu - 1) < abs(means[500] / mu - 1)
