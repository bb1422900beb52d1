"""Convolution: `Conv`, 1-D, 2-D or 3-D, in neural-tangents' two parameterizations."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ntkit.kernel import Kernel
from ntkit.layers import masking as M
from ntkit.layers import windows as W
from ntkit.layers.base import ExampleShape, Layer, check_std, is_streams, std_value
from ntkit.layers.dense import PARAMETERIZATIONS
from ntkit.layers.nt_names import W_STD_DEFAULT, resolve_w_std


def check_window(name: str, what: str, value, ndim: int | None = None) -> tuple[int, ...]:
    """A tuple of positive ints (1, 2 or 3 of them)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * (ndim or 1)
    if not isinstance(value, (tuple, list)) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        raise ValueError(f"{name} {what} must be a tuple of positive ints, got {value!r}")
    value = tuple(value)
    if ndim is None and len(value) not in (1, 2, 3):
        raise ValueError(f"{name} supports 1-D, 2-D and 3-D windows, got {what}={value}")
    if ndim is not None and len(value) != ndim:
        raise ValueError(f"{name} {what}={value} must have {ndim} entries, one per spatial "
                         "dimension of the window")
    return value


def check_padding(name: str, padding) -> str:
    if not isinstance(padding, str) or padding.upper() not in W.PADDINGS:
        raise ValueError(f"{name}: unknown padding {padding!r}; expected one of {W.PADDINGS}")
    return padding.upper()


def pad_input(x: Tensor, window: Sequence[int], strides: Sequence[int], padding: str) -> Tensor:
    """Pad a (n, C, *S) batch as the kernel maps do (zeros, or wrapping for CIRCULAR)."""
    if padding == "VALID":
        return x
    d = len(window)
    amounts = []
    for i in reversed(range(d)):  # F.pad takes the last axis first
        amounts += list(W.pads(x.shape[2 + i], window[i], strides[i], padding))
    if not any(amounts):
        return x
    if padding == "CIRCULAR":
        for i in range(d):
            before, after = W.pads(x.shape[2 + i], window[i], strides[i], padding)
            x = W.pad_axis(x, 2 + i, before, after, circular=True)
        return x
    return F.pad(x, amounts)


def window_remask(k: Kernel, out: Kernel, window, strides, padding: str) -> Kernel:
    """``out`` (the kernel of a convolution or pooling of ``k``) remasked with the window
    masks of ``k``'s (`ntkit.layers.masking.window_mask`); ``out`` itself without masks."""
    if not k.masked:
        return out
    return out.remask(*k.map_masks(lambda m: M.window_mask(m, window, strides, padding)))


#: torch's "VALID" correlation per number of spatial dimensions.
CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class _InPlace:
    """Arithmetic of the Conv kernel map on tensors it owns (fresh box sums): in place.
    ``add`` skips a zero bias, as the map always has."""

    @staticmethod
    def scale(t: Tensor, a, keep: bool = False) -> Tensor:
        return t * a if keep else t.mul_(a)

    @staticmethod
    def add(t: Tensor, b) -> Tensor:
        if isinstance(b, Tensor):
            return t.add_(b)
        return t.add_(b) if b else t

    @staticmethod
    def axpy(t: Tensor, u: Tensor, a) -> Tensor:
        return t.add_(u, alpha=a)


class _OutOfPlace:
    """The same arithmetic out of place, for tensor (learnable) hyperparameters."""

    @staticmethod
    def scale(t: Tensor, a, keep: bool = False) -> Tensor:
        return t * a

    @staticmethod
    def add(t: Tensor, b) -> Tensor:
        return t + b

    @staticmethod
    def axpy(t: Tensor, u: Tensor, a) -> Tensor:
        return t + u * a


