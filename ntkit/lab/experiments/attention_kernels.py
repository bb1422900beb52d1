"""attention_kernels: transformer NNGP/NTK vs CNN-GAP and FC kernels vs a trained transformer.

The transformer is `ntkit.models.transformer`: a 1×1 Conv token embedding, two blocks of
[softmax self-attention, LayerNorm, ReLU MLP, LayerNorm] with residual connections, a
global average and a Dense readout. Its infinite-width kernels are those of Hron et al.
2020 ("Infinite attention: NNGP and NTK for deep attention networks"): with linear logit
scaling each example's attention weights converge to a deterministic matrix, and the
network stays a Gaussian process (Yang 2019, "Tensor Programs I"). Positional embeddings
are added to keys, queries and values, with covariance exp(−|p − q|₁ / ℓ) between
positions p, q (an Ornstein–Uhlenbeck covariance: local, and positive definite, so the
finite network can sample it).

Data (generated or bundled locally, nothing is downloaded):

- **MNIST-1D** (Greydanus 2020; the ``mnist1d`` package) as a sequence of 20 tokens of
  2 consecutive samples each (a ViT-style patch embedding of the length-40 signals;
  halving the positions cuts the O(P³) attention cost per pair of examples by 8×);
- **scikit-learn's 8×8 digits** as a 4×4 grid of tokens, each a 2×2 patch of pixels
  (4 channels); the positional covariance uses the grid distance.

Compared on each: kernel regression (t = ∞ mean on centred one-hot targets, ridge chosen on
a validation split; `ntkit.lab.experiments.cnn_kernels.fit_kernel`) with the transformer's
NNGP and NTK, a CNN-GAP NTK (MNIST-1D: cnn_kernels' 1-D CNN on the raw signal; digits:
Myrtle-5, Shankar et al. 2020), the FC NTK (``models.fcn`` on the flattened input), and
the finite transformer of the same spec (``spec.build``, width in the config) trained
with Adam on cross-entropy.

Predictions, fixed before measuring:

1. *Exact symmetry.* Without positional embeddings the kernel is invariant to permuting
   each example's tokens independently (attention is permutation-equivariant and the
   readout averages; the positional covariance is the only source of order): relative
   change ≤ 1e-12 (float64 rounding).
2. *MNIST-1D, transformer vs FC.* MNIST-1D's classes are shapes at random shifts; the FC
   kernel has no notion of position or shift, the transformer averages over tokens and
   relates them through content and a local positional covariance: its NTK beats the
   FC NTK by at least 2 binomial standard errors.
3. *MNIST-1D, CNN-GAP vs transformer.* Convolutions build in locality at the input's
   resolution, which is how MNIST-1D is generated; the transformer gets locality only
   through its positional covariance: the CNN-GAP NTK is at least the transformer NTK
   (within 2 SE).
4. *Kernel vs trained network, small data.* On few examples the infinite-width kernel of
   an architecture matches or beats the trained finite network (Arora et al. 2019,
   "Harnessing the power of infinitely wide deep nets on small-data tasks"): transformer
   NTK ≥ trained transformer − 2 SE, on both data sets.
5. *Digits.* The FC kernel already does well on centred 8×8 digits; the patch transformer
   keeps the pixel content of each patch and the grid's locality: its NTK is at least the
   FC NTK within 2 SE.

Masked variable-length variant (only where ntkit's kernels take ``mask_constant``, as
neural-tangents' do): each MNIST-1D token sequence is cropped to a random length of 10 to
20 tokens at a random offset, left-aligned, and padded to 20 with ``mask_constant``.

6. *Exact identity.* A crop of length ℓ padded with masked tokens has the same kernel as
   the crop alone (a length-ℓ sequence): relative difference ≤ 1e-10.
7. *Masking vs zero padding.* Zero tokens are not absent: they are attended to and
   averaged over, diluting the signal of short crops; the masked kernel's accuracy is at
   least the zero-padded one's within 2 SE.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import Tensor

from ntkit import models
from ntkit.lab.data import load_digits_data
from ntkit.lab.experiments.cnn_kernels import (
    cnn1d,
    fc_net,
    fit_kernel,
    load_mnist1d,
    trained_accuracy,
)
from ntkit.lab.framework import Context
from ntkit.lab.registry import experiment
from ntkit.layers.base import Layer

F64 = torch.float64

#: Length scale ℓ (in tokens) of the positional covariance exp(−|p − q|₁ / ℓ).
POS_LENGTH = 3.0
#: Value marking padded (absent) tokens in the masked variant.
MASK_CONSTANT = -1e4


# ------------------------------------------------------------------------------- data
def mnist1d_tokens(x: Tensor, patch: int = 2) -> Tensor:
    """(n, 1, L) signals -> (n, patch, L / patch) tokens of ``patch`` consecutive samples
    (token t has channels x[t·patch : (t+1)·patch])."""
    n, c, length = x.shape
    if c != 1 or length % patch:
        raise ValueError(f"need (n, 1, L) signals with L divisible by {patch}, got "
                         f"{tuple(x.shape)}")
    return x.reshape(n, length // patch, patch).transpose(1, 2).contiguous()


def digit_patches(x: Tensor) -> Tensor:
    """(n, 64) 8×8 digits -> (n, 4, 4, 4): a 4×4 grid of tokens, each the 2×2 patch of
    pixels as 4 channels ((dy, dx) row-major)."""
    n = x.shape[0]
    g = x.reshape(n, 4, 2, 4, 2)                     # (n, row, dy, col, dx)
    return g.permute(0, 2, 4, 1, 3).reshape(n, 4, 4, 4).contiguous()


def permute_tokens(x: Tensor, gen: torch.Generator) -> Tensor:
    """Each example's tokens (positions of (n, C, *S)) permuted independently."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    idx = torch.stack([torch.randperm(flat.shape[-1], generator=gen) for _ in range(n)])
    return torch.gather(flat, 2, idx[:, None, :].expand_as(flat)).reshape(x.shape)


