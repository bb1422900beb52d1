"""Layer specs: one description, two meanings.

A `Layer` describes a layer once. From it come

- ``layer.kernel_map(k)``: the exact infinite-width map on a `Kernel` (pure, on tensors);
- ``layer.make_module(in_features, generator, dtype)``: a finite ``torch.nn.Module``
  with the same parameterization, and its output width;

and the user-facing wrappers ``layer.kernel(x1, x2)`` and ``layer.build(in_features)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ntkit.kernel import (
    Kernel,
    Storage,
    evaluator,
    example_diagonal,
    position_diagonal,
    set_same,
)
from ntkit.layout import to_channels_first, warn_if_channels_last


class ExampleShape(tuple):
    """The per-example shape (C, *S) of a spatial stream, channels first.

    A plain int is a fully-connected width; a plain tuple holds the widths (ints or
    ExampleShapes) of parallel streams.
    """

    @property
    def channels(self) -> int:
        return self[0]

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(self[1:])


Width = int | ExampleShape | tuple  # one stream (FC or spatial); a tuple: parallel streams


def is_streams(width) -> bool:
    """Whether ``width`` describes parallel streams (a plain tuple), not one stream."""
    return isinstance(width, tuple) and not isinstance(width, ExampleShape)


class LayerType(type):
    """Metaclass of `Layer`: ``dir()`` of a layer *class* lists the members it defines
    itself, so that ``help(ntkit.layers)`` and ``help(nl.Dense)`` document `Layer`'s
    methods (``kernel``, ``build``, ...) once, on `Layer`, instead of once per layer.
    Instances and attribute lookup are unaffected (``dir(nl.Dense(1))`` lists all)."""

    def __dir__(cls) -> list[str]:
        if cls.__dict__.get("_document_inherited", False):
            return super().__dir__()
        return sorted(vars(cls))


class Layer(metaclass=LayerType):
    """Base class of every layer spec (see module docstring). Every layer has the
    methods below: ``kernel``, ``kernel_map``, ``build`` (and ``make_module``,
    ``requires_full``, ``map_planned`` for the engine)."""

    _document_inherited = True  # Layer itself: dir() as usual

    def kernel_map(self, k: Kernel | tuple[Kernel, ...]) -> Kernel | tuple[Kernel, ...]:
        """The exact infinite-width map of this layer on a `Kernel` (or on a tuple of
        kernels, one per parallel stream): pure tensor math, no tiling.

        Kernels compose as neural-tangents' ``kernel_fn`` does:
        ``b.kernel_map(a.kernel_map(k)) == serial(a, b).kernel_map(k)``. Start from
        `ntkit.kernel.input_kernel` (``full=True`` when
        ``self.requires_full(Storage()).any_full`` for spatial inputs), or from a Kernel
        that ``net.kernel(x1, x2, get=None)`` returned.
        """
        raise NotImplementedError

    def make_module(self, in_features: Width, generator: torch.Generator,
                    dtype: torch.dtype) -> tuple[nn.Module, Width]:
        raise NotImplementedError

    def requires_full(self, full_after: Storage | bool) -> Storage:
        """The `Storage` this layer's input must carry, given what its output must
        (what comes after it decides). Layers that keep a diagonal a diagonal
        (elementwise, convolutions, normalization) pass it through; pooling needs full
        storage; Flatten and Dense need only the diagonal."""
        return Storage.of(full_after)

    def map_planned(self, k, full_after: Storage | bool):
        """``kernel_map`` with the storage need of the output known (combinators use it
        to plan their inner layers)."""
        return self.kernel_map(k)

    # ---- user-facing wrappers -------------------------------------------------------
    def kernel(self, x1, x2=None, get: str | Sequence[str] | None = ("nngp", "ntk"), *,
               tile: int | None = None, dtype: torch.dtype = torch.float64,
               progress: bool = False, out=None, compile: bool | str | None = None,
               memory_budget: int | None = None, resume: bool = False, client=None,
               channels_last: bool | None = None, pattern: tuple | None = None,
               mask_constant: float | None = None):
        """Exact infinite-width kernels of this architecture between x1 and x2.

        A thin call: the engine (`ntkit.engine.evaluate`) plans, tiles and writes the
        evaluation; this layer contributes only its `kernel_map`. With a `Kernel` as
        ``x1`` (and no other argument) this is ``self.kernel_map(x1)``: kernels compose
        as in neural-tangents.

        Args:
          x1: (n1, d) inputs, or channels first (n1, C, L) / (n1, C, H, W) for
            convolutional networks (tensor or array of any float dtype). A ``np.memmap``
            or a zarr array stays on disk: only each tile's rows are read (and checked
            for NaN/inf when read), so inputs may exceed RAM.
          x2: inputs of the same per-example shape, or None for x2 = x1 (each pair is
            then computed once).
          get: "nngp", "ntk", "cov1", "cov2", a tuple of those (returns a namedtuple
            with those fields), or None (returns the whole `Kernel`, with full
            nngp/ntk matrices and the per-example variances cov1/cov2).
          tile: tile size in examples (any positive int). Default: the largest that fits
            ``memory_budget`` (capped at 256 rows for fully-connected nets on a CPU, where
            larger tiles fall out of cache and are no faster).
          dtype: compute and result dtype; float64 by default, float32 on request.
          progress: show a progress bar over tiles.
          out: where to write the results instead of allocating them: for one name, a
            tensor or numpy array (a ``np.memmap`` keeps a kernel larger than RAM on
            disk), or a zarr array (see ``resume``); for several names, a dict
            name -> array. Returned as given. A zarr array's chunks set the tiles
            (create one with `ntkit.engine.storage.create_kernel_array`).
          compile: None (default) or "fused": fused duals (`ntkit.dual.fused`: one C
            loop per float64 closed-form dual on the CPU, built once by the system C
            compiler in about 2 s of CPU and cached on disk; eager where that is
            unavailable, with one warning), unless ``NTKIT_FUSED=0`` is set. False:
            eager. True or
            "whole": the whole per-tile map under ``torch.compile`` (tens of seconds to
            minutes per network on a small CPU).
          memory_budget: bytes the tiles may hold at once (the output comes on top).
            Default: a quarter of the free device memory on CUDA, of the available RAM
            (at most 8 GiB) on a CPU; see `ntkit.engine.memory`.
          resume: with zarr ``out`` arrays only: compute just the tiles not yet marked
            complete by an earlier, interrupted run (killed, even by SIGKILL); the
            result is bit-identical to an uninterrupted run. Refused with ValueError if
            the array holds a kernel of other arguments (shapes, get, dtype, layer,
            tile, inputs). Without it, a zarr ``out`` is recomputed from scratch (tiles
            are still marked, so a later call may resume). See `ntkit.engine.storage`.
          client: a ``distributed.Client``: compute the tiles on that Dask cluster (one
            task per row block; results equal the single-process ones bitwise for
            fully-connected nets, to rounding for spatial ones). Point
            it at a real cluster with ``Client("tcp://scheduler:8786")``; the workers
            need ntkit installed. See `ntkit.engine.distributed`.
          channels_last: True: x1 and x2 are channels last, (n, L, C) / (n, H, W, C) /
            (n, D, H, W, C) as in neural-tangents, and are transposed to channels first
            before anything else. None (default): channels first; a batch that looks
            channels last (last axis 1–4 and smaller than axis 1) gives a UserWarning
            naming this option. False: channels first, no warning. See `ntkit.layout`.
          pattern: graph patterns for `Aggregate` layers, as in neural-tangents: a pair
            (pattern1, pattern2) of per-example arrays whose leading axis is the examples
            of x1 and of x2 (dense (n, *A, *A) adjacencies or sparse (n, E, K, 2) arcs, as
            `Aggregate` takes them); pattern2 None when x2 is None. Each tile gets its
            rows' patterns; x2 equal to x1 counts as x1 (the symmetric path) only when the
            patterns are equal too. Example:
            ``net.kernel(x1, x2, pattern=(a1, a2))`` with x: (n, C, N), a: (n, N, N).
          mask_constant: None (default), or a finite real number marking absent
            positions, as in neural-tangents (padding of variable-length sequences and
            images): a position whose channels all equal it is absent (for (n, d) inputs,
            an example whose entries all do), and every entry equal to it is zeroed.
            Convolutions, pooling, attention, Flatten and LayerNorm respect the masks as
            neural-tangents does (see ``mask1`` in `ntkit.kernel`); a fully masked example
            has kernel exactly 0. The built network takes the same keyword:
            ``net.build(...)(x, mask_constant=c)``. Example:
            ``net.kernel(x1, x2, mask_constant=-1e6)`` with sequences padded by -1e6.

        Returns:
          A tensor (n1, n2) for a single name (with the positions appended, (n1, n2, *S)
          or (n1, n2, *S, *S), when the network ends in a spatial layer), a namedtuple
          for several, or a `Kernel`.
        """
        if isinstance(x1, Kernel):
            if x2 is not None:
                raise ValueError("net.kernel(k) with a Kernel maps it (kernel_map); x2 must "
                                 "be None")
            return self.kernel_map(x1)
        # -- input layout (ntkit.layout): first, before any validation or engine step --
        x1 = to_channels_first(x1, channels_last)
        x2 = to_channels_first(x2, channels_last) if x2 is not None else None
        warn_if_channels_last(x1, channels_last, "x1")
        if x2 is not None:
            warn_if_channels_last(x2, channels_last, "x2")
        # -- end input layout --
        return evaluator()(self, x1, x2, get=get, tile=tile, dtype=dtype, progress=progress,
                           out=out, compile=compile, memory_budget=memory_budget,
                           resume=resume, client=client,
                           **({} if pattern is None else {"pattern": pattern}),
                           **({} if mask_constant is None else
                              {"mask_constant": mask_constant}))

    def build(self, in_features: int | Sequence[int], seed: int | None = 0,
              dtype: torch.dtype = torch.float64) -> nn.Module:
        """A finite network with this spec's widths and parameterization.

        Args:
          in_features: input dimension d (the module maps (n, d) -> (n, out)), or the
            per-example input shape as a tuple, channels first: (C, L) for sequences,
            (C, H, W) for images (the module maps (n, C, H, W) -> (n, ...)).
            Channels-last data (neural-tangents' NHWC) must be transposed first, e.g.
            ``x.movedim(-1, 1)``.
          seed: seed of the parameters' initialization (None: torch's global RNG).
          dtype: parameter dtype (float64 by default).

        The module checks each input's shape before its first layer and raises a
        ValueError naming the expected per-example shape.
        """
        width = _check_in_features(in_features)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        gen = torch.Generator()
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(seed))
        module, _ = self.make_module(width, gen, dtype)
        # -- input shape check (a picklable pre-hook; the module's type is unchanged) --
        module.register_forward_pre_hook(InputShapeCheck(width))
        return module

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class InputShapeCheck:
    """Forward pre-hook of a built network: refuse an input whose per-example shape is
    not the one it was built for, with a message that names it (instead of torch's
    "mat1 and mat2 shapes cannot be multiplied" deep inside the first layer)."""

    def __init__(self, width: int | ExampleShape):
        self.expected = (width,) if isinstance(width, int) else tuple(width)

    def __call__(self, module: nn.Module, args: tuple) -> None:
        shape = getattr(args[0], "shape", None) if args else None
        if shape is None or tuple(shape[1:]) == self.expected or tuple(shape) == self.expected:
            return  # (n, *expected), or one unbatched example as torch modules allow
        shape = tuple(shape)
        hint = ""
        if len(self.expected) >= 2 and shape[1:] == (*self.expected[1:], self.expected[0]):
            hint = ("; it looks channels last (as in neural-tangents): transpose it with "
                    "x.movedim(-1, 1)")
        layout = ", channels first" if len(self.expected) >= 2 else ""
        raise ValueError(f"{type(module).__name__} was built for inputs of shape "
                         f"(n, {', '.join(map(str, self.expected))}) (per example "
                         f"{self.expected}{layout}), got {shape}{hint}")


def _check_in_features(in_features) -> int | ExampleShape:
    def positive_int(v) -> bool:
        return not isinstance(v, bool) and isinstance(v, int) and v >= 1

    if positive_int(in_features):
        return in_features
    if isinstance(in_features, (tuple, list)) and len(in_features) >= 1 and all(
            positive_int(v) for v in in_features):
        if len(in_features) == 1:
            return in_features[0]
        return ExampleShape(in_features)
    raise ValueError(f"in_features must be a positive int or a tuple of positive ints "
                     f"(C, L) / (C, H, W), got {in_features!r}")


def check_std(name: str, value, *, allow_none: bool = False) -> float | Tensor | None:
    """Validate a non-negative finite std-like hyperparameter.

    A real number is returned as a float. A 0-d floating tensor is returned as is (so
    gradients of the kernel reach it when it requires grad; see `std_value`).
    """
    if value is None and allow_none:
        return None
    if isinstance(value, Tensor):
        if value.ndim != 0 or not value.dtype.is_floating_point:
            raise TypeError(f"{name} given as a tensor must be a 0-d floating tensor, got "
                            f"shape {tuple(value.shape)} and dtype {value.dtype}")
        v = float(value.detach())
        if not (v >= 0.0 and v < float("inf")):
            raise ValueError(f"{name} must be finite and >= 0, got {v}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (value >= 0.0 and value < float("inf")):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def shares_memory(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` (or views of one another) use the same storage. (Under
    torch.compile, which cannot trace storages and functionalizes in-place writes
    anyway: whether they are the same tensor.)"""
    if torch.compiler.is_compiling():
        return a is b
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def set_example_diagonal(t: Tensor, cov: Tensor, own: bool) -> Tensor:
    """``t`` with its example diagonal set to the variances ``cov`` ((n, ...) -> [i, i]).

    In place when ``own`` (the caller may overwrite ``t``) and nothing needs its graph;
    out of place (``diagonal_scatter``, differentiable) under autograd, where ``t`` may be
    saved for a backward or be the output of a custom Function.
    """
    src = cov.movedim(0, -1)
    if torch.is_grad_enabled() and (t.requires_grad or cov.requires_grad):
        return torch.diagonal_scatter(t, src, 0, 0, 1)
    t = t if own else t.clone()
    example_diagonal(t).copy_(src)
    return t


