"""The autograd path of a kernel evaluation: tiles in one thread, joined by torch.cat.

Taken when the inputs or the network's hyperparameters require grad. In-place writes of
tiles into a preallocated output (the fast path) would chain one CopySlices node per
tile, each backward cloning the whole gradient, and are not safe from several threads;
concatenation keeps the backward one pass over the tiles. ``compile`` is ignored here
(eager tiles; the gradients of the duals are custom autograd Functions, see
`ntkit.dual.autodiff`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ntkit.engine.compiled import tile_function
from ntkit.engine.pairs import pairs_in_tile
from ntkit.engine.plan import Plan
from ntkit.engine.schedule import auto_tile, tile_slices
from ntkit.engine.writers import MaskCollector, check_finite, package
from ntkit.kernel import Kernel, swap_examples


def evaluate_grad(layer, p: Plan, tile: int | None, budget: int):
    """Differentiable kernels of ``layer`` for the plan ``p`` (see `ntkit.engine.plan`),
    returned as ``net.kernel`` returns them."""
    x1, x2, sym, n1, n2 = p.x1, p.x2, p.sym, p.n1, p.n2
    if tile is None:
        tile = auto_tile(x1, p.full, x1.dtype, budget, n1, n2)
    fn = tile_function(layer, p.track_ntk, sym_tile=False, compiled=False, full=p.full,
                       mask_constant=p.mask_constant)
    fn_diag = tile_function(layer, p.track_ntk, sym_tile=True, compiled=False, full=p.full,
                            mask_constant=p.mask_constant)
    b1 = tile_slices(n1, tile)
    b2 = b1 if sym else tile_slices(n2, tile)
    tiles: dict[tuple[int, int], Kernel] = {}
    for i in range(len(b1)):
        for j in range(len(b2)):
            if sym and j < i:
                continue
            diag = sym and i == j
            pat = p.patterns(b1[i], None if diag else b2[j])
            if diag:
                k = fn_diag(x1[b1[i]], pattern=pat)
            else:
                k = fn(x1[b1[i]], (x1 if sym else x2)[b2[j]],
                       same=None if sym else pairs_in_tile(p.same, b1[i], b2[j]),
                       pattern=pat)
            check_finite(k)
            tiles[i, j] = k
    d = len(p.probe.spatial)

    def block(name: str, i: int, j: int) -> Tensor:
        if sym and j < i:
            return swap_examples(getattr(tiles[j, i], name), d, tiles[j, i].full)
        return getattr(tiles[i, j], name)

    results = {}
    for name in p.names:
        if name in ("nngp", "ntk"):
            rows = [torch.cat([block(name, i, j) for j in range(len(b2))], dim=1)
                    for i in range(len(b1))]
            results[name] = torch.cat(rows, dim=0)
        elif name == "cov1":
            results[name] = torch.cat([tiles[i, i if sym else 0].cov1 for i in range(len(b1))])
        else:
            results[name] = torch.cat([tiles[0 if not sym else j, j].var2
                                       for j in range(len(b2))])
    masks = MaskCollector(p.get is None and p.probe.masked, sym)
    for (i, j), k in tiles.items():
        masks.add(k, i, j)
    return package(results, p.get, p.names, p.probe, sym, masks.masks(len(b1), len(b2)))
