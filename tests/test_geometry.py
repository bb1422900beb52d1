"""ntkit.geometry: exact region counting vs dense sampling, sawtooth, 2-D slices, Zaslavsky."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ntkit import layers as nl
from ntkit.geometry import (
    activation_patterns,
    count_linear_regions,
    linear_regions_2d,
    sawtooth,
    tent_power,
    zaslavsky_bound,
)


def _sampled_changes(model, start, end, n):
    """t-grid midpoints where the sampled activation pattern changes (dense sampling)."""
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    x = start + t.reshape(-1, *([1] * start.dim())) * (end - start)
    pat = activation_patterns(model, x)
    change = (pat[1:] != pat[:-1]).any(dim=1)
    return (t[:-1][change] + t[1:][change]) / 2, 1.0 / (n - 1)


def _torch_net(seed, d=3, widths=(6, 5, 4), leaky=False):
    g = torch.Generator().manual_seed(seed)
    mods, a = [], d
    for w in widths:
        lin = nn.Linear(a, w, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(w, a, generator=g, dtype=torch.float64) * math.sqrt(2 / a))
            lin.bias.copy_(torch.randn(w, generator=g, dtype=torch.float64) * 0.3)
        mods += [lin, nn.LeakyReLU(0.1) if leaky else nn.ReLU()]
        a = w
    mods.append(nn.Linear(a, 1, dtype=torch.float64))
    return nn.Sequential(*mods)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["torch_relu", "torch_leaky", "ntkit"])
def test_count_matches_dense_sampling(seed, kind):
    if kind == "ntkit":
        net = nl.serial(nl.Dense(7, w_std=math.sqrt(2), b_std=0.3), nl.ReLU(),
                        nl.Dense(5, w_std=math.sqrt(2), b_std=0.3), nl.LeakyReLU(0.2),
                        nl.Dense(6, w_std=math.sqrt(2), b_std=0.3), nl.ABReLU(-0.5, 1.0),
                        nl.Dense(1))
        model = net.build(3, seed=seed)
    else:
        model = _torch_net(seed, leaky=kind == "torch_leaky")
    g = torch.Generator().manual_seed(100 + seed)
    start, end = torch.randn(2, 3, generator=g, dtype=torch.float64) * 2
    r = count_linear_regions(model, start, end)
    mids, h = _sampled_changes(model, start, end, 200001)
    # Every exact breakpoint is seen by the sampling and vice versa (each sampled change
    # lies within one grid step of an exact breakpoint) as long as breakpoints are farther
    # apart than the grid step, which the test checks rather than assumes.
    bp = r.breakpoints
    if bp.numel() > 1:
        assert float((bp[1:] - bp[:-1]).min()) > 2 * h
    assert r.count == mids.numel() + 1
    assert r.count >= 3
    if bp.numel():
        assert float((mids - bp).abs().max()) <= h
    # Output values at the knots are the network's own values there.
    x = start + r.knots[:, None] * (end - start)
    assert torch.allclose(model(x), r.values, atol=1e-12, rtol=1e-10)
    assert 1 <= r.n_pieces <= r.count


def test_dead_output_weight_gives_fewer_pieces():
    model = _torch_net(0)
    with torch.no_grad():
        model[-1].weight.zero_()
        model[-1].weight[0, 0] = 1.0   # only one last-layer neuron reaches the output
    start, end = -3 * torch.ones(3, dtype=torch.float64), 3 * torch.ones(3, dtype=torch.float64)
    r = count_linear_regions(model, start, end)
    assert r.n_pieces < r.count


def test_conv_net_matches_sampling():
    g = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Conv1d(2, 3, 3, dtype=torch.float64), nn.ReLU(),
                          nn.Conv1d(3, 2, 3, dtype=torch.float64), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8, 1, dtype=torch.float64))
    start, end = torch.randn(2, 2, 8, generator=g, dtype=torch.float64) * 2
    r = count_linear_regions(model, start, end)
    mids, h = _sampled_changes(model, start, end, 100001)
    assert r.count == mids.numel() + 1 and r.count > 2


@pytest.mark.parametrize("k", [1, 2, 3, 7, 12])
def test_sawtooth_has_2_to_the_k_pieces(k):
    model = sawtooth(k)
    assert sum(isinstance(m, nn.ReLU) for m in model) == k
    r = count_linear_regions(model, torch.zeros(1), torch.ones(1))
    assert r.count == 2**k and r.n_pieces == 2**k
    # Breakpoints at j/2^k and values equal to the tent-map iterate.
    assert torch.allclose(r.breakpoints, torch.arange(1, 2**k, dtype=torch.float64) / 2**k,
                          atol=1e-12)
    x = np.random.default_rng(k).random(500)
    out = model(torch.tensor(x)[:, None]).detach().numpy()[:, 0]
    assert np.abs(out - tent_power(x, k)).max() < 1e-12


def test_linear_regions_2d_one_layer_reaches_zaslavsky():
    # 4 lines in the plane in general position, all crossings inside the box: 11 regions.
    w = torch.tensor([[1.0, 0.2], [-0.3, 1.0], [1.0, 1.0], [1.0, -0.7]], dtype=torch.float64)
    b = torch.tensor([0.1, -0.2, 0.3, 0.05], dtype=torch.float64)
    lin = nn.Linear(2, 4, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(4, 1, dtype=torch.float64))
    o = torch.zeros(2, dtype=torch.float64)
    e1, e2 = torch.eye(2, dtype=torch.float64)
    r = linear_regions_2d(model, o, e1, e2, extent=3.0, resolution=400)
    assert r.count == zaslavsky_bound(4, 2) == 11
    assert r.labels.shape == (400, 400) and r.output.shape == (400, 400, 1)
    assert int(r.labels.max()) == r.count - 1


def test_zaslavsky_values():
    assert zaslavsky_bound(3, 5) == 8          # n ≤ d: 2^n
    assert zaslavsky_bound(4, 1) == 5          # n + 1 on a line
    assert zaslavsky_bound(10, 2) == 1 + 10 + 45
    assert zaslavsky_bound(0, 3) == 1


def test_bad_input():
    with pytest.raises(TypeError, match="unsupported module"):
        count_linear_regions(nn.Sequential(nn.Linear(2, 2), nn.MaxPool1d(2)),
                             torch.zeros(2), torch.ones(2))
    with pytest.raises(TypeError, match="Tanh"):
        count_linear_regions(nl.serial(nl.Dense(3), nl.Tanh()).build(2),
                             torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="NaN"):
        count_linear_regions(sawtooth(2), torch.tensor([float("nan")]), torch.ones(1))
    with pytest.raises(ValueError, match="shapes differ"):
        count_linear_regions(sawtooth(2), torch.zeros(2), torch.ones(1))
    with pytest.raises(TypeError, match="floating"):
        count_linear_regions(sawtooth(2), torch.zeros(1, dtype=torch.long), torch.ones(1))
    with pytest.raises(ValueError, match="k must be"):
        sawtooth(0)
    with pytest.raises(ValueError, match="extent"):
        linear_regions_2d(sawtooth(1), torch.zeros(1), torch.ones(1), torch.ones(1), extent=-1)
    with pytest.raises(ValueError, match="n_inputs"):
        zaslavsky_bound(3, 0)
    with pytest.raises(TypeError, match="n_neurons"):
        zaslavsky_bound(2.5, 2)
