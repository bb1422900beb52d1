"""Masked-input architectures (neural-tangents' ``mask_constant``), shared by
tests/fixtures/make_nt_masks.py (neural-tangents, channels last) and
tests/layers/test_masking.py (ntkit, channels first).

A layer is a tuple; ``to_ntkit`` builds the ntkit spec, the fixture script the stax one.
Inputs (``inputs``): 1-D sequences (n, 3, 6), 2-D images (n, 2, 4, 4) or features (n, 5),
with rows: x1 = unmasked, last positions masked, fully masked, one position left,
stray entries equal to MASK (zeroed, position not absent), a copy of x2's row 1;
x2 = first position masked, unmasked, x1's row 0 with one more masked position.
"""

from __future__ import annotations

import numpy as np

MASK = -7.0

EMBED = ("conv", 4, (1,), None, "VALID", 1.3, 0.0)
MLP = [("conv", 5, (1,), None, "VALID", 1.2, 0.1), ("relu",),
       ("conv", 4, (1,), None, "VALID", 1.1, 0.05)]


def _block(attn: dict) -> list:
    """A transformer block: attention and an MLP, each residual and layer-normalized."""
    return [("residual", [("attn", attn)]), ("layernorm", (1,)),
            ("residual", MLP), ("layernorm", (1,))]


ATT = dict(n_chan_out=4, n_chan_key=3, n_chan_val=3, n_heads=2, b_std=0.1)

ARCHS = {
    "fc_dense_relu": dict(input="fc", layers=[
        ("dense", 6, 1.5, 0.1), ("relu",), ("dense", 1, 1.0, 0.2)]),
    "fc_erf": dict(input="fc", layers=[
        ("dense", 6, 1.3, 0.3), ("erf",), ("dense", 1, 1.0, 0.0)]),
    "conv_relu_gap": dict(input="seq", layers=[
        ("conv", 4, (3,), None, "SAME", 1.3, 0.2), ("relu",), ("gap",),
        ("dense", 1, 1.0, 0.1)]),
    "conv_stride_flatten": dict(input="seq", layers=[
        ("conv", 4, (3,), (2,), "VALID", 1.4, 0.1), ("relu",), ("flatten",),
        ("dense", 1, 1.0, 0.05)]),
    "avgpool_gsp": dict(input="seq", layers=[
        ("conv", 4, (3,), None, "SAME", 1.2, 0.1), ("relu",),
        ("avgpool", (2,), (2,), "VALID"), ("conv", 4, (2,), None, "SAME", 1.1, 0.0),
        ("relu",), ("gsp",), ("dense", 1, 1.0, 0.0)]),
    "sumpool_same_flatten": dict(input="seq", layers=[
        ("conv", 4, (2,), None, "SAME", 1.2, 0.1), ("relu",),
        ("sumpool", (3,), None, "SAME"), ("flatten",), ("dense", 1, 1.0, 0.1)]),
    "layernorm_positions": dict(input="seq", layers=[
        ("conv", 4, (3,), None, "SAME", 1.3, 0.1), ("layernorm", (1, 2)), ("relu",),
        ("gap",), ("dense", 1, 1.0, 0.0)]),
    "erf_sin_remask": dict(input="seq", layers=[
        ("conv", 4, (3,), None, "SAME", 1.3, 0.3), ("erf",),
        ("conv", 4, (1,), None, "VALID", 1.2, 0.2), ("sin",), ("gap",),
        ("dense", 1, 1.0, 0.1)]),
    "convlocal_convT": dict(input="seq", layers=[
        ("convlocal", 4, (3,), None, "SAME", 1.3, 0.1), ("relu",),
        ("convT", 3, (2,), (2,), "VALID", 1.2, 0.1), ("relu",), ("gap",),
        ("dense", 1, 1.0, 0.0)]),
    "image_conv_gap": dict(input="img", layers=[
        ("conv", 3, (3, 3), None, "SAME", 1.4, 0.1), ("relu",),
        ("conv", 3, (2, 2), (2, 2), "VALID", 1.2, 0.0), ("erf",), ("gap",),
        ("dense", 1, 1.0, 0.1)]),
    "transformer_softmax": dict(input="seq", layers=[
        EMBED, *_block(ATT), ("gap",), ("dense", 1, 1.0, 0.0)]),
    "transformer_identity_sum": dict(input="seq", layers=[
        EMBED, *_block(dict(ATT, attention_mechanism="identity", pos_emb_type="sum",
                            decay="exp4")), ("gap",), ("dense", 1, 1.0, 0.0)]),
    "transformer_relu_concat": dict(input="seq", layers=[
        EMBED, *_block(dict(ATT, attention_mechanism="relu", pos_emb_type="concat",
                            n_chan_pos_emb=2, val_pos_emb=True)),
        ("flatten",), ("dense", 1, 1.0, 0.0)]),
}

