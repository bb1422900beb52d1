"""`DotGeneral`: multiplication by a constant tensor, as neural-tangents'
``stax.DotGeneral`` (which calls ``lax.dot_general``), channels first.

The constant contracts some of the input's spatial axes (never the batch or channel axis)
and may bring free axes of its own, which become new spatial axes: after the input's for
``rhs``, before them for ``lhs`` (the batch and channel axes stay in front, where ntkit
keeps them). A linear map L of the positions acts on both sides of the kernel:
nngp' = L nngp Lᵀ (full position storage when anything is contracted or added; a scalar
constant keeps the diagonal storage and scales the kernel by its square).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ntkit.kernel import Kernel, Storage
from ntkit.layers.base import ExampleShape, Layer, is_streams
from ntkit.layers.masking import refuse_masks


class DotGeneral(Layer):
    """Multiply by a constant tensor (see the module docstring).

    Args:
      lhs, rhs: the constant (a number, tensor or array); at most one of them. With
        neither, the layer is the identity.
      dimension_numbers: ``((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch))``
        as lax.dot_general, in the channels-first input's axes (0 batch, 1 channels,
        2.. spatial). Only spatial axes may be contracted; batch dimensions are not
        supported (they must be empty).

    Example:
      >>> # subtract the second of two stacked series from the first: (n, C, 2, L) -> (n, C, L)
      >>> DotGeneral(rhs=torch.tensor([1.0, -1.0]), dimension_numbers=(((2,), (0,)), ((), ())))
    """

    def __init__(self, *, lhs=None, rhs=None, dimension_numbers=(((), ()), ((), ()))):
        if lhs is not None and rhs is not None:
            raise ValueError("DotGeneral takes at most one of lhs and rhs (the other factor "
                             "is the layer's input)")
        try:
            (lc, rc), (lb, rb) = dimension_numbers
            lc, rc, lb, rb = (tuple(int(a) for a in t) for t in (lc, rc, lb, rb))
        except (TypeError, ValueError) as e:
            raise ValueError(f"DotGeneral dimension_numbers must be ((lhs_contracting, "
                             f"rhs_contracting), (lhs_batch, rhs_batch)), got "
                             f"{dimension_numbers!r}") from e
        if lb or rb:
            raise ValueError("DotGeneral: batch dimensions in dimension_numbers are not "
                             "supported; contract spatial axes only")
        if len(lc) != len(rc):
            raise ValueError(f"DotGeneral: contracting dimensions {lc} and {rc} differ in "
                             "length")
        self.is_lhs = rhs is None
        other = lhs if self.is_lhs else rhs
        self.other = None if other is None else torch.as_tensor(other, dtype=torch.float64)
        # Input axes contracted, and the constant's axes they pair with.
        if self.is_lhs:
            self.x_axes, self.o_axes = rc, lc
        else:
            self.x_axes, self.o_axes = lc, rc
        self.lhs, self.rhs, self.dimension_numbers = lhs, rhs, dimension_numbers
        if self.other is None and (lc or rc):
            raise ValueError("DotGeneral without lhs or rhs is the identity; "
                             "dimension_numbers must then be empty")
        if self.other is not None:
            for a in self.o_axes:
                if not -self.other.ndim <= a < self.other.ndim:
                    raise ValueError(f"DotGeneral: contracting axis {a} out of range for "
                                     f"the constant of shape {tuple(self.other.shape)}")

    # ---- the linear map of positions ---------------------------------------------------
    def _spatial_axes(self, n_spatial: int) -> tuple[int, ...]:
        ndim = n_spatial + 2
        out = []
        for a in self.x_axes:
            if not -ndim <= a < ndim:
                raise ValueError(f"DotGeneral: contracting axis {a} out of range for an input "
                                 f"of rank {ndim}")
            if a % ndim in (0, 1):
                raise ValueError("DotGeneral may contract only spatial axes (2..), not the "
                                 f"batch (0) or channel (1) axis, got {a}")
            out.append(a % ndim - 2)
        return tuple(out)

    def _apply(self, t: Tensor, start: int, n_spatial: int) -> Tensor:
        """Apply the map to the ``n_spatial`` position axes of ``t`` starting at axis
        ``start``; the result's new positions take their place."""
        other = self.other.to(dtype=t.dtype, device=t.device)
        s_axes = self._spatial_axes(n_spatial)
        o_axes = tuple(a % other.ndim for a in self.o_axes)
        out = torch.tensordot(t, other, dims=([start + s for s in s_axes], list(o_axes)))
        n_free_o = other.ndim - len(o_axes)
        n_free_x = n_spatial - len(s_axes)
        # tensordot: t's remaining axes in order, then the constant's free axes. Move the
        # latter to just after (rhs) or before (lhs) the input's free positions.
        total = out.ndim
        before = start if self.is_lhs else start + n_free_x
        src = list(range(total - n_free_o, total))
        dst = list(range(before, before + n_free_o))
        return out.movedim(src, dst)

    def out_spatial(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """The output's spatial shape."""
        if self.other is None:
            return spatial
        probe = torch.zeros((1, 1, *spatial), dtype=torch.float64)
        return tuple(self._apply(probe, 2, len(spatial)).shape[2:])

    def _scalar(self) -> bool:
        return self.other is None or (self.other.ndim == 0 and not self.x_axes)

    def requires_full(self, full_after):
        return Storage.of(full_after) if self._scalar() else Storage(full=True)

    def kernel_map(self, k: Kernel) -> Kernel:
        if isinstance(k, tuple):
            raise ValueError("DotGeneral got parallel streams; apply it per stream with "
                             "parallel(...) or merge them first")
        if self.other is None:
            return k
        if self._scalar():
            c2 = float(self.other) ** 2
            return k.map_all(lambda t: t * c2)
        refuse_masks(k, "DotGeneral with contracted or new axes")
        d = len(k.spatial)
        if not k.full and d:
            raise RuntimeError("internal planning error: DotGeneral needs full spatial "
                               "covariances")
        self._spatial_axes(d)
        out_sp = self.out_spatial(k.spatial)
        if not out_sp:
            raise ValueError("DotGeneral that contracts every spatial axis leaves a "
                             "fully-connected stream; not supported (add a free axis or use "
                             "GlobalAvgPool/Flatten)")

        def both(t: Tensor, batch: int) -> Tensor:
            t = self._apply(t, batch, d)
            return self._apply(t, batch + len(out_sp), d).contiguous()

        nngp = both(k.nngp, 2)
        ntk = None if k.ntk is None else both(k.ntk, 2)
        cov1, cov2 = k.map_covs(lambda c: both(c, 1), nngp)
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, spatial=out_sp,
                         full=True)

    def make_module(self, in_features, generator, dtype):
        if is_streams(in_features):
            raise ValueError("DotGeneral got parallel streams; use parallel(...) first")
        if self.other is None or self._scalar():
            return _DotModule(self), in_features
        if not isinstance(in_features, ExampleShape):
            raise ValueError("DotGeneral with contracted or new axes needs a spatial input "
                             "(C, *S)")
        self._spatial_axes(len(in_features.spatial))
        out_sp = self.out_spatial(in_features.spatial)
        return _DotModule(self), ExampleShape((in_features.channels, *out_sp))


class _DotModule(nn.Module):
    def __init__(self, spec: DotGeneral):
        super().__init__()
        self.spec = spec

    def masked_forward(self, x: Tensor, mask: Tensor):
        if self.spec.other is None or self.spec._scalar():
            return self(x), mask
        raise ValueError("DotGeneral with contracted or new axes does not support masked "
                         "inputs (mask_constant)")

    def forward(self, x: Tensor) -> Tensor:
        s = self.spec
        if s.other is None:
            return x
        if s._scalar():
            return x * s.other.to(dtype=x.dtype, device=x.device)
        return s._apply(x, 2, x.ndim - 2)

    def extra_repr(self) -> str:
        return repr(self.spec)
