"""The determinant of the 2×2 covariance [[var1, cov], [cov, var2]], clamped at 0."""

from __future__ import annotations

import torch
from torch import Tensor


def inplace_ok(*tensors: Tensor) -> bool:
    """True when in-place arithmetic on fresh intermediates is safe: nothing needs grad.

    Duals use in-place chains for speed (they run on every tile of every layer), but
    autograd (Price's-theorem routes, criticality's χ∥) needs the out-of-place graph.
    """
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def gram_det(var1: Tensor, cov: Tensor, var2: Tensor) -> Tensor:
    """max(var1·var2 − cov², 0) with broadcasting, as a fresh tensor.

    The caller owns the result and may modify it in place: duals run this on every
    (tile, tile) block of every layer, so it allocates only the two products and works in
    place after that (out of place when autograd needs the graph). It is exactly 0 where
    var1 = var2 = cov bitwise (the same two rounded products).
    """
    p = var1 * var2
    if not inplace_ok(var1, cov, var2):
        return (p - cov * cov).clamp_min(0)
    # Round cov² on its own, not inside an addcmul: a fused multiply-add would give
    # round(v·v) − v·v exactly, i.e. v·v's rounding error, not 0, on the diagonal.
    c2 = cov * cov
    if p.shape == torch.broadcast_shapes(p.shape, cov.shape):
        p.sub_(c2)
    else:  # e.g. scalar variances with a vector of covariances
        p = p - c2
    return p.clamp_min_(0)
