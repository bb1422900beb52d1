"""Regression tests for three kernel-map defects found by a differential test against
neural-tangents, each checked against independent truth: a closed form, or a Monte Carlo
average over the built finite network.

- Identity on a single-position full-storage kernel with x2 given crashed (its dual
  returned a view that the variance map then wrote into).
- Conv -> Flatten -> ReLU -> Dense applied the dual to the position-averaged covariance.
- FanInSum accepted correlated streams (a ReLU and a LayerNorm of one Dense output; an
  Identity and a pooled copy of one stream) and missed their cross-covariance.
"""

from __future__ import annotations

import math

import pytest
import torch

import ntkit.layers as nl

F64 = torch.float64


def mc_nngp(net, x1, x2, in_features, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error of f(x1)·f(x2)/k over ``n_samples`` built networks."""
    ests = []
    with torch.no_grad():
        for s in range(n_samples):
            f = net.build(in_features, seed=1000 + s)
            a, b = f(x1), f(x2)
            ests.append(a @ b.T / a.shape[1])
    e = torch.stack(ests)
    return e.mean(0), e.std(0) / math.sqrt(n_samples)


def check_mc(net, x1, x2, in_features, n_samples=24):
    """The kernel lies within 5 standard errors (plus a 1/width bias allowance of 1% of the
    kernel's scale) of the Monte Carlo mean. Both fixed before any run."""
    k = net.kernel(x1, x2, get="nngp")
    mean, se = mc_nngp(net, x1, x2, in_features, n_samples)
    scale = k.abs().max()
    assert torch.all((mean - k).abs() <= 5 * se + 0.01 * scale), (k, mean, se)
    return k


# ---- Identity on a kernel whose dual returns a view -------------------------------

def test_identity_on_a_single_position_full_kernel_with_x2():
    torch.manual_seed(0)
    x1, x2 = torch.randn(3, 2, 1, dtype=F64), torch.randn(2, 2, 1, dtype=F64)
    net = nl.serial(nl.Conv(1, (1,)), nl.Identity(), nl.GlobalAvgPool(), nl.Dense(1))
    k = net.kernel(x1, x2, get=("nngp", "ntk"))
    # Closed form: every layer is linear with unit weight variance and no bias.
    nngp = x1[:, :, 0] @ x2[:, :, 0].T / 2
    torch.testing.assert_close(k.nngp, nngp, rtol=1e-14, atol=0)
    torch.testing.assert_close(k.ntk, 2 * nngp, rtol=1e-14, atol=0)


def test_identity_on_a_full_kernel_leaves_its_input_unaliased():
    torch.manual_seed(1)
    x1, x2 = torch.randn(3, 2, 4, dtype=F64), torch.randn(2, 2, 4, dtype=F64)
    with_id = nl.serial(nl.Conv(3, (2,)), nl.Identity(), nl.GlobalAvgPool(), nl.Dense(1))
    without = nl.serial(nl.Conv(3, (2,)), nl.GlobalAvgPool(), nl.Dense(1))
    a, b = with_id.kernel(x1, x2, get=None), without.kernel(x1, x2, get=None)
    for name in ("nngp", "ntk", "cov1", "cov2"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


# ---- an activation after Flatten ---------------------------------------------------

def test_relu_after_flatten_is_the_same_network_as_before_it():
    torch.manual_seed(2)
    x1, x2 = torch.randn(4, 2, 5, dtype=F64), torch.randn(3, 2, 5, dtype=F64)
    after = nl.serial(nl.Conv(8, (2,)), nl.Flatten(), nl.ReLU(), nl.Dense(1))
    before = nl.serial(nl.Conv(8, (2,)), nl.ReLU(), nl.Flatten(), nl.Dense(1))
    a, b = after.kernel(x1, x2), before.kernel(x1, x2)
    assert torch.equal(a.nngp, b.nngp) and torch.equal(a.ntk, b.ntk)


def test_relu_after_flatten_matches_monte_carlo():
    torch.manual_seed(3)
    x1, x2 = torch.randn(3, 2, 5, dtype=F64), torch.randn(3, 2, 5, dtype=F64)
    net = nl.serial(nl.Conv(512, (2,)), nl.Flatten(), nl.ReLU(), nl.Dense(256))
    check_mc(net, x1, x2, (2, 5))


def test_an_activation_after_a_nested_flatten_is_refused():
    x = torch.randn(3, 2, 5, dtype=F64)
    net = nl.serial(nl.serial(nl.Conv(4, (2,)), nl.Flatten()), nl.ReLU(), nl.Dense(1))
    with pytest.raises(ValueError, match="before Flatten"):
        net.kernel(x)


def test_an_activation_after_fan_in_concat_is_refused():
    x = torch.randn(3, 4, dtype=F64)
    net = nl.serial(nl.FanOut(2), nl.parallel(nl.Dense(4), nl.Dense(4, w_std=2.0)),
                    nl.FanInConcat(), nl.ReLU(), nl.Dense(1))
    with pytest.raises(ValueError, match="FanInConcat"):
        net.kernel(x)


def test_linear_maps_after_flatten_stay_allowed():
    torch.manual_seed(4)
    x1, x2 = torch.randn(3, 2, 5, dtype=F64), torch.randn(3, 2, 5, dtype=F64)
    net = nl.serial(nl.Conv(512, (2,)), nl.ReLU(), nl.Conv(512, (2,)), nl.Flatten(),
                    nl.LayerNorm(), nl.Dense(512), nl.ReLU(), nl.Dense(256))
    check_mc(net, x1, x2, (2, 5))


# ---- the independence rule of FanInSum -----------------------------------------------

def test_relu_and_layernorm_of_one_dense_output_are_refused():
    x = torch.randn(3, 4, dtype=F64)
    net = nl.serial(nl.Dense(8), nl.FanOut(2), nl.parallel(nl.ReLU(), nl.LayerNorm()),
                    nl.FanInSum(), nl.Dense(1))
    with pytest.raises(ValueError, match="correlated"):
        net.kernel(x)


@pytest.mark.parametrize("branch", [nl.AvgPool((1,)), nl.Identity(),
                                    nl.serial(nl.LayerNorm(), nl.Identity())])
def test_a_stream_and_a_linear_copy_of_it_are_refused(branch):
    x = torch.randn(3, 2, 4, dtype=F64)
    net = nl.serial(nl.Conv(4, (1,)), nl.FanOut(2), nl.parallel(nl.Identity(), branch),
                    nl.FanInSum(), nl.GlobalAvgPool(), nl.Dense(1))
    with pytest.raises(ValueError, match="correlated"):
        net.kernel(x)


def test_a_fresh_dense_after_layernorm_is_independent_of_the_relu_branch():
    torch.manual_seed(5)
    x1, x2 = torch.randn(3, 4, dtype=F64), torch.randn(3, 4, dtype=F64)
    net = nl.serial(nl.Dense(1024, b_std=0.3), nl.FanOut(2),
                    nl.parallel(nl.ReLU(), nl.serial(nl.LayerNorm(), nl.Dense(1024))),
                    nl.FanInSum(), nl.Dense(256))
    check_mc(net, x1, x2, 4)


def test_a_residual_block_stays_allowed():
    torch.manual_seed(6)
    x1, x2 = torch.randn(3, 4, dtype=F64), torch.randn(3, 4, dtype=F64)
    net = nl.serial(nl.Dense(1024), nl.FanOut(2),
                    nl.parallel(nl.Identity(), nl.serial(nl.ReLU(), nl.Dense(1024))),
                    nl.FanInSum(), nl.ReLU(), nl.Dense(256))
    check_mc(net, x1, x2, 4)
