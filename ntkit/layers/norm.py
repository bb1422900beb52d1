"""`LayerNorm`: normalization over channels (and optionally positions) of each example."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ntkit.kernel import Kernel
from ntkit.layers import masking as M
from ntkit.layers.base import ExampleShape, Layer, is_streams


class LayerNormModule(nn.Module):
    def __init__(self, axis: tuple[int, ...], eps: float):
        super().__init__()
        self.axis, self.eps = axis, eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=self.axis, keepdim=True)
        var = x.var(dim=self.axis, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps)

    def masked_forward(self, x: Tensor, mask: Tensor):
        """Masked inputs (`ntkit.layers.masking`): mean and variance over the present
        entries of ``axis`` only; absent positions give 0 (their infinite-width value)."""
        pm = M.channel_mask(M.position_mask(mask)).expand(x.shape)
        keep = (~pm).to(x.dtype)
        count = keep.sum(dim=self.axis, keepdim=True).clamp_min(1)
        mean = (x * keep).sum(dim=self.axis, keepdim=True) / count
        var = (((x - mean) * keep) ** 2).sum(dim=self.axis, keepdim=True) / count
        y = (x - mean) / torch.sqrt(var + self.eps)
        m = M.channel_mask(M.position_mask(mask))
        return M.remask(y, m), m

    def extra_repr(self) -> str:
        return f"axis={self.axis}, eps={self.eps}"


class LayerNorm(Layer):
    """``(x − mean) / √(var + eps)`` over ``axis`` of each example (no learned scale).

    Axes are in torch's layout, channels first: 1 is the channel axis and must be among
    them; (1, 2, 3) normalizes a whole (C, H, W) example. As in neural-tangents, in the
    infinite-width limit the channel mean vanishes and the variance over ``axis`` is the
    mean over the normalized positions of the per-position variance v, so
    ``nngp'[p, p'] = nngp[p, p'] / √((m1[p] + eps)(m2[p'] + eps))`` with m the mean of v
    over the normalized axes (the same for ntk and the variances).
    """

    def __init__(self, axis: int | Sequence[int] = 1, eps: float = 1e-12):
        axes = (axis,) if isinstance(axis, int) and not isinstance(axis, bool) else axis
        if not isinstance(axes, (tuple, list)) or not axes or not all(
                isinstance(a, int) and not isinstance(a, bool) for a in axes):
            raise TypeError(f"LayerNorm axis must be an int or a tuple of ints, got {axis!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0 or \
                eps == float("inf"):
            raise ValueError(f"LayerNorm eps must be a finite number >= 0, got {eps!r}")
        self.axis = tuple(axes)
        self.eps = float(eps)

    def _axes(self, ndim: int) -> tuple[int, ...]:
        """Normalized axes of an (n, C, *S) input with ``ndim`` axes, as non-negative ints."""
        out = []
        for a in self.axis:
            if not -ndim <= a < ndim:
                raise ValueError(f"LayerNorm axis {a} is out of range for inputs with {ndim} "
                                 "axes (batch, channels, positions...)")
            out.append(a % ndim)
        if 0 in out:
            raise ValueError("LayerNorm cannot normalize over the batch axis 0")
        if 1 not in out:
            raise ValueError(f"LayerNorm must normalize over the channel axis 1 (the "
                             f"infinite-width limit needs it), got axis={self.axis}")
        if len(set(out)) != len(out):
            raise ValueError(f"LayerNorm axis {self.axis} names an axis twice")
        return tuple(sorted(out))

    def kernel_map(self, k: Kernel) -> Kernel:
        if isinstance(k, tuple):
            raise ValueError(f"LayerNorm got {len(k)} parallel branches; combine them first "
                             "with FanInSum() or FanInConcat()")
        d = len(k.spatial)
        pos = [a - 2 for a in self._axes(2 + d) if a >= 2]   # normalized spatial axes
        if not k.gaussian:
            raise ValueError(
                "LayerNorm's infinite-width limit needs zero-mean Gaussian inputs (the output of "
                "a Dense or Conv layer, possibly pooled): after an activation, or on raw "
                "inputs, the channel mean does not vanish; put LayerNorm right after a "
                "Dense/Conv layer (as neural-tangents requires too)")

        def means(cov: Tensor) -> Tensor:
            m = k.variances(cov) + self.eps                   # (n, *S)
            if pos:
                m = m.mean(dim=[1 + a for a in pos], keepdim=True)
            return m

        def masked_means(cov: Tensor, mask: Tensor) -> Tensor:
            # neural-tangents' mean_and_var with a mask: the sum of var + eps over the
            # positions (absent ones add their eps, their variance being 0) divided by
            # the number of present ones (at least 1). Where that is 0 (eps = 0 at an
            # absent position or a fully masked example) the covariances are 0: divide
            # by 1, never 0/0.
            m = k.variances(cov) + self.eps
            if pos:
                dims = [1 + a for a in pos]
                count = (~mask).sum(dim=dims, keepdim=True)
                m = m.sum(dim=dims, keepdim=True) / count.clamp_min(1)
            return m.masked_fill(m == 0, 1.0)

        if k.masked:
            mk1, mk2 = k.mask_pair
            m1 = masked_means(k.cov1, mk1)
            m2 = m1 if k.cov2 is None else masked_means(k.cov2, mk2)
        else:
            m1 = means(k.cov1)
            m2 = m1 if k.cov2 is None else means(k.cov2)

        def norm(t: Tensor, a: Tensor, b: Tensor, batch: int) -> Tensor:
            a, b = k.broadcast_pair(a, b, batch)
            return t / torch.sqrt(a * b)

        nngp = norm(k.nngp, m1, m2, 2)
        ntk = None if k.ntk is None else norm(k.ntk, m1, m2, 2)
        cov1, cov2 = k.map_covs(lambda c: norm(c, m1, m1, 1), nngp,
                                lambda c: norm(c, m2, m2, 1))
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)

    def make_module(self, in_features, generator, dtype):
        if is_streams(in_features):
            raise ValueError("LayerNorm got parallel branches; combine them first with "
                             "FanInSum() or FanInConcat()")
        ndim = 2 + (len(in_features.spatial) if isinstance(in_features, ExampleShape) else 0)
        return LayerNormModule(self._axes(ndim), self.eps), in_features
