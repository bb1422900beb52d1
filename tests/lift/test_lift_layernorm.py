"""Lifting ``nn.LayerNorm`` with its elementwise affine γ, β (torch's default) to
``LayerNorm(affine=True)``: the lifted spec equals the hand-written one exactly, its NTK
is the Monte Carlo limit of the torch model's own empirical NTK (all parameters, γ and β
included), and what it cannot express is refused with a LiftError naming the place."""

from __future__ import annotations

import math

import pytest
import torch
from lift_mc import Reinit
from torch import nn

import ntkit
from ntkit import layers as nl

X = torch.randn(6, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def block(n: int, bias: bool = True, relu_first: bool = False) -> nn.Module:
    """Pre-LN-style MLP: LayerNorm (with γ, β) feeding a Linear layer; or (relu_first)
    the Linear → LayerNorm → ReLU pattern of CNN-style blocks."""
    if relu_first:
        return nn.Sequential(nn.Linear(64, n), nn.LayerNorm(n, bias=bias), nn.ReLU(),
                             nn.Linear(n, n), nn.ReLU(), nn.Linear(n, 4)).double()
    return nn.Sequential(nn.Linear(64, n), nn.LayerNorm(n, bias=bias), nn.Linear(n, n),
                         nn.ReLU(), nn.Linear(n, 4)).double()


@pytest.mark.parametrize("bias", [True, False])
def test_lifted_layer_is_affine_layernorm(bias):
    spec = ntkit.lift(block(16, bias))
    ln = [layer for layer in spec.layers if isinstance(layer, nl.LayerNorm)]
    assert len(ln) == 1 and ln[0].affine and ln[0].bias is bias and ln[0].eps == 1e-5
    # the affine terms are in the NTK: it differs from the same net without γ, β
    plain = ntkit.lift(nn.Sequential(nn.Linear(64, 16), nn.LayerNorm(16, elementwise_affine=False),
                                     nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).double())
    a, b = spec.kernel(X, get=("nngp", "ntk")), plain.kernel(X, get=("nngp", "ntk"))
    assert torch.equal(a.nngp, b.nngp)
    assert (a.ntk != b.ntk).all()   # γ (and β) add terms (small: standard param.)


def test_whole_example_layernorm_lifts():
    model = nn.Sequential(nn.Conv1d(2, 8, 3, padding=1), nn.LayerNorm((8, 5)), nn.Flatten(),
                          nn.Linear(40, 1)).double()
    spec = ntkit.lift(model, input_shape=(2, 5))
    ln = [layer for layer in spec.layers if isinstance(layer, nl.LayerNorm)]
    assert ln[0].affine and ln[0].axis == (1, 2)
    x = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    k = spec.kernel(x, get="ntk", channels_last=False)
    assert torch.isfinite(k).all()


@pytest.mark.parametrize("relu_first", [False, True])
def test_monte_carlo_over_torch_model_fast(relu_first):
    """Entrywise |mean − lifted| ≤ 5 standard errors of the mean + 4/width of the lifted
    value (finite-width bias), as in tests/lift/test_monte_carlo.py, for the NNGP, the NTK,
    and the NTK of γ, β alone (``params=``) against the lifted kernel's γ/β part (its NTK
    minus that of the same spec without them): in the standard parameterization that part
    is O(1) of an O(width) NTK, so it is tested on its own; zero fails that test."""
    n, n_samples = 256, 20
    torch.manual_seed(0)
    model = block(n, relu_first=relu_first)
    spec = ntkit.lift(model)
    plain = nl.serial(*[nl.LayerNorm(eps=1e-5) if isinstance(layer, nl.LayerNorm) else layer
                        for layer in spec.layers])
    k = spec.kernel(X, get=("nngp", "ntk"))
    k_affine = k.ntk - plain.kernel(X, get="ntk")
    nngps, ntks, affine = [], [], []
    for s in range(n_samples):
        torch.manual_seed(s)
        Reinit(model).init_fn(model)
        with torch.no_grad():
            f = model(X)
        nngps.append(f @ f.T / f.shape[1])
        ntks.append(ntkit.empirical_ntk(model, X))
        affine.append(ntkit.empirical_ntk(model, X, params=["1.weight", "1.bias"]))

    def excess(est, want):
        est = torch.stack(est)
        se = est.std(0) / math.sqrt(n_samples)
        return float(((est.mean(0) - want).abs() - 5 * se - 4 * want.abs() / n).max())

    assert excess(nngps, k.nngp) <= 0
    assert excess(ntks, k.ntk) <= 0
    assert excess(affine, k_affine) <= 0
    assert excess(affine, torch.zeros_like(k_affine)) > 0


def test_module_init_needs_initial_gamma_beta():
    model = block(8)
    ntkit.lift(model, init="module")   # γ = 1, β = 0 as initialized: fine
    with torch.no_grad():
        model[1].weight.mul_(1.5)
    with pytest.raises(ntkit.LiftError, match="γ = 1, β = 0") as info:
        ntkit.lift(model, init="module")
    assert "1: LayerNorm" in str(info.value)
    ntkit.lift(model)   # init="torch": the kernel of torch's initialization


def test_activation_right_after_is_refused():
    model = nn.Sequential(nn.Linear(64, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 1))
    with pytest.raises(ntkit.LiftError, match="2: Tanh"):
        ntkit.lift(model.double())


def test_functional_layer_norm_with_weight_is_refused():
    class F(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(64, 8)
            self.g = nn.Parameter(torch.ones(8))

        def forward(self, x):
            return torch.nn.functional.layer_norm(self.l(x), (8,), self.g)

    with pytest.raises(ntkit.LiftError, match="layer_norm"):
        ntkit.lift(F().double())
