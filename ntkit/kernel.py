"""The `Kernel`: what flows through a network's kernel map.

A `Kernel` holds the second moments of one layer's pre-activations (or activations)
for a pair of input batches x1 (n1 rows) and x2 (n2 rows), in the infinite-width limit.
For fully-connected layers (``spatial == ()``):

- ``nngp``: (n1, n2) covariance E[z(x1) z(x2)] of one output channel;
- ``ntk``:  (n1, n2) neural tangent kernel, or None when it is not tracked;
- ``cov1``: (n1,) variances E[z(x1)^2] (the diagonal of nngp(x1, x1));
- ``cov2``: (n2,) variances of x2, or None when x2 is x1 (then cov2 is cov1).

Spatial layers (convolutions, pooling) add the positions S = ``spatial`` (e.g. (H, W)),
stored in one of two ways (``full``):

- diagonal (``full=False``): same position in both inputs. nngp/ntk: (n1, n2, *S);
  cov1: (n1, *S), the per-position variances.
- full (``full=True``): every pair of positions. nngp/ntk: (n1, n2, *S, *S), indexed
  [i, j, p, p'] = E[z_p(x1_i) z_p'(x2_j)]; cov1: (n1, *S, *S), each example's own
  position-position covariance (its position diagonal is the per-position variance).

Which one a layer gets is planned from what comes after it, as a `Storage` value (see
`ntkit.layers.base.Layer.requires_full`): pooling needs full covariances, everything
else keeps a diagonal a diagonal, so a network that only flattens never stores more.
Code that pairs a per-example variance with ``nngp`` goes through :meth:`var_pair`.

Flags:

- ``channels``: the channel count of the layer that produced this kernel (the input
  dimension d, or the image channel count C, for the input kernel). Only the 'standard'
  parameterization and ``FanInConcat`` depend on it; the kernel is otherwise width-free.
- ``source``: None, or the number of the Dense/Conv layer whose fresh zero-mean weights
  produced this stream, when every map since then was linear (Identity, pooling, Flatten)
  or a per-example rescaling (LayerNorm): the stream is then odd in those weights.
- ``roots``: the numbers of the Dense/Conv layers whose output channels this stream is
  still aligned with, channel by channel: each channel c of the stream is a function of
  channel c of those layers' outputs (and of per-example scalars). A Dense/Conv layer
  starts a new set, elementwise and per-position maps keep it, sums and concatenations
  unite it. In the infinite-width limit two streams are uncorrelated, and the kernel of
  their sum is the sum of their kernels, exactly when one of them has a ``source`` that
  is not among the other's ``roots`` (its channel is then a zero-mean Gaussian
  independent of the other's); ``FanInSum`` checks this for every pair of streams.
- ``n_dense``: how many Dense/Conv maps were applied so far, counted along the network
  with parallel branches threaded one after another, so every such layer gets its own
  number. (Plain ints in the Kernel, not global state, so torch.compile sees constants.)
- ``x1_is_x2``: x2 is the same batch as x1 (symmetric case).
- ``same``: None, or index tensors (rows, cols) of example pairs with x1[rows[m]]
  identical to x2[cols[m]] (found by the engine, `ntkit.engine.pairs`). Those entries are
  kept equal to the per-example variances, as the example diagonal is when x2 is x1, so
  they see correlation exactly 1 (the arc-cosine turns a rounding error of 1e-16 there
  into 1e-8) and come out as the x2=None diagonal does.
- ``mixed_channels``: True when the channels are not identically distributed and nngp
  is only their mean covariance: after `Flatten` merged several positions into channels,
  or `FanInConcat` joined several streams. Linear maps, LayerNorm and a Dense/Conv layer
  (which mixes all channels, making them alike again) are exact on it; a nonlinearity
  is not (the mean of its dual is not its dual of the mean), and refuses.
- ``ntk_own``: True when ntk includes per-channel terms that are products of the channel's
  own values, z_c(x) z_c(x') (the gradients of `LayerNorm`'s affine γ), which a linear map
  or the channel average of the next Dense/Conv turns into nngp, but which a
  nonlinearity's ``ntk · Tdot`` does not propagate (E[u φ'(u) v φ'(v)] is not
  nngp·E[φ'φ']): nonlinearities refuse it; a Dense/Conv layer clears it. Where that part
  is ``own_coef · nngp`` of this very nngp tensor (``own_nngp is nngp``: no layer changed
  nngp since), degree-1 positively homogeneous activations (ReLU, LeakyReLU, ABReLU,
  Abs: u φ'(u) = φ(u)) map it exactly to ``own_coef · nngp'``.
- ``mask1``/``mask2``: None (no masking), or bool tensors (n1, *S) / (n2, *S), True at
  the positions of each example that are absent (neural-tangents' ``mask_constant``:
  padding of variable-length sequences and images); (n1,) / (n2,) for fully-connected
  kernels (True: the whole example is absent). Both are set or both None, except that
  mask2 is None when x2 is x1 (then it is mask1). `input_kernel` makes them: a position
  is absent when *all* its channels equal ``mask_constant``, and every input entry equal
  to it (even at a position that is not absent) is zeroed before the covariances are
  taken, as neural-tangents does. Layers carry the masks (a convolution or a pooling
  window takes the mask of its centre position, a global pool or Flatten reduces them,
  `FanInSum` intersects them) and their reductions skip absent positions (a global
  average divides by the number of present ones); the layers that neural-tangents
  "remasks" (Dense, convolutions, pooling windows, attention, Erf, Sin and the other
  non-positive-homogeneous activations) zero every covariance entry that involves an
  absent position, so a fully masked example has kernel exactly 0. Masks are a function
  of each example's own inputs, so identical examples have identical masks.
- ``gaussian``: True when the channels are zero-mean Gaussian processes (outputs of
  Dense/Conv and linear maps of them), False when they are known not to be (after an
  activation, or a sum including such a stream), None when unknown (raw inputs). The
  dual-activation formulas need jointly Gaussian pre-activations, so an activation
  refuses a False input (as neural-tangents does); `LayerNorm` needs True.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from ntkit.entries import (  # noqa: F401 (re-exported: ntkit.kernel.set_same, ...)
    example_diagonal,
    pin_twins,
    position_diagonal,
    set_same,
    swap_examples,
)


@dataclass(frozen=True)
class Storage:
    """The spatial storage a layer's input must carry: full position-position covariances,
    or only their diagonal (see the module docstring); per stream for parallel streams.

    ``Storage(full=True)`` / ``Storage(full=False)`` describe one stream;
    ``Storage(streams=(a, b))`` two parallel ones. The combination rule: one stream that
    feeds several consumers (a `FanOut`) must carry what any of them needs
    (`joined`). Planning runs backwards from the output, which needs no full storage
    (``Storage.of(False)``); the engine stores the input kernel full when
    ``net.requires_full(Storage.of(False)).any_full``.
    """

    full: bool = False
    streams: tuple[Storage, ...] | None = None

    @staticmethod
    def of(value: Storage | bool | tuple) -> Storage:
        """A `Storage` from itself, a bool (one stream) or a tuple (one entry per stream)."""
        if isinstance(value, Storage):
            return value
        if isinstance(value, tuple):
            return Storage(streams=tuple(Storage.of(v) for v in value))
        return Storage(full=bool(value))

    @property
    def any_full(self) -> bool:
        """Whether full storage is needed anywhere (in any stream)."""
        if self.streams is None:
            return self.full
        return any(s.any_full for s in self.streams)

    def joined(self) -> Storage:
        """The need of one stream feeding all of these streams."""
        return Storage(full=self.any_full)

    def per_stream(self, n: int) -> tuple[Storage, ...]:
        """One need per stream of ``n`` parallel streams (a single need applies to all)."""
        return self.streams if self.streams is not None else (self,) * n

    def conform(self, k):
        """Bring a kernel (or a tuple of parallel kernels) to this storage: a full spatial
        kernel is reduced to its diagonal when nothing downstream needs the full one."""
        if isinstance(k, tuple):
            needs = self.per_stream(len(k))
            if len(needs) != len(k):  # a stream-count mismatch: the layer itself reports it
                return k
            return tuple(n.conform(ki) for ki, n in zip(k, needs, strict=True))
        need = self.any_full
        if k.full and not need:
            return k.to_diagonal()
        if need and k.is_spatial and not k.full:
            raise RuntimeError("internal planning error: a layer needs full spatial "
                               "covariances but got only their diagonal")
        return k


def any_full(need: Storage | bool | tuple) -> bool:
    """Whether a storage need (a `Storage`, or a bool/tuple as `Storage.of` takes) asks
    for full storage anywhere."""
    return Storage.of(need).any_full


@dataclass(frozen=True)
class Kernel:
    """Second moments of one layer's outputs over a pair of input batches, in the
    infinite-width limit: what flows through ``layer.kernel_map``.

    Fields (see the module docstring for shapes, storage and flags): ``nngp``, ``ntk``
    (or None), ``cov1``, ``cov2`` (None when x2 is x1), ``channels``, ``spatial``,
    ``full``, and the planning flags ``source``, ``roots``, ``n_dense``, ``x1_is_x2``,
    ``gaussian``, ``mixed_channels``, ``same``, ``trace``, and the per-example side
    inputs ``pattern`` (graph patterns for `Aggregate`) and ``mask1``/``mask2``
    (absent positions, neural-tangents' ``mask_constant``; see the module docstring).

    A `Kernel` is immutable: maps return new ones (``k.replace(...)``). Kernels compose
    as in neural-tangents' ``kernel_fn``: ``net2.kernel_map(net1.kernel_map(k))`` is the
    kernel of ``serial(net1, net2)``, and ``net.kernel(k)`` with a Kernel argument does
    the same.

    Example:
      >>> import torch, ntkit.layers as nl
      >>> x = torch.randn(4, 3, dtype=torch.float64)
      >>> k0 = input_kernel(x, None, track_ntk=True)      # nngp = x xᵀ / 3
      >>> k = nl.serial(nl.Dense(8), nl.ReLU()).kernel_map(k0)
      >>> k.nngp.shape, k.cov1.shape
      (torch.Size([4, 4]), torch.Size([4]))
    """

    nngp: Tensor
    ntk: Tensor | None
    cov1: Tensor
    cov2: Tensor | None
    channels: int
    source: int | None = None
    x1_is_x2: bool = False
    n_dense: int = 0
    spatial: tuple[int, ...] = ()
    full: bool = False
    gaussian: bool | None = None
    trace: CovTrace | None = None
    roots: frozenset = frozenset()
    mixed_channels: bool = False
    same: tuple[Tensor, Tensor] | None = None
    pattern: tuple | None = None
    mask1: Tensor | None = None
    mask2: Tensor | None = None
    ntk_own: bool = False
    own_coef: Tensor | None = None
    own_nngp: Tensor | None = None

    def replace(self, **changes) -> Kernel:
        return dataclasses.replace(self, **changes)

    @property
    def masked(self) -> bool:
        """Whether this kernel carries masks (``mask_constant`` was given)."""
        return self.mask1 is not None or self.mask2 is not None

    @property
    def mask_pair(self) -> tuple[Tensor, Tensor] | None:
        """(mask1, mask2) with mask2 = mask1 when x2 is x1; None without masks."""
        if not self.masked:
            return None
        m2 = self.mask1 if self.mask2 is None else self.mask2
        return self.mask1, m2

    def remask(self, mask1: Tensor | None, mask2: Tensor | None) -> Kernel:
        """This kernel with the masks ``mask1``/``mask2`` ((n, *S) bool for this kernel's
        positions, True: absent; see the module docstring) and every covariance entry that
        involves an absent position set to 0: neural-tangents' remasking. Entries of
        present positions are untouched (bitwise). No-op without masks."""
        if mask1 is None and mask2 is None:
            return self.replace(mask1=None, mask2=None)
        m2 = mask1 if mask2 is None else mask2
        a, b = self.broadcast_pair(mask1, m2, 2)
        m12 = a | b

        def cov_mask(m):
            if not self.full or self.replaying:
                return m
            a, b = self.broadcast_pair(m, m, 1)
            return a | b

        nngp = self.nngp.masked_fill(m12, 0.0)
        ntk = None if self.ntk is None else self.ntk.masked_fill(m12, 0.0)
        cov1 = self.cov1.masked_fill(cov_mask(mask1), 0.0)
        cov2 = None if self.cov2 is None else self.cov2.masked_fill(cov_mask(m2), 0.0)
        return self.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, mask1=mask1,
                            mask2=None if self.x1_is_x2 else m2)

    def map_masks(self, fn) -> tuple[Tensor | None, Tensor | None]:
        """(fn(mask1), fn(mask2)), None staying None: a layer's map of the masks."""
        return (None if self.mask1 is None else fn(self.mask1),
                None if self.mask2 is None else fn(self.mask2))

    def fresh_affine(self, channels: int, **changes) -> Kernel:
        """The kernel of a fresh Dense/Conv output (new zero-mean weights): the layer
        count advances and the output is its own source and root (the independence rule
        of ``FanInSum``), Gaussian, with unmixed channels; ``changes`` as in ``replace``."""
        n = self.n_dense + 1
        return self.replace(channels=channels, source=n, roots=frozenset((n,)),
                            mixed_channels=False, n_dense=n, gaussian=True, ntk_own=False,
                            own_coef=None, own_nngp=None, **changes)

    @property
    def var2(self) -> Tensor:
        """Variances of the x2 batch (cov1 when x2 is x1)."""
        return self.cov1 if self.cov2 is None else self.cov2

    @property
    def replaying(self) -> bool:
        """cov1/cov2 hold replayed per-position variances, not covariances (`CovTrace`)."""
        return self.trace is not None and self.trace.replaying

    def map_covs(self, fn, nngp: Tensor | None = None, fn2=None) -> tuple[Tensor, Tensor | None]:
        """A layer's map of the examples' own covariances: (fn(cov1), fn2(cov2)).

        ``fn2`` defaults to ``fn``; ``nngp`` is the layer's new nngp. Every layer maps
        cov1/cov2 through here, so that a `CovTrace` can record or replay them: replayed,
        ``fn`` is not called at all (the per-example maps were done once, elsewhere).
        """
        tr = self.trace
        if tr is not None and tr.replaying:
            return tr.next()
        if tr is not None and self.x1_is_x2 and nngp is not None and nngp.shape[0] == 1:
            # One example with itself: its own covariance *is* the pair's nngp, which the
            # layer has just computed (the same map of the same numbers).
            cov1, cov2 = nngp[:, 0].clone(), None
        else:
            cov1 = fn(self.cov1)
            cov2 = None if self.cov2 is None else (fn2 or fn)(self.cov2)
        if self.same is not None and self.x1_is_x2:
            cov1 = pin_twins(cov1, self.same)  # before recording: replays see the same
        if tr is not None:
            tr.record(cov1, self.full)
        if self.same is not None and cov2 is not None:
            # Identical examples get the same variances bitwise (x1's), whatever rounding
            # their separate chains saw.
            cov2 = set_same(cov2, cov1, (self.same[1], self.same[0]))
        return cov1, cov2

    @property
    def is_spatial(self) -> bool:
        return bool(self.spatial)

    def variances(self, cov: Tensor) -> Tensor:
        """Per-position variances of a cov field: (n,) or (n, *S), whatever the storage."""
        if not self.full or self.replaying:
            return cov
        return position_diagonal(cov, len(self.spatial))

    def var_pair(self) -> tuple[Tensor, Tensor]:
        """(var1, var2) shaped to broadcast against ``nngp``.

        Fully connected: (n1, 1) and (1, n2). Diagonal spatial: (n1, 1, *S) and
        (1, n2, *S). Full spatial: (n1, 1, *S, 1…) and (1, n2, 1…, *S).
        """
        return self.broadcast_pair(self.variances(self.cov1), self.variances(self.var2), 2)

    def self_var_pair(self, cov: Tensor) -> tuple[Tensor, Tensor]:
        """(var_p, var_p') broadcasting against a cov field (for maps of cov1/cov2)."""
        v = self.variances(cov)
        return self.broadcast_pair(v, v, 1)

    def broadcast_pair(self, a: Tensor, b: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        """Per-example, per-position tensors a (first input) and b (second input), (n, *S)
        or (n,), shaped to broadcast against a field with ``batch`` leading axes: 2 for
        nngp/ntk (a: (n1, 1, *S[, 1…]), b: (1, n2, [1…,] *S)), 1 for cov1/cov2 (a indexes
        the first position of each pair, b the second)."""
        if batch == 2:
            a, b = a.unsqueeze(1), b.unsqueeze(0)
        if self.full:
            d = len(self.spatial)
            a = a.reshape(a.shape + (1,) * d)
            b = b.reshape(b.shape[:batch] + (1,) * d + b.shape[batch:])
        return a, b

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

    def map_fields(self, fn) -> Kernel:
        """Apply ``fn(t, batch_ndim)`` to every field: 2 for nngp/ntk, 1 for cov1/cov2
        (through `map_covs`)."""
        nngp = fn(self.nngp, 2)
        cov1, cov2 = self.map_covs(lambda t: fn(t, 1), nngp)
        return self.replace(nngp=nngp, ntk=None if self.ntk is None else fn(self.ntk, 2),
                            cov1=cov1, cov2=cov2)

    def to_diagonal(self) -> Kernel:
        """Full spatial storage -> diagonal (same positions only); no-op otherwise."""
        if not self.full:
            return self
        d = len(self.spatial)
        covs = {}
        if not self.replaying:  # replayed cov1/cov2 are variances: the same in both storages
            covs = {"cov1": position_diagonal(self.cov1, d),
                    "cov2": None if self.cov2 is None else position_diagonal(self.cov2, d)}
        return self.replace(nngp=position_diagonal(self.nngp, d),
                            ntk=None if self.ntk is None else position_diagonal(self.ntk, d),
                            full=False, **covs)


class CovTrace:
    """Each example's own covariances, mapped once and replayed into every tile.

    A tile of x1 rows against x2 columns needs, at every activation, the per-position
    variances of its rows and of its columns. Without a trace each tile maps its examples'
    own covariance chains again (on full position-position storage as costly as a pair
    each: 2t maps for t² pairs). With one, a first pass per block of examples *records*
    the variances after every cov map (``Kernel.map_covs``; step 0 is the input), and
    the tiles *replay* them: their cov1/cov2 fields then hold variances (n, *S), which
    is all the nngp/ntk maps read (`Kernel.variances`), and no cov map runs. Linear maps
    that combine streams (FanInSum, FanInConcat) commute with taking the diagonal, so
    they run on the variances unchanged.

    Record and replay walk the network in the same order, so step s of a replay is the
    map that produced step s of the recording.
    """

    def __init__(self, rows: list[Tensor] | None = None, cols: list[Tensor] | None = None):
        self.replaying = rows is not None
        self.steps: list[Tensor] = [] if rows is None else rows
        self.cols = cols
        self.pos = 0

    def record(self, cov: Tensor, full: bool) -> None:
        if full and cov.ndim > 1:
            cov = position_diagonal(cov, (cov.ndim - 1) // 2)
        self.steps.append(cov.detach().clone())

    def next(self) -> tuple[Tensor, Tensor | None]:
        if self.pos >= len(self.steps):
            raise RuntimeError("internal error: a kernel map replays more covariance maps "
                               "than its recording made")
        s = self.pos
        self.pos += 1
        return self.steps[s], None if self.cols is None else self.cols[s]


def input_kernel(x1: Tensor, x2: Tensor | None, *, track_ntk: bool, x1_is_x2: bool = False,
                 cov1: Tensor | None = None, cov2: Tensor | None = None,
                 full: bool = False, trace: CovTrace | None = None,
                 same: tuple[Tensor, Tensor] | None = None,
                 pattern: tuple | None = None, mask_constant: float | None = None) -> Kernel:
    """The kernel of the raw inputs: nngp = x1·x2 / C, ntk = 0, cov = |x|² / C.

    x1: (n1, d) or, channels first, (n1, C, *S); x2: the same per-example shape, or None
    (meaning x1). Both already in the compute dtype. For spatial inputs the products are
    over channels only, at the same position (``full=False``) or every pair of positions
    (``full=True``), as described in the module docstring. ``cov1``/``cov2`` may be
    passed precomputed (the engine computes them once for a whole batch rather than once
    per tile). ``trace``: a `CovTrace` to record the input variances in, or to replay
    them from (then cov1/cov2 are not computed). ``same``: (rows, cols) of identical
    example pairs of x1 and x2 (see `Kernel`), or None. ``pattern``: (pattern1, pattern2)
    graph patterns of these rows of x1 and x2 (see `Kernel`), or None.
    ``mask_constant``: None, or a finite real number: every input entry equal to it is
    zeroed before the covariances, and a position (an example, for (n, d) inputs) is
    absent when all its channels equal it; the kernel then carries ``mask1``/``mask2``
    (see the module docstring; neural-tangents' ``mask_constant``). Precomputed
    ``cov1``/``cov2`` must then be those of the zeroed inputs.

    Example:
      >>> x = torch.tensor([[[1., 2., 0.]], [[0., 0., 0.]]], dtype=torch.float64)
      >>> k = input_kernel(x, None, track_ntk=False, mask_constant=0.0)
      >>> k.mask1
      tensor([[False, False,  True],
              [ True,  True,  True]])
    """
    mask1 = mask2 = None
    if mask_constant is not None:
        check_mask_constant(mask_constant)
        x1, mask1 = _masked_input(x1, mask_constant)
        if x2 is not None:
            x2, mask2 = _masked_input(x2, mask_constant)
    if x2 is None:
        x2 = x1
        x1_is_x2 = True
    c = x1.shape[1]
    spatial = tuple(x1.shape[2:])
    if not spatial:
        nngp = (x1 @ x2.T) / c
        full = False
    else:
        a1 = x1.reshape(x1.shape[0], c, -1)
        a2 = x2.reshape(x2.shape[0], c, -1)
        if full:
            # [i, j, p, q] = Σ_c x1[i, c, p] x2[j, c, q] / C: one matmul over channels.
            nngp = torch.einsum("icp,jcq->ijpq", a1, a2).div_(c)
            nngp = nngp.reshape(a1.shape[0], a2.shape[0], *spatial, *spatial)
        else:
            nngp = torch.einsum("icp,jcp->ijp", a1, a2).div_(c)
            nngp = nngp.reshape(a1.shape[0], a2.shape[0], *spatial)
    replaying = trace is not None and trace.replaying
    if replaying:
        cov1, cov2 = trace.next()
    if cov1 is None:
        cov1 = _self_cov(x1, full)
    if same is not None and x1_is_x2 and not replaying:
        # Repeated rows of one batch take their first twin's variances, before the
        # diagonal is set from them and they are recorded.
        cov1 = pin_twins(cov1, same)
    if trace is not None and not replaying:
        trace.record(cov1, full)
    if x1_is_x2:
        # The example diagonal of nngp(x, x) *is* the variance. Making it so bitwise keeps
        # the arc-cosine angle exactly 0 there (v1·v2 − c² = 0), instead of ~1e-8 from
        # rounding amplified by the square root.
        example_diagonal(nngp).copy_(cov1.movedim(0, -1))
        cov2 = None
    elif cov2 is None:
        cov2 = _self_cov(x2, full)
    if same is not None and x1_is_x2:
        nngp = set_same(nngp, cov1, same)  # twins' pairs: their variances, as the diagonal
    elif same is not None:
        if replaying:
            raise RuntimeError("internal error: identical example pairs need their own "
                               "covariances, not replayed variances")
        nngp = set_same(nngp, cov1, same)
        cov2 = set_same(cov2, cov1, (same[1], same[0]))
    ntk = torch.zeros_like(nngp) if track_ntk else None
    return Kernel(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, channels=c,
                  source=None, x1_is_x2=x1_is_x2, spatial=spatial, full=full, trace=trace,
                  same=same, pattern=pattern, mask1=mask1,
                  mask2=None if x1_is_x2 else mask2)


def check_mask_constant(value) -> float:
    """``value`` as a float if it is a finite real scalar (Python or numpy number, or a
    one-element tensor), else a clear TypeError/ValueError naming ``mask_constant``."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"mask_constant must be a real number (the padding value of absent "
                        f"positions), got {value!r}")
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_complex():
            raise TypeError("mask_constant must be a real scalar, got a tensor of shape "
                            f"{tuple(value.shape)} and dtype {value.dtype}")
        value = value.item()
    try:
        if not isinstance(value, numbers.Real):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"mask_constant must be a real number (the padding value of absent "
                        f"positions), got {type(value).__name__}") from None
    if not math.isfinite(v):
        raise ValueError(f"mask_constant must be finite, got {v}: ntkit's inputs must be "
                         "finite, so pad absent positions with a finite value that real "
                         "inputs never take (e.g. -1e6), and pass that")
    return v


def _masked_input(x: Tensor, c: float) -> tuple[Tensor, Tensor]:
    """(x with entries equal to c zeroed, (n, *S) or (n,) mask of absent positions)."""
    hit = x == c
    mask = hit.all(1)
    return x.masked_fill(hit, 0.0), mask


def _self_cov(x: Tensor, full: bool) -> Tensor:
    """Each example's own covariance: (n,), (n, *S) or (n, *S, *S)."""
    c = x.shape[1]
    if x.ndim == 2:
        return (x * x).sum(1) / c
    spatial = tuple(x.shape[2:])
    if not full:
        return (x * x).sum(1) / c
    a = x.reshape(x.shape[0], c, -1)
    cov = torch.einsum("icp,icq->ipq", a, a).div_(c)
    # Exactly symmetric, with the position diagonal equal to the diagonal-path variance.
    cov = 0.5 * (cov + cov.transpose(1, 2))
    cov.diagonal(0, 1, 2).copy_((a * a).sum(1) / c)
    return cov.reshape(x.shape[0], *spatial, *spatial)


# ---- the evaluator: how ``Layer.kernel`` reaches the engine ----------------------------
# Layer specs describe maps and never import the engine (which evaluates them over input
# batches in tiles); ``ntkit.engine`` registers its entry point here when imported, and
# ``ntkit/__init__.py`` imports it, so ``net.kernel(x1, x2)`` works after ``import ntkit``.
_EVALUATOR = None


def register_evaluator(fn) -> None:
    """Set the function that ``Layer.kernel(x1, x2, get=..., **options)`` calls as
    ``fn(layer, x1, x2, get=get, **options)`` (`ntkit.engine.evaluate.evaluate`)."""
    global _EVALUATOR
    _EVALUATOR = fn


def evaluator():
    """The registered evaluator (see `register_evaluator`)."""
    if _EVALUATOR is None:
        raise RuntimeError("no kernel evaluator is registered: import ntkit (or ntkit.engine) "
                           "before calling net.kernel")
    return _EVALUATOR