class ConvModule(nn.Module):
    """Finite convolution: ``y = w_scale · conv(x, W) + b_scale · b``, channels first.

    'ntk': W, b ~ N(0, 1), w_scale = w_std/√(C·q) with q the filter size, b_scale = b_std.
    'standard': W ~ N(0, w_std²/(C·q)), b ~ N(0, b_std²), scales 1.
    Padding is applied to the input first (asymmetric for "SAME" with even filters,
    wrapping for "CIRCULAR"), then a "VALID" ``F.conv1d``/``F.conv2d``/``F.conv3d``.
    """

    def __init__(self, in_shape: ExampleShape, out_channels: int, filter_shape, strides,
                 padding: str, w_std: float, b_std: float | None, parameterization: str,
                 generator: torch.Generator, dtype: torch.dtype):
        super().__init__()
        # The spec's values (ntkit.lift reads them back).
        self.w_std, self.b_std, self.parameterization = w_std, b_std, parameterization
        c = in_shape.channels
        self.filter_shape, self.strides, self.padding = filter_shape, strides, padding
        fan_in = c * math.prod(filter_shape)
        w = torch.randn(out_channels, c, *filter_shape, generator=generator, dtype=dtype)
        b = None if b_std is None else torch.randn(out_channels, generator=generator,
                                                   dtype=dtype)
        if parameterization == "ntk":
            self.w_scale, self.b_scale = w_std / math.sqrt(fan_in), (b_std or 0.0)
        else:
            w = w * (w_std / math.sqrt(fan_in))
            b = None if b is None else b * b_std
            self.w_scale, self.b_scale = 1.0, 1.0
        self.weight = nn.Parameter(w)
        self.bias = None if b is None else nn.Parameter(b)
        self._conv = CONV_FNS[len(filter_shape)]

    def forward(self, x: Tensor) -> Tensor:
        x = pad_input(x, self.filter_shape, self.strides, self.padding)
        w = self.weight * self.w_scale if self.w_scale != 1.0 else self.weight
        b = None
        if self.bias is not None:
            b = self.bias * self.b_scale if self.b_scale != 1.0 else self.bias
        return self._conv(x, w, b, stride=self.strides)

    def masked_forward(self, x: Tensor, mask: Tensor):
        """Masked inputs (`ntkit.layers.masking`): each output position takes the mask of
        its window's centre; absent outputs are zeroed."""
        m = M.channel_mask(M.window_mask(M.position_mask(mask), self.filter_shape,
                                         self.strides, self.padding))
        return M.remask(self(x), m), m

    def extra_repr(self) -> str:
        return (f"out_channels={self.weight.shape[0]}, filter_shape={self.filter_shape}, "
                f"strides={self.strides}, padding={self.padding!r}, "
                f"bias={self.bias is not None}")


