"""Masked inputs (neural-tangents' ``mask_constant``) end to end: ``net.kernel(...,
mask_constant=c)`` against neural-tangents 0.6.5 (fixture from
tests/fixtures/make_nt_masks.py, architectures in tests/layers/mask_archs.py), exact
identities (a single present position is that position alone), the finite network
(``module(x, mask_constant=c)``), and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from kernel_compare import kernel_tolerance
from mask_archs import ARCHS, MASK, SHAPES, inputs, to_ntkit

from ntkit import layers as nl
from ntkit.kernel import input_kernel

FIXTURE = Path(__file__).parents[1] / "fixtures" / "nt_masks.npz"
# Pairs of an example with itself (or a bitwise copy): neural-tangents' arccos of a
# correlation rounded near 1 is off by up to sqrt(eps) ~ 1e-8 per ReLU layer there
# (ntkit makes those pairs exact), so they are compared at that level, as in
# tests/layers/test_conv_reference.py.
DEGENERATE_TOL = 1e-7


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as data:
        return dict(data)


def test_fixture_is_current(ref):
    """The stored inputs are the ones mask_archs.inputs makes (a stale fixture fails)."""
    for kind in SHAPES:
        x1, x2 = inputs(kind)
        np.testing.assert_array_equal(ref[f"{kind}/x1"], x1)
        np.testing.assert_array_equal(ref[f"{kind}/x2"], x2)
    assert {k.split("/")[0] for k in ref} == set(ARCHS) | set(SHAPES)


def _degenerate(x1, x2) -> np.ndarray:
    a, b = x1.reshape(len(x1), -1), x2.reshape(len(x2), -1)
    return (a[:, None, :] == b[None, :, :]).all(-1)


def _check(name, got, want, var1, var2, degenerate):
    assert got.shape == want.shape and np.isfinite(got).all(), name
    t = kernel_tolerance(want, var1=var1, var2=var2)
    ok = ~degenerate
    bad = np.abs(got - want) > t["tol"]
    assert not (bad & ok).any(), (name, np.argwhere(bad & ok), got, want)
    err = np.abs(got - want)[degenerate].max(initial=0.0) / np.abs(want).max()
    assert err < DEGENERATE_TOL, (name, "degenerate", err)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_matches_neural_tangents(ref, name):
    arch = ARCHS[name]
    x1 = torch.from_numpy(ref[f"{arch['input']}/x1"])
    x2 = torch.from_numpy(ref[f"{arch['input']}/x2"])
    net = to_ntkit(arch["layers"])
    k11 = net.kernel(x1, get=("nngp", "ntk"), mask_constant=MASK)
    k12 = net.kernel(x1, x2, get=("nngp", "ntk"), mask_constant=MASK)
    k22 = net.kernel(x2, get=("nngp", "ntk"), mask_constant=MASK)
    for field in ("nngp", "ntk"):
        v1 = np.diagonal(getattr(k11, field).numpy()).copy()
        v2 = np.diagonal(getattr(k22, field).numpy()).copy()
        _check(f"{name}/11/{field}", getattr(k11, field).numpy(), ref[f"{name}/11/{field}"],
               v1, v1, _degenerate(x1.numpy(), x1.numpy()))
        _check(f"{name}/12/{field}", getattr(k12, field).numpy(), ref[f"{name}/12/{field}"],
               v1, v2, _degenerate(x1.numpy(), x2.numpy()))
        # Row 2 of x1 is fully masked: exactly 0, never NaN (neural-tangents too).
        assert (getattr(k11, field)[2] == 0).all() and (getattr(k12, field)[2] == 0).all()


def _first_pos_alone(x: torch.Tensor, keep: int) -> torch.Tensor:
    xm = torch.full_like(x, MASK)
    xm[:, :, keep] = x[:, :, keep]
    return xm


@pytest.mark.parametrize("net", [
    nl.serial(nl.Conv(5, (1,), w_std=1.3, b_std=0.2), nl.ReLU(), nl.GlobalAvgPool(),
              nl.Dense(1, b_std=0.1)),
    nl.serial(nl.Conv(4, (1,), w_std=1.2), nl.GlobalSelfAttention(4, 3, 3, 2, b_std=0.1),
              nl.ReLU(), nl.GlobalAvgPool(), nl.Dense(1)),
    # eps = 0: neural-tangents (and so ntkit) adds each absent position's eps to the
    # position mean of the variances, which a one-position input does not have.
    nl.serial(nl.Conv(4, (1,), w_std=1.2), nl.LayerNorm(axis=(1, 2), eps=0.0), nl.Erf(),
              nl.GlobalSumPool(), nl.Dense(1)),
], ids=["conv1-relu-gap", "attention", "layernorm-positions"])
def test_one_present_position_is_that_position_alone(net):
    """Masking all positions but p gives the kernel of the one-position input x[:, :, p]
    (position-wise layers, attention over present keys, pools and norms over present
    positions); a different kept position in x2 too."""
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(3, 3, 5, dtype=torch.float64, generator=g)
    x2 = torch.randn(2, 3, 5, dtype=torch.float64, generator=g)
    got = net.kernel(_first_pos_alone(x1, 2), _first_pos_alone(x2, 4), get=("nngp", "ntk"),
                     mask_constant=MASK)
    want = net.kernel(x1[:, :, 2:3], x2[:, :, 4:5], get=("nngp", "ntk"), channels_last=False)
    for f in ("nngp", "ntk"):
        torch.testing.assert_close(getattr(got, f), getattr(want, f), rtol=1e-13, atol=0)


def test_masked_input_kernel_fields():
    """input_kernel: entries equal to the constant are zeroed, a position is absent only
    when all its channels are, and the masks travel on (mask2 None when x2 is x1)."""
    x = torch.tensor([[[1.0, -7.0, -7.0], [2.0, 3.0, -7.0]]], dtype=torch.float64)
    k = input_kernel(x, None, track_ntk=False, mask_constant=-7)
    assert k.mask1.tolist() == [[False, False, True]] and k.mask2 is None
    z = torch.tensor([[[1.0, 0.0, 0.0], [2.0, 3.0, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(k.nngp, input_kernel(z, None, track_ntk=False).nngp,
                               rtol=0, atol=0)
    k12 = input_kernel(x, x.clone(), track_ntk=False, mask_constant=-7.0)
    assert k12.mask2.tolist() == [[False, False, True]]
    assert input_kernel(x, None, track_ntk=False).mask1 is None


def test_no_mask_constant_is_bitwise_unchanged():
    """A mask constant that no entry equals gives the unmasked kernel bitwise."""
    x = torch.randn(4, 3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    net = to_ntkit(ARCHS["transformer_softmax"]["layers"])
    a = net.kernel(x, get=("nngp", "ntk"))
    b = net.kernel(x, get=("nngp", "ntk"), mask_constant=123.0)
    assert torch.equal(a.nngp, b.nngp) and torch.equal(a.ntk, b.ntk)


@pytest.mark.parametrize("bad,err", [
    ("a", TypeError), (True, TypeError), (float("nan"), ValueError),
    (float("inf"), ValueError), (torch.ones(2), TypeError), (1 + 2j, TypeError)])
def test_bad_mask_constant(bad, err):
    net = nl.serial(nl.Dense(3), nl.ReLU(), nl.Dense(1))
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(err, match="mask_constant"):
        net.kernel(x, mask_constant=bad)
    with pytest.raises(err, match="mask_constant"):
        net.build(4)(x, mask_constant=bad)


def test_mask_constant_accepts_numpy_and_tensor_scalars():
    x = torch.randn(3, 4, dtype=torch.float64)
    x[1] = 2.5
    net = nl.serial(nl.Dense(3, b_std=0.3), nl.ReLU(), nl.Dense(1, b_std=0.2))
    ref = net.kernel(x, get="nngp", mask_constant=2.5)
    for c in (np.float32(2.5), torch.tensor(2.5), np.float64(2.5)):
        assert torch.equal(net.kernel(x, get="nngp", mask_constant=c), ref)
    assert (ref[1] == 0).all() and (ref[:, 1] == 0).all()


def test_layers_without_mask_rules_refuse():
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    x[0, :, 0, 0] = MASK
    net = nl.serial(nl.Conv(3, (1, 1)), nl.ImageResize((-1, -1, 2, 2), "linear"),
                    nl.Flatten(), nl.Dense(1))
    with pytest.raises(ValueError, match="ImageResize does not support masked"):
        net.kernel(x, mask_constant=MASK)
    with pytest.raises(ValueError, match="ImageResize does not support masked"):
        net.build((2, 4, 4))(x, mask_constant=MASK)


def test_index_carries_masks():
    """Index selects the masks with the positions (neural-tangents' ``mask[idx]``): a
    reversed sequence with its first position masked is the original with its last."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 5, dtype=torch.float64, generator=g)
    xm = x.clone()
    xm[:, :, -1] = MASK
    head = nl.Conv(4, (1,), w_std=1.2, b_std=0.1)
    tail = [nl.ReLU(), nl.GlobalAvgPool(), nl.Dense(1)]
    rev = nl.serial(head, nl.Index((Ellipsis, slice(None, None, -1))), *tail)
    got = rev.kernel(xm, get=("nngp", "ntk"), mask_constant=MASK)
    want = nl.serial(head, *tail).kernel(x[:, :, :-1], get=("nngp", "ntk"))
    torch.testing.assert_close(got.nngp, want.nngp, rtol=1e-13, atol=0)
    torch.testing.assert_close(got.ntk, want.ntk, rtol=1e-13, atol=0)


def test_finite_network_masks_like_truncation():
    """The built network with absent trailing positions gives exactly its output on the
    truncated sequence (same weights: 1-wide convolutions, no embeddings), and 0 for a
    fully masked example."""
    net = to_ntkit([("conv", 4, (1,), None, "VALID", 1.3, 0.1), ("relu",),
                    ("residual", [("attn", dict(n_chan_out=4, n_chan_key=3, n_chan_val=3,
                                                n_heads=2, b_std=0.1))]),
                    ("layernorm", (1, 2)), ("gap",), ("dense", 2, 1.0, 0.1)])
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 3, 6, dtype=torch.float64, generator=g)
    xm = x.clone()
    xm[:, :, 4:] = MASK
    xm[2] = MASK
    full, short = net.build((3, 6), seed=5), net.build((3, 4), seed=5)
    y = full(xm, mask_constant=MASK)
    torch.testing.assert_close(y[:2], short(x[:2, :, :4]), rtol=1e-12, atol=1e-13)
    assert (y[2] == 0).all()


def test_attention_module_refuses_a_mask_of_the_wrong_shape():
    module = nl.GlobalSelfAttention(4, 3, 3, 1).build((3, 5))
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\)"):
        module(x, torch.zeros(2, 4, dtype=torch.bool))
