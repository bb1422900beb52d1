"""Reducing positions: `AvgPool`, `SumPool`, `GlobalAvgPool`, `GlobalSumPool`, `Flatten`.

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
from ntkit.layers import masking as M
from ntkit.layers import windows as W
from ntkit.layers.base import ExampleShape, Layer, is_streams
from ntkit.layers.conv import check_padding, check_window, pad_input, window_remask


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


_AVG_POOLS = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class AvgPoolModule(nn.Module):
    """Finite pooling over windows: pad (zeros count, asymmetric SAME; wrapping for
    CIRCULAR), sum each window, then divide by the window size ("avg"), by the number of
    real entries in it ("avg" with ``normalize_edges``), or not at all ("sum")."""

    def __init__(self, window, strides, padding, mode: str = "avg",
                 normalize_edges: bool = False):
        super().__init__()
        self.window, self.strides, self.padding = window, strides, padding
        self.mode, self.normalize_edges = mode, normalize_edges

    def forward(self, x: Tensor) -> Tensor:
        spatial = x.shape[2:]
        x = pad_input(x, self.window, self.strides, self.padding)
        if self.mode == "avg" and not self.normalize_edges:
            return _AVG_POOLS[len(self.window)](x, self.window, self.strides)
        for i, (q, s) in enumerate(zip(self.window, self.strides, strict=True)):
            x = x.unfold(2 + i, q, s).sum(-1)
        if self.mode == "sum":
            return x
        for i, (n, q, s) in enumerate(zip(spatial, self.window, self.strides, strict=True)):
            counts = W.edge_counts(n, q, s, self.padding).to(x.dtype)
            x = x / counts.reshape(-1, *(1,) * (len(spatial) - 1 - i))
        return x

    def masked_forward(self, x: Tensor, mask: Tensor):
        """Masked inputs (`ntkit.layers.masking`): plain window sums (absent entries are
        0), each output taking the mask of its window's centre; absent outputs zeroed."""
        m = M.channel_mask(M.window_mask(M.position_mask(mask), self.window, self.strides,
                                         self.padding))
        return M.remask(self(x), m), m

    def extra_repr(self) -> str:
        return (f"window={self.window}, strides={self.strides}, padding={self.padding!r}, "
                f"mode={self.mode!r}, normalize_edges={self.normalize_edges}")


class AvgPool(Layer):
    """Average pooling over windows of ``window_shape`` (1-D or 2-D), channels first.

    Padding as in `Conv`; zero padding counts in the average (neural-tangents' default,
    ``normalize_edges=False``). Kernel map: out[p, p'] = mean over window offsets k, k'
    of in[s·p + k, s·p' + k'] — it needs the full position-position covariance.

    Args:
      window_shape: (q,), (qh, qw) or (qd, qh, qw).
      strides: default 1 along each axis, as in neural-tangents (pass the window shape
        for non-overlapping windows).
      padding: "VALID", "SAME" or "CIRCULAR".
      normalize_edges: with "SAME" padding, divide each window by the number of real
        (unpadded) entries it covers instead of the window size (neural-tangents'
        ``normalize_edges=True``, ``torch``'s ``count_include_pad=False``); no effect
        with "VALID" or "CIRCULAR". The kernel divides entry [p, p'] by
        count(p)·count(p').
    """

    _mode = "avg"

    def __init__(self, window_shape: Sequence[int], strides: Sequence[int] | None = None,
                 padding: str = "VALID", normalize_edges: bool = False):
        name = type(self).__name__
        self.window_shape = check_window(name, "window_shape", window_shape)
        d = len(self.window_shape)
        self.strides = (1,) * d if strides is None else check_window(
            name, "strides", strides, d)
        self.padding = check_padding(name, padding)
        if not isinstance(normalize_edges, bool):
            raise TypeError(f"{name} normalize_edges must be True or False, got "
                            f"{normalize_edges!r}")
        self.normalize_edges = normalize_edges

    def requires_full(self, full_after):
        return Storage(full=True)

    def __repr__(self) -> str:
        # normalize_edges only when set: the repr fingerprints stored kernels (resume),
        # which must not change for the networks that existed before the argument.
        fields = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        if not self.normalize_edges:
            del fields["normalize_edges"]
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"

    def _check(self, spatial) -> None:
        name = type(self).__name__
        if not spatial:
            raise ValueError(f"{name} needs spatial inputs (n, C, L), (n, C, H, W) or "
                             "(n, C, D, H, W), got fully-connected features")
        W.check_fits(spatial, self.window_shape, self.padding, name)

    def kernel_map(self, k: Kernel) -> Kernel:
        k = _single(type(self).__name__, k)
        self._check(k.spatial)
        d = len(k.spatial)
        edges = self._mode == "avg" and self.normalize_edges and self.padding == "SAME"
        scale = 1.0 if self._mode == "sum" or edges else \
            1.0 / W.window_size(self.window_shape) ** 2

        def pool(t: Tensor, b: int) -> Tensor:
            t = W.pool_sum(t, b, k.full, self.window_shape, self.strides, self.padding)
            if not edges:
                return t.mul_(scale) if scale != 1.0 else t
            # Divide [p, p'] by count(p)·count(p'), axis by axis (both axes of each pair).
            for i, (n, q, s) in enumerate(zip(k.spatial, self.window_shape, self.strides,
                                              strict=True)):
                counts = W.edge_counts(n, q, s, self.padding).to(t.dtype)
                for ax in (b + i, b + d + i):
                    t = t / counts.reshape(-1, *(1,) * (t.ndim - 1 - ax))
            return t

        spatial = W.output_spatial(k.spatial, self.window_shape, self.strides, self.padding)
        return window_remask(k, k.map_fields(pool).replace(spatial=spatial),
                             self.window_shape, self.strides, self.padding)

    def make_module(self, in_features, generator, dtype):
        width = _single_width(type(self).__name__, in_features)
        self._check(width.spatial if isinstance(width, ExampleShape) else ())
        spatial = W.output_spatial(width.spatial, self.window_shape, self.strides,
                                   self.padding)
        return (AvgPoolModule(self.window_shape, self.strides, self.padding, self._mode,
                              self.normalize_edges),
                ExampleShape((width.channels, *spatial)))


