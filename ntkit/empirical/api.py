"""Public entry points: `empirical_ntk`, `empirical_nngp`; validation, tiling, cost model.

Tiling: x1 is cut into tiles of ``batch_size`` rows and x2 likewise (any sizes; the
last tile is simply shorter). Features of an x1 tile (Jacobians, cotangents, ...) are
computed once and contracted with those of every x2 tile, which are recomputed per x1
tile, so peak memory is that of two tiles' features plus one output block, whatever
n1 and n2. With ``x2=None`` only tile pairs on and above the diagonal are computed and
mirrored.

Memory budget: ``memory_budget=None`` (bytes) defaults to
`ntkit.engine.memory.default_memory_budget` of the parameters' device (a quarter of the
free GPU memory, or of the available RAM capped at 8 GiB). The automatic tile is the
largest whose estimated peak (the cost model of `estimate_costs`: two tiles' features,
the method's internals and one output block) stays under it; the method internals
(Jacobian parameter groups, NTK-vector-product chunks, structured routes) are sized
from the same budget. The (n1, n2) result is allocated in addition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ntkit.empirical.axes import OutputAxes, output_axes
from ntkit.empirical.common import (
    FunctionalModel,
    ParamSelection,
    as_model_input,
    check_independent,
    check_input_shape,
    contract,
    eval_mode,
    raise_if_mixing,
)
from ntkit.empirical.jacobian import JacobianMethod
from ntkit.empirical.ntk_vp import NtkVpMethod
from ntkit.empirical.projected import DEFAULT_PROJECTION, projected_gradients
from ntkit.empirical.side import side_nngp, side_ntk
from ntkit.empirical.structured import (
    StructuredMethod,
    StructuredPlan,
    choose_routes,
    discover,
    route_cost,
    route_mem,
)
from ntkit.engine.memory import check_memory_budget

METHODS = ("auto", "jacobian", "ntk_vp", "structured")


def _inputs(fm: FunctionalModel, x1, x2) -> tuple[Tensor, Tensor | None]:
    if x2 is x1:   # the same object: use the symmetric path
        x2 = None
    x1 = as_model_input(x1, "x1", fm.dtype, fm.device)
    if x2 is not None:
        x2 = as_model_input(x2, "x2", fm.dtype, fm.device)
        if x1.shape[1:] != x2.shape[1:]:
            raise ValueError(f"x1 and x2 must have the same feature shape, got "
                             f"{tuple(x1.shape[1:])} and {tuple(x2.shape[1:])}")
        if x1.dtype != x2.dtype:
            raise TypeError(f"x1 and x2 have different dtypes ({x1.dtype}, {x2.dtype})")
    # One example through the model first, so that a wrong input shape is reported
    # against the argument and the first layer, not as a matmul deep in a method.
    check_input_shape(fm, x1, "x1")
    return x1, x2


def _check_batch_size(batch_size) -> None:
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")


def _costs(fm: FunctionalModel, plan: StructuredPlan | None, n1: int, n2: int,
           traced: bool, budget: int) -> dict[str, tuple[float, float]]:
    """Rough (FLOPs, peak bytes) of each method for one n1 × n2 block (see `estimate_costs`)."""
    k, P = fm.k, fm.n_params
    item = fm.sel[fm.names[0]].element_size()
    direct_P = P if plan is None else sum(fm.sel[n].numel() for n in plan.direct)
    F = (0 if plan is None else plan.flops) + 2 * direct_P + 1
    A = (0 if plan is None else plan.act_entries) or P
    kk = k if traced else k * k
    out = n1 * n2 * kk
    costs = {
        # k reverse passes per example (~3F each with weight gradients) + contraction
        "jacobian": ((n1 + n2) * k * 3 * F + n1 * n2 * kk * P,
                     ((n1 + n2) * k * P + out) * item),
        # n1·k VJPs, then n1·k JVPs over the whole x2 block
        "ntk_vp": (n1 * k * 3 * F + n1 * k * n2 * 3 * F,
                   (min(n1, 8) * k * (P + n2 * A) + out) * item),
    }
    if plan is not None:
        choose_routes(plan, n1, n2, k, traced, budget // item)
        n_bias = sum(fm.sel[b].numel() for b in plan.biases)
        # The cotangent pass skips the structured weights' gradients: ~2F per unit.
        costs["structured"] = (
            (n1 + n2) * (F + k * 2 * F) + route_cost(plan, n1, n2, k, traced)
            + n1 * n2 * kk * (direct_P + n_bias),
            ((n1 + n2) * k * (A + direct_P + n_bias) + route_mem(plan, n1, n2, k, traced)
             + out) * item)
    return costs


def estimate_costs(model: nn.Module, x1: Any, x2: Any = None, *, trace_outputs: bool = True,
                   params: ParamSelection = None, memory_budget: int | None = None
                   ) -> dict[str, tuple[float, float]]:
    """The cost model behind ``method="auto"``: {method: (FLOPs, peak bytes)}, untiled.

    F (forward FLOPs per example) is taken as the FLOPs of the linear/conv calls plus 2
    per other parameter entry; activations as those calls' inputs and outputs. Good
    enough to rank the methods, not to predict times. ``memory_budget`` (bytes; None:
    the device default) sets the structured method's routes.
    """
    fm = FunctionalModel(model, params)
    budget = check_memory_budget(memory_budget, fm.device)
    x1, x2 = _inputs(fm, x1, x2)
    with eval_mode(model):
        plan = _discover(fm, x1)
    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    return _costs(fm, plan, x1.shape[0], n2, bool(trace_outputs), budget)


def _discover(fm: FunctionalModel, x: Tensor) -> StructuredPlan | None:
    """The structured plan (and ``fm.k``); None if tracing fails (then no "structured")."""
    try:
        return discover(fm, x)
    except Exception:  # noqa: BLE001 - structure discovery is an optimization only
        pass
    try:
        fm.probe(x)   # the model's own errors surface here, untraced
    except (RuntimeError, ValueError) as e:
        raise_if_mixing(fm, x, e)
        raise
    return None


def _auto_tile(fm: FunctionalModel, plan, method: str, n1: int, n2: int, traced: bool,
               budget: int) -> int:
    """Largest tile whose estimated peak memory stays under ``budget`` (at least 1)."""
    lo, hi = 1, max(n1, n2)
    if _costs(fm, plan, min(hi, n1), min(hi, n2), traced, budget)[method][1] <= budget:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _costs(fm, plan, min(mid, n1), min(mid, n2), traced, budget)[method][1] <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _resolve_axes(fm: FunctionalModel, trace_outputs, trace_axes, diagonal_axes
                  ) -> bool | OutputAxes:
    """True (flat trace), False (flat (n1, n2, k, k)) or the neural-tangents reduction.

    Needs ``fm.k`` / ``fm.out_shape`` (after `FunctionalModel.probe`). Axes that amount to a
    flat form (all output axes traced; one output axis, untraced) take the flat path, so
    its numbers are those of ``trace_outputs``.
    """
    if trace_axes is None and diagonal_axes is None:
        return True if trace_outputs is None else bool(trace_outputs)
    if trace_outputs is not None:
        raise ValueError("pass either trace_outputs= (flat shorthand) or trace_axes=/"
                         "diagonal_axes= (neural-tangents' axes), not both")
    spec = output_axes(fm.out_shape, (-1,) if trace_axes is None else trace_axes,
                       () if diagonal_axes is None else diagonal_axes)
    if spec.all_traced:
        return True
    if spec.flat_untraced:
        return False
    return spec


def _make_method(name: str, fm: FunctionalModel, traced, tile: int, plan, budget: int):
    if name == "jacobian":
        return JacobianMethod(fm, traced, tile, budget)
    # The other methods produce flat blocks; an axes reduction is applied to those
    traced = traced if isinstance(traced, bool) else False
    if name == "ntk_vp":
        act = plan.act_entries if plan is not None and plan.act_entries else None
        return NtkVpMethod(fm, traced, tile, budget, act_entries=act)
    choose_routes(plan, tile, tile, fm.k, traced, budget // fm.sel[fm.names[0]]
                  .element_size())
    return StructuredMethod(fm, traced, plan)


def _features(method, fm: FunctionalModel, x: Tensor):
    try:
        feats = method.features(x)
    except (RuntimeError, ValueError) as e:
        # Per-example evaluation of a batch-mixing model often fails outright
        # (e.g. batch norm with one example); say so rather than show the internal error.
        raise_if_mixing(fm, x, e)
        raise
    check_independent(fm, x, feats.out)
    return feats


def _tiles(n: int, tile: int) -> list[slice]:
    return [slice(s, min(s + tile, n)) for s in range(0, n, tile)]


def empirical_ntk(model: nn.Module, x1: Any, x2: Any = None, *, method: str = "auto",
                  trace_outputs: bool | None = None, trace_axes: Any = None,
                  diagonal_axes: Any = None, params: ParamSelection = None,
                  batch_size: int | None = None, progress: bool = False,
                  memory_budget: int | None = None, projection_dim: int | None = None,
                  seed: int | None = None, projection: str | None = None,
                  pattern: Any = None, mask_constant: Any = None) -> Tensor:
    """Empirical neural tangent kernel Θ(x1, x2) = J(x1) J(x2)ᵀ of a finite network.

    J(x) is the per-example Jacobian of the model's outputs (flattened and, for tuple/dict
    outputs, concatenated: k output units per example) with respect to the selected
    parameters, at their current values, with the model in eval mode (restored after).
    The model's rows must not interact (no batch statistics): every tile's first
    ``CHECK_ROWS`` rows are also run as one batch and compared with the per-example
    results, and a mixing model raises ValueError. Unlike neural-tangents, which
    returns one kernel per output of a tuple-output model, the outputs are concatenated,
    so cross-output blocks are included.

    Args:
      model: any ``nn.Module`` mapping a batch (n, ...) to outputs with the batch on axis 0.
      x1: (n1, ...) inputs; floating inputs are cast to the parameters' dtype (float64
        models compute in float64), integer inputs are passed unchanged.
      x2: (n2, ...) inputs with the same feature shape, or None for x2 = x1 (symmetric:
        each tile pair is computed once).
      method: "jacobian" (Jacobian contraction, the reference), "ntk_vp" (NTK-vector
        products), "structured" (structured derivatives for weights and biases used by
        ``F.linear``, ``matmul``/``@`` and ``F.conv1d``/``F.conv2d``, i.e. nn.Linear and
        nn.Conv1d/2d and hand-written equivalents, possibly scaled or transposed; Jacobian
        contraction for the other parameters) or "auto" (the cheapest by the cost model
        `estimate_costs`; in practice "structured" whenever some parameter is a
        linear/conv weight). Costs, for n1 × n2 examples, k outputs, P parameters, F
        forward FLOPs per example:

        - jacobian:   time O((n1+n2)·k·F + n1·n2·k·P), memory O(tile·k·P);
        - ntk_vp:     time O(n1·k·n2·F), memory O(tile·k·(P + tile·activations));
        - structured: time O((n1+n2)·k·F + n1·n2·k·Σ_dense (c+k·o)), memory
          O(tile·k·activations) (+ Jacobians of non-structured parameters).

        With untraced outputs, replace k by k² in the n1·n2 terms.
      trace_outputs: shorthand over the flattened outputs. True (or None, the default,
        when no axes are given): (n1, n2), the mean over all k output units u of
        J_u(x1)·J_u(x2), i.e. neural-tangents' ``trace_axes`` = every non-batch axis
        (``(-1,)`` for (n, k) outputs); False: the full (n1, n2, k, k) block over the
        flattened units (neural-tangents' ``trace_axes=()`` for (n, k) outputs).
      trace_axes, diagonal_axes: neural-tangents' axes of the output (n, *out); negative
        axes count from the end. Axis 0, the batch, pairs x1[i] with x2[i] only (same n):
        in ``diagonal_axes`` the result starts with one n axis instead of (n1, n2), in
        ``trace_axes`` those n pairs are averaged (the method computes each tile's
        (tile, tile) block and keeps its diagonal).
        Traced axes are averaged over (only equal entries, sum / size), diagonal axes
        are kept once (equal entries, not summed), the other axes appear twice, the x1
        entry before the x2 entry: outputs (n, C, L) give (n1, n2, C, C) for
        ``trace_axes=(-1,)``, (n1, n2, C, C, L, L) for ``trace_axes=()`` and (n1, n2, C,
        L, L) for ``trace_axes=(), diagonal_axes=(1,)``. Passing either one switches to
        these semantics, with neural-tangents' defaults ``(-1,)`` and ``()`` for the
        other; not with ``trace_outputs``, nor for tuple/dict outputs. Unlike
        neural-tangents the default (neither given) traces every output axis, so a
        model with (n, C, L) outputs gives (n1, n2) unless ``trace_axes=(-1,)`` is
        passed. "jacobian" and projections contract the reduced axes directly;
        "ntk_vp" and "structured" compute each tile pair's flat (k, k) block, then reduce
        it (their cost is that of ``trace_outputs=False``).
      params: which parameters count: None (all with ``requires_grad``), names, the
        parameter tensors themselves, or a predicate ``(name, param) -> bool``.
      batch_size: rows per tile of x1 and x2 (any positive int; no divisibility needed).
        None picks the largest tile whose estimated memory is under ``memory_budget``.
      progress: show a tqdm progress bar over tile pairs.
      memory_budget: bytes the tiles and the method internals aim to stay under; None:
        `ntkit.engine.memory.default_memory_budget` of the parameters' device. The result
        does not depend on it (up to rounding of differently blocked products).
      projection_dim: None (exact kernel) or k: the unbiased random-projection estimate
        Φ(x1) Φ(x2)ᵀ with Φ = `ntkit.empirical.projected_gradients` (per-example Jacobians
        times a seeded (P, k) matrix R drawn block by block, never held in full; relative
        error ∝ k^(−1/2)). ``method`` must then be "auto"; ``batch_size`` is the number of
        examples whose Jacobians are held at once. See `ntkit.empirical.projected`.
      seed: selects R (only with ``projection_dim``; None: 0). The same seed gives the
        same R for x1 and x2 and across calls.
      projection: "countsketch" (None, the default, with ``projection_dim``: the
        fastest at equal error, see `ntkit.empirical.projected.DEFAULT_PROJECTION`),
        "gaussian" (the default before ntkit 0.2) or "rademacher". Only with
        ``projection_dim``.

    Returns:
      (n1, n2) or (n1, n2, k, k) tensor in the parameters' dtype, or with axes the shape
      described under ``trace_axes``.

    ``pattern=(pattern1, pattern2)``: per-example graph patterns passed to the model's
    forward (``model(x, pattern=p)``, as the modules built from `ntkit.layers.Aggregate`
    networks take them): x1's rows run with pattern1's rows, x2's with pattern2's
    (pattern2 None when x2 is None). Computed by the Jacobian contraction one example at a
    time (`ntkit.empirical.side`), with the flat ``trace_outputs`` forms only.
    ``mask_constant``: the padding value of masked inputs, passed to the forward
    (``model(x, mask_constant=c)``, as networks built from ntkit specs take it; see
    ``net.kernel(..., mask_constant=)``); computed the same way.

    Raises:
      ValueError: unknown method, empty parameter selection, empty batch, NaN/inf
        inputs, feature-shape mismatch, batch-mixing model, and inputs the model cannot
        take: one example of x1 runs through the model first, and a shape failure names
        the argument, its shape and what the first Linear/ConvNd layer expects, e.g.
        ``x1 has shape (96, 8), which the model cannot take: the model's first layer
        '0' is Linear(in_features=64): it expects inputs of shape (n, ..., 64).``
      TypeError: non-floating selected parameters, non-tensor inputs or outputs.

    Example:
      >>> model = nn.Sequential(nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 3))
      >>> x1, x2 = torch.randn(20, 8), torch.randn(5, 8)
      >>> empirical_ntk(model, x1, x2).shape                          # traced: (n1, n2)
      torch.Size([20, 5])
      >>> empirical_ntk(model, x1, x2, trace_outputs=False).shape     # (n1, n2, k, k)
      torch.Size([20, 5, 3, 3])
      >>> empirical_ntk(model, x1, projection_dim=512, seed=0).shape  # count-sketch estimate
      torch.Size([20, 20])
      >>> conv = nn.Sequential(nn.Conv1d(2, 16, 3, padding=1), nn.ReLU(), nn.Conv1d(16, 4, 3))
      >>> xs = torch.randn(6, 2, 10)                                   # outputs (6, 4, 8)
      >>> empirical_ntk(conv, xs, trace_axes=(-1,)).shape              # (n1, n2, C, C)
      torch.Size([6, 6, 4, 4])
      >>> empirical_ntk(conv, xs, trace_axes=(), diagonal_axes=(1,)).shape
      torch.Size([6, 6, 4, 8, 8])
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    _check_batch_size(batch_size)
    if pattern is not None or mask_constant is not None:
        return _with_pattern(side_ntk, model, x1, x2, pattern, trace_outputs,
                             (method != "auto" and method != "jacobian", trace_axes,
                              diagonal_axes, params, projection_dim, seed, projection),
                             mask_constant)
    if projection_dim is not None:
        if method != "auto":
            raise ValueError(f"projection_dim= computes projected gradients; method={method!r} "
                             "does not apply (leave method='auto')")
        return _projected_ntk(model, x1, x2, projection_dim, 0 if seed is None else seed,
                              DEFAULT_PROJECTION if projection is None else projection,
                              (trace_outputs, trace_axes, diagonal_axes), params, batch_size,
                              memory_budget)
    if seed is not None or projection is not None:
        raise ValueError("seed= and projection= only apply with projection_dim= (the exact "
                         "kernel is not random)")
    fm = FunctionalModel(model, params)
    budget = check_memory_budget(memory_budget, fm.device)
    x1, x2 = _inputs(fm, x1, x2)
    traced = _resolve_axes(fm, trace_outputs, trace_axes, diagonal_axes)
    with eval_mode(model):
        return _ntk(fm, x1, x2, method, traced, batch_size, progress, budget)


