"""Locally connected convolution `ConvLocal`: a `Conv` whose weights (and bias) differ
at every output position (neural-tangents' ``stax.ConvLocal``), channels first.

Unshared weights decorrelate different output positions: the kernel is `Conv`'s on the
position diagonal and exactly 0 between different positions. On diagonal storage it
therefore equals `Conv`'s kernel (a Conv followed only by Flatten cannot tell shared from
unshared weights, as neural-tangents notes); on full storage (before pooling) it differs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ntkit.kernel import Kernel, position_diagonal
from ntkit.layers import masking as M
from ntkit.layers import windows as W
from ntkit.layers.base import ExampleShape, Layer, is_streams, std_value
from ntkit.layers.conv import (
    affine_conv_map,
    check_conv_args,
    conv_weights,
    pad_input,
    window_remask,
)


def _embed_diagonal(t: Tensor, b: int, d: int) -> Tensor:
    """(batch…, *S) diagonal -> (batch…, *S, *S) with zeros off the position diagonal."""
    spatial = t.shape[b:]
    p = math.prod(spatial)
    flat = torch.diag_embed(t.reshape(*t.shape[:b], p))
    return flat.reshape(*t.shape[:b], *spatial, *spatial)


class ConvLocalModule(nn.Module):
    """Finite locally connected layer: y[o, p] = w_scale · Σ_{c,k} W[p, o, c, k]
    x[c, s·p + k] + b_scale · b[o, p], on the input padded as `Conv` pads it."""

    def __init__(self, in_shape: ExampleShape, out_channels: int, filter_shape, strides,
                 padding: str, w_std: float, b_std: float | None, parameterization: str,
                 generator: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.filter_shape, self.strides, self.padding = filter_shape, strides, padding
        self.out_spatial = W.output_spatial(in_shape.spatial, filter_shape, strides, padding)
        c, n_pos, q = in_shape.channels, math.prod(self.out_spatial), math.prod(filter_shape)
        w, b, self.w_scale, self.b_scale = conv_weights(
            out_channels, c, filter_shape, w_std, b_std, parameterization, generator, dtype,
            weight_shape=(n_pos, out_channels, c, q),
            bias_shape=(out_channels, *self.out_spatial))
        self.weight = nn.Parameter(w)
        self.bias = None if b is None else nn.Parameter(b)

    def forward(self, x: Tensor) -> Tensor:
        x = pad_input(x, self.filter_shape, self.strides, self.padding)
        for i, (q, s) in enumerate(zip(self.filter_shape, self.strides, strict=True)):
            x = x.unfold(2 + i, q, s)  # (n, C, *out, *q) once all axes are unfolded
        n, c = x.shape[:2]
        patches = x.reshape(n, c, math.prod(self.out_spatial), -1)
        w = self.weight * self.w_scale if self.w_scale != 1.0 else self.weight
        y = torch.einsum("ncpq,pocq->nop", patches, w).reshape(n, -1, *self.out_spatial)
        if self.bias is not None:
            y = y + (self.bias * self.b_scale if self.b_scale != 1.0 else self.bias)
        return y

    def masked_forward(self, x: Tensor, mask: Tensor):
        """Masked inputs (`ntkit.layers.masking`): each output position takes the mask of
        its window's centre; absent outputs are zeroed."""
        m = M.channel_mask(M.window_mask(M.position_mask(mask), self.filter_shape,
                                         self.strides, self.padding))
        return M.remask(self(x), m), m


class ConvLocal(Layer):
    """Locally connected convolution (unshared weights and biases), with the arguments
    and kernel formulas of `Conv` (1-D, 2-D or 3-D filters; "VALID", "SAME",
    "CIRCULAR"; 'ntk' or 'standard'). The kernel is `Conv`'s on the position diagonal and
    0 between different positions.

    Example::

        net = nl.serial(nl.ConvLocal(64, (3, 3), padding="SAME"), nl.ReLU(),
                        nl.Flatten(), nl.Dense(1))
    """

    def __init__(self, out_channels: int, filter_shape: Sequence[int],
                 strides: Sequence[int] | None = None, padding: str = "VALID",
                 w_std: float = 1.0, b_std: float | None = 0.0,
                 parameterization: str = "ntk"):
        (self.out_channels, self.filter_shape, self.strides, self.padding, self.w_std,
         self.b_std, self.parameterization) = check_conv_args(
            "ConvLocal", out_channels, filter_shape, strides, padding, w_std, b_std,
            parameterization)

    def _check(self, spatial) -> None:
        if not spatial:
            raise ValueError("ConvLocal needs spatial inputs (n, C, L), (n, C, H, W) or "
                             "(n, C, D, H, W), channels first; got fully-connected features")
        W.check_fits(spatial, self.filter_shape, self.padding, "ConvLocal")

    def kernel_map(self, k: Kernel) -> Kernel:
        if isinstance(k, tuple):
            raise ValueError(f"ConvLocal got {len(k)} parallel branches; combine them first "
                             "with FanInSum() or FanInConcat()")
        self._check(k.spatial)
        d = len(k.spatial)
        full = k.full

        def box(t: Tensor, b: int) -> Tensor:
            # Only same-position pairs survive unshared weights: work on the diagonal
            # (and put it back on full storage afterwards, `post`).
            if full:
                t = position_diagonal(t, d)
            return W.conv_sum(t, b, False, self.filter_shape, self.strides, self.padding)

        def post(t: Tensor, b: int) -> Tensor:
            return _embed_diagonal(t, b, d) if full else t

        nngp, ntk, cov1, cov2 = affine_conv_map(k, box, W.window_size(self.filter_shape),
                                                self.w_std, self.b_std,
                                                self.parameterization, post=post)
        spatial = W.output_spatial(k.spatial, self.filter_shape, self.strides, self.padding)
        out = k.fresh_affine(self.out_channels, nngp=nngp, ntk=ntk, cov1=cov1,
                             cov2=cov2, spatial=spatial)
        return window_remask(k, out, self.filter_shape, self.strides, self.padding)

    def make_module(self, in_features, generator, dtype):
        if is_streams(in_features):
            raise ValueError("ConvLocal got parallel branches; combine them first with "
                             "FanInSum() or FanInConcat()")
        if not isinstance(in_features, ExampleShape):
            self._check(())
        self._check(in_features.spatial)
        module = ConvLocalModule(in_features, self.out_channels, self.filter_shape,
                                 self.strides, self.padding, std_value(self.w_std),
                                 std_value(self.b_std), self.parameterization,
                                 generator, dtype)
        return module, ExampleShape((self.out_channels, *module.out_spatial))
