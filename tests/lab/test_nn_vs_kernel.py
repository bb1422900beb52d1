"""nn_vs_kernel in quick mode: trained nets vs the closed-form NTK prediction on digits."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from ntkit.lab.data import load_digits_data
from ntkit.lab.experiments.nn_vs_kernel import _discrete_prediction
from ntkit.predict import gradient_descent_mse

EXPERIMENT = "nn_vs_kernel"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["gap_and_accuracy.png"]
    assert result.figures[0].stat().st_size > 5000
    assert (result.run_dir / "report.html").is_file()
    widths = result.config["widths"]
    runs = result.tables["runs"]
    assert len(runs["width"]) == len(widths) * result.config["n_seeds"]
    assert all(math.isfinite(g) and g > 0 for g in runs["gap_T"])
    assert len(result.tables["accuracies"]["test_accuracy"]) == 6
    assert len(result.claims) == 5
    assert all(math.isfinite(c.measured) for c in result.claims)


def test_claims(result):
    by = {c.name: c for c in result.claims}
    slope = by["total gap f_net − f_NTK(Θ) vs width: log-log slope of its RMS"]
    # Not a theorem at these sizes, but the gap must clearly shrink with width.
    assert slope.measured < -0.2, slope
    bw = {k: np.asarray(v, dtype=float) for k, v in result.tables["by_width"].items()}
    # both parts of the split shrink with width, and the kernel-motion part (f_net − f_lin)
    # falls faster than the init-fluctuation part (f_lin(Θ̂₀) − f_NTK)
    assert np.all(np.diff(bw["rms_lin_emp_vs_ntk"]) < 0)
    assert np.all(np.diff(bw["rms_net_vs_lin_emp"]) < 0)
    assert by["f_net − f_lin(Θ̂₀) vs width: log-log slope of its RMS"].measured < \
        by["f_lin(Θ̂₀) − f_NTK(Θ) vs width: log-log slope of its RMS"].measured
    acc = result.tables["accuracies"]["test_accuracy"]
    assert all(0.1 <= a <= 1.0 for a in acc)
    # NTK/NNGP regression on digits is far above chance (10%).
    assert acc[-1] > 0.7 and acc[-2] > 0.7


def test_digits_preprocessing():
    x_tr, y_tr, x_te, y_te = load_digits_data(50, 30, np.random.default_rng(0))
    assert x_tr.shape == (50, 64) and y_te.shape == (30, 10)
    # every image on the sphere of radius √d; centred one-hot targets
    assert torch.allclose(x_tr.norm(dim=1), torch.full((50,), 8.0, dtype=torch.float64))
    assert torch.allclose(y_tr.sum(1), torch.zeros(50, dtype=torch.float64), atol=1e-12)


def test_discrete_prediction_tends_to_flow():
    # With a tiny step, discrete GD's linear prediction equals the gradient-flow formula.
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 8, generator=g, dtype=torch.float64)
    k = a @ a.T + 0.1 * torch.eye(8, dtype=torch.float64)
    k_st = torch.randn(5, 8, generator=g, dtype=torch.float64)
    y = torch.randn(8, 2, generator=g, dtype=torch.float64)
    f0 = torch.randn(8, 2, generator=g, dtype=torch.float64)
    ft0 = torch.randn(5, 2, generator=g, dtype=torch.float64)
    lr, steps = 1e-4, 20000
    disc = _discrete_prediction(k, k_st, f0 - y, ft0, lr, steps)
    _, flow = gradient_descent_mse(k, y, learning_rate=lr)(float(steps), f0, ft0, k_st)
    assert torch.allclose(disc, flow, rtol=1e-3, atol=1e-4)