def _with_pattern(fn, model, x1, x2, pattern, trace_outputs, other: tuple,
                  mask_constant=None) -> Tensor:
    # Side inputs take the per-example Jacobian path: no other option applies there.
    if any(o not in (None, False) for o in other):
        raise ValueError("pattern= works with the flat trace_outputs forms only, as does "
                         "mask_constant= (method 'auto'/'jacobian', no trace_axes/"
                         "diagonal_axes, params, projection)")
    x1 = torch.as_tensor(x1)
    x2 = None if x2 is None else torch.as_tensor(x2)
    dtype = next(model.parameters()).dtype
    x1 = x1.to(dtype) if x1.is_floating_point() else x1
    x2 = x2.to(dtype) if x2 is not None and x2.is_floating_point() else x2
    with eval_mode(model):
        return fn(model, x1, x2, pattern, True if trace_outputs is None else trace_outputs,
                  mask_constant=mask_constant)


def _projected_ntk(model: nn.Module, x1, x2, k, seed, projection: str, axes: tuple,
                   params: ParamSelection, chunk: int | None, budget: int | None) -> Tensor:
    """Φ(x1) Φ(x2)ᵀ from `projected_gradients`, reduced over outputs as `empirical_ntk`."""
    # Same checks as the exact kernel: input shapes against the model, x1 against x2.
    fm = FunctionalModel(model, params)
    with eval_mode(model):
        _inputs(fm, x1, x2)
    traced = _resolve_axes(fm, *axes)
    kw = dict(seed=seed, projection=projection, params=params, chunk_size=chunk,
              memory_budget=budget)
    f1 = projected_gradients(model, x1, k, **kw)
    if x2 is not None and x2 is not x1:
        _same_n(x1, x2, traced)
        return _on_batch(contract(f1, projected_gradients(model, x2, k, **kw), traced), traced)
    out = contract(f1, f1, traced)
    # a Gram matrix: make it exactly symmetric (BLAS rounding is not)
    return _on_batch(0.5 * (out + _swap(out, traced)), traced)


