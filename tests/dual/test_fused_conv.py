"""Fused duals on the neural-tangents CNN fixtures: the same kernels as eager (1e-13
relative in float64), on full and per-position storage, for every fixture network."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ntkit.dual import fused

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
            for a, b in zip(got, want, strict=True):
                err = float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
                assert err <= 1e-13, (name, len(args), err)
            # Networks with a closed-form activation really ran fused kernels.
            assert calls > 0 or not any(k in repr(net) for k in ("ReLU", "Erf", "Gelu"))
    finally:
        fused.set_min_numel(old)
