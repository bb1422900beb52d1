"""`LayerNorm`: normalization over channels (and optionally positions) of each example."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ntkit.kernel import Kernel
from ntkit.layers import masking as M
from ntkit.layers.base import ExampleShape, Layer, is_streams


class LayerNormModule(nn.Module):
    """Finite LayerNorm; with ``param_shape`` (the per-example shape of γ and β, size 1
    along the positions that are not normalized) trainable ``weight`` γ = 1 and ``bias``
    β = 0 (None with ``bias=False``), as torch's ``nn.LayerNorm`` initializes them."""

    def __init__(self, axis: tuple[int, ...], eps: float,
                 param_shape: tuple[int, ...] | None = None, bias: bool = True,
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        self.axis, self.eps = axis, eps
        self.weight = self.bias = None
        if param_shape is not None:
            self.weight = nn.Parameter(torch.ones(param_shape, dtype=dtype))
            if bias:
                self.bias = nn.Parameter(torch.zeros(param_shape, dtype=dtype))

    def _affine(self, y: Tensor) -> Tensor:
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=self.axis, keepdim=True)
        var = x.var(dim=self.axis, keepdim=True, unbiased=False)
        return self._affine((x - mean) / torch.sqrt(var + self.eps))

    def masked_forward(self, x: Tensor, mask: Tensor):
        """Masked inputs (`ntkit.layers.masking`): mean and variance over the present
        entries of ``axis`` only; absent positions give 0 (their infinite-width value)."""
        pm = M.channel_mask(M.position_mask(mask)).expand(x.shape)
        keep = (~pm).to(x.dtype)
        count = keep.sum(dim=self.axis, keepdim=True).clamp_min(1)
        mean = (x * keep).sum(dim=self.axis, keepdim=True) / count
        var = (((x - mean) * keep) ** 2).sum(dim=self.axis, keepdim=True) / count
        y = self._affine((x - mean) / torch.sqrt(var + self.eps))
        m = M.channel_mask(M.position_mask(mask))
        return M.remask(y, m), m

    def extra_repr(self) -> str:
        affine = "" if self.weight is None else \
            f", affine=True, bias={self.bias is not None}"
        return f"axis={self.axis}, eps={self.eps}{affine}"


