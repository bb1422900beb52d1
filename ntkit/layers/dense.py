"""Fully-connected layer: `Dense`, in neural-tangents' two parameterizations."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ntkit.kernel import Kernel
from ntkit.layers.base import ExampleShape, Layer, check_std, is_streams, std_value
from ntkit.layers.masking import remask
from ntkit.layers.nt_names import W_STD_DEFAULT, resolve_w_std

PARAMETERIZATIONS = ("ntk", "standard")
_SPATIAL_ERROR = ("Dense got a spatial input (positions {shape}); reduce the positions first "
                  "with Flatten() or GlobalAvgPool(), or use a 1×1 Conv to act per position")

class DenseModule(nn.Module):
    """Finite dense layer: ``y = w_scale · x Wᵀ + b_scale · b``.

    'ntk':      W, b ~ N(0, 1);  w_scale = w_std/√fan_in, b_scale = b_std.
    'standard': W ~ N(0, w_std²/fan_in), b ~ N(0, b_std²);  w_scale = b_scale = 1.

    ``bias`` is None when the spec has ``b_std=None``. The scales are plain floats,
    so per-example gradients are ``w_scale · outer(cotangent, x)`` and ``b_scale · cotangent``.
    """

    def __init__(self, in_features: int, out_features: int, w_std: float, b_std: float | None,
                 parameterization: str, generator: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.w_std, self.b_std = w_std, b_std  # the spec's values (ntkit.lift reads them)
        self.in_features, self.out_features = in_features, out_features
        self.parameterization = parameterization
        w = torch.randn(out_features, in_features, generator=generator, dtype=dtype)
        b = None if b_std is None else torch.randn(out_features, generator=generator, dtype=dtype)
        if parameterization == "ntk":
            self.w_scale, self.b_scale = w_std / math.sqrt(in_features), (b_std or 0.0)
        else:
            w = w * (w_std / math.sqrt(in_features))
            b = None if b is None else b * b_std
            self.w_scale, self.b_scale = 1.0, 1.0
        self.weight = nn.Parameter(w)
        self.bias = None if b is None else nn.Parameter(b)

    def forward(self, x: Tensor) -> Tensor:
        y = (x @ self.weight.T) * self.w_scale if self.w_scale != 1.0 else x @ self.weight.T
        if self.bias is not None:
            y = y + (self.bias * self.b_scale if self.b_scale != 1.0 else self.bias)
        return y

    def masked_forward(self, x: Tensor, mask: Tensor):
        """Masked inputs (`ntkit.layers.masking`): an output is absent when all its inputs
        are; absent outputs are zeroed."""
        m = mask.all(1, keepdim=True)
        return remask(self(x), m), m

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"parameterization={self.parameterization!r}, bias={self.bias is not None}")


class Dense(Layer):
    """Fully-connected layer with ``out_features`` channels.

    Kernel map (nngp, cov: (n1, n2), (n,); c = input channel count):

    - 'ntk' (default): ``nngp' = w_std²·nngp + b_std²`` and ``ntk' = nngp' + w_std²·ntk``.
    - 'standard': same nngp'; ``ntk' = c·nngp + w_std²·ntk (+ 1 if there is a bias)``, so
      the NTK depends on widths, as in neural-tangents.

    Args:
      out_features: output width (used by `build`; the kernel is its infinite-width limit).
      w_std: weight standard deviation (≥ 0): a number, or a 0-d tensor (gradients of
        the kernel reach it when it requires grad; `build` uses its current value).
      b_std: bias standard deviation (≥ 0; number or 0-d tensor), or None for no bias
        parameter at all.
      parameterization: "ntk" or "standard".
      W_std: neural-tangents' spelling of ``w_std`` (give one of the two).
    """

    def __init__(self, out_features: int, w_std: float = W_STD_DEFAULT,
                 b_std: float | None = 0.0, parameterization: str = "ntk", *,
                 W_std: float | None = None):
        if isinstance(out_features, bool) or not isinstance(out_features, int):
            raise TypeError(f"Dense out_features must be an int, got {out_features!r}")
        if out_features < 1:
            raise ValueError(f"Dense out_features must be >= 1, got {out_features}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; "
                             f"expected one of {PARAMETERIZATIONS}")
        self.out_features = out_features
        self.w_std = check_std("w_std", resolve_w_std("Dense", w_std, W_std))
        self.b_std = check_std("b_std", b_std, allow_none=True)
        self.parameterization = parameterization

    def kernel_map(self, k: Kernel) -> Kernel:
        if isinstance(k, tuple):
            raise ValueError(f"Dense got {len(k)} parallel branches; combine them first with "
                             "FanInSum() or FanInConcat()")
        if k.is_spatial:
            raise ValueError(_SPATIAL_ERROR.format(shape=k.spatial))
        nngp = self.affine(k.nngp)
        ntk = self.ntk_map(k, nngp)
        cov1, cov2 = k.map_covs(self.affine, nngp)
        out = k.fresh_affine(self.out_features, nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)
        return out.remask(k.mask1, k.mask2) if k.masked else out

    def affine(self, t: Tensor) -> Tensor:
        """This layer's map of a covariance field (nngp, cov1 or cov2, any shape):
        ``w_std²·t + b_std²``."""
        w2 = self.w_std**2
        b2 = 0.0 if self.b_std is None else self.b_std**2
        if isinstance(w2, Tensor) or isinstance(b2, Tensor):
            return t * w2 + b2  # learnable hyperparameters: out of place, every term kept
        return torch.mul(t, w2).add_(b2) if b2 else t * w2

    def ntk_map(self, k: Kernel, nngp: Tensor) -> Tensor | None:
        """The NTK after this layer (None if ``k`` tracks none), from its input kernel
        ``k`` and its output nngp ``nngp = self.affine(k.nngp)`` (see the class
        docstring for both parameterizations)."""
        ntk = k.ntk
        if ntk is None:
            return None
        w2 = self.w_std**2
        if self.parameterization == "ntk":
            if isinstance(w2, Tensor) or isinstance(self.b_std, Tensor):
                return nngp + w2 * ntk
            return torch.add(nngp, ntk, alpha=w2)
        ntk = k.channels * k.nngp + w2 * ntk
        return ntk + 1.0 if self.b_std is not None else ntk

    def make_module(self, in_features, generator, dtype):
        if isinstance(in_features, ExampleShape):
            raise ValueError(_SPATIAL_ERROR.format(shape=in_features.spatial))
        if is_streams(in_features):
            raise ValueError("Dense got parallel branches; combine them first with "
                             "FanInSum() or FanInConcat()")
        module = DenseModule(in_features, self.out_features, std_value(self.w_std),
                             std_value(self.b_std),
                             self.parameterization, generator, dtype)
        return module, self.out_features