SHAPES = {"fc": (5,), "seq": (3, 6), "img": (2, 4, 4)}


def inputs(kind: str, seed: int = 31):
    """(x1, x2) channels first with the masked rows of the module docstring."""
    rng = np.random.default_rng(seed)
    shape = SHAPES[kind]
    x1 = rng.standard_normal((6, *shape))
    x2 = rng.standard_normal((3, *shape))
    if kind == "fc":
        x1[1, 3:] = MASK          # entries zeroed, example present
        x1[2] = MASK              # fully masked
        x1[3, :4] = MASK          # one entry left
        x1[4, 0] = MASK
        x2[0, 1:] = MASK
    else:
        pos = (slice(None),) * (len(shape) - 1)

        def at(i):  # index the last spatial axis
            return (*pos[:-1], i) if len(shape) > 2 else (i,)

        x1[1][(slice(None), *at(slice(-2, None)))] = MASK       # last positions absent
        x1[2] = MASK                                            # fully masked
        x1[3] = MASK
        x1[3][(slice(None), *(0,) * (len(shape) - 1))] = rng.standard_normal(shape[0])
        x1[4][(0, *(1,) * (len(shape) - 1))] = MASK             # a stray entry
        x2[0][(slice(None), *at(0))] = MASK                     # first positions absent
    x1[5] = x2[1]
    x2[2] = x1[0]
    if kind == "fc":
        x2[2, 2] = MASK
    else:
        x2[2][(slice(None), *(1,) * (len(shape) - 1))] = MASK
    return x1, x2


def to_ntkit(layers):
    """The ntkit spec of a layer list (channels first)."""
    import torch
    from attention_archs import attn_kwargs

    from ntkit import layers as nl

    out = []
    for spec in layers:
        kind, args = spec[0], spec[1:]
        if kind == "dense":
            out.append(nl.Dense(args[0], w_std=args[1], b_std=args[2]))
        elif kind in ("conv", "convlocal", "convT"):
            o, filt, strides, padding, w, b = args
            cls = {"conv": nl.Conv, "convlocal": nl.ConvLocal, "convT": nl.ConvTranspose}[kind]
            out.append(cls(o, filt, strides, padding, w_std=w, b_std=b))
        elif kind in ("avgpool", "sumpool"):
            cls = nl.AvgPool if kind == "avgpool" else nl.SumPool
            out.append(cls(*args))
        elif kind == "layernorm":
            out.append(nl.LayerNorm(axis=args[0]))
        elif kind == "attn":
            out.append(nl.GlobalSelfAttention(**attn_kwargs(args[0], torch)))
        elif kind == "residual":
            out.append(nl.serial(nl.FanOut(2), nl.parallel(nl.Identity(), to_ntkit(args[0])),
                                 nl.FanInSum()))
        else:
            out.append({"relu": nl.ReLU, "erf": nl.Erf, "sin": nl.Sin, "gap": nl.GlobalAvgPool,
                        "gsp": nl.GlobalSumPool, "flatten": nl.Flatten}[kind]())
    return nl.serial(*out)
