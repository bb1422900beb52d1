"""Architectures from papers, as layer specs (kernels with ``.kernel``, networks with
``.build``): `myrtle`, `wide_resnet`, `fcn`.

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
