"""Identical examples in two batches: where K(x1, x2) holds an example against itself.

The engine evaluates such pairs as the symmetric path evaluates its example diagonal
(see ``same`` in `ntkit.kernel.Kernel`): at correlation exactly 1, where the arc-cosine
would otherwise turn a rounding error of 1e-16 into 1e-8. Columns K(x, x[idx]) of
Nyström centers, blocks K(x[a], x[b]) of overlapping row ranges, and x2 sharing some
rows with x1 all meet this.

Rows are identical when their bits are (after conversion to the compute dtype). They
are found with an exact integer fingerprint of each row's bits (a wrapping sum of the
bits times fixed odd multipliers, independent of memory layout, unlike a floating-point
projection whose rounding may differ between identical rows at different offsets), and
every candidate pair is confirmed by comparing the rows. Cost: one pass over each batch.
Masks of absent positions (``mask_constant``) are functions of each row's own entries,
so identical rows have identical masks and need no separate check; graph patterns are
separate inputs and do (`same_side_rows`). Only batches in memory are scanned (the
engine does not read inputs on disk, memmaps or zarr arrays, twice for this), and not
when an input requires gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

_INT = {8: torch.int64, 4: torch.int32, 2: torch.int16}
#: Entries hashed at once (bounds the fingerprint's temporaries to a few MiB).
CHUNK = 2**20


def _fingerprints(x: Tensor) -> Tensor:
    """(n,) int64: a hash of each row's bits (rows in chunks of about CHUNK entries, so
    the int64 temporaries stay small)."""
    flat = x.reshape(x.shape[0], -1)
    gen = torch.Generator().manual_seed(0x5EED)
    mult = torch.randint(-2**62, 2**62, (flat.shape[1],), generator=gen,
                         dtype=torch.int64).to(x.device) | 1
    out = torch.empty(flat.shape[0], dtype=torch.int64, device=x.device)
    step = max(1, CHUNK // flat.shape[1])
    for i in range(0, flat.shape[0], step):
        rows = flat[i:i + step].contiguous()
        bits = rows.view(_INT[rows.element_size()]).to(torch.int64)
        # An integer matrix-vector product: wrapping integer sums are exact in any order
        # (3-4× faster than an elementwise product and a sum).
        out[i:i + step] = bits @ mult
    return out


def identical_rows(x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
    """Index pairs (rows, cols), int64 on the inputs' device, such that x1[rows[m]] and
    x2[cols[m]] are bitwise identical; sorted by row, then column.

    x1: (n1, ...), x2: (n2, ...) with the same per-example shape and dtype.

    Example:
      >>> x = torch.randn(5, 3, dtype=torch.float64)
      >>> identical_rows(x, x[[4, 1]])
      (tensor([1, 4]), tensor([1, 0]))
    """
    h1, h2 = _fingerprints(x1), _fingerprints(x2)
    h2s, order = torch.sort(h2, stable=True)
    lo = torch.searchsorted(h2s, h1, right=False)
    hi = torch.searchsorted(h2s, h1, right=True)
    counts = hi - lo                     # candidates of each x1 row (usually 0 or 1)
    rows = torch.repeat_interleave(torch.arange(len(h1), device=h1.device), counts)
    starts = torch.repeat_interleave(lo, counts)
    offsets = torch.arange(len(rows), device=h1.device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts)
    cols = order[starts + offsets]
    if len(rows):
        a, b = x1[rows].reshape(len(rows), -1), x2[cols].reshape(len(rows), -1)
        keep = (a == b).all(1)          # confirm: a hash collision is not a pair
        rows, cols = rows[keep], cols[keep]
    return rows, cols


def pairs_in_tile(same: tuple[Tensor, Tensor] | None, r: slice,
                  c: slice) -> tuple[Tensor, Tensor] | None:
    """The pairs of ``same`` inside the tile rows ``r`` × columns ``c``, as indices
    relative to the tile; None when there are none."""
    if same is None:
        return None
    rows, cols = same
    m = (rows >= r.start) & (rows < r.stop) & (cols >= c.start) & (cols < c.stop)
    if not bool(m.any()):
        return None
    return rows[m] - r.start, cols[m] - c.start


def same_side_rows(a1, a2, rows: Tensor, cols: Tensor) -> Tensor:
    """(m,) bool: whether the per-example side inputs a1[rows[m]] and a2[cols[m]] (graph
    patterns, leading axis the examples; None = absent) are bitwise equal. Two inputs
    are identical examples only when their side inputs are too (a pattern changes the
    example's kernel)."""
    if a1 is None and a2 is None:
        return torch.ones(len(rows), dtype=torch.bool, device=rows.device)
    if a1 is None or a2 is None or a1.shape[1:] != a2.shape[1:] or a1.dtype != a2.dtype:
        return torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
    if not len(rows):
        return torch.zeros(0, dtype=torch.bool, device=rows.device)
    a = a1[rows.to(a1.device)].reshape(len(rows), -1)
    b = a2[cols.to(a2.device)].reshape(len(rows), -1)
    return (a == b).all(1).to(rows.device)
