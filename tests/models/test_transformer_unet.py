"""ntkit.models.transformer and ntkit.models.unet: kernels against neural-tangents 0.6.5
(the presets' structure written out in stax, tests/fixtures/make_nt_models.py), shapes,
PSD, and finite networks (`build`) converging to the kernel."""

from __future__ import annotations

import inspect
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ntkit
from ntkit import layers as nl
from ntkit import models

sys.path.insert(0, str(Path(__file__).parent))
from kernel_compare import assert_kernels_close  # noqa: E402
from model_archs import TRANSFORMERS, UNETS  # noqa: E402

FIXTURE = Path(__file__).parents[1] / "fixtures" / "nt_models.npz"


def _preset(name: str):
    if name in UNETS:
        return models.unet(**UNETS[name]["kw"])
    a = TRANSFORMERS[name]
    kw = dict(a["kw"])
    if a["decay"] is not None:
        length = a["decay"]
        kw["pos_emb_decay_fn"] = lambda d: torch.exp(-d / length)
    kw["activation"] = nl.ReLU() if a["act"] == "relu" else nl.Erf()
    return models.transformer(**kw)


def _relu_layers(name: str) -> int:
    """Arc-cosine (ReLU) layers on the path: each can turn an O(eps) error in a correlation
    near ±1 into O(sqrt(eps)) (kernel_compare's ``gain`` = L/(2π))."""
    if name in UNETS:
        kw = UNETS[name]["kw"]
        return kw.get("convs", 2) * (2 * kw["levels"] + 1)
    a = TRANSFORMERS[name]
    return a["kw"]["depth"] if a["act"] == "relu" else 0


@pytest.mark.parametrize("name", [*TRANSFORMERS, *UNETS])
def test_matches_neural_tangents(name):
    """Every entry within the conditioning tolerance of kernel_compare (256 eps of the
    scale √(K_ii K_jj) off correlation ±1, the arc-cosine bound near it: x1 repeats a row
    and x2 negates one); and, as issue-level acceptance, ≤ 1e-10 of the largest entry
    off those degenerate pairs."""
    with np.load(FIXTURE) as f:
        ref = {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith(name + "/")}
    x1, x2 = torch.from_numpy(ref["x1"]), torch.from_numpy(ref["x2"])
    net = _preset(name)
    got = {"11": net.kernel(x1), "12": net.kernel(x1, x2)}
    gain = max(_relu_layers(name), 1) / (2 * math.pi)
    var = {t: {g: np.diagonal(ref[f"{t}/{g}"], axis1=0, axis2=1).T
               for g in ("nngp", "ntk")} for t in ("11", "22")}
    for tag in ("11", "12"):
        rows, cols = var["11"], var["11" if tag == "11" else "22"]
        scale = np.sqrt(np.einsum("i...,j...->ij...", rows["nngp"], cols["nngp"]))
        # Degenerate pairs, parallel inputs (x1 repeats row 0 and scales row 1; x2 negates
        # x1's row 1): every arc-cosine on their path sees correlation ±1, whatever the
        # output correlation, so the arc-cosine bound applies there in full.
        deg = _parallel(x1, x1 if tag == "11" else x2)
        deg = deg.reshape(deg.shape + (1,) * (scale.ndim - 2))
        corr = np.where(deg, 1.0, np.abs(ref[f"{tag}/nngp"]) / scale)
        for g in ("nngp", "ntk"):
            assert_kernels_close(getattr(got[tag], g), ref[f"{tag}/{g}"], var1=rows[g],
                                 var2=cols[g], corr=corr, gain=gain, name=f"{name} {tag} {g}")
            want = ref[f"{tag}/{g}"]
            diff = np.abs(getattr(got[tag], g).numpy() - want)
            err = diff[~np.broadcast_to(deg, diff.shape)].max() / np.abs(want).max()
            assert err < 1e-10, (name, tag, g, err)


