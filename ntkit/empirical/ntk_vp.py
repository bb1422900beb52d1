"""Empirical NTK by NTK-vector products.

Θ(x1, x2) v is a vector-Jacobian product followed by a Jacobian-vector product:
for one example x1_i and one output unit a, the cotangent e_a pulled back through
f(x1_i) gives the parameter vector J_a(x1_i) (reverse mode); pushing it forward
through f on the whole x2 tile (forward mode, ``torch.func.jvp``) gives the row
Θ[i, :, a, :] at once. Both steps are ``vmap``-ed over (i, a). The Jacobians of x2 are
never formed.

Cost for a tile pair of n1 and n2 examples (F: FLOPs of one forward pass per example,
A: activation entries of one example):

- time:   O(n1 · k · F) for the vector-Jacobian products
          + O(n1 · k · n2 · F) for the Jacobian-vector products;
- memory: O(c · k · (P + n2 · A)), with c ≤ n1 the number of x1 examples processed
          together (chosen from the memory budget).

It never stores a Jacobian of x2, which helps when P·k·n2 does not fit in memory, but
it repeats the x2 forward pass n1·k times; mostly useful as an independent check.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from ntkit.empirical.common import FunctionalModel, vmap_examples

__all__ = [
    "NtkVpFeatures",
    "NtkVpMethod",
]


@dataclass
class NtkVpFeatures:
    x: Tensor
    out: Tensor   # (n, k)


class NtkVpMethod:
    """NTK-vector products. See the module docstring for costs."""

    name = "ntk_vp"

    def __init__(self, fm: FunctionalModel, traced: bool, tile: int, budget: int,
                 act_entries: int | None = None):
        self.fm, self.traced = fm, traced
        item = fm.sel[fm.names[0]].element_size()
        act = act_entries if act_entries is not None else fm.n_params
        per_row = fm.k * (fm.n_params + tile * max(act, 1)) * item * 3
        self.chunk = max(1, min(tile, budget // max(per_row, 1)))

    def features(self, x: Tensor) -> NtkVpFeatures:
        return NtkVpFeatures(x, self.fm.per_example(x))

    def contract(self, f1: NtkVpFeatures, f2: NtkVpFeatures) -> Tensor:
        fm, k = self.fm, self.fm.k
        sel, x2 = fm.sel, f2.x
        basis = torch.eye(k, dtype=fm.dtype, device=fm.device)

        def row(xi: Tensor) -> Tensor:
            _, vjp_fn = vjp(lambda p: fm.single(p, xi), sel)

            def unit(e: Tensor) -> Tensor:
                (tangent,) = vjp_fn(e)
                # x2's rows are independent (checked by the caller), so the batched
                # forward gives the same per-example Jacobians as a vmap would.
                return jvp(lambda p: fm.call(p, x2), (sel,), (tangent,))[1]   # (n2, k)

            return vmap(unit)(basis)   # (k, n2, k)

        res = vmap_examples(row, f1.x, chunk_size=self.chunk)   # (n1, k, n2, k)
        if self.traced:
            return torch.einsum("iaja->ij", res) / k
        return res.permute(0, 2, 1, 3)
