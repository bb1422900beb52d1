"""Architectures from papers, as layer specs (kernels with ``.kernel``, networks with
``.build``): `myrtle`, `wide_resnet`, `fcn`, `transformer`, `unet`.

    from ntkit import models
    net = models.myrtle(5)
    k = net.kernel(x_train, get="ntk")              # x: (n, 3, 32, 32), channels first
    model = net.build(in_features=(3, 32, 32))
"""

from __future__ import annotations

import math

from ntkit import layers as nl
from ntkit.layers.base import Activation, Layer

#: Conv blocks before each of the three 2×2 poolings (Shankar et al. 2020, Table 1).
MYRTLE_BLOCKS = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}


def _int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def myrtle(depth: int = 5, width: int = 128, num_classes: int = 10,
           w_std: float = math.sqrt(2.0), b_std: float = 0.0,
           activation: Activation | None = None) -> Layer:
    """The Myrtle CNN of Shankar et al. 2020 ("Neural Kernels Without Tangents").

    ``[conv, act] × a, pool, [conv, act] × b, pool, [conv, act] × c, pool to 1×1, Flatten,
    Dense``, with (a, b, c) = (2, 1, 1), (2, 2, 2), (3, 3, 3) for depth 5, 7, 10; convs
    3×3 "SAME", pools 2×2 with stride 2. The paper's final "pool ×3" takes 8×8 to 1×1 on
    32×32 images; here a `GlobalAvgPool` does it, which is the same map on 32×32 and
    adapts to other sizes (8×8 digits: 8 → 4 → 2 → 1). Images need at least 4×4.

    Args:
      depth: 5, 7 or 10. width: channels of the finite network (`build`). num_classes:
      outputs. w_std, b_std: of every conv and the readout. activation: default ReLU.
    """
    if depth not in MYRTLE_BLOCKS:
        raise ValueError(f"myrtle depth must be one of {sorted(MYRTLE_BLOCKS)}, got {depth!r}")
    width, num_classes = _int("width", width), _int("num_classes", num_classes)
    act = nl.ReLU() if activation is None else activation
    if not isinstance(act, Activation):
        raise TypeError(f"activation must be an ntkit activation, got {act!r}")

    def block(n):
        out = []
        for _ in range(n):
            out += [nl.Conv(width, (3, 3), padding="SAME", w_std=w_std, b_std=b_std), act]
        return out

    a, b, c = MYRTLE_BLOCKS[depth]
    pool = nl.AvgPool((2, 2), strides=(2, 2))
    return nl.serial(*block(a), pool, *block(b), pool, *block(c), nl.GlobalAvgPool(),
                     nl.Dense(num_classes, w_std=w_std, b_std=b_std))


def _wrn_block(channels: int, strides: tuple[int, int], mismatch: bool) -> Layer:
    main = nl.serial(nl.ReLU(), nl.Conv(channels, (3, 3), strides, padding="SAME"),
                     nl.ReLU(), nl.Conv(channels, (3, 3), padding="SAME"))
    shortcut = (nl.Conv(channels, (3, 3), strides, padding="SAME") if mismatch
                else nl.Identity())
    return nl.serial(nl.FanOut(2), nl.parallel(main, shortcut), nl.FanInSum())


def _wrn_group(n: int, channels: int, strides: tuple[int, int]) -> Layer:
    blocks = [_wrn_block(channels, strides, True)]
    blocks += [_wrn_block(channels, (1, 1), False) for _ in range(n - 1)]
    return nl.serial(*blocks)