class SumPool(AvgPool):
    """Sum pooling over windows of ``window_shape`` (neural-tangents' ``SumPool``): the
    window sums of `AvgPool` without the division, so its kernels are window_size² times
    AvgPool's. Padding as in `Conv` (zeros add nothing; CIRCULAR wraps).

    Args:
      window_shape: (q,), (qh, qw) or (qd, qh, qw).
      strides: default 1 along each axis.
      padding: "VALID", "SAME" or "CIRCULAR".

    Example::

        net = nl.serial(nl.Conv(64, (3, 3)), nl.ReLU(), nl.SumPool((2, 2), (2, 2)),
                        nl.Flatten(), nl.Dense(1))
    """

    _mode = "sum"

    def __init__(self, window_shape: Sequence[int], strides: Sequence[int] | None = None,
                 padding: str = "VALID"):
        super().__init__(window_shape, strides, padding)


class _MeanPositions(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=tuple(range(2, x.ndim)))

    def masked_forward(self, x: Tensor, mask: Tensor):
        """The mean over present positions (count at least 1); an example is absent when
        all its positions are."""
        pm = M.position_mask(mask)
        s = x.masked_fill(M.channel_mask(pm), 0.0).sum(dim=tuple(range(2, x.ndim)))
        return s / M.present_counts(pm).to(x.dtype)[:, None], M.example_mask(pm)[:, None]


class _SumPositions(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.sum(dim=tuple(range(2, x.ndim)))

    def masked_forward(self, x: Tensor, mask: Tensor):
        pm = M.position_mask(mask)
        s = x.masked_fill(M.channel_mask(pm), 0.0).sum(dim=tuple(range(2, x.ndim)))
        return s, M.example_mask(pm)[:, None]


def _global_pool(k: Kernel, mean: bool) -> Kernel:
    """GlobalAvgPool/GlobalSumPool of a masked kernel: over present position pairs only
    (the mean divides by the product of the two examples' present counts)."""
    nngp = M.masked_pair_reduce(k, k.nngp, "12", 2, mean)
    ntk = None if k.ntk is None else M.masked_pair_reduce(k, k.ntk, "12", 2, mean)
    cov1, cov2 = k.map_covs(lambda t: M.masked_pair_reduce(k, t, "11", 1, mean), nngp,
                            fn2=lambda t: M.masked_pair_reduce(k, t, "22", 1, mean))
    return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, spatial=(), full=False,
                     mask1=None if k.mask1 is None else M.example_mask(k.mask1),
                     mask2=None if k.mask2 is None else M.example_mask(k.mask2))


class _GlobalPool(Layer):
    """Mean (``mean = True``) or sum over all positions: (n, C, *S) -> (n, C)."""

    mean: bool

    def requires_full(self, full_after):
        return Storage(full=True)

    def kernel_map(self, k: Kernel) -> Kernel:
        name = type(self).__name__
        k = _single(name, k)
        if not k.is_spatial:
            raise ValueError(f"{name} needs spatial inputs (n, C, *S), channels first; got "
                             "fully-connected features")
        if k.masked:
            return _global_pool(k, mean=self.mean)
        dims = len(k.spatial)

        def reduce(t: Tensor, b: int) -> Tensor:
            axes = tuple(range(b, b + 2 * dims))
            return t.mean(dim=axes) if self.mean else t.sum(dim=axes)

        return k.map_fields(reduce).replace(spatial=(), full=False)

    def make_module(self, in_features, generator, dtype):
        name = type(self).__name__
        width = _single_width(name, in_features)
        if not isinstance(width, ExampleShape):
            raise ValueError(f"{name} needs spatial inputs, got fully-connected features")
        return (_MeanPositions() if self.mean else _SumPositions()), width.channels


class GlobalAvgPool(_GlobalPool):
    """Mean over all positions: (n, C, *S) -> (n, C). Needs full covariances."""

    mean = True


class GlobalSumPool(_GlobalPool):
    """Sum over all positions: (n, C, *S) -> (n, C); kernels are |S|² times
    `GlobalAvgPool`'s. Needs full covariances.

    Example::

        net = nl.serial(nl.Conv(64, (3,)), nl.ReLU(), nl.GlobalSumPool(), nl.Dense(1))
    """

    mean = False


class _FlattenModule(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)

    def masked_forward(self, x: Tensor, mask: Tensor):
        """Each entry keeps its position's mask (neural-tangents' Flatten ``mask_fn``)."""
        return self(x), mask.expand(x.shape).reshape(x.shape[0], -1)


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

        # Absent positions have zero covariances and count in the mean, as in
        # neural-tangents; an example is absent when all its positions are.
        masks = {} if not k.masked else {
            "mask1": None if k.mask1 is None else M.example_mask(k.mask1),
            "mask2": None if k.mask2 is None else M.example_mask(k.mask2)}
        return k.map_fields(mean).replace(spatial=(), full=False,
                                          mixed_channels=k.mixed_channels or several,
                                          channels=k.channels * math.prod(k.spatial),
                                          **masks)

    def make_module(self, in_features, generator, dtype):
        width = _single_width("Flatten", in_features)
        if not isinstance(width, ExampleShape):
            return _FlattenModule(), width
        return _FlattenModule(), math.prod(width)