def random_crops(x: Tensor, low: int, gen: torch.Generator, fill: float
                 ) -> tuple[Tensor, Tensor]:
    """Crop each (C, P) token sequence to a random length in [low, P] at a random offset,
    left-align it and pad with ``fill``; returns (padded (n, C, P), lengths (n,))."""
    n, _, p = x.shape
    lengths = torch.randint(low, p + 1, (n,), generator=gen)
    out = torch.full_like(x, fill)
    for i in range(n):
        ln = int(lengths[i])
        start = int(torch.randint(0, p - ln + 1, (1,), generator=gen))
        out[i, :, :ln] = x[i, :, start:start + ln]
    return out, lengths


def masking_available() -> bool:
    """Whether ntkit's kernels take ``mask_constant`` (neural-tangents' masking)."""
    return "mask_constant" in inspect.signature(Layer.kernel).parameters


# ------------------------------------------------------------------------ architectures
def transformer_spec(width: int, spatial_dims: int = 1, pos: bool = True,
                     depth: int = 2) -> Layer:
    """The experiment's transformer: `ntkit.models.transformer` with 10 outputs, 2 heads,
    positional embeddings (if ``pos``) of covariance exp(−|p − q|₁ / POS_LENGTH) on keys,
    queries and values."""
    kw = {}
    if pos:
        kw = dict(pos_emb_type="sum", pos_emb_p_norm=1, val_pos_emb=True,
                  pos_emb_decay_fn=lambda d: torch.exp(-d / POS_LENGTH))
    else:
        kw = dict(pos_emb_type="none")
    return models.transformer(depth, n_heads=2, width=width, num_classes=10,
                              spatial_dims=spatial_dims, **kw)


def _kernels(spec: Layer, x: Tensor, xt: Tensor, **kw):
    return (spec.kernel(x, get=("nngp", "ntk"), **kw),
            spec.kernel(xt, x, get=("nngp", "ntk"), **kw))


def _se(p: float, m: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / m)


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ---------------------------------------------------------------------------- experiment
@experiment("attention_kernels",
            "Transformer NNGP/NTK (Hron et al. 2020) vs CNN-GAP and FC kernels vs a trained "
            "transformer on MNIST-1D tokens and 8×8 digit patches; masked variable lengths")
