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


def _pad_axis(t: Tensor, axis: int, before: int, after: int, circular: bool) -> Tensor:
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
        if full and s == 1 and padding != "CIRCULAR":
            t = _offset_sum_unpadded(t, axes, q, before, n_out)
            continue
        for ax in axes:
            t = _pad_axis(t, ax, before, after, padding == "CIRCULAR")
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

    # Start from taps that cover the whole output (one fused add for two of them), so
    # that no pass is spent on zeros or a plain copy.
    whole = [tap for tap in taps if tap[1] == 0 and tap[2] == n_out]
    if len(whole) >= 2:
        out = torch.add(block(t, 0, n_out, whole[0][0]), block(t, 0, n_out, whole[1][0]))
        done = whole[:2]
    elif whole:
        out = block(t, 0, n_out, whole[0][0]).clone(memory_format=torch.contiguous_format)
        done = whole[:1]
    else:
        out, done = t.new_zeros(shape), []
    for tap in taps:
        if any(tap is d for d in done):
            continue
        delta, lo, hi = tap
        block(out, lo, hi, 0).add_(block(t, lo, hi, delta))
    return out


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
            t = _pad_axis(t, ax, before, after, padding == "CIRCULAR")
            t = t.unfold(ax, q, s).sum(-1)
    return t


def window_size(window: Sequence[int]) -> int:
    return math.prod(window)
