"""Planning one kernel evaluation: validation, symmetry, storage, probe, input kernel.

Every caller that evaluates a layer spec over inputs starts here: `ntkit.engine.evaluate`
(in memory, on disk, on Dask), `ntkit.engine.distributed.dask_matvec` and the
differentiable kernels of `ntkit.apps.kip`. `plan` validates the arguments, decides
whether x2 is x1 (the symmetric path: half the work, exact diagonal), finds identical
example pairs (`ntkit.engine.pairs`), plans the spatial storage from the network
(`ntkit.kernel.Storage`), and probes one example: that validates the network against
the inputs (rank, sizes) before any work and gives the output's shape. `Plan.input_kernel`
then builds any tile's input kernel with the planned storage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ntkit.engine.inputs import LazyBatch, as_pair, check_dtype, check_get
from ntkit.engine.pairs import identical_rows, same_side_rows
from ntkit.kernel import CovTrace, Kernel, Storage, check_mask_constant, input_kernel

#: Every field a kernel evaluation can return, in order.
ALL_FIELDS = ("nngp", "ntk", "cov1", "cov2")


@dataclass
class Plan:
    """What `plan` decided. x1/x2: validated inputs (tensors, or `LazyBatch` for arrays
    that stay on disk); x2 None means the symmetric path."""

    x1: Tensor | LazyBatch
    x2: Tensor | LazyBatch | None
    get: tuple[str, ...] | str | None
    names: tuple[str, ...]
    dtype: torch.dtype
    full: bool
    probe: Kernel
    probe_trace: CovTrace | None
    same: tuple[Tensor, Tensor] | None
    needs_grad: bool
    pattern: tuple | None = None
    mask_constant: float | None = None

    def patterns(self, rows: slice, cols: slice | None) -> tuple | None:
        """The graph patterns of a tile (see `ntkit.kernel.Kernel`): x1's ``rows`` and
        x2's ``cols`` (x1's on the symmetric path); ``cols`` None: a diagonal tile
        (x2 is x1), (pattern1[rows], None). None when the call has no patterns."""
        return tile_patterns(self.pattern, rows, cols, self.sym)

    @property
    def sym(self) -> bool:
        return self.x2 is None

    @property
    def n1(self) -> int:
        return self.x1.shape[0]

    @property
    def n2(self) -> int:
        return self.n1 if self.x2 is None else self.x2.shape[0]

    @property
    def track_ntk(self) -> bool:
        return "ntk" in self.names

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape of each field: (n1, n2, *pair) for nngp/ntk, (n, *cov) for covs."""
        pair = tuple(self.probe.nngp.shape[2:])
        cov = tuple(self.probe.cov1.shape[1:])
        n1, n2 = self.n1, self.n2
        return {"nngp": (n1, n2, *pair), "ntk": (n1, n2, *pair), "cov1": (n1, *cov),
                "cov2": (n2, *cov)}

    def input_kernel(self, x1: Tensor, x2: Tensor | None, **options) -> Kernel:
        """The input kernel of a tile with the planned storage (options as
        `ntkit.kernel.input_kernel` takes them)."""
        return input_kernel(x1, x2, track_ntk=self.track_ntk, full=self.full,
                            mask_constant=self.mask_constant, **options)


def tile_patterns(pattern: tuple | None, rows: slice, cols: slice | None,
                  sym: bool) -> tuple | None:
    """(pattern1[rows], pattern2[cols]) of a tile; pattern1[cols] on the symmetric path;
    (pattern1[rows], None) for a diagonal tile (``cols`` None). None without patterns."""
    if pattern is None:
        return None
    p1, p2 = pattern

    def take(p, r):
        return None if p is None else p[r]

    if cols is None:
        return take(p1, rows), None
    return take(p1, rows), take(p1 if sym else p2, cols)


def check_pattern(pattern, n1: int, n2: int | None, device) -> tuple | None:
    """Validate ``pattern=`` of ``net.kernel``: None, or a pair (pattern1, pattern2) of
    per-example arrays (leading axis the examples of x1 and of x2; pattern2 None when x2
    is None). Returned as tensors on the inputs' device."""
    if pattern is None:
        return None
    if not (isinstance(pattern, (tuple, list)) and len(pattern) == 2):
        raise ValueError("pattern must be a pair (pattern1, pattern2): the graph patterns of "
                         "x1's and x2's examples (pattern2 None when x2 is None), got "
                         f"{type(pattern).__name__}")
    out = []
    for name, p, n in (("pattern1", pattern[0], n1), ("pattern2", pattern[1], n2)):
        if p is None:
            out.append(None)
            continue
        if n is None:
            raise ValueError("pattern2 is given but x2 is None: pass pattern=(pattern1, None) "
                             "(pattern1 serves both sides), or pass x2")
        try:
            t = torch.as_tensor(p)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"pattern: {name} must be an array (tensor or numpy), got "
                            f"{type(p).__name__}") from None
        if t.ndim < 1 or t.shape[0] != n:
            raise ValueError(f"pattern: {name} has shape {tuple(t.shape)}, but its leading "
                             f"axis must be the {n} examples of x{name[-1]} (one graph per "
                             "example)")
        out.append(t.to(device))
    if out[0] is None and out[1] is None:
        return None
    return tuple(out)