def run(ctx: Context) -> str:
    """Kernel regression with transformer, CNN-GAP and FC kernels, and trained transformers."""
    if ctx.quick:
        cfg = {"mnist1d_samples": 500, "n_train": 100, "n_test": 100, "cnn_depth": 2,
               "digits_train": 40, "digits_test": 40, "width": 16, "steps": 60,
               "batch": 32, "lr": 1e-2, "symmetry_examples": 4, "mask_train": 60,
               "mask_test": 60}
    else:
        cfg = {"mnist1d_samples": 5000, "n_train": 800, "n_test": 400, "cnn_depth": 3,
               "digits_train": 400, "digits_test": 400, "width": 64, "steps": 1000,
               "batch": 100, "lr": 1e-2, "symmetry_examples": 16, "mask_train": 400,
               "mask_test": 200}
    cfg.update(depth=2, heads=2, patch=2, pos_length=POS_LENGTH, mask_constant=MASK_CONSTANT,
               crop_low=10)
    ctx.config.update(cfg)
    gen = ctx.rng("tokens")
    rows = []

    def add(dataset, model, n, m, fit=None, acc=None, **extra):
        acc = fit.test_accuracy if fit is not None else acc
        row = {"dataset": dataset, "model": model, "n_train": n, "n_test": m,
               "test_accuracy": acc}
        if fit is not None:
            row.update(ridge=fit.ridge, val_accuracy=fit.val_accuracy[fit.ridge])
        rows.append({**row, **extra})
        return acc

    # ---- MNIST-1D ---------------------------------------------------------------------
    x_all, l_all, xt_all, lt_all = load_mnist1d(cfg["mnist1d_samples"])
    n, m = cfg["n_train"], cfg["n_test"]
    x, lab, xt, lab_t = x_all[:n], l_all[:n], xt_all[:m], lt_all[:m]
    tok, tok_t = mnist1d_tokens(x, cfg["patch"]), mnist1d_tokens(xt, cfg["patch"])
    tr = transformer_spec(cfg["width"])

    # 1. exact symmetry, on a few examples
    s = cfg["symmetry_examples"]
    nopos = transformer_spec(cfg["width"], pos=False)
    k0 = nopos.kernel(tok[:s], get="ntk")
    k1 = nopos.kernel(permute_tokens(tok[:s], gen), get="ntk")
    kpos0 = tr.kernel(tok[:s], get="ntk")
    kpos1 = tr.kernel(permute_tokens(tok[:s], gen), get="ntk")
    sym, asym = _rel(k1, k0), _rel(kpos1, kpos0)
    ctx.claim("no positional embedding: kernel invariant to permuting each example's tokens",
              0.0, sym, 1e-12,
              note=f"max |ΔK| / max |K| over {s} MNIST-1D examples, each permuted "
                   f"independently (NTK). With the positional covariance the same "
                   f"permutation changes the kernel by {asym:.2e}, so order does reach it.")
    ctx.log(f"symmetry: {sym:.2e} without, {asym:.2e} with positional embeddings")

    acc = {}
    for name, spec, a, b in ctx.progress(
            [("transformer", tr, tok, tok_t),
             ("CNN-GAP", cnn1d(cfg["cnn_depth"], cfg["width"]), x, xt),
             ("FC", fc_net(2, 4 * cfg["width"]), x, xt)], "MNIST-1D kernels"):
        k_tt, k_st = _kernels(spec, a, b)
        for kind in ("ntk", "nngp"):
            f = fit_kernel(getattr(k_tt, kind), getattr(k_st, kind), lab, lab_t)
            acc[f"MNIST-1D {name} {kind}"] = add("MNIST-1D", f"{name} {kind.upper()} kernel",
                                                 n, m, fit=f)
        ctx.log(f"MNIST-1D {name} kernels done")
    trn, te = trained_accuracy(tr, tok, lab, tok_t, lab_t, cfg["steps"], cfg["lr"],
                               cfg["batch"], ctx.seed_for("net-mnist1d"))
    acc["MNIST-1D trained"] = add("MNIST-1D", f"trained transformer (width {cfg['width']})",
                                  n, m, acc=te, train_accuracy=trn)
    ctx.log(f"MNIST-1D trained transformer: test {te:.3f} (train {trn:.3f})")

    # ---- digits -----------------------------------------------------------------------
    dn, dm = cfg["digits_train"], cfg["digits_test"]
    dx, dy, dxt, dyt = load_digits_data(dn, dm, ctx.np_rng("digits"))
    dl, dlt = dy.argmax(1), dyt.argmax(1)
    patches, patches_t = digit_patches(dx), digit_patches(dxt)
    img, img_t = dx.reshape(-1, 1, 8, 8), dxt.reshape(-1, 1, 8, 8)
    tr2 = transformer_spec(cfg["width"], spatial_dims=2)
    for name, spec, a, b in (("transformer", tr2, patches, patches_t),
                             ("CNN-GAP (Myrtle-5)", models.myrtle(5, width=cfg["width"]),
                              img, img_t),
                             ("FC", fc_net(2, 4 * cfg["width"]), img, img_t)):
        k_tt, k_st = _kernels(spec, a, b)
        for kind in ("ntk", "nngp"):
            f = fit_kernel(getattr(k_tt, kind), getattr(k_st, kind), dl, dlt)
            acc[f"digits {name} {kind}"] = add("digits", f"{name} {kind.upper()} kernel",
                                               dn, dm, fit=f)
        ctx.log(f"digits {name} kernels done")
    trn, te = trained_accuracy(tr2, patches, dl, patches_t, dlt, cfg["steps"], cfg["lr"],
                               min(cfg["batch"], dn), ctx.seed_for("net-digits"))
    acc["digits trained"] = add("digits", f"trained transformer (width {cfg['width']})",
                                dn, dm, acc=te, train_accuracy=trn)

    # ---- claims 2-5 ---------------------------------------------------------------------
    t_m, f_m = acc["MNIST-1D transformer ntk"], acc["MNIST-1D FC ntk"]
    c_m = acc["MNIST-1D CNN-GAP ntk"]
    ctx.claim("MNIST-1D: transformer NTK > FC NTK + 2 SE", f"> {f_m:.3f} + 2 SE", t_m,
              "2 SE one-sided", holds=t_m > f_m + 2 * _se(f_m, m),
              note=f"n_train {n}, n_test {m}; SE binomial of the FC accuracy "
                   f"({_se(f_m, m):.3f}).")
    ctx.claim("MNIST-1D: CNN-GAP NTK ≥ transformer NTK − 2 SE", f"≥ {t_m:.3f} − 2 SE", c_m,
              "2 SE one-sided", holds=c_m >= t_m - 2 * _se(t_m, m),
              note="locality at the input's resolution (convolutions) vs through a "
                   "positional covariance (attention).")
    for ds, mm in (("MNIST-1D", m), ("digits", dm)):
        k, net = acc[f"{ds} transformer ntk"], acc[f"{ds} trained"]
        ctx.claim(f"{ds}: transformer NTK ≥ trained transformer − 2 SE",
                  f"≥ {net:.3f} − 2 SE", k, "2 SE one-sided", holds=k >= net - 2 * _se(net, mm),
                  note="Arora et al. 2019 (small data); the finite network is the same spec "
                       f"at width {cfg['width']}, Adam lr {cfg['lr']}, {cfg['steps']} steps.")
    t_d, f_d = acc["digits transformer ntk"], acc["digits FC ntk"]
    ctx.claim("digits: transformer NTK ≥ FC NTK − 2 SE", f"≥ {f_d:.3f} − 2 SE", t_d,
              "2 SE one-sided", holds=t_d >= f_d - 2 * _se(f_d, dm),
              note=f"16 tokens of 2×2 pixels on a 4×4 grid; n_train {dn}, n_test {dm}.")

    # ---- masked variable-length variant ---------------------------------------------------
    masked_summary = "masked variant skipped (no mask_constant in this ntkit)"
    if masking_available():
        masked_summary = _masked_variant(ctx, cfg, tok, lab, tok_t, lab_t, add, gen)
    else:
        ctx.log("masked variant skipped: ntkit's kernels take no mask_constant yet")
    ctx.table("accuracies", rows)

    # ---- figure -------------------------------------------------------------------------
    fig, axes = ctx.new_figure(2, 1, (7.0, 3.4))
    for ax, ds, mm in ((axes[0], "MNIST-1D", m), (axes[1], "digits", dm)):
        sel = [r for r in rows if r["dataset"] == ds]
        names = [r["model"].replace(" kernel", "").replace(" (", "\n(") for r in sel]
        vals = [r["test_accuracy"] for r in sel]
        colors = ["C1" if "trained" in nm else "C0" if "transformer" in nm else
                  "C2" if "CNN" in nm else "C4" if "masked" in nm or "zero" in nm else "C3"
                  for nm in names]
        ax.bar(range(len(vals)), vals, color=colors,
               yerr=[2 * _se(v, mm) for v in vals], capsize=2)
        ax.set_xticks(range(len(vals)), names, fontsize=6, rotation=60)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{ds} (bars: ± 2 SE)", fontsize=9)
    ctx.savefig(fig, "accuracies")

    return (f"MNIST-1D ({n}/{m}): transformer NTK {t_m:.3f}, CNN-GAP NTK {c_m:.3f}, FC NTK "
            f"{f_m:.3f}, trained transformer {acc['MNIST-1D trained']:.3f}. Digits ({dn}/{dm}):"
            f" transformer NTK {t_d:.3f}, Myrtle NTK {acc['digits CNN-GAP (Myrtle-5) ntk']:.3f}"
            f", FC NTK {f_d:.3f}, trained transformer {acc['digits trained']:.3f}. Token "
            f"permutation symmetry without positions: {sym:.1e}. {masked_summary}.")


