"""Reshaping the positions: `ImageResize` (as ``jax.image.resize``, "linear" and
"nearest") and `Index` (numpy indexing of the spatial axes), channels first.

Both are fixed linear maps of each spatial axis, the same for every channel: a resize
is out = R x along an axis (R: an (out, in) interpolation matrix), so the kernel of a
pair of positions is R K Rᵀ along each axis pair; an index selects (and possibly
reverses) positions, so the kernel keeps the selected rows and columns.

neural-tangents 0.6.5 resizes the wrong axes of a non-square target after an odd number
of shared-weight convolutions on full storage (its kernel's spatial axes are then stored
reversed, and its ImageResize ignores that): ntkit has no reversed layout and resizes
the axes the finite network resizes (tested against the finite network).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ntkit.kernel import Kernel, Storage
from ntkit.layers.base import ExampleShape, Layer, is_streams
from ntkit.layers.masking import refuse_masks

LINEAR = ("linear", "bilinear", "trilinear", "triangle")
METHODS = LINEAR + ("nearest",)


def resize_matrix(size: int, target: int, method: str, antialias: bool = True) -> Tensor:
    """The (target, size) float64 matrix of ``jax.image.resize`` along one axis.

    "linear": a triangle kernel at the sample points (i + ½)·size/target − ½, widened by
    size/target when downsampling with ``antialias``, each row normalized to sum 1 (the
    rows of samples outside the input are 0). "nearest": row i picks input
    ⌊(i + ½)·size/target⌋, computed in float32 as JAX does.
    """
    if target == size:
        return torch.eye(size, dtype=torch.float64)
    if method == "nearest":
        src = torch.floor((torch.arange(target, dtype=torch.float32) + 0.5) * size / target)
        m = torch.zeros(target, size, dtype=torch.float64)
        m[torch.arange(target), src.to(torch.int64)] = 1.0
        return m
    inv_scale = 1.0 / (target / size)
    kernel_scale = max(inv_scale, 1.0) if antialias else 1.0
    sample = (torch.arange(target, dtype=torch.float64) + 0.5) * inv_scale - 0.5
    x = (sample[None, :] - torch.arange(size, dtype=torch.float64)[:, None]).abs() / kernel_scale
    w = (1.0 - x.abs()).clamp_min(0.0)
    total = w.sum(0, keepdim=True)
    eps32 = float(torch.finfo(torch.float32).eps)
    w = torch.where(total.abs() > 1000.0 * eps32,
                    w / torch.where(total != 0, total, torch.ones_like(total)),
                    torch.zeros_like(w))
    inside = (sample >= -0.5) & (sample <= size - 0.5)
    return torch.where(inside[None, :], w, torch.zeros_like(w)).T.contiguous()


def _along(t: Tensor, axis: int, m: Tensor) -> Tensor:
    return torch.movedim(torch.tensordot(t, m.to(t.dtype), dims=([axis], [1])), -1, axis)


class _ResizeModule(nn.Module):
    def __init__(self, mats: dict[int, Tensor]):
        super().__init__()
        self.mats = mats

    def forward(self, x: Tensor) -> Tensor:
        for i, m in self.mats.items():
            x = _along(x, 2 + i, m.to(x.device))
        return x

    def masked_forward(self, x: Tensor, mask: Tensor):
        if not self.mats:
            return self(x), mask
        raise ValueError("ImageResize does not support masked inputs (mask_constant): "
                         "resize before padding, or call without mask_constant")


class ImageResize(Layer):
    """Resize the spatial axes as ``jax.image.resize`` (neural-tangents' ImageResize).

    Args:
      shape: the output shape of the whole batch, channels first: (n, C, L),
        (n, C, H, W) or (n, C, D, H, W); -1 keeps an axis. The batch and channel entries
        must be -1 (the kernel is per example pair and the channels are infinitely many).
      method: "linear" (also "bilinear", "trilinear", "triangle") or "nearest".
      antialias: widen the triangle filter when downsampling ("linear" only), as JAX
        does by default.

    The kernel needs full position-position storage when any spatial axis is resized.

    Example::

        net = nl.serial(nl.Conv(64, (3, 3), padding="SAME"), nl.ReLU(),
                        nl.ImageResize((-1, -1, 16, 8), "linear"), nl.Flatten(), nl.Dense(1))
    """

    def __init__(self, shape: Sequence[int], method: str, antialias: bool = True):
        if not isinstance(shape, (tuple, list)) or len(shape) < 3 or not all(
                isinstance(v, int) and not isinstance(v, bool) and (v == -1 or v >= 1)
                for v in shape):
            raise ValueError("ImageResize shape must be a tuple (n, C, *S) of positive ints "
                             f"or -1 (keep the axis), channels first; got {shape!r}")
        if shape[0] != -1:
            raise ValueError(f"ImageResize cannot resize the batch axis: shape[0] must be -1, "
                             f"got {shape[0]}")
        if shape[1] != -1:
            raise ValueError("ImageResize cannot resize the channel axis (infinitely many "
                             f"channels in the kernel): shape[1] must be -1, got {shape[1]}")
        if not isinstance(method, str) or method.lower() not in METHODS:
            raise ValueError(f"ImageResize method must be one of {METHODS} (the methods "
                             f"with an exact kernel), got {method!r}")
        if not isinstance(antialias, bool):
            raise TypeError(f"ImageResize antialias must be True or False, got {antialias!r}")
        self.shape, self.method, self.antialias = tuple(shape), method.lower(), antialias

    def _mats(self, spatial) -> dict[int, Tensor]:
        if len(spatial) != len(self.shape) - 2:
            raise ValueError(f"ImageResize shape {self.shape} has {len(self.shape) - 2} "
                             f"spatial entries but the input has spatial shape "
                             f"{tuple(spatial)}; give one entry per axis (n, C, *S)")
        method = "nearest" if self.method == "nearest" else "linear"
        return {i: resize_matrix(n, t, method, self.antialias)
                for i, (n, t) in enumerate(zip(spatial, self.shape[2:], strict=True))
                if t != -1 and t != n}

    def _out(self, spatial) -> tuple[int, ...]:
        return tuple(n if t == -1 else t for n, t in zip(spatial, self.shape[2:], strict=True))

    def requires_full(self, full_after):
        if any(t != -1 for t in self.shape[2:]):
            return Storage(full=True)
        return Storage.of(full_after)

    def kernel_map(self, k: Kernel) -> Kernel:
        if isinstance(k, tuple) or not k.is_spatial:
            raise ValueError("ImageResize needs one spatial stream (n, C, *S), channels first")
        mats = self._mats(k.spatial)
        d = len(k.spatial)

        def resize(t: Tensor, b: int) -> Tensor:
            for i, m in mats.items():
                for ax in ((b + i, b + d + i) if k.full else (b + i,)):
                    t = _along(t, ax, m)
            return t

        if mats and not k.full:
            raise RuntimeError("internal planning error: ImageResize needs full storage")
        if mats:
            refuse_masks(k, "ImageResize")
        return k.map_fields(resize).replace(spatial=self._out(k.spatial))

    def make_module(self, in_features, generator, dtype):
        if is_streams(in_features) or not isinstance(in_features, ExampleShape):
            raise ValueError("ImageResize needs one spatial stream (n, C, *S), channels first")
        mats = {i: m.to(dtype) for i, m in self._mats(in_features.spatial).items()}
        return (_ResizeModule(mats),
                ExampleShape((in_features.channels, *self._out(in_features.spatial))))


def _entries(idx, ndim: int) -> list:
    """Normalize a numpy-style index of a (n, C, *S) batch to one entry per spatial axis
    (ints and slices); refuse indexing the batch or the channel axis."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    for e in idx:
        if not (e is Ellipsis or isinstance(e, slice)
                or (isinstance(e, int) and not isinstance(e, bool))):
            raise TypeError(f"Index entries must be ints, slices or Ellipsis, got {e!r}")
    if sum(e is Ellipsis for e in idx) > 1:
        raise ValueError(f"Index {idx!r} has more than one Ellipsis")
    if Ellipsis in idx:
        at = idx.index(Ellipsis)
        fill = ndim - (len(idx) - 1)
        if fill < 0:
            raise ValueError(f"Index {idx!r} has more entries than the input's {ndim} axes")
        idx = idx[:at] + (slice(None),) * fill + idx[at + 1:]
    if len(idx) > ndim:
        raise ValueError(f"Index {idx!r} has {len(idx)} entries but the input has {ndim} "
                         "axes (n, C, *S)")
    idx = idx + (slice(None),) * (ndim - len(idx))
    if idx[0] != slice(None):
        raise ValueError(f"Index cannot index the batch axis (entry 0 of {idx!r}): the "
                         "kernel is per example pair; select examples in the inputs instead")
    if idx[1] != slice(None):
        raise ValueError(f"Index cannot index the channel axis (entry 1 of {idx!r}): the "
                         "kernel has infinitely many channels; use ':' there")
    return list(idx[2:])


def _positions(entry, n: int, axis: int):
    """An int position, or the list of positions a slice selects (any step)."""
    if isinstance(entry, int):
        if not -n <= entry < n:
            raise IndexError(f"Index {entry} is out of range for spatial axis {axis} of "
                             f"size {n}")
        return entry % n
    pos = list(range(*entry.indices(n)))
    if not pos:
        raise ValueError(f"Index slice {entry} selects no position of spatial axis {axis} "
                         f"(size {n})")
    return pos


def _apply(t: Tensor, axes_per_dim: list[tuple[int, ...]], sel: list) -> Tensor:
    """Select along each spatial dimension's axes, the highest axis first (so removing an
    axis by an int never shifts one still to be indexed)."""
    jobs = sorted(((ax, s) for axes, s in zip(axes_per_dim, sel, strict=True) for ax in axes),
                  key=lambda j: -j[0])
    for ax, s in jobs:
        if isinstance(s, int):
            t = t.select(ax, s)
        else:
            t = t.index_select(ax, torch.tensor(s, dtype=torch.int64, device=t.device))
    return t


class _IndexModule(nn.Module):
    def __init__(self, sel: list):
        super().__init__()
        self.sel = sel

    def forward(self, x: Tensor) -> Tensor:
        return _apply(x, [(2 + i,) for i in range(len(self.sel))], self.sel)

    def masked_forward(self, x: Tensor, mask: Tensor):
        """Masks are indexed like the positions (neural-tangents' ``mask[idx]``)."""
        m = mask if mask.shape[1] == 1 else mask.all(1, keepdim=True)
        return self(x), _apply(m, [(2 + i,) for i in range(len(self.sel))], self.sel)


class Index(Layer):
    """numpy indexing of the spatial axes of a channels-first batch (neural-tangents'
    ``stax.Index``): ``Index((slice(None), slice(None), slice(None, None, -1), 0))``
    reverses H and keeps column 0 of W (removing that axis). Ints, slices (any step,
    negative included) and one Ellipsis; the batch and channel entries must be ':'.
    Indexing every spatial axis with an int leaves fully-connected (n, C) features.

    Example::

        net = nl.serial(nl.Conv(64, (3, 3)), nl.ReLU(),
                        nl.Index((Ellipsis, slice(None, 4), slice(None, None, -2))),
                        nl.Flatten(), nl.Dense(1))
    """

    def __init__(self, idx):
        _entries(idx, 64)  # type and batch/channel checks now; shapes when the input is known
        self.idx = idx

    def _select(self, spatial) -> tuple[list, tuple[int, ...]]:
        entries = _entries(self.idx, 2 + len(spatial))
        sel = [_positions(e, n, i) for i, (e, n) in enumerate(zip(entries, spatial,
                                                                   strict=True))]
        out = tuple(len(s) for s in sel if not isinstance(s, int))
        return sel, out

    def kernel_map(self, k: Kernel) -> Kernel:
        if isinstance(k, tuple) or not k.is_spatial:
            raise ValueError("Index needs one spatial stream (n, C, *S), channels first")
        sel, out = self._select(k.spatial)
        d = len(k.spatial)

        def index(t: Tensor, b: int) -> Tensor:
            axes = [(b + i, b + d + i) if k.full else (b + i,) for i in range(d)]
            return _apply(t, axes, sel)

        masks = {}
        if k.masked:
            def index_mask(m: Tensor) -> Tensor:
                return _apply(m, [(1 + i,) for i in range(d)], sel)

            m1, m2 = k.map_masks(index_mask)
            masks = {"mask1": m1, "mask2": m2}
        return k.map_fields(index).replace(spatial=out, full=k.full and bool(out), **masks)

    def make_module(self, in_features, generator, dtype):
        if is_streams(in_features) or not isinstance(in_features, ExampleShape):
            raise ValueError("Index needs one spatial stream (n, C, *S), channels first")
        sel, out = self._select(in_features.spatial)
        width = ExampleShape((in_features.channels, *out)) if out else in_features.channels
        return _IndexModule(sel), width
