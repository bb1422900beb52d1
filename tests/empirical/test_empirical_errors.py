"""Bad inputs and batch-mixing models get clear errors, never silently wrong numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from empirical_nets import mlp
from torch import nn

from ntkit.empirical import empirical_nngp, empirical_ntk, estimate_costs


@pytest.fixture
def model():
    torch.manual_seed(0)
    return mlp().double()


def x(n=4, d=5):
    return torch.randn(n, d, dtype=torch.float64)


def test_unknown_method_lists_valid(model):
    with pytest.raises(ValueError, match="jacobian.*ntk_vp.*structured"):
        empirical_ntk(model, x(), method="fast")


def test_feature_shape_mismatch(model):
    with pytest.raises(ValueError, match="feature shape"):
        empirical_ntk(model, x(), x(3, 6))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_inf_inputs(model, bad):
    a = x()
    a[1, 2] = bad
    with pytest.raises(ValueError, match="x1 contains NaN or inf"):
        empirical_ntk(model, a)
    with pytest.raises(ValueError, match="x2 contains NaN or inf"):
        empirical_ntk(model, x(), a)
    with pytest.raises(ValueError, match="NaN or inf"):
        empirical_nngp(model, a)


def test_empty_batch(model):
    with pytest.raises(ValueError, match="x1 is an empty batch"):
        empirical_ntk(model, x(0))
    with pytest.raises(ValueError, match="x2 is an empty batch"):
        empirical_ntk(model, x(), x(0))


@pytest.mark.parametrize("bs", [0, -1, 2.5, True])
def test_bad_batch_size(model, bs):
    with pytest.raises(ValueError, match="batch_size"):
        empirical_ntk(model, x(), batch_size=bs)


def test_empty_param_selection(model):
    with pytest.raises(ValueError, match="selects no parameter"):
        empirical_ntk(model, x(), params=[])
    with pytest.raises(ValueError, match="selects no parameter"):
        empirical_ntk(model, x(), params=lambda n, p: False)
    with pytest.raises(ValueError, match="no parameter named 'nope'"):
        empirical_ntk(model, x(), params=["nope"])
    with pytest.raises(ValueError, match="not a parameter of the model"):
        empirical_ntk(model, x(), params=[torch.zeros(3)])
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        empirical_ntk(model, x())


def test_non_floating_parameter(model):
    model.register_parameter("count", nn.Parameter(torch.tensor([3]), requires_grad=False))
    empirical_ntk(model, x())   # not selected by default (no requires_grad)
    with pytest.raises(TypeError, match="'count' has dtype torch.int64"):
        empirical_ntk(model, x(), params=["count", "0.weight"])


def test_not_a_module():
    with pytest.raises(TypeError, match="nn.Module"):
        empirical_ntk(lambda t: t, x())


def test_numpy_inputs_and_output_dtype(model):
    a = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    k = empirical_ntk(model, a)
    assert k.dtype == torch.float64 and k.shape == (3, 3)


def test_output_without_batch_axis():
    class Scalar(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 1).double()

        def forward(self, t):
            return self.lin(t).sum()

    with pytest.raises(ValueError, match="batch on axis 0"):
        empirical_ntk(Scalar(), x())


class Center(nn.Module):
    """Subtracts the batch mean: every output depends on the whole batch."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 3).double()

    def forward(self, t):
        h = self.lin(t)
        return h - h.mean(0, keepdim=True)


@pytest.mark.parametrize("make", [
    lambda: Center(),
    lambda: nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, track_running_stats=False),
                          nn.Linear(4, 2)).double(),
])
@pytest.mark.parametrize("method", ["jacobian", "ntk_vp", "structured", "auto"])
def test_batch_mixing_detected(make, method):
    with pytest.raises(ValueError, match="depends on the other examples"):
        empirical_ntk(make(), x(6), method=method)


def test_batch_mixing_detected_nngp():
    with pytest.raises(ValueError, match="depends on the other examples"):
        empirical_nngp(Center(), x(6))


def test_batchnorm_with_running_stats_is_fine():
    """Train-mode BatchNorm is evaluated in eval mode (running statistics): no mixing."""
    net = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double().train()
    inputs = x(6)
    a = empirical_ntk(net, inputs, method="structured")
    b = empirical_ntk(net, inputs, method="jacobian")
    assert torch.allclose(a, b, rtol=1e-12, atol=0)
    assert net.training


def test_random_forward_is_reported():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 2).double()

        def forward(self, t):
            return self.lin(t) + torch.randn_like(t[:, :2])

    with pytest.raises(RuntimeError, match="random operation"):
        empirical_ntk(Noisy(), x(), method="jacobian")


def test_estimate_costs_ranks_structured_first_on_wide_mlp():
    net = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                        nn.Linear(512, 4)).double()
    costs = estimate_costs(net, x(8, 64))
    assert set(costs) == {"jacobian", "ntk_vp", "structured"}
    assert min(costs, key=lambda m: costs[m][0]) == "structured"
    assert costs["structured"][1] < costs["jacobian"][1]
