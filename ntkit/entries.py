"""Index helpers on kernel tensors: the example diagonal, the per-position diagonal of
full position-position storage, a tile seen from the other batch, and the entries of
identical example pairs. Plain tensor functions (no ntkit import); `ntkit.kernel`
re-exports them.

Shapes follow `ntkit.kernel.Kernel`: nngp-shaped fields are (n1, n2, *S) on diagonal
storage or (n1, n2, *S, *S) on full storage; cov fields (n, *S) or (n, *S, *S).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["example_diagonal", "pin_twins", "position_diagonal", "set_same",
           "swap_examples"]


def pin_twins(cov: Tensor, same: tuple[Tensor, Tensor]) -> Tensor:
    """``cov`` (n, ...) of one batch with each repeated example's entry set to that of
    its first twin: ``same`` = (rows, cols) lists the pairs of identical examples of the
    batch (both orders, no example with itself). Identical inputs give identical
    covariances up to rounding that depends on their place in the batch (a vector
    lane or a loop's tail); pinned, every twin continues from the same numbers.
    Out of place under autograd, else in place."""
    rows, cols = same
    keep = rows < cols
    if not bool(keep.any()):
        return cov
    rows, cols = rows[keep], cols[keep]
    # The first twin of each later one: the smallest row paired with it.
    order = torch.argsort(cols * (int(rows.max()) + 1) + rows)
    rows, cols = rows[order], cols[order]
    first = torch.ones_like(cols, dtype=torch.bool)
    first[1:] = cols[1:] != cols[:-1]
    return set_same(cov, cov, (cols[first], rows[first]))


def set_same(t: Tensor, cov: Tensor, same: tuple[Tensor, Tensor]) -> Tensor:
    """``t`` with the entries of identical example pairs set from the variances ``cov``.

    t: nngp-shaped (n1, n2, ...), with same = (rows, cols): t[rows[m], cols[m]] =
    cov[rows[m]]; or cov2-shaped (n2, ...), with same = (cols, rows): t[cols[m]] =
    cov[rows[m]]. Out of place (differentiable) when autograd records, else in place.
    """
    a, b = same
    if t.ndim == cov.ndim:  # a cov field: one index
        idx, src = (a,), cov[b]
    else:
        idx, src = (a, b), cov[a]
    if torch.is_grad_enabled() and (t.requires_grad or cov.requires_grad):
        return t.index_put(idx, src)
    return t.index_put_(idx, src)


def position_diagonal(t: Tensor, d: int) -> Tensor:
    """(*B, *S, *S) -> (*B, *S): the entries at equal positions p = p'."""
    S = t.shape[t.ndim - d:]
    B = t.shape[:t.ndim - 2 * d]
    P = math.prod(S)
    return t.reshape(*B, P, P).diagonal(0, -2, -1).reshape(*B, *S)


def example_diagonal(t: Tensor) -> Tensor:
    """(n, n, *rest) -> a view (*rest, n) of the entries with the same example twice."""
    return t.diagonal(0, 0, 1)


def swap_examples(t: Tensor, spatial_ndim: int, full: bool) -> Tensor:
    """The kernel of (x2, x1) from that of (x1, x2): swap examples (and position pairs)."""
    if not full or spatial_ndim == 0:
        return t.transpose(0, 1)
    d = spatial_ndim
    perm = (1, 0, *range(2 + d, 2 + 2 * d), *range(2, 2 + d))
    return t.permute(perm)
