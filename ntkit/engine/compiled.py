"""Per-tile kernel functions: eager maps (with fused duals, `ntkit.dual.fused`, by
default) or the whole map compiled with ``torch.compile``.

The floor of an analytic kernel is the elementwise (mostly transcendental) math per entry
per layer. Eagerly, every elementwise op of every layer makes a pass over a (tile, tile)
array; ``torch.compile`` fuses each layer's ops into one loop. Compilation costs seconds,
so the engine uses it only for large kernels, and falls back to eager if it fails.

Every closed-form activation traces as one graph (``fullgraph=True`` works): the duals
have no data-dependent Python branches under tracing (see ``ntkit.dual.relu.angle``),
and the Kernel's Python ints (``n_dense``, ``source``, ``channels``) are constants of the
one trace of the whole network. Each (network, ntk?, diagonal tile?) gets its own copy
of the traced function's code object, because dynamo keeps its cache and its recompile
limit per code object: shared, a few networks times the 2–4 tile shapes of one kernel
would exhaust the limit (8) and silently fall back to eager.
"""

from __future__ import annotations

import types
import warnings

import torch
from torch import Tensor

import ntkit.dual.fused as fused_duals
from ntkit.kernel import Kernel, input_kernel, swap_examples


def _eager(layer, track_ntk: bool, sym_tile: bool, full: bool = False,
           mask_constant: float | None = None):
    def fn(x1: Tensor, x2: Tensor | None = None, trace=None, same=None,
           pattern=None) -> Kernel:
        k = layer.kernel_map(input_kernel(x1, x2, track_ntk=track_ntk, full=full,
                                          trace=trace, same=same, pattern=pattern,
                                          mask_constant=mask_constant))
        if sym_tile and isinstance(k, Kernel):
            # x x^T from BLAS is not bitwise symmetric; make diagonal tiles exactly so.
            d = len(k.spatial)

            def sym(t):
                return 0.5 * (t + swap_examples(t, d, k.full))

            k = k.replace(nngp=sym(k.nngp), ntk=None if k.ntk is None else sym(k.ntk))
        return k

    return fn


def _with_fusion(fn, fused: bool | None):
    if fused is None:
        return fn

    def with_fusion(*args, **kwargs):
        with fused_duals.enabled(fused):
            return fn(*args, **kwargs)

    return with_fusion


def _tensors(layer, track_ntk: bool, sym_tile: bool, full: bool,
             mask_constant: float | None = None):
    # torch.compile traces tensors in, tensors out; the Kernel is rebuilt outside. The
    # masks are computed inside from the tile's inputs (a constant mask_constant).
    inner = _eager(layer, track_ntk, sym_tile, full, mask_constant)

    def fn(x1: Tensor, x2: Tensor | None = None, p1: Tensor | None = None,
           p2: Tensor | None = None):
        # The tile's graph patterns travel as tensors (traced like x1, x2).
        k = inner(x1, x2, pattern=None if p1 is None and p2 is None else (p1, p2))
        if isinstance(k, tuple):
            return k
        return k.nngp, k.ntk, k.cov1, k.var2, k.channels, k.spatial, k.full, k.mask1, k.mask2

    return fn


def _own_code(fn):
    """A copy of ``fn`` with a code object of its own (its own dynamo cache)."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__,
                              fn.__defaults__, fn.__closure__)


def tile_function(layer, track_ntk: bool, sym_tile: bool, compiled: bool, full: bool = False,
                  *, backend="inductor", fullgraph: bool = False,
                  fused: bool | None = None, mask_constant: float | None = None):
    """fn(x1_tile, x2_tile=None, same=None, pattern=None) -> Kernel of the tile (x2_tile
    None: x2 is x1; ``same``: identical example pairs of the tile, ``pattern``: the
    tile's graph patterns (pattern1[rows], pattern2[cols]), see `ntkit.kernel.Kernel`).

    ``full``: spatial inputs start with full position-position covariances.
    ``backend`` and ``fullgraph`` are passed to ``torch.compile`` when ``compiled``
    (tests trace with a cheap backend and ``fullgraph=True`` to prove there is no graph
    break).

    ``fused``: whether the duals fuse their elementwise work (`ntkit.dual.fused`) in the
    eager map: None keeps the process default (on unless ``NTKIT_FUSED=0``). Entered in
    each tile's own thread (the setting is thread-local).

    ``mask_constant``: None, or the (validated) value that marks absent input positions
    (`ntkit.kernel.input_kernel`): each tile computes its rows' masks from its own inputs,
    so masks need no slicing and identical rows have identical masks.
    """
    eager = _with_fusion(_eager(layer, track_ntk, sym_tile, full, mask_constant),
                         False if compiled else fused)
    if not compiled:
        return eager
    cache = layer.__dict__.setdefault("_ntkit_compiled", {})
    key = (track_ntk, sym_tile, full, backend, fullgraph, mask_constant)
    if key not in cache:
        cache[key] = torch.compile(_own_code(_tensors(layer, track_ntk, sym_tile, full,
                                                      mask_constant)),
                                   dynamic=False, backend=backend, fullgraph=fullgraph)
    cfn = cache[key]
    state = {"failed": False}

    def fn(x1: Tensor, x2: Tensor | None = None, same=None, pattern=None) -> Kernel:
        if same is not None:  # tiles with identical example pairs (rare): eager
            return eager(x1, x2, same=same, pattern=pattern)
        if not state["failed"]:
            try:
                res = cfn(x1, x2, *(pattern if pattern is not None else (None, None)))
            except Exception as exc:  # compilation is an optimization, never a requirement
                if fullgraph:
                    raise  # asked for a proof of one graph: a break is an error
                state["failed"] = True
                warnings.warn(f"torch.compile failed for this kernel ({type(exc).__name__}: "
                              f"{exc}); using eager evaluation", RuntimeWarning)
            else:
                if isinstance(res, tuple) and len(res) == 9 and not isinstance(res[0], Kernel):
                    nngp, ntk, cov1, var2, channels, spatial, full_out, m1, m2 = res
                    return Kernel(nngp=nngp, ntk=ntk, cov1=cov1,
                                  cov2=None if x2 is None else var2, channels=channels,
                                  x1_is_x2=x2 is None, spatial=spatial, full=full_out,
                                  mask1=m1, mask2=m2)
                return res
        return eager(x1, x2, pattern=pattern)

    return fn
