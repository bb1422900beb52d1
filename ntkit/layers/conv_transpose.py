"""Transposed convolution `ConvTranspose` (neural-tangents' / ``lax.conv_transpose``'s
semantics, channels first), 1-D, 2-D or 3-D.

A transposed convolution with filter q, stride s and padding P is a stride-1 "VALID"
correlation of the filter with the input dilated by s (s − 1 zeros between entries) and
zero-padded by `ntkit.layers.windows.transpose_pads`; "CIRCULAR" transposes "VALID"
and then wraps the output onto n·s positions (`circular_fold_matrix`). The finite
module runs exactly these steps; the kernel map runs them on both position axes of each
pair (full storage) or on the diagonal: the inserted zeros are uncorrelated with
everything, and the wrapped entries j + t·n·s never share an input position, so the
diagonal stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ntkit.kernel import Kernel
from ntkit.layers import masking as M
from ntkit.layers import windows as W
from ntkit.layers.base import ExampleShape, Layer, is_streams, std_value
from ntkit.layers.conv import CONV_FNS, affine_conv_map, check_conv_args, conv_weights


def _spread(t: Tensor, axes: Sequence[Sequence[int]], window, strides, padding: str) -> Tensor:
    """Dilate and pad every position axis (``axes[i]``: the axes of spatial dim i)."""
    for i, (q, s) in enumerate(zip(window, strides, strict=True)):
        pad_mode = "VALID" if padding == "CIRCULAR" else padding
        before, after = W.transpose_pads(q, s, pad_mode)
        for ax in axes[i]:
            t = W.pad_axis(W.dilate_axis(t, ax, s), ax, before, after, circular=False)
    return t


def _transposed_box(t: Tensor, axes: Sequence[Sequence[int]], window, strides,
                    padding: str) -> Tensor:
    """`_spread` followed by the stride-1 "VALID" tap sum (`W.conv_sum`), without
    materializing the dilated, padded array.

    Along spatial dim i the dilated, padded input D has D[before + s·j] = t[j] and zeros
    elsewhere, and out[p, p'] = Σ_k D[p + k, p' + k] (the same tap k on every axis of
    ``axes[i]``: both axes of a position pair, or one on the diagonal). Tap k thus adds
    t[j, j'] at p = s·j + before − k (and likewise p'): one strided in-place add per tap
    into a zeroed output, in the tap order of `W.conv_sum` (so the same sums).
    """
    pad_mode = "VALID" if padding == "CIRCULAR" else padding
    for i, (q, s) in enumerate(zip(window, strides, strict=True)):
        group = axes[i]
        n = t.shape[group[0]]
        before, after = W.transpose_pads(q, s, pad_mode)
        n_out = (n - 1) * s + 1 + before + after - q + 1
        shape = list(t.shape)
        for ax in group:
            shape[ax] = n_out
        out = t.new_zeros(shape)
        for k in range(q):
            off = before - k
            lo = max(0, -(off // s))                 # first j with s·j + off >= 0
            hi = min(n - 1, (n_out - 1 - off) // s)  # last j with s·j + off < n_out
            if hi < lo:
                continue
            dst = [slice(None)] * t.ndim
            src = [slice(None)] * t.ndim
            for ax in group:
                dst[ax] = slice(s * lo + off, s * hi + off + 1, s)
                src[ax] = slice(lo, hi + 1)
            out[tuple(dst)].add_(t[tuple(src)])
        t = out
    return t


def _fold(t: Tensor, axes: Sequence[Sequence[int]], in_spatial, strides) -> Tensor:
    """CIRCULAR: wrap each position axis onto n·s entries."""
    for i, s in enumerate(strides):
        for ax in axes[i]:
            m = W.circular_fold_matrix(t.shape[ax], in_spatial[i] * s, t.dtype, t.device)
            t = W.apply_axis_matrix(t, ax, m)
    return t


class ConvTransposeModule(nn.Module):
    """Finite transposed convolution, channels first: dilate by the strides, pad, then a
    "VALID" correlation ``w_scale · conv(x, W) + b_scale · b`` (fold for "CIRCULAR")."""

    def __init__(self, in_shape: ExampleShape, out_channels: int, filter_shape, strides,
                 padding: str, w_std: float, b_std: float | None, parameterization: str,
                 generator: torch.Generator, dtype: torch.dtype):
        super().__init__()
        # The spec's values (ntkit.lift reads them back).
        self.w_std, self.b_std, self.parameterization = w_std, b_std, parameterization
        self.filter_shape, self.strides, self.padding = filter_shape, strides, padding
        w, b, self.w_scale, self.b_scale = conv_weights(
            out_channels, in_shape.channels, filter_shape, w_std, b_std, parameterization,
            generator, dtype)
        self.weight = nn.Parameter(w)
        self.bias = None if b is None else nn.Parameter(b)
        self._conv = CONV_FNS[len(filter_shape)]

    def forward(self, x: Tensor) -> Tensor:
        d = len(self.filter_shape)
        axes = [(2 + i,) for i in range(d)]
        in_spatial = tuple(x.shape[2:])
        x = _spread(x, axes, self.filter_shape, self.strides, self.padding)
        w = self.weight * self.w_scale if self.w_scale != 1.0 else self.weight
        y = self._conv(x, w)
        if self.padding == "CIRCULAR":
            y = _fold(y, axes, in_spatial, self.strides)
        if self.bias is not None:
            b = self.bias * self.b_scale if self.b_scale != 1.0 else self.bias
            y = y + b.reshape(-1, *(1,) * d)
        return y

    def masked_forward(self, x: Tensor, mask: Tensor):
        """Masked inputs (`ntkit.layers.masking`): an output is absent when any absent
        input reaches it; absent outputs are zeroed."""
        m = M.channel_mask(M.transpose_mask(M.position_mask(mask), self._spread_mask))
        return M.remask(self(x), m), m

    def _spread_mask(self, t: Tensor) -> Tensor:
        return transposed_sum(t, self.filter_shape, self.strides, self.padding)


def transposed_sum(t: Tensor, window, strides, padding: str) -> Tensor:
    """(n, 1, *S) -> (n, 1, *S_out): each output's sum of the inputs that reach it through
    a transposed convolution with an all-ones filter (its mask rule)."""
    d = len(window)
    axes = [(2 + i,) for i in range(d)]
    in_spatial = tuple(t.shape[2:])
    t = _spread(t, axes, window, strides, padding)
    t = CONV_FNS[d](t, torch.ones((1, 1, *window), dtype=t.dtype, device=t.device))
    if padding == "CIRCULAR":
        t = _fold(t, axes, in_spatial, strides)
    return t


class ConvTranspose(Layer):
    """Transposed convolution with ``out_channels`` channels over (n, C, L), (n, C, H, W)
    or (n, C, D, H, W) inputs (by ``len(filter_shape)``), as neural-tangents'
    ``stax.ConvTranspose`` (``lax.conv_transpose`` without kernel flip).

    Output length per axis: n·s for "SAME" and "CIRCULAR", n·s + max(q − s, 0) for
    "VALID". Kernel map: the `Conv` formulas (fan-in C·q, mean over the q taps) applied
    to the kernel of the dilated, padded input; with stride 1 and "VALID" it is a
    `Conv` with "full" padding q − 1 on each side.

    Args:
      out_channels: output channels (the kernel is their infinite limit).
      filter_shape: (q,), (qh, qw) or (qd, qh, qw).
      strides: the upsampling factors, same length as filter_shape; default 1.
      padding: "VALID", "SAME" or "CIRCULAR".
      w_std, b_std: weight and bias standard deviations (b_std=None: no bias).
      parameterization: "ntk" or "standard".

    Example::

        net = nl.serial(nl.Conv(64, (3, 3)), nl.ReLU(),
                        nl.ConvTranspose(64, (3, 3), strides=(2, 2), padding="SAME"))
    """

    def __init__(self, out_channels: int, filter_shape: Sequence[int],
                 strides: Sequence[int] | None = None, padding: str = "VALID",
                 w_std: float = 1.0, b_std: float | None = 0.0,
                 parameterization: str = "ntk"):
        (self.out_channels, self.filter_shape, self.strides, self.padding, self.w_std,
         self.b_std, self.parameterization) = check_conv_args(
            "ConvTranspose", out_channels, filter_shape, strides, padding, w_std, b_std,
            parameterization)

    def _check(self, spatial) -> None:
        if not spatial:
            raise ValueError("ConvTranspose needs spatial inputs (n, C, L), (n, C, H, W) or "
                             "(n, C, D, H, W), channels first; got fully-connected features")
        W.check_fits(spatial, self.filter_shape, "SAME", "ConvTranspose")

    def _out_spatial(self, spatial) -> tuple[int, ...]:
        return tuple(W.transpose_out_size(n, q, s, self.padding)
                     for n, q, s in zip(spatial, self.filter_shape, self.strides, strict=True))

    def kernel_map(self, k: Kernel) -> Kernel:
        if isinstance(k, tuple):
            raise ValueError(f"ConvTranspose got {len(k)} parallel branches; combine them "
                             "first with FanInSum() or FanInConcat()")
        self._check(k.spatial)
        d = len(k.spatial)

        def box(t: Tensor, b: int) -> Tensor:
            axes = [(b + i, b + d + i) if k.full else (b + i,) for i in range(d)]
            t = _transposed_box(t, axes, self.filter_shape, self.strides, self.padding)
            if self.padding == "CIRCULAR":
                t = _fold(t, axes, k.spatial, self.strides)
            return t

        nngp, ntk, cov1, cov2 = affine_conv_map(k, box, W.window_size(self.filter_shape),
                                                self.w_std, self.b_std,
                                                self.parameterization)
        out = k.fresh_affine(self.out_channels, nngp=nngp, ntk=ntk, cov1=cov1,
                             cov2=cov2, spatial=self._out_spatial(k.spatial))
        if not k.masked:
            return out

        def spread(t: Tensor) -> Tensor:
            return transposed_sum(t, self.filter_shape, self.strides, self.padding)

        return out.remask(*k.map_masks(lambda m: M.transpose_mask(m, spread)))

    def make_module(self, in_features, generator, dtype):
        if is_streams(in_features):
            raise ValueError("ConvTranspose got parallel branches; combine them first with "
                             "FanInSum() or FanInConcat()")
        if not isinstance(in_features, ExampleShape):
            self._check(())
        self._check(in_features.spatial)
        module = ConvTransposeModule(in_features, self.out_channels, self.filter_shape,
                                     self.strides, self.padding, std_value(self.w_std),
                                     std_value(self.b_std), self.parameterization,
                                     generator, dtype)
        return module, ExampleShape((self.out_channels, *self._out_spatial(in_features.spatial)))
