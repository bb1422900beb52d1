"""kernel_limits in quick mode: staircase for NTK regression and random features; single neuron."""

from __future__ import annotations

import json
import math

import torch

from ntkit.lab.experiments.kernel_limits import RELU_TAIL, harmonics, sphere

EXPERIMENT = "kernel_limits"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert sorted(doc["figures"]) == ["single_neuron.png", "staircase.png"]
    assert all(p.stat().st_size > 5000 for p in result.figures)
    assert {"staircase", "single_neuron"} <= set(result.tables)
    assert len(result.claims) == 4 + 3
    assert all(math.isfinite(c.measured) for c in result.claims)


def test_measurements(result):
    st = result.tables["staircase"]
    ntk = [e for m, e in zip(st["method"], st["rel_test_error"], strict=True) if m == "ntk_krr"]
    # error decreases overall with n, and does not reach 0 before n ~ d³
    assert ntk[-1] < 0.5 * ntk[0]
    assert min(ntk) > 0.005
    sn = result.tables["single_neuron"]
    # the net's direction estimate improves with n and ends close to w*
    assert sn["nn_cosine_w_star"][-1] > 0.95
    # NTK regression never beats the trained net by much at these n
    assert all(k > 0.8 * n for k, n in zip(sn["ntk_rel_test_error"], sn["nn_rel_test_error"],
                                           strict=True))


def test_relu_tail_constant():
    # energy of relu(z) above degree 1, z ~ N(0,1), by Monte Carlo (SE ≈ 0.002 at 2e5)
    z = torch.randn(200000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = torch.relu(z)
    resid = r - r.mean() - (z * r).mean() * z
    assert abs(float(resid.var() / r.var()) - RELU_TAIL) < 0.01


def test_harmonics_normalized_and_orthogonal():
    # unit variance, zero mean, uncorrelated on the sphere of radius √d (MC, SE ≈ 0.01)
    g = torch.Generator().manual_seed(1)
    d = 10
    x = sphere(100000, d, g)
    w, _ = torch.linalg.qr(torch.randn(d, 3, generator=g, dtype=torch.float64))
    h = harmonics(x, w)
    cov = h.T @ h / h.shape[0]
    assert torch.allclose(cov, torch.eye(3, dtype=torch.float64), atol=0.05)
    assert float(h.mean(0).abs().max()) < 0.03
    # a degree-2 harmonic in direction w₂ is orthogonal to z₂'s square-free part too:
    z2 = x @ w[:, 1]
    assert abs(float((h[:, 1] * z2).mean())) < 0.03    # odd × even