class ActivationModule(nn.Module):
    """Finite-network counterpart of an `Activation` spec: applies ``spec.fn`` elementwise."""

    def __init__(self, spec: Activation):
        super().__init__()
        self.spec = spec

    def forward(self, x: Tensor) -> Tensor:
        return self.spec.fn(x)

    @property
    def remasks(self) -> bool:
        """Whether outputs at absent positions are zeroed (see `Activation.remasks`)."""
        return self.spec.remasks

    def extra_repr(self) -> str:
        return repr(self.spec)


class Activation(Layer):
    """An elementwise nonlinearity φ.

    Subclasses define ``fn(x)`` (the torch function, used by the finite module) and
    ``dual(var1, cov, var2, need_dot)``, which returns

      T    = E[φ(u) φ(v)]     and   Tdot = E[φ'(u) φ'(v)]  (None unless need_dot),

    for (u, v) ~ N(0, [[var1, cov], [cov, var2]]), elementwise with broadcasting.
    The kernel map is then nngp' = T, ntk' = ntk · Tdot, and the variances map through
    T(var, var, var).
    """

    #: Whether φ(z) is again a zero-mean Gaussian process (only the identity).
    preserves_gaussian = False
    #: positively homogeneous of degree 1 (u φ'(u) = φ(u)): maps LayerNorm γ's NTK term
    homogeneous = False
    #: Whether masked inputs (``mask_constant``) have their covariances at absent
    #: positions set to 0 after this activation, as neural-tangents' ``remask_kernel``
    #: does for the activations with φ(0) ≠ 0 or not positively homogeneous (Erf, Sin,
    #: Cos, Exp, Gaussian, Rbf, ExpNormalized, Hermite, Elementwise); others keep them.
    remasks = False

    def fn(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor,
             need_dot: bool) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def kernel_map(self, k: Kernel) -> Kernel:
        if isinstance(k, tuple):
            raise ValueError(f"{type(self).__name__} got {len(k)} parallel branches; "
                             "combine them first with FanInSum() or FanInConcat(), "
                             "or apply it per branch with parallel(...)")
        if k.gaussian is False and not self.preserves_gaussian:
            raise ValueError(
                f"{type(self).__name__} needs Gaussian pre-activations, but its input is the "
                "output of another activation (or a sum including one), whose channels are not "
                "Gaussian: put a Dense or Conv layer before it (neural-tangents refuses this "
                "too)")
        if k.mixed_channels and not self.preserves_gaussian:
            raise ValueError(
                f"{type(self).__name__} after Flatten or FanInConcat: the channels it gets have "
                "different covariances (one per former position, or per joined stream) and the "
                "kernel tracks only their mean, which a nonlinearity cannot act on; put the "
                "activation before Flatten (the network is the same: an elementwise function "
                "commutes with Flatten), apply it per stream before FanInConcat, or put a "
                "Dense/Conv layer in between")
        own = None
        if k.ntk_own and not self.preserves_gaussian and k.ntk is not None:
            if not (self.homogeneous and k.own_coef is not None and k.own_nngp is k.nngp):
                raise ValueError(
                    f"{type(self).__name__} right after LayerNorm(affine=True): γ's NTK term "
                    "z(x)·z(x') is correlated with the activation's derivative "
                    "(E[u φ'(u) v φ'(v)] is not nngp·E[φ'φ']), which ntkit's kernel tracks "
                    "only for ReLU, LeakyReLU, ABReLU and Abs directly after it; put a Dense "
                    "or Conv layer between them (as in pre-LN transformer blocks), or use "
                    "LayerNorm(affine=False) (same NNGP; the NTK without γ, β)")
            own = k.own_coef
            k = k.replace(ntk=k.ntk - own * k.nngp)
        if k.x1_is_x2 and k.is_spatial:
            # Linear spatial maps (pooling, convolutions) may round the example diagonal of
            # nngp and the variances differently by an ulp; the arc-cosine would turn that
            # into a ~1e-8 angle. Make them equal again (in place: it is their true value).
            k = k.replace(nngp=set_example_diagonal(k.nngp, k.cov1, own=True))
        if k.same is not None:
            # Identical example pairs: likewise, after any map (x1's variances rule).
            k = k.replace(nngp=set_same(k.nngp, k.cov1, k.same))
        v1, v2 = k.var_pair()
        nngp, dot = self.dual(v1, k.nngp, v2, need_dot=k.ntk is not None)
        ntk = None if k.ntk is None else k.ntk * dot
        cov1, cov2 = k.map_covs(lambda c: self._self_map(k, c), nngp)
        if k.x1_is_x2:
            # Keep the example diagonal of nngp == cov bitwise (see kernel.input_kernel):
            # vectorized and scalar transcendental kernels may round differently by an ulp.
            nngp = set_example_diagonal(nngp, cov1, own=not shares_memory(nngp, k.nngp))
        if k.same is not None:
            if shares_memory(nngp, k.nngp):
                nngp = nngp.clone()
            nngp = set_same(nngp, cov1, k.same)
        # The identity keeps the stream odd in its source's weights; anything else does not
        # (the channels stay aligned with the same roots either way).
        keep = self.preserves_gaussian
        if own is not None:   # u φ'(u) = φ(u): E[u φ'(u) v φ'(v)] = nngp'
            ntk = ntk + own * nngp
        out = k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2,
                        source=k.source if keep else None,
                        gaussian=k.gaussian if keep else False)
        out = out.remask(k.mask1, k.mask2) if self.remasks and k.masked else out
        return out if own is None else out.replace(own_nngp=out.nngp)

    def _self_map(self, k: Kernel, cov: Tensor) -> Tensor:
        """Map an example's own covariance (cov1/cov2) through the activation."""
        if not k.full:
            return self.dual(cov, cov, cov, need_dot=False)[0]
        va, vb = k.self_var_pair(cov)
        out = self.dual(va, cov, vb, need_dot=False)[0]
        # A dual may return (a view of) its input (Identity does): the position diagonal
        # is written below, so ``out`` must own its memory, or cov1/cov2 would alias.
        out = out.clone() if shares_memory(out, cov) else out.contiguous()
        # Equal positions: the exact variance map, as on the diagonal path.
        v = position_diagonal(cov, len(k.spatial))
        P = v[0].numel()
        out.reshape(out.shape[0], P, P).diagonal(0, 1, 2).copy_(
            self.dual(v, v, v, need_dot=False)[0].reshape(out.shape[0], P))
        return out

    def make_module(self, in_features, generator, dtype):
        if is_streams(in_features):
            raise ValueError(f"{type(self).__name__} got parallel branches; use parallel(...) "
                             "or a FanIn layer first")
        return ActivationModule(self), in_features


def std_value(value: float | Tensor | None) -> float | None:
    """A std hyperparameter as a plain float (detached), for building finite networks."""
    return None if value is None else float(value.detach()) if isinstance(value, Tensor) \
        else value
