"""Evaluate a layer spec's kernel map over (x1, x2): the engine's entry point.

``net.kernel(x1, x2, ...)`` calls `evaluate` (registered in `ntkit.kernel` by
``ntkit.engine``). One call runs three steps, each in its own module:

1. `ntkit.engine.plan`: validate, detect x2 = x1 and identical pairs, plan the storage,
   probe one example (which validates the network and gives the output's shape);
2. `ntkit.engine.schedule`: choose the tiles and run them (threads, covariance replay),
   or `ntkit.engine.distributed` on a Dask cluster;
3. `ntkit.engine.writers`: write each tile into the outputs (tensors, memmaps, zarr
   arrays, shared-memory files) and package what the call returns.

The autograd path (inputs or hyperparameters requiring grad) is `ntkit.engine.autograd`.

Outputs may be zarr arrays: their chunks then set the tiles, and each finished tile is
marked in the array's store so that ``resume=True`` computes only what an interrupted
run left (`ntkit.engine.storage`). Inputs may be memmaps or zarr arrays, read one tile's
rows at a time (`ntkit.engine.inputs.LazyBatch`). Tile operands are 64-byte aligned
before use (`ntkit.engine.inputs.aligned`), which makes each tile's bits a function of
its rows alone: resumed, distributed and in-RAM runs with the same tiles agree bitwise.
The recorded variances of a replayed covariance chain must fit a quarter of the budget;
otherwise, and with ``compile=True`` or a Dask ``client``, tiles map their own.
"""

from __future__ import annotations

import torch

import ntkit.dual.fused as fused_duals
from ntkit.engine import distributed, storage
from ntkit.engine.allocator import retain_freed_memory
from ntkit.engine.autograd import evaluate_grad
from ntkit.engine.compiled import tile_function
from ntkit.engine.memory import check_memory_budget
from ntkit.engine.plan import plan
from ntkit.engine.schedule import (
    CPU_TILE_BYTES,
    DEFAULT_TILE,
    LIVE_ARRAYS,
    TileScheduler,
    auto_tile,
    pair_entries,
    tile_slices,
    workers,
)
from ntkit.engine.threads import torch_threads
from ntkit.engine.writers import MaskCollector, check_out, flush, package, store_tile

__all__ = ["CPU_TILE_BYTES", "DEFAULT_TILE", "LIVE_ARRAYS", "auto_tile", "evaluate",
           "pair_entries", "tile_slices"]


