"""GlobalSelfAttention: exact identities against independent computations, bad input, and
finite networks built from the same spec converging to the kernel (Monte Carlo)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ntkit
from ntkit import layers as nl
from ntkit.kernel import input_kernel

F64 = torch.float64


def _x(n=4, shape=(3, 5), seed=0):
    return torch.randn(n, *shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


# ---- exact identities ------------------------------------------------------------------

@pytest.mark.parametrize("mech", ["softmax", "identity", "abs", "relu"])
def test_kernel_independent_of_heads_and_finite_widths(mech):
    """The limit is over heads and key/value widths together; neural-tangents' kernel_fn
    (and so this one) does not depend on n_heads, n_chan_key, n_chan_val, n_chan_out."""
    x = _x()

    def net(h, w):
        return nl.serial(nl.Conv(4, (3,), padding="SAME", b_std=0.1),
                         nl.GlobalSelfAttention(w, 2 * w, w + 1, h, attention_mechanism=mech,
                                                pos_emb_type="sum"),
                         nl.ReLU(), nl.GlobalAvgPool(), nl.Dense(1))

    a = net(1, 3).kernel(x, get=("nngp", "ntk"))
    b = net(8, 17).kernel(x, get=("nngp", "ntk"))
    assert torch.equal(a.nngp, b.nngp) and torch.equal(a.ntk, b.ntk)


def test_identity_mechanism_is_a_linear_map_of_the_input_covariance():
    """Linear scaling, 'identity', on raw inputs X_i (P × C): Σ_ij = X_i X_jᵀ / C and
    G_i = w_q w_k Σ_ii, so nngp'_ij = (w_o w_v)² G_i Σ_ij G_jᵀ + b², computed here in
    numpy from X directly; the NTK (zero input NTK) is 2 (w_o w_v)² G_i Σ_ij G_jᵀ + b²."""
    x1, x2 = _x(3, (4, 5), 1), _x(2, (4, 5), 2)
    qk, ov, b = 1.3 * 0.7, 1.1 * 0.9, 0.2
    layer = nl.GlobalSelfAttention(4, 4, 4, 2, attention_mechanism="identity", w_key_std=1.3,
                                   w_query_std=0.7, w_value_std=1.1, w_out_std=0.9, b_std=b)
    k = layer.kernel(x1, x2, get=("nngp", "ntk"))
    X1 = x1.numpy().transpose(0, 2, 1)  # (n, P, C)
    X2 = x2.numpy().transpose(0, 2, 1)
    C = 4
    G1 = qk * np.einsum("ipc,iqc->ipq", X1, X1) / C
    G2 = qk * np.einsum("ipc,iqc->ipq", X2, X2) / C
    S12 = np.einsum("ipc,jqc->ijpq", X1, X2) / C
    want = ov**2 * np.einsum("ipa,ijab,jqb->ijpq", G1, S12, G2)
    np.testing.assert_allclose(k.nngp.numpy(), want + b**2, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(k.ntk.numpy(), 2 * want + b**2, rtol=1e-13, atol=1e-13)
    # Homogeneity of that map: degree 3 in each input (no bias).
    nb = nl.GlobalSelfAttention(4, 4, 4, 2, attention_mechanism="identity")
    torch.testing.assert_close(nb.kernel(2.0 * x1, x2, get="nngp"),
                               8.0 * nb.kernel(x1, x2, get="nngp"), rtol=1e-13, atol=0)


def test_square_root_identity_on_raw_inputs():
    """Square-root scaling, 'identity', no embedding, on raw inputs (input NTK 0):
    nngp'_ij = std²⟨Σ_ij, Σ_ij⟩ Σ_ij + b² and ntk'_ij = 4 std²⟨Σ_ij, Σ_ij⟩ Σ_ij + b²
    (std = w_q w_k w_o w_v), in numpy."""
    x1, x2 = _x(3, (2, 4), 3), _x(2, (2, 4), 4)
    layer = nl.GlobalSelfAttention(3, 3, 3, 1, linear_scaling=False,
                                   attention_mechanism="identity", w_key_std=1.2, b_std=0.3)
    k = layer.kernel(x1, x2, get=("nngp", "ntk"))
    S = np.einsum("icp,jcq->ijpq", x1.numpy(), x2.numpy()) / 2
    dot = (S * S).sum((2, 3), keepdims=True)
    std2 = 1.2**2
    np.testing.assert_allclose(k.nngp.numpy(), std2 * dot * S + 0.09, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(k.ntk.numpy(), 4 * std2 * dot * S + 0.09, rtol=1e-13,
                               atol=1e-13)


def test_softmax_without_key_weights_is_a_global_average():
    """w_key_std = 0: every logit is 0, softmax attends uniformly, and the output at every
    position is the mean over positions of the values: GAP after the layer equals
    (w_o w_v)² × GAP of the input (+ b²), the NTK 2 (w_o w_v)² × that (+ b²)."""
    x1, x2 = _x(3, (3, 2, 3), 5), _x(2, (3, 2, 3), 6)
    net = nl.serial(nl.GlobalSelfAttention(5, 5, 5, 3, w_key_std=0.0, w_out_std=1.4,
                                           b_std=0.5), nl.GlobalAvgPool())
    k = net.kernel(x1, x2, get=("nngp", "ntk"))
    gap = nl.GlobalAvgPool().kernel(x1, x2, get="nngp")
    torch.testing.assert_close(k.nngp, 1.4**2 * gap + 0.25, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(k.ntk, 2 * 1.4**2 * gap + 0.25, rtol=1e-13, atol=1e-14)


def test_fully_connected_input_is_a_dense_layer():
    """One position: softmax weight 1, so attention is a linear layer with std w_o·w_v
    whose NTK counts two weight matrices: nngp' = (w_o w_v)² K + b², ntk' = (w_o w_v)²
    (Θ + 2K) + b²."""
    x = _x(4, (6,), 7)
    k0 = nl.serial(nl.Dense(7, b_std=0.2), nl.ReLU()).kernel(x, get=None)
    k = nl.GlobalSelfAttention(3, 3, 3, 1, w_value_std=1.5, b_std=0.1).kernel(k0)
    torch.testing.assert_close(k.nngp, 2.25 * k0.nngp + 0.01, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(k.ntk, 2.25 * (k0.ntk + 2 * k0.nngp) + 0.01, rtol=1e-14,
                               atol=1e-15)


def test_positional_covariance_with_decay():
    """sum embedding on a zero input: the keys see only w_pe² R, with R[p, q] =
    exp(-|p - q|/4); the values are 0, so a zero example's kernel is b² exactly."""
    R = nl.attention.pos_emb_covariance((2, 3), 1, lambda d: torch.exp(-d / 4))
    coords = [(a, b) for a in range(2) for b in range(3)]
    want = [[np.exp(-(abs(p[0] - q[0]) + abs(p[1] - q[1])) / 4) for q in coords]
            for p in coords]
    np.testing.assert_allclose(R.numpy(), want, rtol=1e-15)
    x = torch.zeros(2, 3, 4, dtype=F64)
    k = nl.GlobalSelfAttention(3, 3, 3, 1, b_std=0.3, pos_emb_type="sum",
                               pos_emb_decay_fn=lambda d: torch.exp(-d)).kernel(x, get="nngp")
    torch.testing.assert_close(k, torch.full_like(k, 0.09), rtol=0, atol=0)