def wide_resnet(block_size: int = 1, k: int = 1, num_classes: int = 10) -> Layer:
    """The wide residual network of neural-tangents' example (Zagoruyko & Komodakis 2016):

    ``Conv(16), group(16k), group(32k, stride 2), group(64k, stride 2), pool, Flatten,
    Dense(num_classes)``; each group has ``block_size`` blocks
    ``x + Conv(ReLU(Conv(ReLU(x))))`` (the first with a 3×3 Conv shortcut). Every
    residual sum adds a fresh Conv's output, so its kernel is exactly the sum of the two
    streams'. The final pool (8×8 on 32×32 images) is a `GlobalAvgPool`.
    """
    block_size, k = _int("block_size", block_size), _int("k", k)
    num_classes = _int("num_classes", num_classes)
    return nl.serial(
        nl.Conv(16, (3, 3), padding="SAME"),
        _wrn_group(block_size, 16 * k, (1, 1)),
        _wrn_group(block_size, 32 * k, (2, 2)),
        _wrn_group(block_size, 64 * k, (2, 2)),
        nl.GlobalAvgPool(), nl.Dense(num_classes, 1.0, 0.0))


def fcn(depth: int = 2, width: int = 512, num_classes: int = 1,
        w_std: float = math.sqrt(2.0), b_std: float = 0.0,
        activation: Activation | None = None) -> Layer:
    """A fully-connected network: ``[Dense(width), act] × depth, Dense(num_classes)``.

    Image inputs need a `Flatten` first: ``serial(Flatten(), fcn(...))``.
    """
    depth = _int("depth", depth, low=0)
    width, num_classes = _int("width", width), _int("num_classes", num_classes)
    act = nl.ReLU() if activation is None else activation
    if not isinstance(act, Activation):
        raise TypeError(f"activation must be an ntkit activation, got {act!r}")
    layers = []
    for _ in range(depth):
        layers += [nl.Dense(width, w_std=w_std, b_std=b_std), act]
    return nl.serial(*layers, nl.Dense(num_classes, w_std=w_std, b_std=b_std))


# ---- transformer -------------------------------------------------------------------------

NORM_PLACEMENTS = ("post", "pre", "none")


def _residual(branch: Layer) -> Layer:
    """``x + branch(x)``. The branch ends in a fresh Dense/Conv/attention output, so the
    two streams are uncorrelated in the infinite-width limit and the kernel of the sum is
    the sum of kernels (`FanInSum`'s independence rule)."""
    return nl.serial(nl.FanOut(2), nl.parallel(nl.Identity(), branch), nl.FanInSum())