class LayerNorm(Layer):
    """``γ·(x − mean) / √(var + eps) + β`` over ``axis`` of each example.

    Axes are in torch's layout, channels first: 1 is the channel axis and must be among
    them; (1, 2, 3) normalizes a whole (C, H, W) example. As in neural-tangents, in the
    infinite-width limit the channel mean vanishes and the variance over ``axis`` is the
    mean over the normalized positions of the per-position variance v, so
    ``nngp'[p, p'] = nngp[p, p'] / √((m1[p] + eps)(m2[p'] + eps))`` with m the mean of v
    over the normalized axes (the same for ntk and the variances).

    ``affine=True`` adds torch's elementwise affine parameters (``nn.LayerNorm``'s
    ``elementwise_affine``): trainable γ (= 1 at initialization) and, unless
    ``bias=False``, β (= 0), with torch's ``normalized_shape`` semantics: one entry per
    channel and per position of the normalized spatial axes, shared along the others
    (``axis=1``: per channel; ``axis=(1, 2, 3)``: per (c, h, w)). At initialization they
    leave the output, hence the NNGP, unchanged; the NTK gains their gradients' terms,

        ``ntk' = ntk/√(m1 m2) + δ·(nngp' + 1)``   (``+ 1`` only with β),

    with δ[p, p'] = 1 when p and p' share their γ/β entry (agree along every normalized
    spatial axis), else 0: each γ_c contributes ẑ_c(x, p) ẑ_c(x', p'), whose channel
    average (what the next Dense/Conv layer takes) is nngp'; β_c contributes 1. The terms
    do not depend on the parameterization (γ, β are used unscaled in both). Masked
    positions stay 0. A nonlinearity right after it would need E[u φ'(u) v φ'(v)], not
    nngp·E[φ'φ']: only ReLU, LeakyReLU, ABReLU and Abs (u φ'(u) = φ(u), so that is the
    activation's own nngp) are accepted there; others raise a ValueError (put a
    Dense/Conv in between).

    Args:
      axis: the normalized axes (torch layout, 1 = channels, must be among them).
      eps: added to the variance (≥ 0).
      affine: add trainable γ (and β) as described above.
      bias: with ``affine``, whether β exists (torch's ``bias=False`` drops it).

    Example:
      >>> import ntkit.layers as nl
      >>> net = nl.serial(nl.Dense(8), nl.LayerNorm(affine=True), nl.Relu(), nl.Dense(1))
    """

    def __init__(self, axis: int | Sequence[int] = 1, eps: float = 1e-12,
                 affine: bool = False, bias: bool = True):
        axes = (axis,) if isinstance(axis, int) and not isinstance(axis, bool) else axis
        if not isinstance(axes, (tuple, list)) or not axes or not all(
                isinstance(a, int) and not isinstance(a, bool) for a in axes):
            raise TypeError(f"LayerNorm axis must be an int or a tuple of ints, got {axis!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0 or \
                eps == float("inf"):
            raise ValueError(f"LayerNorm eps must be a finite number >= 0, got {eps!r}")
        for name, v in (("affine", affine), ("bias", bias)):
            if not isinstance(v, bool):
                raise TypeError(f"LayerNorm {name} must be True or False, got {v!r}")
        self.axis = tuple(axes)
        self.eps = float(eps)
        self.affine, self.bias = affine, bias

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
        coef = None
        if ntk is not None and self.affine:
            coef = self._delta(k, nngp, pos)
            ntk = ntk + (coef * (nngp + 1.0) if self.bias else coef * nngp)
        cov1, cov2 = k.map_covs(lambda c: norm(c, m1, m1, 1), nngp,
                                lambda c: norm(c, m2, m2, 1))
        out = k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2,
                        ntk_own=k.ntk_own or coef is not None, own_coef=None, own_nngp=None)
        # β's term is 1 at absent positions too: zero every pair that involves one
        if self.affine and k.masked:
            out = out.remask(k.mask1, k.mask2)
        if coef is not None and not k.ntk_own:   # ntk's own-product part: coef · nngp
            out = out.replace(own_coef=coef, own_nngp=out.nngp)
        return out

    @staticmethod
    def _delta(k: Kernel, nngp: Tensor, pos: list[int]) -> Tensor:
        """1 on the position pairs that share a γ/β entry, else 0 (broadcastable)."""
        one = torch.ones((), dtype=nngp.dtype, device=nngp.device)
        if not (k.full and pos):
            return one   # no positions, or diagonal storage: p = p' shares all entries
        d = len(k.spatial)
        delta = torch.ones((), dtype=torch.bool, device=nngp.device)
        for a in pos:   # full storage (n1, n2, *S, *S'): p_a = p'_a along normalized axes
            s = k.spatial[a]
            shape = [1] * (2 * d)
            shape[a], shape[d + a] = s, s
            eye = torch.eye(s, dtype=torch.bool, device=nngp.device).reshape(shape)
            delta = delta & eye
        return delta.to(nngp.dtype)

    def make_module(self, in_features, generator, dtype):
        if is_streams(in_features):
            raise ValueError("LayerNorm got parallel branches; combine them first with "
                             "FanInSum() or FanInConcat()")
        spatial = in_features.spatial if isinstance(in_features, ExampleShape) else ()
        channels = in_features.channels if isinstance(in_features, ExampleShape) else \
            int(in_features)
        axes = self._axes(2 + len(spatial))
        shape = None
        if self.affine:   # torch's normalized_shape: size 1 along the positions not normalized
            shape = (channels, *(s if 2 + i in axes else 1 for i, s in enumerate(spatial)))
        return LayerNormModule(axes, self.eps, shape, self.bias, dtype), in_features
