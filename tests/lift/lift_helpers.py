"""Shared helpers of the lift tests: kernels, exact one-layer moments, re-initialization."""

from __future__ import annotations

import torch
from torch import nn


def kernels(spec, x):
    k = spec.kernel(x, get=("nngp", "ntk"))
    return k.nngp, k.ntk


def assert_same(a, b, rtol=1e-12):
    """Equal to ``rtol`` of the largest entry (the two routes run the same maps)."""
    scale = float(b.abs().max())
    torch.testing.assert_close(a, b, rtol=0.0, atol=rtol * scale)


def reset(module: nn.Module) -> None:
    """PyTorch's own initialization of every layer (what init='torch' describes)."""
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def jacobian_moments(model: nn.Module, x: torch.Tensor, var_of):
    """Exact moments of a model that is linear in its parameters, which are independent
    with zero mean: E[f(x)·f(x')]/k = Σ_p Var(p) ∂f/∂p(x)·∂f/∂p(x')/k and the NTK
    Σ_p ∂f/∂p(x)·∂f/∂p(x')/k (both averaged over the k outputs). ``var_of(name, p)``
    gives each parameter's variance."""
    params = dict(model.named_parameters())

    def f(ps):
        return torch.func.functional_call(model, ps, (x,)).reshape(x.shape[0], -1)

    jac = torch.func.jacrev(f)(params)
    k = f(params).shape[1]
    nngp = 0.0
    ntk = 0.0
    for name, j in jac.items():
        j = j.reshape(x.shape[0], k, -1)
        gram = torch.einsum("iap,jap->ij", j, j) / k
        nngp = nngp + var_of(name, params[name]) * gram
        ntk = ntk + gram
    return nngp, ntk