def _on_batch(full: Tensor, traced) -> Tensor:
    """A full (n, n, ...) kernel reduced over the batch axis if that axis was chosen."""
    if isinstance(traced, bool) or traced.batch is None:
        return full
    pairs = traced.pairs(full)
    return pairs if traced.batch == "diag" else pairs.mean(0)


def _same_n(x1, x2, traced) -> None:
    if (not isinstance(traced, bool) and traced.batch is not None and x2 is not None
            and len(x1) != len(x2)):
        where = "trace_axes" if traced.batch == "trace" else "diagonal_axes"
        raise ValueError(f"the batch axis 0 is in {where}, which pairs x1[i] with x2[i]: x1 "
                         f"and x2 need the same number of examples, got {len(x1)} and "
                         f"{len(x2)}")


def _swap(block: Tensor, traced) -> Tensor:
    """Θ(x2, x1) from a block Θ(x1, x2) of the given layout."""
    if isinstance(traced, bool):
        return block.transpose(0, 1) if traced else block.permute(1, 0, 3, 2)
    return traced.swap(block)


def _ntk(fm: FunctionalModel, x1: Tensor, x2: Tensor | None, method: str,
         traced: bool | OutputAxes, batch_size: int | None, progress: bool, budget: int
         ) -> Tensor:
    sym = x2 is None
    n1 = x1.shape[0]
    n2 = n1 if sym else x2.shape[0]
    plan = _discover(fm, x1)
    if method == "structured" and plan is None:
        discover(fm, x1)   # raises the discovery error
    flat = traced is True   # for the cost model, an axes reduction counts as untraced
    if method == "auto":
        costs = _costs(fm, plan, n1, n2, flat, budget)
        method = min(costs, key=lambda m: _score(costs[m], budget))
    tile = batch_size if batch_size is not None else _auto_tile(fm, plan, method, n1, n2,
                                                                  flat, budget)
    impl = _make_method(method, fm, traced, min(tile, max(n1, n2)), plan, budget)
    # Methods other than "jacobian" give flat blocks: reduce them here.
    reduce = traced.reduce if isinstance(traced, OutputAxes) and method != "jacobian" else None

    if isinstance(traced, OutputAxes) and traced.batch is not None:
        _same_n(x1, x2, traced)
        return _ntk_batch(fm, impl, x1, x1 if sym else x2, traced, tile, reduce, progress,
                          method)
    k = fm.k
    if isinstance(traced, OutputAxes):
        shape = traced.shape(n1, n2)
    else:
        shape = (n1, n2) if traced else (n1, n2, k, k)
    result = torch.empty(shape, dtype=fm.dtype, device=fm.device)
    t1 = _tiles(n1, tile)
    t2 = t1 if sym else _tiles(n2, tile)
    pairs = [(i, j) for i in range(len(t1)) for j in range(len(t2)) if not sym or j >= i]
    bar = _progress(len(pairs), progress, f"empirical_ntk[{method}]")
    xs2 = x1 if sym else x2
    current = None
    for i, j in pairs:
        if current is None or current[0] != i:
            current = (i, _features(impl, fm, x1[t1[i]]))
        f1 = current[1]
        f2 = f1 if sym and i == j else _features(impl, fm, xs2[t2[j]])
        block = impl.contract(f1, f2)
        if reduce is not None:
            block = reduce(block)
        result[t1[i], t2[j]] = block
        if sym and i != j:
            result[t2[j], t1[i]] = _swap(block, traced)
        del f2, block
        bar.update(1)
    bar.close()
    return result


