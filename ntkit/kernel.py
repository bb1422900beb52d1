"""The `Kernel`: what flows through a network's kernel map.

A `Kernel` holds the second moments of one layer's pre-activations (or activations)
for a pair of input batches x1 (n1 rows) and x2 (n2 rows), in the infinite-width limit:

- ``nngp``: (n1, n2) covariance E[z(x1) z(x2)] of one output channel;
- ``ntk``:  (n1, n2) neural tangent kernel, or None when it is not tracked;
- ``cov1``: (n1,) variances E[z(x1)^2] (the diagonal of nngp(x1, x1));
- ``cov2``: (n2,) variances of x2, or None when x2 is x1 (then cov2 is cov1).

Axes after the batch axes are reserved for spatial dimensions (convolutions and
pooling, later): code that pairs a per-example variance with ``nngp`` goes through
:meth:`Kernel.var_pair`, so that adding spatial axes changes one place.

Flags:

- ``channels``: the channel count of the layer that produced this kernel (the input
  dimension d for the input kernel). Only the 'standard' parameterization and
  ``FanInConcat`` depend on it; the infinite-width kernel is otherwise width-free.
- ``source``: None, or the number of the Dense layer whose fresh zero-mean weights
  produced this kernel. Two branches are uncorrelated when at least one of them is a
  fresh Dense output and they don't share the same source; ``FanInSum`` needs that.
- ``n_dense``: how many Dense maps were applied so far, counted along the network with
  parallel branches threaded one after another, so every Dense position gets its own
  number. (Plain ints in the Kernel, not global state, so torch.compile sees constants.)
- ``x1_is_x2``: x2 is the same batch as x1 (symmetric case).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Kernel:
    nngp: Tensor
    ntk: Tensor | None
    cov1: Tensor
    cov2: Tensor | None
    channels: int
    source: int | None = None
    x1_is_x2: bool = False
    n_dense: int = 0

    def replace(self, **changes) -> Kernel:
        return dataclasses.replace(self, **changes)

    @property
    def var2(self) -> Tensor:
        """Variances of the x2 batch (cov1 when x2 is x1)."""
        return self.cov1 if self.cov2 is None else self.cov2

    def var_pair(self) -> tuple[Tensor, Tensor]:
        """(var1, var2) shaped to broadcast against ``nngp``: (n1, 1) and (1, n2)."""
        return self.cov1[:, None], self.var2[None, :]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.nngp.shape)

    def map_all(self, fn) -> Kernel:
        """Apply ``fn`` to every tensor field (nngp, ntk, cov1, cov2)."""
        return self.replace(
            nngp=fn(self.nngp),
            ntk=None if self.ntk is None else fn(self.ntk),
            cov1=fn(self.cov1),
            cov2=None if self.cov2 is None else fn(self.cov2),
        )


def input_kernel(x1: Tensor, x2: Tensor | None, *, track_ntk: bool, x1_is_x2: bool = False,
                 cov1: Tensor | None = None, cov2: Tensor | None = None) -> Kernel:
    """The kernel of the raw inputs: nngp = x1 x2ᵀ / d, ntk = 0, cov = |x|² / d.

    x1: (n1, d), x2: (n2, d) or None (meaning x1). Both already in the compute dtype.
    ``cov1``/``cov2`` may be passed precomputed (the engine computes them once for a
    whole batch rather than once per tile).
    """
    d = x1.shape[1]
    if x2 is None:
        x2 = x1
        x1_is_x2 = True
    nngp = (x1 @ x2.T) / d
    if cov1 is None:
        cov1 = (x1 * x1).sum(1) / d
    if x1_is_x2:
        # The diagonal of nngp(x, x) *is* the variance. Making it so bitwise keeps the
        # arc-cosine angle exactly 0 there (v1·v2 − c² = 0), instead of ~1e-8 from
        # rounding amplified by the square root.
        nngp.diagonal().copy_(cov1)
        cov2 = None
    elif cov2 is None:
        cov2 = (x2 * x2).sum(1) / d
    ntk = torch.zeros_like(nngp) if track_ntk else None
    return Kernel(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, channels=d,
                  source=None, x1_is_x2=x1_is_x2)