def _parallel(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(n1, n2) bool: the inputs are parallel or antipodal (|cosine| = 1 up to rounding)."""
    a, b = a.reshape(a.shape[0], -1).numpy(), b.reshape(b.shape[0], -1).numpy()
    cos = (a @ b.T) / np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))
    return np.abs(cos) > 1 - 1e-12


def test_shapes_psd_and_finite_networks():
    x = torch.randn(6, 3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for ln in ("post", "pre", "none"):
        net = models.transformer(depth=2, n_heads=2, width=8, num_classes=3, layer_norm=ln)
        k = net.kernel(x)
        for g in ("nngp", "ntk"):
            m = getattr(k, g)
            assert m.shape == (6, 6) and torch.equal(m, m.T)
            assert torch.linalg.eigvalsh(m).min() > -1e-12 * torch.linalg.norm(m), (ln, g)
        assert net.build((3, 7), seed=0)(x).shape == (6, 3)
    feats = models.transformer(depth=1, width=8, readout="none")
    assert feats.build((3, 7), seed=0)(x).shape == (6, 8, 7)
    img = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    pix = models.unet(levels=2, width=4, num_classes=2)
    assert pix.build((2, 8, 8), seed=0)(img).shape == (4, 2, 8, 8)
    k = pix.kernel(img, get="nngp")
    assert k.shape == (4, 4, 8, 8) and torch.isfinite(k).all()
    pooled = models.unet(levels=1, width=4, num_classes=2, readout="pool")
    assert pooled.build((2, 8, 8), seed=0)(img).shape == (4, 2)
    m = pooled.kernel(img, get="ntk")
    assert torch.linalg.eigvalsh(m).min() > -1e-12 * torch.linalg.norm(m)


def _ntk_errors(make, shape, widths, seeds):
    """Per width, the RMS over ``seeds`` networks of the relative Frobenius error of one
    network's empirical NTK against the kernel; the slope of its log-log fit; and the
    relative error of the networks' mean NTK at the largest width."""
    x = torch.randn(4, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = make(8).kernel(x, get="ntk")
    errs = []
    for w in widths:
        emps = [ntkit.empirical_ntk(make(w).build(shape, seed=s), x) for s in range(seeds)]
        e = [float(torch.linalg.norm(emp - exact) / torch.linalg.norm(exact)) for emp in emps]
        errs.append(float(np.sqrt(np.mean(np.square(e)))))
    mean_err = float(torch.linalg.norm(torch.stack(emps).mean(0) - exact)
                     / torch.linalg.norm(exact))
    return float(np.polyfit(np.log(widths), np.log(errs), 1)[0]), errs, mean_err


def _check_convergence(slope, errs, mean_err, seeds):
    # Fluctuations O(width^-1/2): slope in [-0.85, -0.25] (~±0.15 from the seeds); a wrong
    # map would level off. Independent fluctuations average out, so the mean of the
    # networks' NTKs is ~√seeds closer than one network (1.5× slack); a systematic
    # mismatch between network and kernel would not average out.
    print(errs, slope, mean_err)
    assert -0.85 < slope < -0.25, (errs, slope)
    assert errs[-1] < 0.2, errs
    assert mean_err < 1.5 * errs[-1] / math.sqrt(seeds), (mean_err, errs)


@pytest.mark.slow
def test_transformer_finite_networks_converge():
    """A network's NTK converges to the kernel as O(width^-1/2) (widths 16..256, 6
    networks each)."""
    def make(w):
        return models.transformer(depth=2, n_heads=2, width=w, b_std=0.1,
                                  pos_emb_decay_fn=lambda d: torch.exp(-d / 4))
    _check_convergence(*_ntk_errors(make, (2, 5), [16, 64, 256], 6), 6)


@pytest.mark.slow
def test_unet_finite_networks_converge():
    """The same for a pooled U-Net (encoder, AvgPool, ConvTranspose decoder, skip concat)."""
    def make(w):
        return models.unet(levels=1, width=w, readout="pool", b_std=0.1)
    _check_convergence(*_ntk_errors(make, (1, 4, 4), [16, 64, 256], 6), 6)


@pytest.mark.parametrize("make, match", [
    (lambda: models.transformer(0), "depth"),
    (lambda: models.transformer(2, n_heads=0), "n_heads"),
    (lambda: models.transformer(2, layer_norm="mid"), "layer_norm"),
    (lambda: models.transformer(2, spatial_dims=4), "spatial_dims"),
    (lambda: models.transformer(2, readout="flatten"), "readout"),
    (lambda: models.transformer(2, activation=torch.relu), "activation"),
    (lambda: models.transformer(2, attention_mechanism="tanh"), "attention_mechanism"),
    (lambda: models.unet(0), "levels"),
    (lambda: models.unet(1, convs=0), "convs"),
    (lambda: models.unet(1, readout="flat"), "readout"),
])
def test_bad_arguments_are_rejected(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_unet_needs_divisible_sizes():
    with pytest.raises(ValueError):
        models.unet(levels=2, width=4).kernel(torch.randn(2, 1, 6, 6, dtype=torch.float64))


# ---- masking (neural-tangents' mask_constant); runs once ntkit's kernels take it --------

MASKING = "mask_constant" in inspect.signature(nl.Layer.kernel).parameters


@pytest.mark.skipif(not MASKING, reason="ntkit's kernels take no mask_constant yet")
def test_transformer_masked_padding_equals_the_sequence_alone():
    """Tokens padded at the end with ``mask_constant`` are absent: attention ignores them,
    the readout averages over present tokens only and the positional covariance of the
    present ones is the leading block, so the kernel equals that of the unpadded
    sequences (as in neural-tangents)."""
    c = -1e4
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(3, 2, 5, dtype=torch.float64, generator=g)
    x2 = torch.randn(2, 2, 5, dtype=torch.float64, generator=g)
    pad = torch.full((1, 2, 3), c, dtype=torch.float64)
    p1, p2 = (torch.cat([x, pad.expand(len(x), -1, -1)], -1) for x in (x1, x2))
    net = models.transformer(depth=2, n_heads=2, width=8, pos_emb_p_norm=1,
                             pos_emb_decay_fn=lambda d: torch.exp(-d / 3), val_pos_emb=True)
    for a, b, pa, pb in ((x1, None, p1, None), (x1, x2, p1, p2)):
        alone, padded = net.kernel(a, b), net.kernel(pa, pb, mask_constant=c)
        for f in ("nngp", "ntk"):
            assert_kernels_close(getattr(padded, f), getattr(alone, f), name=f,
                                 identical="diagonal" if b is None else None)
    out = net.build((2, 8), seed=0)(p1, mask_constant=c)
    assert out.shape == (3, 1) and torch.isfinite(out).all()