def _masked_variant(ctx: Context, cfg: dict, tok: Tensor, lab: Tensor, tok_t: Tensor,
                    lab_t: Tensor, add, gen: torch.Generator) -> str:
    """Claims 6-7: random crops padded with ``mask_constant``, against zero padding."""
    c = cfg["mask_constant"]
    n, m = cfg["mask_train"], cfg["mask_test"]
    tr = transformer_spec(cfg["width"])
    crops, lengths = random_crops(tok[:n], cfg["crop_low"], gen, c)
    crops_t, _ = random_crops(tok_t[:m], cfg["crop_low"], gen, c)

    # 6. exact identity: two crops of the same length ℓ, padded and masked vs alone
    ln = int(lengths[0])
    same = [int(i) for i in torch.nonzero(lengths == ln).flatten()[:3]]
    alone = tr.kernel(crops[same][..., :ln], get="ntk")
    padded = tr.kernel(crops[same], get="ntk", mask_constant=c)
    ident = _rel(padded, alone)
    ctx.claim("masked padding: kernel of a padded crop = kernel of the crop alone", 0.0,
              ident, 1e-10,
              note=f"{len(same)} crops of length {ln} tokens padded to {tok.shape[-1]} "
                   "(NTK, max |ΔK| / max |K|).")

    zero = [t.masked_fill(t == c, 0.0) for t in (crops, crops_t)]
    k_tt, k_st = _kernels(tr, crops, crops_t, mask_constant=c)
    z_tt, z_st = _kernels(tr, *zero)
    fm = fit_kernel(k_tt.ntk, k_st.ntk, lab[:n], lab_t[:m])
    fz = fit_kernel(z_tt.ntk, z_st.ntk, lab[:n], lab_t[:m])
    a_m = add("MNIST-1D", "transformer NTK, crops masked", n, m, fit=fm)
    a_z = add("MNIST-1D", "transformer NTK, crops zero-padded", n, m, fit=fz)
    ctx.claim("variable-length crops: masked NTK ≥ zero-padded NTK − 2 SE",
              f"≥ {a_z:.3f} − 2 SE", a_m, "2 SE one-sided", holds=a_m >= a_z - 2 * _se(a_z, m),
              note=f"crops of {cfg['crop_low']}-{tok.shape[-1]} tokens, n_train {n}, "
                   f"n_test {m}.")
    return f"Crops: masked NTK {a_m:.3f}, zero-padded {a_z:.3f}, identity {ident:.1e}"
