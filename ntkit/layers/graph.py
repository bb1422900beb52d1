"""`Aggregate`: graph convolutions (message passing over a per-example adjacency), as
neural-tangents' ``stax.Aggregate`` (Du et al., 2019, "Graph Neural Tangent Kernel:
Fusing Graph Neural Networks with Graph Kernels").

Inputs are spatial streams, channels first: (n, C, *S), the nodes laid out along the
aggregated spatial axes A ⊆ S (e.g. (n, C, N) for N nodes). Each example comes with a
``pattern``:

- ``implementation="dense"``: a weighted adjacency (n, *A, *A) (after ``to_dense``);
  ``pattern[i, u, v] = w`` is an arc u → v of weight w in example i, and the layer maps
  x[i, :, v] ← Σ_u pattern[i, u, v] x[i, :, u] (each node gets the weighted sum of its
  direct predecessors).
- ``implementation="sparse"``: integer arcs (n, E, K, 2) (K = len(A); (n, E, 2) when
  K = 1), [..., 0] the tails (senders) and [..., 1] the heads (receivers), weight 1 each
  (repeats add up). An arc with a negative coordinate is padding and ignored.

The kernel is linear in the pattern on each side: nngp'[i, j] = P1[i]ᵀ nngp[i, j] P2[j]
over the aggregated position axes (full position-position storage is needed). The
patterns reach the kernel map as ``net.kernel(x1, x2, pattern=(pattern1, pattern2))``
(the engine gives each tile its rows' patterns), as the ``pattern=`` argument of
`Aggregate.kernel_map`, or on the Kernel (`with_pattern`); the finite module takes
``module(x, pattern=p)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ntkit.kernel import Kernel, Storage
from ntkit.layers.base import ExampleShape, Layer, is_streams


def with_pattern(k: Kernel, pattern1, pattern2=None) -> Kernel:
    """``k`` carrying the graph patterns of its two batches (the Kernel's ``pattern``
    field: pattern1 for x1's rows, pattern2 for x2's rows, ignored when x2 is x1) for
    `Aggregate` layers. ``net.kernel(x1, x2, pattern=(p1, p2))`` does this for every tile.

    Example:
      >>> k0 = with_pattern(input_kernel(x1, x2, track_ntk=True, full=True), a1, a2)
      >>> k = net.kernel_map(k0)
    """
    return k.replace(pattern=(pattern1, pattern2))


def _axes(aggregate_axis, n_spatial: int) -> tuple[int, ...]:
    """Aggregated spatial axes as indices into S, from input-tensor axes (0 batch, 1
    channels)."""
    ndim = n_spatial + 2
    if aggregate_axis is None:
        return tuple(range(n_spatial))
    axes = (aggregate_axis,) if isinstance(aggregate_axis, int) else tuple(aggregate_axis)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int) or not -ndim <= a < ndim \
                or a % ndim < 2:
            raise ValueError(f"Aggregate aggregate_axis must name spatial axes of the "
                             f"(n, C, *S) input (2..{ndim - 1}), got {aggregate_axis!r}")
        out.append(a % ndim - 2)
    if len(set(out)) != len(out):
        raise ValueError(f"Aggregate aggregate_axis repeats an axis: {aggregate_axis!r}")
    return tuple(sorted(out))


def _split(spatial: tuple[int, ...], agg: tuple[int, ...]):
    """(perm of S putting non-aggregated axes first, M = their size, V = nodes)."""
    rest = tuple(a for a in range(len(spatial)) if a not in agg)
    return rest + agg, math.prod(spatial[a] for a in rest), math.prod(spatial[a] for a in agg)


class Aggregate(Layer):
    """Graph aggregation (see the module docstring), neural-tangents' semantics with
    channels first.

    Args:
      aggregate_axis: input axes holding the nodes (ints ≥ 2, or negative), or None for
        all spatial axes.
      batch_axis, channel_axis: must be 0 and 1 (ntkit is channels first); accepted for
        neural-tangents compatibility.
      to_dense: with ``implementation="dense"``, a function applied to each pattern to
        get the dense (n, *A, *A) adjacency (default: the identity).
      implementation: "dense" or "sparse" (the pattern formats above).

    A missing pattern (None) means the identity adjacency (the layer is then the
    identity on that batch).

    Example:
      >>> net = serial(Conv(256, (1,)), Aggregate(), ReLU(), Conv(256, (1,)), Aggregate(),
      ...              GlobalAvgPool(), Dense(1))
      >>> k = net.kernel_map(with_pattern(input_kernel(x1, x2, track_ntk=True, full=True),
      ...                                 a1, a2))                  # x: (n, C, N), a: (n, N, N)
      >>> y = net.build((C, N))(x1, pattern=a1)
    """

    def __init__(self, aggregate_axis=None, batch_axis: int = 0, channel_axis: int = 1,
                 to_dense: Callable[[Tensor], Tensor] | None = None,
                 implementation: str = "dense"):
        if batch_axis != 0 or channel_axis != 1:
            raise ValueError(f"Aggregate: ntkit's inputs are (n, C, *S), channels first; "
                             f"batch_axis must be 0 and channel_axis 1, got {batch_axis}, "
                             f"{channel_axis} (transpose the inputs instead)")
        if isinstance(implementation, str):
            implementation = implementation.lower()
        if implementation not in ("dense", "sparse"):
            raise ValueError(f'Aggregate implementation must be "dense" or "sparse", got '
                             f"{implementation!r}")
        if to_dense is not None and not callable(to_dense):
            raise TypeError(f"Aggregate to_dense must be a function or None, got "
                            f"{type(to_dense).__name__}")
        if aggregate_axis is not None:
            _axes(aggregate_axis, 64)  # type and range checks that need no input rank
        self.aggregate_axis, self.batch_axis, self.channel_axis = (aggregate_axis, batch_axis,
                                                                   channel_axis)
        self.to_dense, self.implementation = to_dense, implementation

    def requires_full(self, full_after):
        return Storage(full=True)

    # ---- patterns --------------------------------------------------------------------
    def adjacency(self, pattern, n: int, agg_shape: tuple[int, ...], dtype,
                  device=None) -> Tensor:
        """The dense adjacency (n, V, V) of a pattern (V = nodes) for a batch of ``n``."""
        V = math.prod(agg_shape)
        if self.implementation == "dense":
            p = pattern if self.to_dense is None else self.to_dense(pattern)
            p = torch.as_tensor(p)
            want = (n, *agg_shape, *agg_shape)
            if tuple(p.shape) != want:
                raise ValueError(f"Aggregate pattern has shape {tuple(p.shape)}; a dense "
                                 f"pattern (after to_dense) must be (n, *A, *A) = {want}")
            return p.to(dtype=dtype, device=device).reshape(n, V, V)
        tails, heads = self._arcs(pattern, n, agg_shape)
        adj = torch.zeros(n, V, V, dtype=dtype, device=device)
        b, t, h = self._valid(tails, heads)
        adj.index_put_((b, t, h), torch.ones(b.shape, dtype=dtype, device=device),
                       accumulate=True)
        return adj

    def _arcs(self, pattern, n: int, agg_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """Raveled tails and heads (n, E), −1 where an arc is padding."""
        p = torch.as_tensor(pattern)
        K = len(agg_shape)
        if p.dtype.is_floating_point or p.dtype == torch.bool:
            raise TypeError(f"Aggregate(implementation='sparse') pattern must be an integer "
                            f"array of arcs, got dtype {p.dtype}")
        if K == 1 and p.ndim == 3:
            p = p.unsqueeze(2)
        if p.ndim != 4 or p.shape[0] != n or p.shape[2] != K or p.shape[3] != 2:
            raise ValueError(f"Aggregate sparse pattern has shape {tuple(p.shape)}; it must "
                             f"be (n, E, K, 2) = ({n}, E, {K}, 2)"
                             + (f" or ({n}, E, 2)" if K == 1 else ""))
        p = p.long()
        size = torch.tensor(agg_shape, device=p.device)
        if (p >= size.view(1, 1, K, 1)).any():
            raise ValueError(f"Aggregate sparse pattern has a node index out of range for "
                             f"the aggregated shape {agg_shape}")
        strides = torch.tensor([math.prod(agg_shape[i + 1:]) for i in range(K)],
                               device=p.device)
        valid = (p >= 0).all(2).all(-1)  # (n, E): padding if any coordinate is negative
        lin = (p * strides.view(1, 1, K, 1)).sum(2)  # (n, E, 2)
        lin = torch.where(valid.unsqueeze(-1), lin, torch.full_like(lin, -1))
        return lin[..., 0], lin[..., 1]

    @staticmethod
    def _valid(tails: Tensor, heads: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, e = (tails >= 0).nonzero(as_tuple=True)
        return b, tails[b, e], heads[b, e]

    # ---- the kernel map --------------------------------------------------------------
    def kernel_map(self, k: Kernel, pattern: tuple | None = None) -> Kernel:
        """``pattern``: (pattern1, pattern2) for x1's and x2's rows (pattern2 ignored when
        x2 is x1); None: read it from the Kernel (`with_pattern`)."""
        if isinstance(k, tuple):
            raise ValueError("Aggregate got parallel streams; apply it per stream with "
                             "parallel(...) or merge them first")
        if not k.is_spatial:
            raise ValueError("Aggregate needs spatial inputs (n, C, *S) with the nodes on the "
                             "spatial axes, got fully-connected features")
        if pattern is None:
            pattern = k.pattern
        if pattern is None:
            pattern = (None, None)
        if not (isinstance(pattern, tuple) and len(pattern) == 2):
            raise ValueError("Aggregate kernel pattern must be a pair (pattern1, pattern2) "
                             "for the two input batches")
        p1, p2 = pattern
        if k.x1_is_x2:
            p2 = p1
        if p1 is None and p2 is None:
            # neural-tangents remasks Aggregate's outputs (masks pass unchanged).
            return k.remask(k.mask1, k.mask2) if k.masked else k
        if not k.full:
            raise RuntimeError("internal planning error: Aggregate needs full spatial "
                               "covariances")
        agg = _axes(self.aggregate_axis, len(k.spatial))
        agg_shape = tuple(k.spatial[a] for a in agg)
        n1, n2 = k.nngp.shape[0], k.nngp.shape[1]
        dt, dev = k.nngp.dtype, k.nngp.device
        a1 = self._adj_or_eye(p1, n1, agg_shape, dt, dev)
        a2 = a1 if k.x1_is_x2 else self._adj_or_eye(p2, n2, agg_shape, dt, dev)
        d = len(k.spatial)
        perm, M, V = _split(k.spatial, agg)

        def apply(t: Tensor, left: Tensor, right: Tensor, batch: int) -> Tensor:
            lead = tuple(range(batch))
            order = lead + tuple(batch + a for a in perm) + tuple(batch + d + a for a in perm)
            tp = t.permute(order)
            shape_p = tp.shape
            # out[.., m, q, k, r] = Σ_p,s left[i, p, q] t[.., m, p, k, s] right[j, s, r], as
            # matrix products of one shape per example (pair) whatever the tile: einsum
            # folds the batch into the products, and a row's bits would then depend on
            # which other rows share its tile.
            lead = t.shape[:batch]
            ones = (1,) * (batch - 1)
            r_ = right.reshape(*ones[:1], right.shape[0], V, V) if batch == 2 else right
            tmp = torch.matmul(tp.reshape(*lead, M * V * M, V), r_)   # contract s
            tmp = tmp.reshape(*lead, M, V, M, V).movedim(batch + 1, -1)  # (.., m, k, r, p)
            l_ = left.reshape(left.shape[0], *ones, 1, V, V)
            out = torch.matmul(tmp.reshape(*lead, M * M, V, V), l_)     # contract p
            out = out.reshape(*lead, M, M, V, V).permute(
                *range(batch), batch, batch + 3, batch + 1, batch + 2)  # (.., m, q, k, r)
            inv = [0] * len(order)
            for i, o in enumerate(order):
                inv[o] = i
            return out.reshape(shape_p).permute(inv).contiguous()

        nngp = apply(k.nngp, a1, a2, 2)
        ntk = None if k.ntk is None else apply(k.ntk, a1, a2, 2)
        cov1, cov2 = k.map_covs(lambda c: apply(c, a1, a1, 1), nngp,
                                lambda c: apply(c, a2, a2, 1))
        same = k.same
        if same is not None:
            # Identical inputs stay identical only where their graphs are.
            eq = (a1[same[0]] == a2[same[1]]).flatten(1).all(1)
            same = (same[0][eq], same[1][eq]) if bool(eq.any()) else None
        out = k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, same=same)
        return out.remask(k.mask1, k.mask2) if k.masked else out

    def map_planned(self, k, full_after):
        return self.kernel_map(k)

    def _adj_or_eye(self, p, n, agg_shape, dtype, device) -> Tensor:
        if p is None:
            V = math.prod(agg_shape)
            return torch.eye(V, dtype=dtype, device=device).expand(n, V, V)
        return self.adjacency(p, n, agg_shape, dtype, device)

    # ---- the finite module -----------------------------------------------------------
    def make_module(self, in_features, generator, dtype):
        if is_streams(in_features) or not isinstance(in_features, ExampleShape):
            raise ValueError(f"Aggregate needs one spatial stream (C, *S) with the nodes on "
                             f"the spatial axes, got {in_features!r}")
        _axes(self.aggregate_axis, len(in_features.spatial))
        return AggregateModule(self), in_features


class AggregateModule(nn.Module):
    """The finite `Aggregate`: ``forward(x, pattern=None)``; x (n, C, *S)."""

    takes_inputs = True
    #: Masked inputs: outputs at absent nodes are zeroed (`ntkit.layers.masking`).
    remasks = True

    def __init__(self, spec: Aggregate):
        super().__init__()
        self.spec = spec

    def forward(self, x: Tensor, pattern=None) -> Tensor:
        if pattern is None:
            return x
        spec = self.spec
        spatial = tuple(x.shape[2:])
        agg = _axes(spec.aggregate_axis, len(spatial))
        agg_shape = tuple(spatial[a] for a in agg)
        perm, M, V = _split(spatial, agg)
        n, C = x.shape[:2]
        order = (0, 1) + tuple(2 + a for a in perm)
        xp = x.permute(order)
        shape_p = xp.shape
        xp = xp.reshape(n, C, M, V)
        if spec.implementation == "dense":
            adj = spec.adjacency(pattern, n, agg_shape, x.dtype, x.device)
            out = torch.einsum("ncmu,nuv->ncmv", xp, adj)
        else:
            # O(V + E): gather the tails' features, add them into the heads.
            tails, heads = spec._arcs(pattern, n, agg_shape)
            b, t, h = spec._valid(tails, heads)
            rows = xp.permute(0, 3, 1, 2).reshape(n * V, C * M)
            out = torch.zeros_like(rows).index_add_(0, b * V + h, rows[b * V + t])
            out = out.reshape(n, V, C, M).permute(0, 2, 3, 1)
        inv = [0] * len(order)
        for i, o in enumerate(order):
            inv[o] = i
        return out.reshape(shape_p).permute(inv)

    def extra_repr(self) -> str:
        return repr(self.spec)