def evaluate(layer, x1, x2=None, *, get=("nngp", "ntk"), tile: int | None = None,
             dtype: torch.dtype = torch.float64, progress: bool = False, out=None,
             compile: bool | str | None = None, memory_budget: int | None = None,
             resume: bool = False,
             client=None, pattern=None, mask_constant=None):
    """See :meth:`ntkit.layers.base.Layer.kernel` for the user-facing contract."""
    if not isinstance(resume, bool):
        raise ValueError(f"resume must be True or False, got {resume!r}")
    # compile (see ntkit.dual.fused): None -> the process default (fused duals unless
    # NTKIT_FUSED=0); "fused" -> fused duals; False -> eager; True or "whole" -> the whole
    # per-tile map compiled.
    if not (compile is None or isinstance(compile, bool) or compile in ("fused", "whole")):
        raise ValueError(f"compile must be None, True, False, 'fused' or 'whole', got "
                         f"{compile!r}")
    fuse = None if compile is None else compile == "fused"
    compile = compile is True or compile == "whole"
    with fused_duals.enabled(False if compile else fuse):  # the probe maps as the tiles do
        p = plan(layer, x1, x2, get, dtype=dtype, pattern=pattern,
                 mask_constant=mask_constant)
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be a positive int, got {tile!r}")
    x1, x2, sym, names, dtype = p.x1, p.x2, p.sym, p.names, p.dtype
    budget = check_memory_budget(memory_budget, x1.device)
    if p.needs_grad:
        if out is not None:
            raise ValueError("out= cannot carry gradients: the inputs or the network's "
                             "hyperparameters require grad; call without out=, or under "
                             "torch.no_grad()")
        return evaluate_grad(layer, p, tile, budget)
    n1, n2 = p.n1, p.n2
    shapes = p.shapes()
    out = check_out(out, names, shapes, dtype)
    zouts = {name: arr for name, arr in out.items() if storage.is_zarr_array(arr)}
    if resume and set(zouts) != set(names):
        raise ValueError("resume=True needs every requested kernel written to a zarr array "
                         f"(out= for each of {list(names)}); got zarr arrays for "
                         f"{sorted(zouts)}")
    if zouts:
        # The chunks dictate the tiles: each tile then rewrites whole chunks only, and the
        # tiling (hence every value) is the same on resume whatever the memory budget.
        ztile = storage.chunk_tile(zouts, ("nngp", "ntk"))
        if tile is not None and tile != ztile:
            raise ValueError(f"tile={tile} differs from the zarr output's chunks ({ztile}); "
                             "leave tile=None or create the array with chunks of the tile")
        tile = ztile
    # Arrays that keep only the tiles on and above the diagonal get no mirror tiles.
    upper = frozenset(name for name, arr in zouts.items() if storage.is_upper(arr))
    if upper and not sym:
        raise ValueError(f"out[{sorted(upper)[0]!r}] stores only the upper tiles of a "
                         "symmetric kernel: use it for net.kernel(x) without x2")

    device = x1.device
    results = {}
    shared: dict = {}  # name -> (path, shape, dtype) of results that Dask workers write
    for name in names:
        if name in out:
            results[name] = out[name]
            continue
        if client is not None and name in ("nngp", "ntk") and device.type == "cpu":
            got = distributed.shared_result(shapes[name], dtype)
            if got is not None:
                results[name], path = got
                shared[name] = (path, shapes[name], results[name].numpy().dtype.str)
                continue
        results[name] = torch.empty(shapes[name], dtype=dtype, device=device)

    # Map each example's own covariance chain once and replay it into the tiles (see
    # `ntkit.kernel.CovTrace`; for fully connected nets the maps are vectors, but each
    # costs a few small torch calls per layer and tile, as much as a fused tile pass), in
    # this process only (Dask tasks map their own), when the recorded variances fit a
    # quarter of the budget, and not when a full spatial cov1/cov2 is itself asked for.
    itemsize = torch.empty((), dtype=dtype).element_size()
    trace = p.probe_trace
    trace_bytes = 0 if trace is None else (n1 + (0 if sym else n2)) * sum(
        st.numel() for st in trace.steps) * itemsize
    use_trace = (trace is not None and not compile and client is None
                 and trace_bytes <= budget // 4
                 and not (p.probe.full and bool({"cov1", "cov2"} & set(names))))
    if tile is None:
        # Worker threads hold a tile each: split the budget between as many as may run.
        tile = auto_tile(x1, p.full, dtype, budget // workers(device, 2**31, compile), n1,
                         n2, traced=use_trace)

    fn = tile_function(layer, p.track_ntk, sym_tile=False, compiled=compile, full=p.full,
                       fused=fuse, mask_constant=p.mask_constant)
    fn_diag = tile_function(layer, p.track_ntk, sym_tile=True, compiled=compile, full=p.full,
                            fused=fuse, mask_constant=p.mask_constant)
    b1 = tile_slices(n1, tile)
    b2 = b1 if sym else tile_slices(n2, tile)
    pairs = [(i, j) for i in range(len(b1)) for j in range(len(b2)) if not sym or j >= i]
    n_tiles = len(pairs)

    ledgers = []
    if zouts:
        done = None
        # Hashes the inputs (and patterns) once.
        fp0 = storage.fingerprint(layer=layer, name="", names=names, x1=x1, x2=x2, sym=sym,
                                  tile=tile, dtype=dtype, pattern=p.pattern,
                                  mask_constant=p.mask_constant)
        for name, arr in zouts.items():
            ledger = storage.TileLedger(arr)
            fp = {**fp0, "field": name, **({"upper": True} if name in upper else {})}
            have = ledger.start(fp, resume)
            done = have if done is None else done & have
            ledgers.append(ledger)
        pairs = [q for q in pairs if q not in done]

    masks = MaskCollector(p.get is None and p.probe.masked, sym)
    # Marks a tile only once every array holds its chunks (fsync'ed first for durable
    # arrays, in a background thread; see ntkit.engine.storage).
    marker = storage.TileMarker(ledgers)

    def finish(i, j, k):
        masks.add(k, i, j)
        store_tile(results, k, b1[i], b2[j], i, j, sym, upper)
        marker.add(i, j)

    bar = None
    if progress:
        from tqdm.auto import tqdm  # optional dependency, imported on request

        bar = tqdm(total=n_tiles, initial=n_tiles - len(pairs), desc="kernel tiles",
                   unit="tile")

    def tick(n: int) -> None:
        if bar is not None:
            bar.update(n)

    try:
        # Spatial tiles allocate arrays of tens of MiB per layer: keep their freed pages
        # for the next tile instead of page-faulting fresh ones (see engine.allocator;
        # handing them back at the end costs ~0.1-0.3 s, so not for a single tile).
        with retain_freed_memory(device.type == "cpu" and x1.ndim > 2 and len(pairs) > 1
                                 and client is None):
            if client is not None:
                _run_on_dask(client, layer, p, pairs, b1, b2, shared, finish, tick)
            else:
                TileScheduler(x1, x2, b1, b2, pairs, fn, fn_diag, same=p.same,
                              use_trace=use_trace, finish=finish, tick=tick, device=device,
                              compiled=compile, pattern=p.pattern).run()
    except BaseException:
        try:
            marker.close()  # keep the tiles written before the failure
        except Exception:  # noqa: BLE001 - the run's own error is the one to report
            pass
        raise
    finally:
        if bar is not None:
            bar.close()
    marker.close()
    flush(results)
    return package(results, p.get, names, p.probe, sym, masks.masks(len(b1), len(b2)))


def _run_on_dask(client, layer, p, pairs, b1, b2, shared, finish, tick) -> None:
    # One thread for the driver's copies: the workers may hold every core, and a copy
    # split over busy cores waits at OpenMP barriers (measured, n = 6000 on 2 cores:
    # 21.5 s with 2 threads against 6 s for the cluster's compute).
    with torch_threads(1):
        try:
            for i, j, k in distributed.run_tiles(client, layer, p.x1, p.x2, pairs, b1, b2,
                                                 sym=p.sym, track_ntk=p.track_ntk,
                                                 full=p.full, names=p.names,
                                                 shared=shared or None, same=p.same,
                                                 pattern=p.pattern,
                                                 mask_constant=p.mask_constant):
                finish(i, j, k)
                tick(1)
        finally:
            for path, _, _ in shared.values():
                distributed.release_shared(path)