def _at_input_precision(c: float, x) -> float:
    """The mask constant rounded to the inputs' own floating dtype: the inputs are
    compared with it after conversion to the compute dtype, so a float32 batch padded
    with 0.1 (stored as 0.1f) is masked by mask_constant=0.1, as in neural-tangents (which
    compares in the inputs' dtype)."""
    dt = getattr(x, "dtype", None)
    try:
        npdt = np.dtype(str(dt).removeprefix("torch.")) if dt is not None else None
    except TypeError:
        return c  # a dtype numpy does not know (bfloat16): compare as given
    if npdt is None or npdt.kind != "f":
        return c
    return float(np.asarray(c, dtype=npdt))


def _equal(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def storage_full(net, x) -> bool:
    """Whether spatial inputs x must start with full position-position covariances."""
    return x.ndim > 2 and net.requires_full(Storage(full=False)).any_full


def plan(net, x1, x2=None, get=("nngp", "ntk"), *, dtype: torch.dtype = torch.float64,
         lazy: bool = True, symmetric: bool = True, find_pairs: bool = True,
         pattern: tuple | None = None, mask_constant: float | None = None) -> Plan:
    """Plan the evaluation of ``net``'s kernel over (x1, x2).

    Args:
      net: a layer spec.
      x1, x2: as ``net.kernel`` takes them (x2 None: x2 = x1).
      get: as ``net.kernel`` takes it.
      dtype: the compute dtype.
      lazy: keep memmaps and zarr arrays on disk (read per tile).
      symmetric: take the symmetric path when x2 is the same batch as x1 (the same
        object, the same file, or equal values when no input needs gradients: d/dx1 of
        k(x1, x2) is not d/dx of k(x, x)).
      find_pairs: look for identical examples in x1 and x2 (`ntkit.engine.pairs`).
      pattern: None, or (pattern1, pattern2), per-example graph patterns of x1's and
        x2's examples (`ntkit.layers.graph.Aggregate`); x2 equal to x1 takes the
        symmetric path only when the patterns are equal too.
      mask_constant: None, or a finite real number marking absent input positions
        (`ntkit.kernel.input_kernel`). The masks are functions of the inputs, so equal
        inputs (the symmetric path, identical pairs) have equal masks.

    Example:
      >>> import torch, ntkit.layers as nl
      >>> p = plan(nl.serial(nl.Dense(4), nl.ReLU()), torch.randn(5, 3))
      >>> p.sym, p.shapes()["nngp"]
      (True, (5, 5))
    """
    dtype = check_dtype(dtype)
    get = check_get(get)
    if mask_constant is not None:
        mask_constant = _at_input_precision(check_mask_constant(mask_constant), x1)
    same_object = x2 is x1
    x1, x2 = as_pair(x1, x2, dtype, spatial=True, lazy=lazy)
    pattern = check_pattern(pattern, x1.shape[0], None if x2 is None else x2.shape[0],
                            x1.device)
    # Equal inputs with different graphs are different examples: not symmetric.
    same_graphs = pattern is None or _equal(pattern[0], pattern[1])
    inputs_grad = torch.is_grad_enabled() and any(
        isinstance(x, Tensor) and x.requires_grad for x in (x1, x2))
    if symmetric and same_graphs:
        if isinstance(x1, LazyBatch):
            if x1.same_source(x2):
                x2 = None
        elif (isinstance(x2, Tensor) and x2.shape == x1.shape
              and (same_object or not inputs_grad) and torch.equal(x1, x2)):
            x2 = None
    same = None
    if (find_pairs and not inputs_grad and isinstance(x1, Tensor)
            and (x2 is None or isinstance(x2, Tensor))):
        # Not when x1 or x2 needs gradients: the pair's entry then depends on x1 alone.
        # On the symmetric path: the repeated rows of x1 (each example with itself is
        # the example diagonal, exact anyway).
        same = identical_rows(x1, x1 if x2 is None else x2)
        if x2 is None:
            keep = same[0] != same[1]
            same = (same[0][keep], same[1][keep])
        if pattern is not None:
            keep = same_side_rows(pattern[0], pattern[0] if x2 is None else pattern[1],
                                  *same)
            same = (same[0][keep], same[1][keep])
        same = same if same[0].numel() else None
    if pattern is not None and x2 is None:
        pattern = (pattern[0], None)
    names = ALL_FIELDS if get is None else ((get,) if isinstance(get, str) else get)
    full = storage_full(net, x1)
    # The probe records its covariance chain: its steps' sizes price a `CovTrace`.
    probe_trace = CovTrace()
    probe = net.kernel_map(input_kernel(x1[:1], None, track_ntk=False, full=full,
                                        trace=probe_trace, mask_constant=mask_constant,
                                        pattern=tile_patterns(pattern, slice(0, 1), None,
                                                              True)))
    if isinstance(probe, tuple):
        raise ValueError(f"the network ends in {len(probe)} parallel streams; merge them "
                         "with FanInSum() or FanInConcat()")
    needs_grad = inputs_grad or (torch.is_grad_enabled() and probe.nngp.requires_grad)
    return Plan(x1=x1, x2=x2, get=get, names=names, dtype=dtype, full=full, probe=probe,
                probe_trace=probe_trace, same=same, needs_grad=needs_grad, pattern=pattern,
                mask_constant=mask_constant)
