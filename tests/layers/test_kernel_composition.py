"""Kernels compose as neural-tangents' kernel_fn: net.kernel(k) with a Kernel is
net.kernel_map(k), and mapping a computed kernel further equals the whole network's."""

from __future__ import annotations

import pytest
import torch

import ntkit.layers as nl
from ntkit.kernel import input_kernel

F64 = torch.float64


def test_kernel_of_a_kernel_is_its_kernel_map():
    x = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    net = nl.serial(nl.Dense(8, b_std=0.1), nl.Erf())
    k0 = input_kernel(x, None, track_ntk=True)
    a, b = net.kernel(k0), net.kernel_map(k0)
    assert torch.equal(a.nngp, b.nngp) and torch.equal(a.ntk, b.ntk)
    with pytest.raises(ValueError, match="x2 must be None"):
        net.kernel(k0, x)


@pytest.mark.parametrize("cross", [False, True])
def test_mapping_a_computed_kernel_equals_the_whole_network(cross):
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(6, 4, dtype=F64, generator=g), torch.randn(3, 4, dtype=F64, generator=g)
    head = nl.serial(nl.Dense(8, b_std=0.2), nl.ReLU())
    tail = nl.serial(nl.Dense(8), nl.ReLU(), nl.Dense(1))
    x2 = x2 if cross else None
    whole = nl.serial(head, tail).kernel(x1, x2, get=None)
    composed = tail.kernel(head.kernel(x1, x2, get=None))
    for name in ("nngp", "ntk", "cov1"):
        torch.testing.assert_close(getattr(composed, name), getattr(whole, name),
                                   rtol=1e-14, atol=0)


def test_a_computed_kernel_keeps_its_flags():
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    k = nl.serial(nl.Dense(8), nl.ReLU()).kernel(x, get=None)
    assert k.gaussian is False
    with pytest.raises(ValueError, match="Gaussian"):
        nl.ReLU().kernel(k)   # as serial(Dense, ReLU, ReLU) refuses it