def _ntk_batch(fm: FunctionalModel, impl, x1: Tensor, x2: Tensor, axes: OutputAxes,
               tile: int, reduce, progress: bool, method: str) -> Tensor:
    """The batch axis in trace/diagonal axes: only the pairs (x1[i], x2[i]), tile by tile
    (each tile's (b, b) block is computed and its diagonal kept)."""
    n = x1.shape[0]
    result = torch.zeros(axes.shape(n, n), dtype=fm.dtype, device=fm.device)
    tiles = _tiles(n, tile)
    bar = _progress(len(tiles), progress, f"empirical_ntk[{method}]")
    for t in tiles:
        f1 = _features(impl, fm, x1[t])
        f2 = f1 if x2 is x1 else _features(impl, fm, x2[t])
        block = impl.contract(f1, f2)
        pairs = axes.pairs(block if reduce is None else reduce(block))
        if axes.batch == "diag":
            result[t] = pairs
        else:
            result += pairs.sum(0)
        bar.update(1)
    bar.close()
    return result if axes.batch == "diag" else result / n


def _score(cost: tuple[float, float], budget: int) -> float:
    flops, mem = cost
    # Memory beyond the budget means tiling and recomputation: penalize proportionally.
    return flops * max(1.0, mem / budget)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, on: bool, desc: str):
    if not on:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc)


