"""Mask-aware attention kernel map (neural-tangents' ``mask_constant``) on masked input
kernels (``input_kernel(..., mask_constant=)``, whose ``mask1``/``mask2`` fields are
(n, *S) bool, True: absent): GlobalSelfAttention matches neural-tangents 0.6.5
(fixture from tests/fixtures/make_nt_attention.py: one attention layer, after a 1-wide
bias-free Conv when it has positional embeddings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from attention_archs import attn_kwargs
from torch import Tensor

from ntkit import layers as nl
from ntkit.kernel import Kernel, input_kernel

FIXTURE = Path(__file__).parents[1] / "fixtures" / "nt_attention.npz"
MASK = -7.0
MASKED = {  # the same as make_nt_attention.MASKED
    "mask_softmax": dict(n_chan_out=3, n_chan_key=3, n_chan_val=3, n_heads=2, b_std=0.2),
    "mask_relu_sum_val": dict(n_chan_out=3, n_chan_key=3, n_chan_val=3, n_heads=1,
                              attention_mechanism="relu", pos_emb_type="sum",
                              decay="exp4", val_pos_emb=True, w_key_std=1.4),
    "mask_softmax_concat": dict(n_chan_out=3, n_chan_key=3, n_chan_val=3, n_heads=1,
                                pos_emb_type="concat", n_chan_pos_emb=2),
    "mask_identity_sqrt_sum": dict(n_chan_out=3, n_chan_key=3, n_chan_val=3, n_heads=1,
                                   linear_scaling=False, attention_mechanism="identity",
                                   pos_emb_type="sum", b_std=0.1),
}


def masked_input_kernel(x1: Tensor, x2: Tensor | None) -> Kernel:
    """The engine's masked input kernel: positions whose every channel equals MASK are
    absent (zeroed in the inputs, so their covariances are 0), masks attached."""
    return input_kernel(x1, x2, track_ntk=True, full=True, mask_constant=MASK)


def _net(kw):
    layer = nl.GlobalSelfAttention(**attn_kwargs(kw, torch))
    if kw.get("pos_emb_type", "none") == "none":
        return layer
    return nl.serial(nl.Conv(3, (1,), w_std=1.3, b_std=0.0), layer)


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files if k.startswith("masked/")}


@pytest.mark.parametrize("name", sorted(MASKED))
@pytest.mark.parametrize("pair", ["11", "12"])
def test_masked_attention_matches_neural_tangents(ref, name, pair):
    x1 = torch.from_numpy(ref["masked/x1"])
    x2 = None if pair == "11" else torch.from_numpy(ref["masked/x2"])
    k = _net(MASKED[name]).kernel_map(masked_input_kernel(x1, x2))
    assert k.mask1 is not None  # the masks travel with the kernel
    for field in ("nngp", "ntk"):
        got, want = getattr(k, field).numpy(), ref[f"masked/{name}/{pair}/{field}"]
        assert got.shape == want.shape
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err < 1e-10, (name, pair, field, err)
        # Example 2 of x1 is fully masked: exactly 0 (never NaN), as in neural-tangents.
        assert (got[2] == 0).all()


def test_one_position_left_is_that_position_alone():
    """x1 row 3 keeps only position 2: its kernel there equals that of the one-position
    input x[:, :, 2:3] (masked positions neither attend nor are attended)."""
    x = torch.randn(2, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    xm = x.clone()
    xm[:, :, [0, 1, 3, 4]] = MASK
    kw = MASKED["mask_softmax"]
    k = _net(kw).kernel_map(masked_input_kernel(xm, None))
    alone = _net(kw).kernel(x[:, :, 2:3], get=("nngp", "ntk"))
    torch.testing.assert_close(k.nngp[:, :, 2, 2], alone.nngp[:, :, 0, 0], rtol=1e-13, atol=0)
    torch.testing.assert_close(k.ntk[:, :, 2, 2], alone.ntk[:, :, 0, 0], rtol=1e-13, atol=0)
    assert (k.nngp[:, :, [0, 1, 3, 4]] == 0).all()


@pytest.mark.parametrize("mech", ["softmax", "relu"])
def test_finite_module_mask_equals_truncated_input(mech):
    """The finite layer with positions 3, 4 masked gives, at positions 0..2, exactly its
    output on the truncated input x[:, :, :3] (same weights: no embedding)."""
    x = torch.randn(3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    layer = nl.GlobalSelfAttention(6, 5, 4, 2, attention_mechanism=mech, b_std=0.3)
    full = layer.build((4, 5), seed=1)
    short = layer.build((4, 3), seed=1)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[:, 3:] = True
    torch.testing.assert_close(full(x, mask)[:, :, :3], short(x[:, :, :3]), rtol=1e-13,
                               atol=1e-14)
