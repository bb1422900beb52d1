"""Monte Carlo over a user's module: re-initialize it with its own init, average."""

from __future__ import annotations

import torch
from lift_helpers import reset
from torch import nn

import ntkit


class Reinit:
    """A duck-typed spec for `ntkit.monte_carlo_kernel`: ``build(in_features, seed)``
    re-initializes the same module with its own ``reset_parameters`` (or ``init_fn``)."""

    def __init__(self, module: nn.Module, init_fn=reset):
        self.module, self.init_fn = module, init_fn

    def build(self, in_features, seed=0, dtype=torch.float64):
        torch.manual_seed(seed)
        self.init_fn(self.module)
        return self.module


def samples(module: nn.Module, x: torch.Tensor, n: int, init_fn=reset, seed: int = 0):
    """Per-sample f(x)f(x)ᵀ/k and empirical NTKs (n, N, N) of ``n`` re-initializations."""
    nngps, ntks = [], []
    for s in range(n):
        torch.manual_seed(seed + s)
        init_fn(module)
        with torch.no_grad():
            f = module(x).reshape(x.shape[0], -1)
        nngps.append(f @ f.T / f.shape[1])
        ntks.append(ntkit.empirical_ntk(module, x))
    return torch.stack(nngps), torch.stack(ntks)
