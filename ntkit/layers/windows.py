"""Sliding-window maps on spatial kernels: the tensor core of Conv and AvgPool.

A spatial kernel field has ``b`` leading batch axes (2 for nngp/ntk, 1 for cov1/cov2),
then the positions: ``S`` (diagonal storage) or ``S, S`` (full storage, pairs [p, p']).
See `ntkit.kernel` for the layout.

- A shared-weight convolution with a q-tap filter couples only entries with the same
  offset in both inputs: out[p, p'] = mean_k in[s·p + k, s·p' + k]. On the diagonal that
  is a box filter along each axis; on full storage it sums along the offset diagonal of
  each pair of axes: q taps per axis pair, 2q per entry for a q×q filter (neural-tangents
  runs a dense 2q²-tap depthwise conv instead).
- Average pooling sums independent windows in both inputs:
  out[p, p'] = mean_{k, k'} in[s·p + k, s·p' + k'], separable per axis.

Padding follows neural-tangents (and lax): "VALID" uses no padding; "SAME" pads
``total = max((out − 1)·s + q − size, 0)`` with ``total // 2`` before and the rest after
(so even filters pad one more after); "CIRCULAR" pads the same amounts by wrapping.
Zero padding counts in averages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

PADDINGS = ("VALID", "SAME", "CIRCULAR")


def out_size(size: int, window: int, stride: int, padding: str) -> int:
    """Output length of one spatial axis."""
    if padding == "VALID":
        return (size - window) // stride + 1
    return -(-size // stride)


def pads(size: int, window: int, stride: int, padding: str) -> tuple[int, int]:
    """(before, after) padding of one spatial axis."""
    if padding == "VALID":
        return 0, 0
    total = max((out_size(size, window, stride, padding) - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def check_fits(spatial: Sequence[int], window: Sequence[int], padding: str, what: str) -> None:
    if len(spatial) != len(window):
        raise ValueError(f"{what} has a {len(window)}-D window but its input has "
                         f"{len(spatial)} spatial dimension(s) (shape {tuple(spatial)}); "
                         f"use a {len(spatial)}-D window")
    if padding == "VALID":
        for size, q in zip(spatial, window, strict=True):
            if size < q:
                raise ValueError(f"{what}: input of spatial shape {tuple(spatial)} is smaller "
                                 f"than the window {tuple(window)} with padding='VALID'; use "
                                 "padding='SAME' or a smaller window")


def output_spatial(spatial: Sequence[int], window: Sequence[int], strides: Sequence[int],
                   padding: str) -> tuple[int, ...]:
    return tuple(out_size(n, q, s, padding)
                 for n, q, s in zip(spatial, window, strides, strict=True))


def pad_axis(t: Tensor, axis: int, before: int, after: int, circular: bool) -> Tensor:
    """Pad one axis with zeros, or by wrapping around (also when padding exceeds its size)."""
    if before == 0 and after == 0:
        return t
    n = t.shape[axis]
    if circular:
        idx = torch.arange(-before, n + after, device=t.device) % n
        return t.index_select(axis, idx)
    shape = list(t.shape)
    shape[axis] = n + before + after
    out = t.new_zeros(shape)
    out.narrow(axis, before, n).copy_(t)
    return out


def _axes(b: int, d: int, i: int, full: bool) -> tuple[int, ...]:
    return (b + i, b + d + i) if full else (b + i,)


def conv_sum(t: Tensor, b: int, full: bool, window: Sequence[int], strides: Sequence[int],
             padding: str) -> Tensor:
    """Σ over filter offsets k of in[s·p + k, s·p' + k] (or in[s·p + k] on the diagonal).

    Not yet divided by the filter size (callers fold that into the weight variance).
    """
    d = len(window)
    for i, (q, s) in enumerate(zip(window, strides, strict=True)):
        axes = _axes(b, d, i, full)
        size = t.shape[axes[0]]
        n_out = out_size(size, q, s, padding)
        before, after = pads(size, q, s, padding)
        # The unpadded route writes through out=, which autograd refuses: under autograd
        # take the padded route (the same taps, summed in another order).
        if full and s == 1 and padding != "CIRCULAR" and not (
                torch.is_grad_enabled() and t.requires_grad):
            t = _offset_sum_unpadded(t, axes, q, before, n_out)
            continue
        for ax in axes:
            t = pad_axis(t, ax, before, after, padding == "CIRCULAR")
        if not full:
            t = t.unfold(axes[0], q, s).sum(-1)
            continue
        # Same offset k on both axes of the pair: q strided slices, added.
        span = (n_out - 1) * s + 1
        acc = None
        for k in range(q):
            idx = [slice(None)] * t.ndim
            for ax in axes:
                idx[ax] = slice(k, k + span, s)
            piece = t[tuple(idx)]
            acc = piece.clone(memory_format=torch.contiguous_format) if acc is None \
                else acc.add_(piece)
        t = acc
    return t


def _offset_sum_unpadded(t: Tensor, axes: tuple[int, int], q: int, before: int,
                         n_out: int) -> Tensor:
    """Stride-1, zero-padded offset-diagonal sum without materializing the padding.

    out[o, o'] = Σ_k in[o + δ, o' + δ] with δ = k − before, over the o (= o') range
    where both indices fall inside the input: each tap adds one rectangular block
    in place. The same taps as the padded route (summed in another order), without the
    padded copies, which dominated the cost on 32×32 full covariances.
    """
    n = t.shape[axes[0]]
    shape = list(t.shape)
    shape[axes[0]] = shape[axes[1]] = n_out
    taps = []
    for k in range(q):
        delta = k - before
        lo, hi = max(0, -delta), min(n_out, n - delta)
        if hi > lo:
            taps.append((delta, lo, hi))

    def block(x: Tensor, lo: int, hi: int, shift: int) -> Tensor:
        idx = [slice(None)] * x.ndim
        for ax in axes:
            idx[ax] = slice(lo + shift, hi + shift)
        return x[tuple(idx)]

    # The first output pass adds two taps into fresh memory: where both cover the output
    # block [lo, hi) (both indices), torch.add writes it; the thin borders outside it
    # (rows/columns covered by one tap only) are filled separately. No pass is spent on
    # zeros or a plain copy; the remaining taps are added in place.
    out = t.new_empty(shape)
    rest = taps
    if len(taps) >= 2:
        (d0, lo0, hi0), (d1, lo1, hi1) = taps[0], taps[1]
        lo, hi = max(lo0, lo1), min(hi0, hi1)
        torch.add(block(t, lo, hi, d0), block(t, lo, hi, d1), out=block(out, lo, hi, 0))
        _fill_border(out, t, axes, n_out, lo, hi, [(d0, lo0, hi0), (d1, lo1, hi1)])
        rest = taps[2:]
    elif taps:
        out.zero_()
        rest = taps
    else:
        out.zero_()
    for delta, lo, hi in rest:
        block(out, lo, hi, 0).add_(block(t, lo, hi, delta))
    return out


def _fill_border(out: Tensor, t: Tensor, axes: tuple[int, int], n_out: int, lo: int, hi: int,
                 taps) -> None:
    """Fill out[o, o'] outside the square [lo, hi)² with the sum of the given taps there.

    Entries need o = o' ranges only along the pair's diagonal structure: a tap covers
    (o, o') when both lie in its [lo_k, hi_k). Outside [lo, hi)² that is a thin frame,
    written block by block (rows o ∉ [lo, hi) for all o', then columns o' ∉ [lo, hi)).
    """
    a, b = axes

    def sl(x: Tensor, ra: tuple[int, int], rb: tuple[int, int], shift: int = 0) -> Tensor:
        idx = [slice(None)] * x.ndim
        idx[a] = slice(ra[0] + shift, ra[1] + shift)
        idx[b] = slice(rb[0] + shift, rb[1] + shift)
        return x[tuple(idx)]

    frame = []
    for r in ((0, lo), (hi, n_out)):
        if r[1] > r[0]:
            frame.append((r, (0, n_out)))            # whole rows outside [lo, hi)
            frame.append(((lo, hi), r))             # columns outside, rows inside
    for ra, rb in frame:
        dst = sl(out, ra, rb)
        dst.zero_()
        for delta, lk, hk in taps:
            ia = (max(ra[0], lk), min(ra[1], hk))
            ib = (max(rb[0], lk), min(rb[1], hk))
            if ia[1] > ia[0] and ib[1] > ib[0]:
                sl(out, ia, ib).add_(sl(t, ia, ib, delta))


def pool_sum(t: Tensor, b: int, full: bool, window: Sequence[int], strides: Sequence[int],
             padding: str) -> Tensor:
    """Σ over independent window offsets of both positions (full storage only).

    Not yet divided by the window size squared.
    """
    if not full:
        raise ValueError("pooling needs the full position-position covariance")
    d = len(window)
    for i, (q, s) in enumerate(zip(window, strides, strict=True)):
        for ax in _axes(b, d, i, full):
            size = t.shape[ax]
            before, after = pads(size, q, s, padding)
            t = pad_axis(t, ax, before, after, padding == "CIRCULAR")
            t = t.unfold(ax, q, s).sum(-1)
    return t


def window_size(window: Sequence[int]) -> int:
    return math.prod(window)


# ---- transposed convolutions, circular folds, per-axis linear maps ---------------------
# A transposed convolution (lax.conv_transpose, as neural-tangents uses it) is a stride-1
# "VALID" correlation of the filter with the input dilated by the stride (s − 1 zeros
# between entries) and zero-padded by `transpose_pads`. Its kernel map is therefore
# `conv_sum` (stride 1, VALID) of the dilated, padded kernel: the zeros have zero
# covariance with everything, so dilating both axes of a pair (or the diagonal) is exact.


def transpose_pads(window: int, stride: int, padding: str) -> tuple[int, int]:
    """(before, after) zero padding of the dilated input of a transposed convolution
    along one axis, as in ``jax.lax.conv_transpose`` ("SAME" or "VALID"; "CIRCULAR"
    transposes "VALID" and then folds, see `circular_fold_matrix`)."""
    k, s = window, stride
    if padding == "SAME":
        pad_len = k + s - 2
        before = k - 1 if s > k - 1 else -(-pad_len // 2)
    else:
        pad_len = k + s - 2 + max(k - s, 0)
        before = k - 1
    return before, pad_len - before


def transpose_out_size(size: int, window: int, stride: int, padding: str) -> int:
    """Output length of one axis of a transposed convolution."""
    if padding in ("SAME", "CIRCULAR"):
        return size * stride
    return size * stride + max(window - stride, 0)


def dilate_axis(t: Tensor, axis: int, stride: int) -> Tensor:
    """Insert ``stride − 1`` zeros between consecutive entries along ``axis``."""
    if stride == 1:
        return t
    n = t.shape[axis]
    shape = list(t.shape)
    shape[axis] = (n - 1) * stride + 1
    out = t.new_zeros(shape)
    idx = [slice(None)] * t.ndim
    idx[axis] = slice(None, None, stride)
    out[tuple(idx)] = t
    return out


def circular_fold_matrix(length: int, out: int, dtype: torch.dtype,
                         device=None) -> Tensor:
    """The (out, length) 0/1 matrix that wraps a "VALID" transposed-convolution output of
    ``length`` entries onto ``out`` entries, exactly as neural-tangents'
    CIRCULAR transposed convolution does: entry j collects x[j + c + t·out] for
    |t| ≤ w // 2 (w = the odd round-up of ⌈length/out⌉, c = (length − out) // 2)."""
    w = -(-length // out) // 2 * 2 + 1
    c = (length - out) // 2
    m = torch.zeros(out, length, dtype=dtype, device=device)
    for j in range(out):
        for t in range(-(w // 2), w // 2 + 1):
            src = j + c + t * out
            if 0 <= src < length:
                m[j, src] = 1.0
    return m


def apply_axis_matrix(t: Tensor, axis: int, m: Tensor) -> Tensor:
    """out[..., i, ...] = Σ_j m[i, j] · t[..., j, ...] along ``axis``."""
    return torch.movedim(torch.tensordot(t, m.to(t.dtype), dims=([axis], [1])), -1, axis)


def edge_counts(size: int, window: int, stride: int, padding: str) -> Tensor:
    """How many real (unpadded) entries each output window covers along one axis
    (the divisor of average pooling with ``normalize_edges=True``), float64."""
    before, after = pads(size, window, stride, padding)
    ones = torch.ones(size, dtype=torch.float64)
    ones = pad_axis(ones, 0, before, after, circular=padding == "CIRCULAR")
    return ones.unfold(0, window, stride).sum(-1)
