"""Finite CNNs built from the same spec approach the analytic CNN-GP / CNTK as width grows.

One network's empirical NTK (and its NNGP estimate from many output channels) deviates
from the limit by O(width^-1/2) (fluctuations) plus O(1/width) (bias), so the relative
Frobenius error averaged over a few networks should fall with slope ≈ −1/2 in log-log.
The band [−0.8, −0.3] allows for the few samples per width (the error of a log-average
over 4 networks is ~±0.1 in log10) and some bias at small widths; a wrong kernel map
(e.g. a missing 1/q, wrong padding) levels the error off at a constant instead.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ntkit
from ntkit import layers as nl

F64 = torch.float64


def _spec(width: int, tail, depth: int = 2):
    layers = [nl.Conv(width, (3,), padding="SAME", w_std=1.5, b_std=0.2), nl.ReLU()]
    if depth == 2:
        layers += [nl.Conv(width, (2,), padding="CIRCULAR", w_std=1.4, b_std=0.1), nl.Erf()]
    return nl.serial(*layers, tail, nl.Dense(1, w_std=1.2, b_std=0.1))


def _rel(a, b):
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def _slope(tail, widths, seeds, depth=2):
    x = torch.randn(5, 2, 6, dtype=F64, generator=torch.Generator().manual_seed(0))
    exact = _spec(1, tail, depth).kernel(x, get="ntk")
    errs = []
    for w in widths:
        e = []
        for seed in range(seeds):
            model = _spec(w, tail, depth).build((2, 6), seed=seed)
            emp = ntkit.empirical_ntk(model, x, method="structured")
            e.append(_rel(emp, exact))
        errs.append(float(np.sqrt(np.mean(np.square(e)))))  # RMS: steadier than a mean
    return np.polyfit(np.log(widths), np.log(errs), 1)[0], errs


def test_empirical_ntk_error_slope_quick():
    # One hidden conv layer: widths up to 4096 stay cheap (the weights are 4096·2·3).
    slope, errs = _slope(nl.GlobalAvgPool(), [256, 1024, 4096], 6, depth=1)
    assert -0.8 < slope < -0.3, (errs, slope)
    assert errs[-1] < 0.1, errs


@pytest.mark.slow
@pytest.mark.parametrize("tail", [nl.GlobalAvgPool(), nl.Flatten()], ids=["gap", "flatten"])
def test_empirical_ntk_error_slope_is_minus_half(tail):
    slope, errs = _slope(tail, [256, 1024, 4096], 4)
    assert -0.8 < slope < -0.3, (errs, slope)
    assert errs[-1] < 0.05, errs


@pytest.mark.slow
def test_monte_carlo_nngp_and_ntk_converge():
    # Many output channels make the NNGP estimate f·f'/k sharp; averaging networks removes
    # the NTK's fluctuation, leaving the O(1/width) bias.
    x = torch.randn(4, 2, 5, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    net = nl.serial(nl.Conv(512, (2, 2), padding="SAME", w_std=1.5, b_std=0.2), nl.ReLU(),
                    nl.AvgPool((2, 2)), nl.Conv(512, (2, 2), w_std=1.3), nl.ReLU(),
                    nl.GlobalAvgPool(), nl.Dense(256, w_std=1.1, b_std=0.1))
    exact = net.kernel(x, get=("nngp", "ntk"))
    mc = ntkit.monte_carlo_kernel(net, x, n_samples=8, get=("nngp", "ntk"), seed=0)
    # 8 networks × 256 outputs: NNGP error ~ 1/√2048 ≈ 2%; NTK ~ 1/√(8·512) plus bias.
    assert _rel(mc.nngp, exact.nngp) < 0.06
    assert _rel(mc.ntk, exact.ntk) < 0.06
