"""Memory budgets of the empirical kernels and Monte Carlo: the tile rule, and results
that do not depend on the budget."""

from __future__ import annotations

import pytest
import torch
from empirical_nets import CNN, mlp

from ntkit import layers as nl
from ntkit.empirical import api, empirical_nngp, empirical_ntk
from ntkit.empirical.common import FunctionalModel
from ntkit.engine.memory import default_memory_budget
from ntkit.monte_carlo import monte_carlo_kernel

# A product's blocking depends on its shape, so differently tiled kernels agree to
# rounding, not bitwise: 1e-12 relative is ~5000 ulps, far below any tiling bug.
RTOL = 1e-12


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _x(n, *shape, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


@pytest.mark.parametrize("method", ["jacobian", "ntk_vp", "structured"])
def test_tiny_budget_same_ntk(method):
    torch.manual_seed(0)
    model = mlp().double()
    x1, x2 = _x(7, 5), _x(5, 5, seed=1)
    ref = empirical_ntk(model, x1, x2, method=method)
    # 8 KiB: tiles of one or two rows, parameters in small groups.
    tiny = empirical_ntk(model, x1, x2, method=method, memory_budget=8192)
    assert _rel(tiny, ref) <= RTOL
    sym = empirical_ntk(model, x1, method=method, memory_budget=8192, trace_outputs=False)
    assert _rel(sym, empirical_ntk(model, x1, method=method, trace_outputs=False)) <= RTOL


def test_tiny_budget_same_ntk_cnn_auto():
    torch.manual_seed(1)
    model = CNN().double()
    x = _x(6, 2, 8, 8)
    assert _rel(empirical_ntk(model, x, memory_budget=20_000), empirical_ntk(model, x)) <= RTOL


def test_tile_rule_is_the_largest_under_budget():
    torch.manual_seed(0)
    model = mlp().double()
    fm = FunctionalModel(model)
    x = _x(300, 5)
    plan = api._discover(fm, x)
    n = x.shape[0]
    for method in ("jacobian", "ntk_vp", "structured"):
        tiles = []
        for budget in (2**14, 2**16, 2**18, 2**20, 2**30):
            t = api._auto_tile(fm, plan, method, n, n, True, budget)
            peak = api._costs(fm, plan, t, t, True, budget)[method][1]
            assert t == 1 or peak <= budget, (method, budget, t, peak)
            if t < n:  # maximal: one more row would exceed the budget
                assert api._costs(fm, plan, t + 1, t + 1, True, budget)[method][1] > budget
            tiles.append(t)
        assert tiles == sorted(tiles) and tiles[0] < tiles[-1] == n, (method, tiles)


def test_nngp_tile_rule_and_results():
    assert api.nngp_tile(1000, act_entries=100, k=4, item=8, budget=2 * 104 * 8 * 10) == 10
    assert api.nngp_tile(1000, 100, 4, 8, budget=1) == 1
    assert api.nngp_tile(7, 100, 4, 8, budget=2**30) == 7
    torch.manual_seed(2)
    model = mlp().double()
    x1, x2 = _x(9, 5), _x(5, 5, seed=3)
    ref = empirical_nngp(model, x1, x2)
    assert _rel(empirical_nngp(model, x1, x2, memory_budget=1024), ref) <= RTOL
    # Independent truth: the outputs' Gram matrix over k.
    with torch.no_grad():
        want = model(x1) @ model(x2).T / 3
    assert _rel(ref, want) <= RTOL


def test_monte_carlo_budget_independent():
    net = nl.serial(nl.Dense(32, 1.3, 0.1), nl.ReLU(), nl.Dense(1))
    x = _x(5, 3)
    a = monte_carlo_kernel(net, x, n_samples=2, seed=4)
    b = monte_carlo_kernel(net, x, n_samples=2, seed=4, memory_budget=2048)
    assert _rel(b.ntk, a.ntk) <= RTOL and _rel(b.nngp, a.nngp) <= RTOL


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-5, ValueError),
                                      (float("nan"), ValueError), ("1GB", TypeError),
                                      (True, TypeError)])
def test_bad_budget(bad, exc):
    model = mlp().double()
    with pytest.raises(exc, match="memory_budget"):
        empirical_ntk(model, _x(3, 5), memory_budget=bad)
    with pytest.raises(exc, match="memory_budget"):
        empirical_nngp(model, _x(3, 5), memory_budget=bad)


def test_default_budget_follows_device():
    b = default_memory_budget("cpu")
    assert 16 * 2**20 <= b <= 8 * 2**30


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_under_budget():
    # Peak allocation during the call, beyond what was held before, stays within the
    # budget plus the result (the budget bounds the tiles' working set, not the output).
    dev = torch.device("cuda")
    model = torch.nn.Sequential(torch.nn.Linear(64, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 1)).double().to(dev)
    x = torch.randn(512, 64, dtype=torch.float64, device=dev)
    budget = 64 * 2**20
    for method in ("jacobian", "structured"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        k = empirical_ntk(model, x, method=method, memory_budget=budget)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        assert peak <= budget + k.numel() * k.element_size(), (method, peak)
