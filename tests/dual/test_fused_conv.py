"""Fused duals on the neural-tangents CNN fixtures: the same kernels as eager, on full and
per-position storage, for every fixture network.

Fused and eager loops may round an operation differently by an ulp; entries of examples
at correlation ±1 (the fixtures' duplicate, scaled and antipodal rows) then move by the
arc-cosine's √ε amplification, elsewhere by a few ε of the scale. The comparison is
`kernel_compare.assert_kernels_close`: that conditioning bound, with ``gain`` = L/(2π)
for the L arc-cosine layers of the network."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ntkit.dual import fused

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kernel_compare import assert_kernels_close  # noqa: E402

LAYERS = Path(__file__).resolve().parents[1] / "layers"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nt_conv_kernels.npz"
if not FIXTURE.exists():
    pytest.skip(f"{FIXTURE} missing", allow_module_level=True)
sys.path.insert(0, str(LAYERS))
from conv_archs import ARCHS, to_ntkit  # noqa: E402  (test data beside tests/layers)


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as data:
        return dict(data)


def _collinear(xa, xb):
    """(n1, n2) bool: pairs of inputs that are positive or negative multiples (or zero)."""
    a, b = xa.reshape(len(xa), -1), xb.reshape(len(xb), -1)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    cos = (a @ b.T) / (na[:, None] * nb[None, :]).clamp_min(1e-300)
    zero = (na[:, None] == 0) | (nb[None, :] == 0)
    return zero | (cos.abs() >= 1 - 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ARCHS))
def test_fused_matches_eager_on_nt_fixture_networks(ref, name):
    x1 = torch.from_numpy(ref[f"{name}/x1"])
    x2 = torch.from_numpy(ref[f"{name}/x2"])
    net = to_ntkit(name)
    old = fused.set_min_numel(1)  # fuse every tile, however small
    try:
        for args in ((x1,), (x1, x2)):
            before = fused.stats()["calls"]
            got = net.kernel(*args, get=("nngp", "ntk"), compile="fused")
            calls = fused.stats()["calls"] - before
            want = net.kernel(*args, get=("nngp", "ntk"), compile=False)
            layers = repr(net).count("ReLU(") + repr(net).count("Abs(")
            gain = max(1.0, layers / (2 * math.pi))
            xa, xb = x1, args[-1]
            for what, a, b in zip(("nngp", "ntk"), got, want, strict=True):
                v1 = net.kernel(xa, get=what, compile=False).diagonal()
                v2 = net.kernel(xb, get=what, compile=False).diagonal()
                # Collinear inputs (the fixtures' duplicate, scaled and antipodal rows)
                # are at correlation ±1 in every layer; the computed output correlation of
                # such a pair is itself off by that layer rounding, so they take ρ = 1.
                rho = (b.abs() / (v1[:, None] * v2[None, :]).sqrt()).clamp(max=1.0)
                rho = torch.where(_collinear(xa, xb), torch.ones_like(rho), rho)
                assert_kernels_close(a, b, name=f"{name} {what} ({len(args)} inputs)",
                                     gain=gain, var1=v1, var2=v2, corr=rho)
            # Networks with a closed-form activation really ran fused kernels.
            assert calls > 0 or not any(k in repr(net) for k in ("ReLU", "Erf", "Gelu"))
    finally:
        fused.set_min_numel(old)