# ---- storage and bad input -------------------------------------------------------------

def test_refuses_diagonal_storage_and_unsupported_scaling():
    x = _x()
    k = input_kernel(x, None, track_ntk=True, full=False)
    with pytest.raises(ValueError, match="full position-pair"):
        nl.GlobalSelfAttention(2, 2, 2, 1).kernel_map(k)
    with pytest.raises(ValueError, match="linear_scaling=False"):
        nl.GlobalSelfAttention(2, 2, 2, 1, linear_scaling=False).kernel(x)
    # The finite network exists for it (neural-tangents' apply_fn does too).
    out = nl.GlobalSelfAttention(2, 2, 2, 1, linear_scaling=False).build((3, 5))(x)
    assert out.shape == (4, 2, 5)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(n_chan_key=0), ValueError, "n_chan_key"),
    (dict(n_heads=-1), ValueError, "n_heads"),
    (dict(n_chan_val=2.0), TypeError, "n_chan_val"),
    (dict(attention_mechanism="tanh"), ValueError, "attention_mechanism"),
    (dict(pos_emb_type="rotary"), ValueError, "pos_emb_type"),
    (dict(pos_emb_p_norm=0), ValueError, "pos_emb_p_norm"),
    (dict(w_key_std=-1.0), ValueError, "w_key_std"),
    (dict(b_std="x"), TypeError, "b_std"),
    (dict(pos_emb_decay_fn=3), TypeError, "pos_emb_decay_fn"),
    (dict(linear_scaling=1), TypeError, "linear_scaling"),
])
def test_bad_arguments(kwargs, err, match):
    base = dict(n_chan_out=2, n_chan_key=2, n_chan_val=2, n_heads=1)
    base.update(kwargs)
    with pytest.raises(err, match=match):
        nl.GlobalSelfAttention(**base)