def empirical_nngp(model: nn.Module, x1: Any, x2: Any = None, *,
                   trace_outputs: bool | None = None, trace_axes: Any = None,
                   diagonal_axes: Any = None, batch_size: int | None = None,
                   memory_budget: int | None = None, pattern: Any = None,
                   mask_constant: Any = None) -> Tensor:
    """Empirical NNGP kernel: the covariance of the model's outputs between x1 and x2.

    traced: (n1, n2) = f(x1)·f(x2) / k (mean over the k output units, as
    neural-tangents' ``trace_axes=(-1,)`` for (n, k) outputs); untraced: (n1, n2, k, k)
    outer products f_a(x1) f_b(x2). ``trace_axes`` / ``diagonal_axes``: neural-tangents'
    output axes, with the result layout described in `empirical_ntk` (e.g. outputs
    (n, C, L) and ``trace_axes=(-1,)``: (n1, n2, C, C), Σ_l f_cl(x1) f_c'l(x2) / L).
    Eval mode, output flattening and the batch-mixing check are as in
    `empirical_ntk`. Cost: one forward per example (two with the check) and
    O(n1·n2·k) (k² untraced); memory O(tile·activations) + the output.

    ``batch_size=None`` picks the rows per forward from ``memory_budget`` (bytes; None:
    the device default): `nngp_tile` rows, the activations of one example measured by
    tracing one forward. ``pattern``, ``mask_constant``: as in `empirical_ntk`.
    """
    _check_batch_size(batch_size)
    if pattern is not None or mask_constant is not None:
        return _with_pattern(side_nngp, model, x1, x2, pattern, trace_outputs,
                             (trace_axes, diagonal_axes), mask_constant)
    fm = FunctionalModel(model, _all_params(model))
    budget = check_memory_budget(memory_budget, fm.device)
    x1, x2 = _inputs(fm, x1, x2)
    traced = _resolve_axes(fm, trace_outputs, trace_axes, diagonal_axes)
    with eval_mode(model):
        plan = _discover(fm, x1)   # runs fm.probe (errors surface there), measures activations
        sym = x2 is None
        xs2 = x1 if sym else x2
        n = max(x1.shape[0], xs2.shape[0])
        act = plan.act_entries if plan is not None and plan.act_entries else fm.n_params
        item = fm.sel[fm.names[0]].element_size()
        tile = batch_size or nngp_tile(n, act, fm.k, item, budget)

        def outputs(x: Tensor) -> Tensor:
            chunks = []
            for s in _tiles(x.shape[0], tile):
                xt = x[s]
                try:
                    out = fm.per_example(xt)
                except (RuntimeError, ValueError) as e:
                    raise_if_mixing(fm, xt, e)
                    raise
                check_independent(fm, xt, out)
                chunks.append(out)
            return torch.cat(chunks)

        f1 = outputs(x1)
        f2 = f1 if sym else outputs(xs2)
        k = fm.k
        if isinstance(traced, OutputAxes):
            _same_n(f1, f2, traced)
            return _on_batch(traced.contract(f1[..., None], f2[..., None]), traced)
        if traced:
            return f1 @ f2.T / k
        return f1[:, None, :, None] * f2[None, :, None, :]


def nngp_tile(n: int, act_entries: int, k: int, item: int, budget: int) -> int:
    """Rows per forward of `empirical_nngp`: the most (≤ n, ≥ 1) whose activations and
    outputs, counted twice (the per-example forward and the batch-mixing check), fit
    ``budget`` bytes."""
    per_row = 2 * (act_entries + k) * item
    return int(max(1, min(n, budget // max(per_row, 1))))


def _all_params(model: nn.Module) -> Callable[[str, Tensor], bool] | None:
    # The NNGP needs no derivatives; any floating parameter (or none) will do to define
    # the dtype. A parameterless model still needs a dtype: handled by the fallback below.
    if any(p.dtype.is_floating_point for p in model.parameters()):
        return lambda n, p: p.dtype.is_floating_point
    raise ValueError("empirical_nngp needs a model with at least one floating parameter "
                     "(its dtype sets the compute dtype)")


__all__ = ["empirical_ntk", "empirical_nngp", "estimate_costs", "METHODS"]
