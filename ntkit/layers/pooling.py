"""Reducing positions: `AvgPool`, `GlobalAvgPool` and `Flatten`.

Pooling averages positions independently in the two inputs, so it needs the full
position-position covariance of its input (and so does every spatial layer before it).
`Flatten` feeds a Dense layer that sees C·|S| inputs: the next kernel is the mean over
positions of the same-position kernel, which needs only the diagonal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ntkit.kernel import Kernel, Storage
from ntkit.layers import windows as W
from ntkit.layers.base import ExampleShape, Layer, is_streams
from ntkit.layers.conv import check_padding, check_window, pad_input


def _single(name: str, k):
    if isinstance(k, tuple):
        raise ValueError(f"{name} got {len(k)} parallel branches; combine them first with "
                         "FanInSum() or FanInConcat(), or apply it per branch with parallel()")
    return k


def _single_width(name: str, width):
    if is_streams(width):
        raise ValueError(f"{name} got parallel branches; combine them first with FanInSum() or "
                         "FanInConcat(), or apply it per branch with parallel()")
    return width


class AvgPoolModule(nn.Module):
    def __init__(self, window, strides, padding):
        super().__init__()
        self.window, self.strides, self.padding = window, strides, padding
        self._pool = F.avg_pool1d if len(window) == 1 else F.avg_pool2d

    def forward(self, x: Tensor) -> Tensor:
        # Pad explicitly (zeros count in the average, asymmetric SAME), then pool VALID.
        x = pad_input(x, self.window, self.strides, self.padding)
        return self._pool(x, self.window, self.strides)

    def extra_repr(self) -> str:
        return f"window={self.window}, strides={self.strides}, padding={self.padding!r}"


class AvgPool(Layer):
    """Average pooling over windows of ``window_shape`` (1-D or 2-D), channels first.

    Padding as in `Conv`; zero padding counts in the average (neural-tangents' default,
    ``normalize_edges=False``). Kernel map: out[p, p'] = mean over window offsets k, k'
    of in[s·p + k, s·p' + k'] — it needs the full position-position covariance.

    Args:
      window_shape: (q,) or (qh, qw).
      strides: default 1 along each axis, as in neural-tangents (pass the window shape
        for non-overlapping windows).
      padding: "VALID", "SAME" or "CIRCULAR".
    """

    def __init__(self, window_shape: Sequence[int], strides: Sequence[int] | None = None,
                 padding: str = "VALID"):
        self.window_shape = check_window("AvgPool", "window_shape", window_shape)
        d = len(self.window_shape)
        self.strides = (1,) * d if strides is None else check_window(
            "AvgPool", "strides", strides, d)
        self.padding = check_padding("AvgPool", padding)

    def requires_full(self, full_after):
        return Storage(full=True)

    def _check(self, spatial) -> None:
        if not spatial:
            raise ValueError("AvgPool needs spatial inputs (n, C, L) or (n, C, H, W), got "
                             "fully-connected features")
        W.check_fits(spatial, self.window_shape, self.padding, "AvgPool")

    def kernel_map(self, k: Kernel) -> Kernel:
        k = _single("AvgPool", k)
        self._check(k.spatial)
        scale = 1.0 / W.window_size(self.window_shape) ** 2

        def pool(t: Tensor, b: int) -> Tensor:
            return W.pool_sum(t, b, k.full, self.window_shape, self.strides,
                              self.padding).mul_(scale)

        spatial = W.output_spatial(k.spatial, self.window_shape, self.strides, self.padding)
        return k.map_fields(pool).replace(spatial=spatial)

    def make_module(self, in_features, generator, dtype):
        width = _single_width("AvgPool", in_features)
        self._check(width.spatial if isinstance(width, ExampleShape) else ())
        spatial = W.output_spatial(width.spatial, self.window_shape, self.strides,
                                   self.padding)
        return (AvgPoolModule(self.window_shape, self.strides, self.padding),
                ExampleShape((width.channels, *spatial)))


class _MeanPositions(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=tuple(range(2, x.ndim)))


class GlobalAvgPool(Layer):
    """Mean over all positions: (n, C, *S) -> (n, C). Needs full covariances."""

    def requires_full(self, full_after):
        return Storage(full=True)

    def kernel_map(self, k: Kernel) -> Kernel:
        k = _single("GlobalAvgPool", k)
        if not k.is_spatial:
            raise ValueError("GlobalAvgPool needs spatial inputs (n, C, L) or (n, C, H, W), got "
                             "fully-connected features")
        d = len(k.spatial)

        def mean(t: Tensor, b: int) -> Tensor:
            return t.mean(dim=tuple(range(b, b + 2 * d)))

        return k.map_fields(mean).replace(spatial=(), full=False)

    def make_module(self, in_features, generator, dtype):
        width = _single_width("GlobalAvgPool", in_features)
        if not isinstance(width, ExampleShape):
            raise ValueError("GlobalAvgPool needs spatial inputs, got fully-connected features")
        return _MeanPositions(), width.channels


class _FlattenModule(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)


class Flatten(Layer):
    """(n, C, *S) -> (n, C·|S|); the identity on fully-connected features.

    Kernel map: the mean over positions of the same-position kernel (what a Dense layer
    with fan-in C·|S| sees), so only the diagonal is needed.
    """

    #: A pure reshape: `serial` runs the kernel maps of activations right after it first.
    reshapes_only = True

    def requires_full(self, full_after):
        return Storage(full=False)

    def kernel_map(self, k: Kernel) -> Kernel:
        k = _single("Flatten", k)
        if not k.is_spatial:
            return k
        d = len(k.spatial)
        several = math.prod(k.spatial) > 1
        k = k.to_diagonal()

        def mean(t: Tensor, b: int) -> Tensor:
            return t.mean(dim=tuple(range(b, b + d)))

        return k.map_fields(mean).replace(spatial=(), full=False,
                                          mixed_channels=k.mixed_channels or several,
                                          channels=k.channels * math.prod(k.spatial))

    def make_module(self, in_features, generator, dtype):
        width = _single_width("Flatten", in_features)
        if not isinstance(width, ExampleShape):
            return _FlattenModule(), width
        return _FlattenModule(), math.prod(width)