class Conv(Layer):
    """Convolution with ``out_channels`` channels over 1-D (n, C, L), 2-D (n, C, H, W) or
    3-D (n, C, D, H, W) inputs, by ``len(filter_shape)``; weights shared across positions.

    Kernel map (per pair of positions; q = filter size, C = input channels):

    - 'ntk': ``nngp' = w_std²·mean_k nngp[p+k, p'+k] + b_std²`` and
      ``ntk' = nngp' + w_std²·mean_k ntk[p+k, p'+k]``;
    - 'standard': same nngp'; ``ntk' = C·q·mean_k nngp[..] + w_std²·mean_k ntk[..]
      (+ 1 with a bias)``, as in neural-tangents.

    Args:
      out_channels: output channels (the kernel is their infinite limit).
      filter_shape: (q,), (qh, qw) or (qd, qh, qw).
      strides: same length as filter_shape; default 1.
      padding: "VALID", "SAME" (total padding split with the extra one after, as in
        neural-tangents/lax) or "CIRCULAR" (same amounts, wrapping around).
      w_std, b_std: weight and bias standard deviations (b_std=None: no bias); numbers,
        or 0-d tensors (gradients of the kernel reach them when they require grad).
      parameterization: "ntk" or "standard".
      W_std: neural-tangents' spelling of ``w_std`` (give one of the two).
    """

    def __init__(self, out_channels: int, filter_shape: Sequence[int],
                 strides: Sequence[int] | None = None, padding: str = "VALID",
                 w_std: float = W_STD_DEFAULT, b_std: float | None = 0.0,
                 parameterization: str = "ntk", *,
                 W_std: float | None = None):
        if isinstance(out_channels, bool) or not isinstance(out_channels, int):
            raise TypeError(f"Conv out_channels must be an int, got {out_channels!r}")
        if out_channels < 1:
            raise ValueError(f"Conv out_channels must be >= 1, got {out_channels}")
        self.out_channels = out_channels
        self.filter_shape = check_window("Conv", "filter_shape", filter_shape)
        d = len(self.filter_shape)
        self.strides = (1,) * d if strides is None else check_window("Conv", "strides",
                                                                     strides, d)
        self.padding = check_padding("Conv", padding)
        self.w_std = check_std("w_std", resolve_w_std("Conv", w_std, W_std))
        self.b_std = check_std("b_std", b_std, allow_none=True)
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; "
                             f"expected one of {PARAMETERIZATIONS}")
        self.parameterization = parameterization

    def _check(self, spatial) -> None:
        if not spatial:
            raise ValueError("Conv needs spatial inputs: (n, C, L) for 1-D, (n, C, H, W) "
                             "for 2-D or (n, C, D, H, W) for 3-D filters, channels first; "
                             "got fully-connected (n, d) features")
        W.check_fits(spatial, self.filter_shape, self.padding, "Conv")

    def kernel_map(self, k: Kernel) -> Kernel:
        if isinstance(k, tuple):
            raise ValueError(f"Conv got {len(k)} parallel branches; combine them first with "
                             "FanInSum() or FanInConcat()")
        self._check(k.spatial)
        q = W.window_size(self.filter_shape)
        w2 = self.w_std**2
        b2 = 0.0 if self.b_std is None else self.b_std**2

        def box(t: Tensor, b: int) -> Tensor:
            return W.conv_sum(t, b, k.full, self.filter_shape, self.strides, self.padding)

        # Numbers: in place, each new tensor scaled where it lies. Tensor hyperparameters
        # (learnable): out of place, every term kept for autograd. One set of formulas.
        ops = _InPlace if not (isinstance(w2, Tensor) or isinstance(b2, Tensor)) else _OutOfPlace
        standard = self.parameterization == "standard" and k.ntk is not None
        nngp_sum = box(k.nngp, 2)
        # 'standard' needs the unscaled sum again for the NTK; 'ntk' scales in place.
        nngp = ops.add(ops.scale(nngp_sum, w2 / q, keep=standard), b2)
        ntk = k.ntk
        if ntk is not None:
            if not standard:
                ntk = ops.add(ops.scale(box(ntk, 2), w2 / q), nngp)
            else:
                ntk = ops.axpy(ops.scale(nngp_sum, k.channels), box(ntk, 2), w2 / q)
                if self.b_std is not None:
                    ntk = ops.add(ntk, 1.0)
        spatial = W.output_spatial(k.spatial, self.filter_shape, self.strides, self.padding)
        cov1, cov2 = k.map_covs(lambda c: ops.add(ops.scale(box(c, 1), w2 / q), b2), nngp)
        out = k.fresh_affine(self.out_channels, nngp=nngp, ntk=ntk, cov1=cov1,
                             cov2=cov2, spatial=spatial)
        return window_remask(k, out, self.filter_shape, self.strides, self.padding)

    def make_module(self, in_features, generator, dtype):
        if is_streams(in_features):
            raise ValueError("Conv got parallel branches; combine them first with "
                             "FanInSum() or FanInConcat()")
        if not isinstance(in_features, ExampleShape):
            self._check(())
        self._check(in_features.spatial)
        module = ConvModule(in_features, self.out_channels, self.filter_shape, self.strides,
                            self.padding, std_value(self.w_std), std_value(self.b_std),
                            self.parameterization,
                            generator, dtype)
        spatial = W.output_spatial(in_features.spatial, self.filter_shape, self.strides,
                                   self.padding)
        return module, ExampleShape((self.out_channels, *spatial))