def transformer(depth: int = 2, n_heads: int = 2, width: int = 64, *,
                mlp_width: int | None = None, n_chan_key: int | None = None,
                num_classes: int = 1, spatial_dims: int = 1,
                attention_mechanism: str = "softmax", pos_emb_type: str = "sum",
                pos_emb_decay_fn=None, pos_emb_p_norm: float = 2, w_pos_emb_std: float = 1.0,
                val_pos_emb: bool = False, layer_norm: str = "post",
                w_std: float = math.sqrt(2.0), b_std: float = 0.0,
                activation: Activation | None = None, readout: str = "pool") -> Layer:
    """A transformer encoder in the infinite-width limit (Hron et al. 2020, "Infinite
    attention: NNGP and NTK for deep attention networks"; Yang 2019, "Tensor Programs I").

    On channels-first sequences (n, C, L) (``spatial_dims=1``) or images of positions
    (n, C, H, W) (``spatial_dims=2``)::

        Conv(width, 1×…×1)                                       embedding, per position
        [ x + GlobalSelfAttention(x), LayerNorm,                  × depth
          x + Conv(width, 1) ∘ act ∘ Conv(mlp_width, 1) (x), LayerNorm ]
        GlobalAvgPool, Dense(num_classes)                        readout="pool"

    The attention is `ntkit.layers.GlobalSelfAttention` with ``linear_scaling=True`` (tied
    keys and queries, logits scaled by 1/n_chan_key: its weights converge, so the kernel has
    a closed form for every mechanism) and positional embeddings added to its keys and
    queries (and values with ``val_pos_emb``). Without positional embeddings
    (``pos_emb_type="none"``) the kernel is invariant to permuting each example's positions:
    attention is permutation-equivariant and the readout averages. Each residual branch ends
    in a fresh attention/Conv output, so both streams of every sum are uncorrelated at
    infinite width, and `LayerNorm` normalizes over channels at each position
    (neural-tangents' ``LayerNorm(axis=-1)``). ``layer_norm="pre"`` puts it at the start of
    each branch (``x + f(LN(x))``), ``"none"`` drops it. Widths only matter for the finite
    network (``build``): the kernel is their limit.

    Args:
      depth: number of blocks (>= 1). n_heads: attention heads (finite network).
      width: channels of the stream (embedding, attention output, MLP output).
      mlp_width: hidden channels of the MLP (default 2·width). n_chan_key: key/query and
        value channels per head (default width).
      num_classes: outputs. spatial_dims: 1 (sequences) or 2 (images).
      attention_mechanism: "softmax", "identity", "abs" or "relu".
      pos_emb_type, pos_emb_decay_fn, pos_emb_p_norm, w_pos_emb_std, val_pos_emb: the
        attention's positional embedding (``"sum"``, ``"concat"`` or ``"none"``; the
        covariance decay_fn(Σ|Δ|^p_norm) between positions, None: independent; whether
        the values see it too; see `GlobalSelfAttention`).
      layer_norm: "post" (default, as Vaswani et al. and Hron et al.), "pre" or "none".
      w_std, b_std: of the MLP's two Conv layers. activation: of the MLP (default ReLU).
      readout: "pool" (GlobalAvgPool, Dense: output (n, num_classes)) or "none"
        (per-position features, output (n, width, *S)).

    Returns:
      A layer spec: ``net.kernel(x1, x2)`` gives (n1, n2) kernels with ``readout="pool"``,
      ``net.build((C, *S))`` the finite network.

    Example:
      >>> import torch
      >>> from ntkit import models
      >>> net = models.transformer(depth=2, n_heads=2, width=16)
      >>> x = torch.randn(5, 3, 10, dtype=torch.float64)    # 5 sequences, 3 channels, L=10
      >>> net.kernel(x, get="ntk").shape
      torch.Size([5, 5])
      >>> net.build((3, 10), seed=0)(x).shape
      torch.Size([5, 1])
    """
    depth, n_heads, width = _int("depth", depth), _int("n_heads", n_heads), _int("width", width)
    mlp_width = 2 * width if mlp_width is None else _int("mlp_width", mlp_width)
    n_chan_key = width if n_chan_key is None else _int("n_chan_key", n_chan_key)
    num_classes = _int("num_classes", num_classes)
    if spatial_dims not in (1, 2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 1 (sequences), 2 or 3, got {spatial_dims!r}")
    if layer_norm not in NORM_PLACEMENTS:
        raise ValueError(f"layer_norm must be one of {NORM_PLACEMENTS}, got {layer_norm!r}")
    if readout not in ("pool", "none"):
        raise ValueError(f"readout must be 'pool' or 'none', got {readout!r}")
    act = nl.ReLU() if activation is None else activation
    if not isinstance(act, Activation):
        raise TypeError(f"activation must be an ntkit activation, got {act!r}")
    one = (1,) * spatial_dims

    def attention():
        return nl.GlobalSelfAttention(
            width, n_chan_key, n_chan_key, n_heads, linear_scaling=True,
            attention_mechanism=attention_mechanism, pos_emb_type=pos_emb_type,
            pos_emb_decay_fn=pos_emb_decay_fn, pos_emb_p_norm=pos_emb_p_norm,
            w_pos_emb_std=w_pos_emb_std, val_pos_emb=val_pos_emb)

    def mlp():
        return nl.serial(nl.Conv(mlp_width, one, w_std=w_std, b_std=b_std), act,
                         nl.Conv(width, one, w_std=w_std, b_std=b_std))

    def sublayer(branch):
        if layer_norm == "pre":
            return _residual(nl.serial(nl.LayerNorm(axis=1), branch))
        if layer_norm == "post":
            return nl.serial(_residual(branch), nl.LayerNorm(axis=1))
        return _residual(branch)

    layers: list[Layer] = [nl.Conv(width, one, w_std=1.0, b_std=0.0)]
    for _ in range(depth):
        layers += [sublayer(attention()), sublayer(mlp())]
    if readout == "pool":
        layers += [nl.GlobalAvgPool(), nl.Dense(num_classes, w_std=1.0, b_std=0.0)]
    return nl.serial(*layers)


# ---- U-Net -------------------------------------------------------------------------------

UNET_READOUTS = ("pixel", "pool")


def unet(levels: int = 2, width: int = 16, num_classes: int = 1, *, convs: int = 2,
         readout: str = "pixel", spatial_dims: int = 2, w_std: float = math.sqrt(2.0),
         b_std: float = 0.0, activation: Activation | None = None) -> Layer:
    """A U-Net (Ronneberger et al. 2015) on channels-first images (n, C, H, W).

    Level i (0 ≤ i < levels) has ``width·2^i`` channels::

        level(i) = [Conv 3×3 SAME, act] × convs,
                   concat(skip,  AvgPool 2×2 → level(i+1) → ConvTranspose(2×2, stride 2)),
                   [Conv 3×3 SAME, act] × convs
        level(levels) = [Conv 3×3 SAME, act] × convs                (the bottleneck)

    The skip concatenation is ``FanOut(2), parallel(Identity(), ...), FanInConcat()``
    (channels first, axis 1); the decoder's `ConvTranspose` doubles the positions back.
    Readout ``"pixel"``: a 1×1 Conv to ``num_classes`` channels, output (n, num_classes,
    H, W) (segmentation; the kernel is per pixel pair); ``"pool"``: GlobalAvgPool and
    Dense, output (n, num_classes). H and W must be divisible by 2^levels. The pooling
    needs the full position-pair covariance, so the kernel costs O((HW)²) per example
    pair: keep images small (e.g. 8×8 to 16×16).

    Args:
      levels: number of poolings (>= 1). width: channels of level 0 (finite network).
      num_classes: output channels. convs: convolutions per block (>= 1).
      readout: "pixel" or "pool". spatial_dims: 1, 2 or 3 (sequences, images, volumes).
      w_std, b_std: of every Conv and ConvTranspose. activation: default ReLU.

    Returns:
      A layer spec. With ``readout="pool"``, ``net.kernel(x1, x2)`` is (n1, n2); with
      ``"pixel"`` it is (n1, n2, H, W): the covariance of the same pixel of the two
      images (as for any network ending in a convolution).

    Example:
      >>> import torch
      >>> from ntkit import models
      >>> net = models.unet(levels=1, width=4, readout="pool")
      >>> x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
      >>> net.kernel(x, get="nngp").shape
      torch.Size([3, 3])
      >>> models.unet(levels=1, width=4).build((1, 4, 4), seed=0)(x).shape
      torch.Size([3, 1, 4, 4])
    """
    levels, width = _int("levels", levels), _int("width", width)
    num_classes, convs = _int("num_classes", num_classes), _int("convs", convs)
    if readout not in UNET_READOUTS:
        raise ValueError(f"readout must be one of {UNET_READOUTS}, got {readout!r}")
    if spatial_dims not in (1, 2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    act = nl.ReLU() if activation is None else activation
    if not isinstance(act, Activation):
        raise TypeError(f"activation must be an ntkit activation, got {act!r}")
    three, two, one = (3,) * spatial_dims, (2,) * spatial_dims, (1,) * spatial_dims

    def block(channels):
        out = []
        for _ in range(convs):
            out += [nl.Conv(channels, three, padding="SAME", w_std=w_std, b_std=b_std), act]
        return out

    def level(i):
        c = width * 2**i
        if i == levels:
            return nl.serial(*block(c))
        down_up = nl.serial(nl.AvgPool(two, strides=two), level(i + 1),
                            nl.ConvTranspose(c, two, strides=two, w_std=w_std, b_std=b_std))
        return nl.serial(*block(c), nl.FanOut(2), nl.parallel(nl.Identity(), down_up),
                         nl.FanInConcat(), *block(c))

    if readout == "pixel":
        head = [nl.Conv(num_classes, one, w_std=w_std, b_std=b_std)]
    else:
        head = [nl.GlobalAvgPool(), nl.Dense(num_classes, w_std=w_std, b_std=b_std)]
    return nl.serial(level(0), *head)
