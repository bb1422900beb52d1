"""Masked inputs (neural-tangents' ``mask_constant``): the mask rules of the layers.

``net.kernel(x1, x2, mask_constant=c)`` and ``net.build(...)(x, mask_constant=c)`` mark
the positions of each example whose channels all equal ``c`` as absent (the padding of
variable-length sequences and images), and zero every input entry equal to ``c``. The
kernel carries the masks as ``mask1``/``mask2`` ((n, *S) bool, True: absent; see
`ntkit.kernel`); the finite network carries them beside its activations. Each layer
follows neural-tangents' rule (its stax ``mask_fn`` and ``supports_masking(remask_kernel)``):

- Dense, Conv, ConvLocal, ConvTranspose, AvgPool, SumPool, GlobalSelfAttention, Aggregate
  and the activations that are not positively homogeneous (Erf, Sin, Cos, Exp, Gaussian,
  Rbf, ExpNormalized, Hermite, Elementwise and its smooth subclasses) *remask*: every
  covariance entry involving an absent output position is set to 0 (the finite network
  zeroes its outputs there), so a fully masked example has kernel exactly 0;
- a convolution or pooling window takes the mask of its centre input position
  (`window_mask`); a transposed convolution marks an output absent when any absent
  input reaches it (`transpose_mask`);
- GlobalAvgPool averages over present positions only (dividing by their count, 1 when
  none), GlobalSumPool sums over them, and both mark an example absent when all its
  positions are; Flatten marks it absent when all positions are;
- LayerNorm over positions averages the variances over present positions;
- FanInSum and FanInProd intersect the masks of their streams (a position is absent
  only where it is in every stream), FanInConcat along channels likewise;
- Dropout and the other activations keep the masks.

Layers that cannot follow a mask (ImageResize, Index, DotGeneral) raise a ValueError
when one reaches them (`refuse_masks`).

The finite network's masks have the activations' number of axes, with a channel axis of
1 ((n, 1, *S) or (n, 1)), except after Flatten, where each entry keeps its position's
mask ((n, C·|S|)), as in neural-tangents.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ntkit.kernel import Kernel, check_mask_constant
from ntkit.layers import windows as W


def window_mask(mask: Tensor, window: Sequence[int], strides: Sequence[int],
                padding: str) -> Tensor:
    """Mask of a convolution's or pooling's outputs: each output position takes the mask
    of its window's centre input position (neural-tangents' ``_pool_mask``).

    mask: (n, *S) bool; returns (n, *S_out). Example:
      >>> m = torch.tensor([[False, False, True, True]])
      >>> window_mask(m, (3,), (1,), "VALID")
      tensor([[False,  True]])
    """
    spatial = tuple(mask.shape[1:])
    out = W.output_spatial(spatial, window, strides, padding)
    if out == spatial:
        return mask
    idx = [slice(None)]
    for n, q, s, o in zip(spatial, window, strides, out, strict=True):
        pad = "SAME" if padding == "CIRCULAR" else padding
        start = -W.pads(n, q, s, pad)[0] + (q - 1) // 2
        idx.append(slice(start, start + 1 + (o - 1) * s, s))
    res = mask[tuple(idx)]
    if tuple(res.shape[1:]) != out:
        raise RuntimeError(f"internal error: window mask of shape {tuple(res.shape)} for "
                           f"outputs {out}")
    return res


def transpose_mask(mask: Tensor, spread) -> Tensor:
    """Mask of a transposed convolution's outputs: absent where any absent input reaches
    them (neural-tangents' ``conv_transpose`` of the mask). ``spread(t)``: the layer's
    transposed sum of a (n, 1, *S) float map; mask (n, *S) bool -> (n, *S_out)."""
    return spread(mask.unsqueeze(1).to(torch.float64))[:, 0] > 0.5


def present_counts(mask: Tensor) -> Tensor:
    """(n,) number of present positions of each example of an (n, *S) mask, at least 1
    (neural-tangents divides by max(count, 1): a fully masked example averages to 0)."""
    return (~mask).reshape(mask.shape[0], -1).sum(1).clamp_min(1)


def masked_pair_reduce(k: Kernel, t: Tensor, which: str, batch: int, mean: bool) -> Tensor:
    """Sum (or mean over present pairs) of a full-storage field over all position pairs,
    skipping pairs with an absent position. ``which``: "12" (nngp/ntk, batch 2), "11" or
    "22" (cov1/cov2, batch 1)."""
    m1, m2 = k.mask_pair
    d = len(k.spatial)
    if which == "12":
        a, b = k.broadcast_pair(m1, m2, 2)
    else:
        m = m1 if which == "11" else m2
        a, b = k.broadcast_pair(m, m, 1)
    out = t.masked_fill(a | b, 0.0).sum(dim=tuple(range(batch, batch + 2 * d)))
    if not mean:
        return out
    if which == "12":
        return out / (present_counts(m1)[:, None] * present_counts(m2)[None, :]).to(out.dtype)
    c = present_counts(m1 if which == "11" else m2).to(out.dtype)
    return out / (c * c)


def example_mask(mask: Tensor) -> Tensor:
    """(n, *S) -> (n,): an example is absent when all its positions are."""
    return mask.reshape(mask.shape[0], -1).all(1)


def refuse_masks(k, name: str) -> None:
    """Raise a clear ValueError when a masked kernel reaches a layer without mask rules."""
    ks = k if isinstance(k, tuple) else (k,)
    if any(getattr(ki, "masked", False) for ki in ks):
        raise ValueError(f"{name} does not support masked inputs (mask_constant): it has no "
                         "rule for which of its outputs are absent. Apply it before the "
                         "padding matters, or call without mask_constant")


# ---- the finite network ---------------------------------------------------------------

def masked_input(x: Tensor, mask_constant) -> tuple[Tensor, Tensor]:
    """(x with every entry equal to ``mask_constant`` zeroed, the (n, 1, *S) or (n, 1)
    mask of positions whose channels all equal it): the finite network's start."""
    c = check_mask_constant(mask_constant)
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ValueError("mask_constant needs batched inputs (n, d) or (n, C, *S), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    hit = x == c
    return x.masked_fill(hit, 0.0), hit.all(1, keepdim=True)


def position_mask(mask: Tensor) -> Tensor:
    """A finite mask ((n, 1 or C, *S)) as (n, *S) per position (absent: all channels)."""
    return mask.all(1)


def channel_mask(mask: Tensor) -> Tensor:
    """(n, *S) per-position mask as a finite one, (n, 1, *S)."""
    return mask.unsqueeze(1)


def remask(y: Tensor, mask: Tensor) -> Tensor:
    """Finite outputs zeroed at absent entries (neural-tangents' remasking)."""
    return y.masked_fill(mask, 0.0)


def masked_call(module, x, mask, inputs: dict):
    """``(module(x), its output mask)`` under masks: modules with a ``masked_forward(x,
    mask, **inputs)`` apply their own rule; others keep the mask (shape-preserving
    layers) and zero their outputs at absent entries when ``remasks`` is set. ``inputs``:
    per-example side inputs (``pattern=``) for modules that take them."""
    if mask is None:
        y = module(x, **inputs) if inputs and getattr(module, "takes_inputs", False) \
            else module(x)
        return y, None
    fwd = getattr(module, "masked_forward", None)
    if fwd is not None:
        if inputs and getattr(module, "takes_inputs", False):
            return fwd(x, mask, **inputs)
        return fwd(x, mask)
    y = module(x, **inputs) if inputs and getattr(module, "takes_inputs", False) else module(x)
    if isinstance(y, tuple) or isinstance(x, tuple) or y.ndim != x.ndim or \
            y.shape[2:] != x.shape[2:] or mask.shape[0] != y.shape[0]:
        raise ValueError(f"{type(module).__name__} does not support masked inputs "
                         "(mask_constant): it has no rule for which of its outputs are "
                         "absent")
    if getattr(module, "remasks", False):
        y = remask(y, mask)
    return y, mask


