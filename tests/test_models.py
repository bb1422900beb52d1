"""ntkit.models: the presets' kernels (Myrtle-5 against neural-tangents), networks, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ntkit import layers as nl
from ntkit import models

sys.path.insert(0, str(Path(__file__).parent / "layers"))
from conv_archs import degenerate_pairs  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "nt_conv_kernels.npz"


def test_myrtle5_matches_neural_tangents():
    # The fixture's Myrtle-5 (tests/layers/conv_archs.py) pools 2×2 down to 1×1 and reads
    # out with Dense(w_std=1); the preset ends in GlobalAvgPool (the same map on 2×2) and
    # Dense(w_std=√2), which with b_std = 0 scales NNGP and NTK by exactly 2.
    with np.load(FIXTURE) as f:
        x1, x2 = f["myrtle5_8x8/x1"], f["myrtle5_8x8/x2"]
        ref = {g: f[f"myrtle5_8x8/12/{g}"] for g in ("nngp", "ntk")}
    k = models.myrtle(5, num_classes=1).kernel(torch.from_numpy(x1), torch.from_numpy(x2))
    ok = ~degenerate_pairs(x1, x2)
    for g in ("nngp", "ntk"):
        got = getattr(k, g).numpy() / 2
        err = np.abs(got - ref[g])[ok].max() / np.abs(ref[g]).max()
        assert err < 1e-10, (g, err)


def test_presets_build_and_agree_on_shapes():
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    for net in (models.myrtle(7, width=4), models.myrtle(10, width=4),
                models.wide_resnet(1, 1, 10)):
        assert net.build((3, 8, 8), seed=0)(x).shape == (3, 10)
        k = net.kernel(x, get="ntk")
        assert k.shape == (3, 3) and torch.isfinite(k).all()
    fc = models.fcn(depth=3, width=16, num_classes=2, activation=nl.Erf())
    assert fc.build(5)(torch.randn(4, 5, dtype=torch.float64)).shape == (4, 2)


@pytest.mark.parametrize("make, match", [
    (lambda: models.myrtle(6), "depth"),
    (lambda: models.myrtle(5, width=0), "width"),
    (lambda: models.myrtle(5, activation="relu"), "activation"),
    (lambda: models.wide_resnet(0), "block_size"),
    (lambda: models.wide_resnet(1, k=1.5), "k"),
    (lambda: models.fcn(depth=-1), "depth"),
    (lambda: models.fcn(num_classes=True), "num_classes"),
])
def test_bad_arguments_are_rejected(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
