"""`LayerNorm(affine=True)`: trainable γ (= 1) and β (= 0), torch's elementwise affine.

Truth: the finite network's empirical NTK (all parameters, γ and β included) averaged over
independent initializations, within its sampling error plus a finite-width allowance
fixed in advance; the finite module against ``torch.nn.LayerNorm`` itself (same
parameters: same outputs and empirical NTKs); and exact identities (NNGP unchanged,
masked positions 0). Each Monte Carlo test also checks that the kernel without the γ/β
terms is rejected, so the comparison can tell them apart.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ntkit
from ntkit import layers as nl

N_NETS = 24
# Allowance for the O(1/width) finite-width bias, fixed before measuring, relative to the
# largest kernel entry; plus 5 standard errors of the mean over the N_NETS networks.
BIAS_REL = 0.04
N_SE = 5.0


def _mc_ntk(net, x, shape, mask_constant=None):
    ntks = torch.stack([ntkit.empirical_ntk(net.build(shape, seed=s), x,
                                            mask_constant=mask_constant)
                        for s in range(N_NETS)])
    return ntks.mean(0), ntks.std(0) / N_NETS**0.5


def _within(mean, se, want) -> bool:
    tol = N_SE * se + BIAS_REL * want.abs().max()
    return bool(((mean - want).abs() <= tol).all())


def _check_mc(make, x, shape, mask_constant=None):
    kw = {} if x.ndim == 2 else {"channels_last": False}
    if mask_constant is not None:
        kw["mask_constant"] = mask_constant
    want = make(True).kernel(x, get="ntk", **kw)
    plain = make(False).kernel(x, get="ntk", **kw)
    mean, se = _mc_ntk(make(True), x, shape, mask_constant)
    assert _within(mean, se, want), (mean, se, want)
    assert not _within(mean, se, plain), "the γ/β terms are too small to be tested here"
    return want


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


@pytest.mark.parametrize("bias", [True, False])
def test_dense_monte_carlo(bias):
    def make(affine):
        return nl.serial(nl.Dense(256, w_std=1.3, b_std=0.4),
                         nl.LayerNorm(affine=affine, bias=bias), nl.Dense(256), nl.ReLU(),
                         nl.Dense(1))
    _check_mc(make, _x(4, 3), 3)


@pytest.mark.parametrize("axis", [1, (1, 2)])
def test_conv_full_storage_monte_carlo(axis):
    """GlobalAvgPool right after the LayerNorm sums every position pair, so the kernel is
    stored full there: with axis=(1, 2) γ, β are per (c, position) and only same-position
    pairs gain their terms; with axis=1 they are per channel, shared by all positions."""
    def make(affine):
        return nl.serial(nl.Conv(128, (3,), padding="SAME"),
                         nl.LayerNorm(axis=axis, affine=affine), nl.GlobalAvgPool(),
                         nl.Dense(128), nl.ReLU(), nl.Dense(1))
    _check_mc(make, _x(3, 2, 5), (2, 5))


def test_full_storage_delta_is_exact():
    """Exact identities for the γ/β terms: diagonal storage gains nngp' + 1; through
    GlobalAvgPool (full storage) the gain is the pooled nngp' + 1 when γ, β are shared by
    all positions (axis=1), and only the position diagonal's mean / L when they are per
    position (axis=(1, 2))."""
    x, L = _x(3, 2, 4), 4
    kw = {"channels_last": False}
    for axis in (1, (1, 2)):
        def make(affine, *tail, axis=axis):
            return nl.serial(nl.Conv(8, (3,), padding="SAME"),
                             nl.LayerNorm(axis=axis, affine=affine), *tail)
        gain = make(True).kernel(x, get="ntk", **kw) - make(False).kernel(x, get="ntk", **kw)
        nngp = make(True).kernel(x, get="nngp", **kw)            # (3, 3, L): diagonal
        torch.testing.assert_close(gain, nngp + 1.0, rtol=1e-12, atol=1e-12)
        pooled_gain = (make(True, nl.GlobalAvgPool()).kernel(x, get="ntk", **kw)
                       - make(False, nl.GlobalAvgPool()).kernel(x, get="ntk", **kw))
        if axis == 1:
            want = make(True, nl.GlobalAvgPool()).kernel(x, get="nngp", **kw) + 1.0
        else:
            want = (nngp + 1.0).mean(-1) / L
        torch.testing.assert_close(pooled_gain, want, rtol=1e-12, atol=1e-12)


def test_nngp_unchanged():
    x = _x(5, 3)
    for bias in (True, False):
        a = nl.serial(nl.Dense(4), nl.LayerNorm(affine=True, bias=bias), nl.Erf(), nl.Dense(2))
        b = nl.serial(nl.Dense(4), nl.LayerNorm(), nl.Erf(), nl.Dense(2))
        assert torch.equal(a.kernel(x, get="nngp"), b.kernel(x, get="nngp"))


def test_masked_positions_stay_zero_and_monte_carlo():
    mc = -5.0
    x = _x(3, 2, 5)
    x[0, :, 3:] = mc
    x[2, :, 1] = mc

    def make(affine):
        return nl.serial(nl.Conv(128, (1,)), nl.LayerNorm(axis=(1, 2), affine=affine),
                         nl.Conv(128, (1,)), nl.ReLU(), nl.GlobalAvgPool(),
                         nl.Dense(1))
    _check_mc(make, x, (2, 5), mask_constant=mc)
    k = nl.serial(nl.Conv(8, (1,)), nl.LayerNorm(axis=(1, 2), affine=True)).kernel(
        x, get="ntk", channels_last=False, mask_constant=mc)
    assert (k[0, :, 3:] == 0).all() and (k[:, 0, 3:] == 0).all() and (k[2, :, 1] == 0).all()
    assert (k[1, 1] > 0).all()


def _copy_params(src: nn.Module, dst: nn.Module):
    ps, pd = list(src.parameters()), list(dst.parameters())
    assert [p.shape for p in ps] == [p.shape for p in pd]
    with torch.no_grad():
        for a, b in zip(ps, pd, strict=True):
            b.copy_(a)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("spatial", [False, True])
def test_finite_module_is_torch_layernorm(spatial, bias):
    """The built module = torch's nn.LayerNorm (γ, β perturbed from their init, so their
    placement matters): same outputs and the same empirical NTK over all parameters."""
    C, L = 6, 5
    if spatial:
        x = _x(4, 2, L)
        spec = nl.serial(nl.Conv(C, (3,), padding="SAME", parameterization="standard",
                                 b_std=1.0),
                         nl.LayerNorm(axis=(1, 2), eps=1e-5, affine=True, bias=bias),
                         nl.Flatten(), nl.Dense(2, parameterization="standard"))
        ref = nn.Sequential(nn.Conv1d(2, C, 3, padding=1), nn.LayerNorm((C, L), bias=bias),
                            nn.Flatten(), nn.Linear(C * L, 2)).double()
        shape = (2, L)
    else:
        x = _x(4, 3)
        spec = nl.serial(nl.Dense(C, parameterization="standard", b_std=1.0),
                         nl.LayerNorm(eps=1e-5, affine=True, bias=bias),
                         nl.Dense(2, parameterization="standard"))
        ref = nn.Sequential(nn.Linear(3, C), nn.LayerNorm(C, bias=bias),
                            nn.Linear(C, 2)).double()
        shape = 3
    mod = spec.build(shape, seed=1)
    init = [p.detach().clone() for p in mod.parameters()]
    _copy_params(ref, mod)   # torch's own init, then perturb γ, β in both
    with torch.no_grad():
        for p in ref[1].parameters():
            p.add_(0.3 * _x(*p.shape, seed=p.numel()))
    _copy_params(ref, mod)
    torch.testing.assert_close(mod(x), ref(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ntkit.empirical_ntk(mod, x), ntkit.empirical_ntk(ref, x),
                               rtol=1e-11, atol=1e-11)
    # the spec initializes γ = 1, β = 0 as torch does
    n_ln = 2 if bias else 1
    ln = [p for p in init if p.shape == ((C,) if not spatial else (C, L))][-n_ln:]
    assert torch.equal(ln[0], torch.ones_like(ln[0]))
    if bias:
        assert torch.equal(ln[1], torch.zeros_like(ln[1]))


@pytest.mark.parametrize("act", ["relu", "leaky"])
def test_homogeneous_activation_right_after_monte_carlo(act):
    """u φ'(u) = φ(u) (ReLU, LeakyReLU): γ's term z(x)z(x') maps to nngp' exactly."""
    def make(affine):
        a = nl.ReLU() if act == "relu" else nl.LeakyReLU(0.2)
        return nl.serial(nl.Dense(256, w_std=1.3, b_std=0.4), nl.LayerNorm(affine=affine),
                         a, nl.Dense(1))
    _check_mc(make, _x(4, 3), 3)


@pytest.mark.parametrize("axis", [1, (1, 2)])
def test_relu_after_full_storage_monte_carlo(axis):
    def make(affine):
        return nl.serial(nl.Conv(128, (3,), padding="SAME"),
                         nl.LayerNorm(axis=axis, affine=affine), nl.ReLU(),
                         nl.GlobalAvgPool(), nl.Dense(1))
    _check_mc(make, _x(3, 2, 5), (2, 5))


def test_other_activation_right_after_affine_is_refused():
    """For other φ, γ's term z(x)z(x') correlates with φ'(z) in a way the kernel does not
    track: refused, not silently wrong; so is a ReLU after a pooling in between (the
    tracked part is no longer own_coef · nngp there); the identity
    and a Dense/Conv in between are fine."""
    x = _x(4, 3)
    with pytest.raises(ValueError, match="Dense or Conv layer between"):
        nl.serial(nl.Dense(4), nl.LayerNorm(affine=True), nl.Erf(), nl.Dense(1)).kernel(x)
    with pytest.raises(ValueError, match="Dense or Conv layer between"):
        nl.serial(nl.Dense(4), nl.FanOut(2),
                  nl.parallel(nl.LayerNorm(affine=True), nl.Dense(4)), nl.FanInSum(),
                  nl.ReLU()).kernel(x)
    with pytest.raises(ValueError, match="Dense or Conv layer between"):
        nl.serial(nl.Conv(4, (3,)), nl.LayerNorm(affine=True), nl.AvgPool((2,)),
                  nl.ReLU()).kernel(_x(2, 3, 6), channels_last=False)
    nl.serial(nl.Dense(4), nl.LayerNorm(affine=True), nl.Dense(4), nl.Tanh()).kernel(x)
    # NNGP alone has no γ/β terms: nothing to refuse
    nl.serial(nl.Dense(4), nl.LayerNorm(affine=True), nl.Erf()).kernel(x, get="nngp")


def test_bad_arguments():
    with pytest.raises(TypeError, match="affine"):
        nl.LayerNorm(affine=1)
    with pytest.raises(TypeError, match="bias"):
        nl.LayerNorm(affine=True, bias="no")