def test_sum_embedding_channel_mismatch():
    layer = nl.GlobalSelfAttention(2, 2, 2, 1, pos_emb_type="sum", n_chan_pos_emb=4)
    with pytest.raises(ValueError, match="n_chan_pos_emb"):
        layer.kernel(_x())
    with pytest.raises(ValueError, match="n_chan_pos_emb"):
        layer.build((3, 5))


# ---- finite networks -------------------------------------------------------------------

def _block(w: int, **kw):
    """Conv -> GlobalSelfAttention -> ReLU -> GlobalAvgPool -> Dense, all widths ~ w.

    Linear scaling: 2 heads of w keys (each head's attention weights converge, so the
    head count does not matter). Square-root scaling: each head's weights stay random
    (Gaussian logits), only their average over heads converges, so the heads grow:
    w/8 heads of 8 keys and values."""
    if kw.get("linear_scaling", True):
        attn = nl.GlobalSelfAttention(w, w, max(w // 2, 1), 2, b_std=0.1, w_key_std=1.3, **kw)
    else:
        attn = nl.GlobalSelfAttention(w, 8, 8, max(w // 8, 1), b_std=0.1, w_key_std=1.3, **kw)
    return nl.serial(nl.Conv(w, (3,), padding="SAME", w_std=1.5, b_std=0.1), attn,
                     nl.ReLU(), nl.GlobalAvgPool(), nl.Dense(1, b_std=0.1))


def _ntk_errors(widths, seeds, **kw):
    x = _x(4, (2, 5), 0)
    exact = _block(8, **kw).kernel(x, get="ntk")
    errs = []
    for w in widths:
        e = []
        for s in range(seeds):
            emp = ntkit.empirical_ntk(_block(w, **kw).build((2, 5), seed=s), x)
            e.append(float(torch.linalg.norm(emp - exact) / torch.linalg.norm(exact)))
        errs.append(float(np.sqrt(np.mean(np.square(e)))))
    return np.polyfit(np.log(widths), np.log(errs), 1)[0], errs


def test_empirical_ntk_converges_quick():
    """Fluctuations of one network's NTK are O(width^-1/2) (the attention logits average
    n_chan_key products): the slope over widths 32..512 (RMS over 6 networks, ~±0.15 in
    the slope) lies in [-0.85, -0.25]; a wrong map would level off instead."""
    slope, errs = _ntk_errors([32, 128, 512], 6, pos_emb_type="sum", w_pos_emb_std=0.8)
    assert -0.85 < slope < -0.25, (errs, slope)
    assert errs[-1] < 0.2, errs


@pytest.mark.slow
@pytest.mark.parametrize("kw", [
    dict(),
    # n_chan_pos_emb stays None: the concat kernel weighs inputs and embeddings by their
    # channel counts, so both must grow together for a width-independent limit.
    dict(attention_mechanism="relu", pos_emb_type="concat",
         pos_emb_decay_fn=lambda d: torch.exp(-d / 4), val_pos_emb=True),
    dict(linear_scaling=False, attention_mechanism="identity", pos_emb_type="concat"),
], ids=["softmax", "relu_concat_decay_val", "sqrt_identity_concat"])
def test_empirical_ntk_error_slope_is_minus_half(kw):
    slope, errs = _ntk_errors([64, 256, 1024], 4, **kw)
    assert -0.8 < slope < -0.3, (errs, slope)
    assert errs[-1] < 0.1, errs


@pytest.mark.slow
def test_monte_carlo_nngp_converges():
    x = _x(4, (2, 5), 1)
    net = nl.serial(nl.Conv(256, (3,), padding="SAME", w_std=1.5, b_std=0.1),
                    nl.GlobalSelfAttention(256, 256, 128, 2, b_std=0.1, pos_emb_type="sum"),
                    nl.ReLU(), nl.GlobalAvgPool(), nl.Dense(256, b_std=0.1))
    exact = net.kernel(x, get="nngp")
    mc = ntkit.monte_carlo_kernel(net, x, n_samples=8, get="nngp", seed=0)
    # 8 networks × 256 outputs: sampling error ~ 1/√2048 ≈ 2%, plus O(1/256) bias.
    assert float(torch.linalg.norm(mc - exact) / torch.linalg.norm(exact)) < 0.06