def affine_conv_map(k: Kernel, box, q: int, w_std, b_std, parameterization: str,
                    post=None) -> tuple:
    """The weight/bias part of a convolution-like kernel map, shared by `ConvTranspose`
    and `ConvLocal` (the same formulas as `Conv`): given ``box(t, b)``, the layer's sum
    over its q filter taps of a field t with b batch axes, returns (nngp, ntk, cov1, cov2)
    of the output. 'ntk': nngp' = w²/q·box(nngp) + b², ntk' = w²/q·box(ntk) + nngp';
    'standard': ntk' = C·box(nngp) + w²/q·box(ntk) (+1 with a bias). ``post(t, b)``, if
    given, maps every finished field (e.g. back to full storage)."""
    w2 = w_std**2
    b2 = 0.0 if b_std is None else b_std**2
    ops = _InPlace if not (isinstance(w2, Tensor) or isinstance(b2, Tensor)) else _OutOfPlace
    standard = parameterization == "standard" and k.ntk is not None
    nngp_sum = box(k.nngp, 2)
    nngp = ops.add(ops.scale(nngp_sum, w2 / q, keep=standard), b2)
    ntk = k.ntk
    if ntk is not None:
        if not standard:
            ntk = ops.add(ops.scale(box(ntk, 2), w2 / q), nngp)
        else:
            ntk = ops.axpy(ops.scale(nngp_sum, k.channels), box(ntk, 2), w2 / q)
            if b_std is not None:
                ntk = ops.add(ntk, 1.0)
    if post is not None:
        nngp, ntk = post(nngp, 2), None if ntk is None else post(ntk, 2)

    def cov_map(c: Tensor) -> Tensor:
        c = ops.add(ops.scale(box(c, 1), w2 / q), b2)
        return c if post is None else post(c, 1)

    cov1, cov2 = k.map_covs(cov_map, nngp)
    return nngp, ntk, cov1, cov2


def check_conv_args(name: str, out_channels, filter_shape, strides, padding, w_std, b_std,
                    parameterization) -> tuple:
    """Validated (out_channels, filter_shape, strides, padding, w_std, b_std,
    parameterization) of a convolution-like layer, with clear errors naming ``name``."""
    if isinstance(out_channels, bool) or not isinstance(out_channels, int):
        raise TypeError(f"{name} out_channels must be an int, got {out_channels!r}")
    if out_channels < 1:
        raise ValueError(f"{name} out_channels must be >= 1, got {out_channels}")
    filter_shape = check_window(name, "filter_shape", filter_shape)
    d = len(filter_shape)
    strides = (1,) * d if strides is None else check_window(name, "strides", strides, d)
    padding = check_padding(name, padding)
    w_std = check_std("w_std", w_std)
    b_std = check_std("b_std", b_std, allow_none=True)
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"{name}: unknown parameterization {parameterization!r}; "
                         f"expected one of {PARAMETERIZATIONS}")
    return out_channels, filter_shape, strides, padding, w_std, b_std, parameterization


def conv_weights(out_channels: int, in_channels: int, filter_shape, w_std: float,
                 b_std: float | None, parameterization: str, generator: torch.Generator,
                 dtype: torch.dtype, weight_shape=None, bias_shape=None):
    """(weight, bias, w_scale, b_scale) of a finite convolution-like layer in
    neural-tangents' parameterizations (fan-in C·q): 'ntk' draws N(0, 1) and scales in
    the forward pass, 'standard' draws N(0, w_std²/(C·q)) and N(0, b_std²)."""
    fan_in = in_channels * math.prod(filter_shape)
    w = torch.randn(*(weight_shape or (out_channels, in_channels, *filter_shape)),
                    generator=generator, dtype=dtype)
    b = None if b_std is None else torch.randn(*(bias_shape or (out_channels,)),
                                               generator=generator, dtype=dtype)
    if parameterization == "ntk":
        return w, b, w_std / math.sqrt(fan_in), (b_std or 0.0)
    w = w * (w_std / math.sqrt(fan_in))
    b = None if b is None else b * b_std
    return w, b, 1.0, 1.0
