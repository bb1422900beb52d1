"""Shared fixtures of the predict tests: neural-tangents reference numbers and a tiny
stand-in for an ntkit layer spec (a hand-written analytic kernel)."""

from __future__ import annotations

import math
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURE = Path(__file__).parent / "fixtures" / "nt_predict.npz"


class ReluNetStub:
    """Kernel of Dense(w, b) → Relu → Dense(w, b) in the NTK parameterization.

    Mimics ``net.kernel(x1, x2=None, get=...)`` of ntkit layer specs: float64 tensors,
    a namedtuple for a tuple ``get``, a tensor for a single name. Counts its calls.
    """

    def __init__(self, w_std: float = 1.5, b_std: float = 0.1):
        self.w, self.b = w_std, b_std
        self.calls: list[tuple[int, int | None, tuple[str, ...]]] = []

    def _maps(self, x1, x2):
        x2_is_x1 = x2 is None
        x1 = torch.as_tensor(x1, dtype=torch.float64)
        x2 = x1 if x2 is None else torch.as_tensor(x2, dtype=torch.float64)
        d = x1.shape[1]
        w2, b2 = self.w ** 2, self.b ** 2
        k0 = x1 @ x2.T / d
        v1 = (x1 * x1).sum(1) / d * w2 + b2
        v2 = (x2 * x2).sum(1) / d * w2 + b2
        k1 = w2 * k0 + b2  # first Dense: nngp = ntk
        if x2_is_x1:
            # Exact diagonal, as ntkit's engine does: c = v bitwise, so v·v − c² = 0 and the
            # angle is exactly 0 there (not ~1e-8 of amplified rounding).
            k1.diagonal().copy_(v1)
        prod = v1[:, None] * v2[None, :]
        norm = torch.sqrt(prod)
        # Angle by atan2, as DESIGN.md asks (stable near correlation 1).
        theta = torch.atan2(torch.sqrt(torch.clamp(prod - k1 ** 2, min=0.0)), k1)
        k2 = norm / (2 * math.pi) * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta))
        dk2 = (math.pi - theta) / (2 * math.pi)
        nngp = w2 * k2 + b2
        ntk = nngp + w2 * k1 * dk2
        return nngp, ntk, k1

    def kernel(self, x1, x2=None, get=("nngp", "ntk")):
        names = (get,) if isinstance(get, str) else tuple(get)
        self.calls.append((len(x1), None if x2 is None else len(x2), names))
        nngp, ntk, _ = self._maps(x1, x2)
        vals = {"nngp": nngp, "ntk": ntk}
        if isinstance(get, str):
            return vals[get]
        return namedtuple("Kernels", names)(*(vals[g] for g in names))


@pytest.fixture(scope="session")
def nt():
    """Reference arrays from neural-tangents 0.6.5 (see fixtures/make_nt_predict.py)."""
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture
def relu_net():
    return ReluNetStub()


@pytest.fixture(scope="session")
def small_problem():
    """A well-conditioned toy problem: kernels of the stub on random inputs."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    xt = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(10, 2, generator=g, dtype=torch.float64)
    net = ReluNetStub()
    kdd = net.kernel(x, None)
    ktd = net.kernel(xt, x)
    ktt = net.kernel(xt, None)
    return dict(x=x, xt=xt, y=y, kdd=kdd, ktd=ktd, ktt=ktt,
                f0=0.2 * torch.randn(10, 2, generator=g, dtype=torch.float64),
                ft0=0.2 * torch.randn(6, 2, generator=g, dtype=torch.float64))


def assert_close(a, b, rtol: float = 1e-10, what: str = ""):
    """Max abs error ≤ rtol × max(1, max |b|): relative to the reference's scale."""
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a)
    b = np.asarray(b)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    scale = max(1.0, float(np.abs(b).max()))
    err = float(np.abs(a - b).max())
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol:.1g} × {scale:.3g}"
