"""Per-tile kernel functions, eager or fused with ``torch.compile``.

The floor of an analytic kernel is the elementwise (mostly transcendental) math per entry
per layer. Eagerly, every elementwise op of every layer makes a pass over a (tile, tile)
array; ``torch.compile`` fuses each layer's ops into one loop. Compilation costs seconds,
so the engine uses it only for large kernels, and falls back to eager if it fails.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ntkit.kernel import Kernel, input_kernel, swap_examples


def _eager(layer, track_ntk: bool, sym_tile: bool, full: bool = False):
    def fn(x1: Tensor, x2: Tensor | None = None) -> Kernel:
        k = layer.kernel_map(input_kernel(x1, x2, track_ntk=track_ntk, full=full))
        if sym_tile and isinstance(k, Kernel):
            # x x^T from BLAS is not bitwise symmetric; make diagonal tiles exactly so.
            d = len(k.spatial)

            def sym(t):
                return 0.5 * (t + swap_examples(t, d, k.full))

            k = k.replace(nngp=sym(k.nngp), ntk=None if k.ntk is None else sym(k.ntk))
        return k

    return fn


def _tensors(layer, track_ntk: bool, sym_tile: bool, full: bool):
    # torch.compile traces tensors in, tensors out; the Kernel is rebuilt outside.
    inner = _eager(layer, track_ntk, sym_tile, full)

    def fn(x1: Tensor, x2: Tensor | None = None):
        k = inner(x1, x2)
        if isinstance(k, tuple):
            return k
        return k.nngp, k.ntk, k.cov1, k.var2, k.channels, k.spatial, k.full

    return fn


def tile_function(layer, track_ntk: bool, sym_tile: bool, compiled: bool, full: bool = False):
    """fn(x1_tile, x2_tile=None) -> Kernel of the tile (x2_tile None: x2 is x1).

    ``full``: spatial inputs start with full position-position covariances.
    """
    eager = _eager(layer, track_ntk, sym_tile, full)
    if not compiled:
        return eager
    cache = layer.__dict__.setdefault("_ntkit_compiled", {})
    key = (track_ntk, sym_tile, full)
    if key not in cache:
        cache[key] = torch.compile(_tensors(layer, track_ntk, sym_tile, full), dynamic=False)
    cfn = cache[key]
    state = {"failed": False}

    def fn(x1: Tensor, x2: Tensor | None = None) -> Kernel:
        if not state["failed"]:
            try:
                res = cfn(x1, x2)
            except Exception as exc:  # compilation is an optimization, never a requirement
                state["failed"] = True
                warnings.warn(f"torch.compile failed for this kernel ({type(exc).__name__}: "
                              f"{exc}); using eager evaluation", RuntimeWarning)
            else:
                if isinstance(res, tuple) and len(res) == 7 and not isinstance(res[0], Kernel):
                    nngp, ntk, cov1, var2, channels, spatial, full_out = res
                    return Kernel(nngp=nngp, ntk=ntk, cov1=cov1,
                                  cov2=None if x2 is None else var2, channels=channels,
                                  x1_is_x2=x2 is None, spatial=spatial, full=full_out)
                return res
        return eager(x1, x2)

    return fn
