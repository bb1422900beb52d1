"""Monte Carlo over the user's module itself: re-initialize it many times with its own
initialization and average f(x)f(x')ᵀ and the empirical NTK; the lifted kernels are the
limit. The inputs have dimension 64, where the non-Gaussianity of PyTorch's uniform
first layer is far below the sampling error (docs/guide/lift.md measures it)."""

from __future__ import annotations

import math

import pytest
import torch
from lift_mc import Reinit, samples
from torch import nn

import ntkit

# Modules built at import (the tables below) are float64 too; the default is restored at
# the end of this module and around each test (tests/lift/conftest.py).
_DEFAULT_DTYPE = torch.get_default_dtype()
torch.set_default_dtype(torch.float64)

X = torch.randn(6, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def mlp(n: int, out: int = 8) -> nn.Module:
    return nn.Sequential(nn.Linear(64, n), nn.ReLU(), nn.Linear(n, n), nn.ReLU(),
                         nn.Linear(n, out))


class ResidualMLP(nn.Module):
    """A custom module with its own initialization: Gaussian weights of variance
    2/fan_in (He), biases N(0, 0.1²), and a residual block."""

    def __init__(self, n: int):
        super().__init__()
        self.inp = nn.Linear(64, n)
        self.hidden = nn.Linear(n, n)
        self.out = nn.Linear(n, 4)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.hidden(torch.tanh(h))
        return self.out(torch.relu(h))


def he_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.in_features))
            nn.init.normal_(m.bias, 0.0, 0.1)


def check_within_sampling_error(model, spec, n_samples, init_fn, width):
    """Entrywise |mean − lifted| ≤ 5 standard errors of the mean, plus 4/width of the
    lifted value for the O(1/width) finite-width bias (fixed before measuring)."""
    k = spec.kernel(X, get=("nngp", "ntk"))
    nngps, ntks = samples(model, X, n_samples, init_fn)
    for est, want in ((nngps, k.nngp), (ntks, k.ntk)):
        se = est.std(0) / math.sqrt(n_samples)
        excess = (est.mean(0) - want).abs() - 5 * se - 4 * want.abs() / width
        assert float(excess.max()) <= 0, float(excess.max())


def test_torch_init_fast():
    torch.manual_seed(0)
    model = mlp(256)
    check_within_sampling_error(model, ntkit.lift(model), 32, Reinit(model).init_fn, 256)


def test_module_init_custom_model_fast():
    torch.manual_seed(0)
    model = ResidualMLP(256)
    he_init(model)
    spec = ntkit.lift(model, init="module")
    assert spec.layers[0].w_std == pytest.approx(math.sqrt(2), rel=0.02)
    check_within_sampling_error(model, spec, 32, he_init, 256)


def _slope(make, init_fn, lift_kwargs, widths, n_samples):
    gaps_ntk, nngp_ok = [], []
    for n in widths:
        torch.manual_seed(n)
        model = make(n)
        init_fn(model)
        spec = ntkit.lift(model, **lift_kwargs)
        k = spec.kernel(X, get=("nngp", "ntk"))
        nngps, ntks = samples(model, X, n_samples, init_fn, seed=1000 * n)
        gaps_ntk.append(float((ntks.mean(0) - k.ntk).norm() / k.ntk.norm()))
        se = nngps.std(0) / math.sqrt(n_samples)
        nngp_ok.append(float(((nngps.mean(0) - k.nngp).abs() / se).max()))
    logs = torch.tensor([math.log(n) for n in widths])
    gaps = torch.tensor([math.log(g) for g in gaps_ntk])
    slope = float(((logs - logs.mean()) * (gaps - gaps.mean())).sum()
                  / ((logs - logs.mean()) ** 2).sum())
    return slope, gaps_ntk, nngp_ok


@pytest.mark.slow
@pytest.mark.parametrize("case", ["torch", "module"])
def test_ntk_gap_falls_like_inverse_sqrt_width(case):
    """NTK: relative Frobenius gap of the average of 32 empirical NTKs, at widths
    64…2048, falls with slope −½ ± 0.2 in log-log (the sampling error of an average of
    NTKs whose fluctuations are O(width^-½)); NNGP within 5 standard errors everywhere."""
    widths = [64, 128, 256, 512, 1024, 2048]
    if case == "torch":
        slope, gaps, z = _slope(mlp, Reinit(None).init_fn, {}, widths, 32)
    else:
        slope, gaps, z = _slope(ResidualMLP, he_init, {"init": "module"}, widths, 32)
    assert -0.7 <= slope <= -0.3, (slope, gaps)
    assert max(z) <= 5.0, z

torch.set_default_dtype(_DEFAULT_DTYPE)
