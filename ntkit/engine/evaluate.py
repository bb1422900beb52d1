"""Evaluate a layer spec's kernel map over (x1, x2) in tiles.

Each tile runs the whole kernel map on a block of example pairs and is written straight
into the output (a tensor, or any array such as an ``np.memmap``). With x2 = x1 only the
tiles on and above the diagonal are computed and mirrored. Tiles of any size work: the
last row/column of tiles is simply smaller.

Memory: a tile of t1 × t2 examples holds a few arrays of t1·t2·E entries, where E is
what each example pair stores at the widest layer (1 for fully-connected nets, |S| for
same-position spatial kernels, |S|² for full position-position ones, see
`ntkit.kernel`), plus the per-example covariances (t1 + t2)·E. The default tile is the
largest whose estimate stays under ``memory_budget`` (default: `ntkit.engine.memory`),
split between the worker threads; on a CPU it is also capped to stay near the caches
(`DEFAULT_TILE` rows for fully-connected nets, `CPU_TILE_BYTES` of working set for
spatial ones), since larger tiles there are slower, not faster.

Spatial nets map each example's own covariance chain once, not once per tile: a first
pass records every block's per-position variances after each layer (with x2 = x1 that
pass is the diagonal tiles themselves), and the other tiles replay them
(`ntkit.kernel.CovTrace`). On full position-position storage that halves the work at
large n (a tile used to map 2t own covariances for its t² pairs), and a single pair per
tile becomes the fastest CPU tile. The recorded variances, n · Σ_layers |S| entries, must
fit a quarter of the budget; otherwise, and with ``compile=True`` or a Dask ``client``,
tiles map their own covariances as before.

Outputs may be zarr arrays: their chunks then set the tiles, and each finished tile is
marked in the array's store so that ``resume=True`` computes only what an interrupted
run left (`ntkit.engine.storage`). Inputs may be memmaps or zarr arrays, read one tile's
rows at a time (`ntkit.engine.inputs.LazyBatch`). With ``client=`` the tiles run on a
Dask cluster (`ntkit.engine.distributed`). Tile operands are 64-byte aligned before use
(`ntkit.engine.inputs.aligned`), which makes each tile's bits a function of its rows
alone: resumed, distributed and in-RAM runs with the same tiles agree bitwise.
"""

from __future__ import annotations

import math
from collections import namedtuple
from functools import cache

import numpy as np
import torch
from torch import Tensor

from ntkit.engine.allocator import retain_freed_memory
from ntkit.engine.compiled import tile_function
from ntkit.engine.inputs import LazyBatch, aligned, as_pair, check_dtype, check_get
from ntkit.engine.memory import check_memory_budget
from ntkit.engine.pairs import identical_rows, pairs_in_tile
from ntkit.engine.storage import is_upper, is_zarr_array
from ntkit.engine.threads import torch_threads
from ntkit.kernel import CovTrace, Kernel, input_kernel, swap_examples
from ntkit.layers.base import any_full

# Square tiles of this many rows keep a tile's few live (tile, tile) float64 arrays in
# L2 cache on common CPUs; measured in benchmarks/bench_kernel.py.
DEFAULT_TILE = 256
# On a CPU, tiles whose working set exceeds the caches run memory-bound, and one big tile
# uses threads inside each op (fork/join barriers) instead of whole tiles per thread:
# measured on 2 cores, float32, 200 images 3×32×32, 8 conv layers + Flatten, 0.10 ms per
# entry with 16-image tiles against 0.40 ms with one 200-image tile; Myrtle-5, float64,
# 12 images, idle machine: 97 / 110 / 139 ms per entry with tiles of 2 / 4 / 6 images.
CPU_TILE_BYTES = 16 * 2**20
# Live arrays of a tile's size at the widest layer (nngp, ntk, the dual's temporaries,
# a padded copy): the factor of the memory estimate. Measured peak/estimate ≤ 1 in
# tests/engine/test_memory_budget.py.
LIVE_ARRAYS = 8


@cache
def _result_type(names: tuple[str, ...]):
    return namedtuple("Kernels", names)


def _check_out(out, names, shapes, dtype):
    if out is None:
        return {}
    if len(names) == 1 and not isinstance(out, dict):
        out = {names[0]: out}
    if not isinstance(out, dict):
        raise TypeError("out must be an array for a single kernel name, or a dict "
                        "name -> array for several")
    unknown = set(out) - set(names)
    if unknown:
        raise ValueError(f"out has arrays for names not requested in get: {sorted(unknown)}")
    for name, arr in out.items():
        if not isinstance(arr, (Tensor, np.ndarray)) and not is_zarr_array(arr):
            raise TypeError(f"out[{name!r}] must be a torch.Tensor, numpy or zarr array, "
                            f"got {type(arr).__name__}")
        if tuple(arr.shape) != shapes[name]:
            raise ValueError(f"out[{name!r}] has shape {tuple(arr.shape)}, "
                             f"expected {shapes[name]}")
        floating = (arr.dtype.is_floating_point if isinstance(arr, Tensor)
                    else np.dtype(arr.dtype).kind == "f")
        if not floating:
            raise TypeError(f"out[{name!r}] must be a floating array, got {arr.dtype}")
    return out


def _write(dst, rows: slice, cols: slice | None, value: Tensor) -> None:
    if not isinstance(dst, Tensor):  # numpy array, memmap or zarr array
        value = value.detach().cpu().numpy()
        if cols is None:
            dst[rows] = value
        else:
            dst[rows, cols] = value
    else:
        if cols is None:
            dst[rows] = value.to(dst.dtype)
        else:
            dst[rows, cols] = value.to(dst.dtype)


def evaluate(layer, x1, x2=None, *, get=("nngp", "ntk"), tile: int | None = None,
             dtype: torch.dtype = torch.float64, progress: bool = False, out=None,
             compile: bool = False, memory_budget: int | None = None, resume: bool = False,
             client=None):
    """See :meth:`ntkit.layers.base.Layer.kernel` for the user-facing contract."""
    dtype = check_dtype(dtype)
    get = check_get(get)
    same_object = x2 is x1
    if not isinstance(resume, bool):
        raise ValueError(f"resume must be True or False, got {resume!r}")
    # Memmaps and zarr arrays stay on disk and are read per tile (LazyBatch); in-RAM
    # inputs are converted once, as before.
    x1, x2 = as_pair(x1, x2, dtype, spatial=True, lazy=True)
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be a positive int, got {tile!r}")
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True or False, got {compile!r}")
    budget = check_memory_budget(memory_budget, x1.device)

    inputs_grad = torch.is_grad_enabled() and any(
        isinstance(x, Tensor) and x.requires_grad for x in (x1, x2))
    if isinstance(x1, LazyBatch):
        if x1.same_source(x2):
            x2 = None
    elif (isinstance(x2, Tensor) and x2.shape == x1.shape
          and (same_object or not inputs_grad) and torch.equal(x1, x2)):
        # Same batch passed twice: take the symmetric path (half the work, exact diagonal).
        # Not for equal but distinct batches that need gradients: d/dx1 of k(x1, x2) is
        # not d/dx of k(x, x).
        x2 = None
    sym = x2 is None
    # Identical examples in x1 and x2 (e.g. K(x, x[idx])): evaluated as the symmetric
    # path evaluates its diagonal (`ntkit.engine.pairs`). Not when x1 or x2 needs
    # gradients: the pair's entry then depends on x1 alone, not on x2.
    same = None
    if not sym and not inputs_grad and isinstance(x1, Tensor) and isinstance(x2, Tensor):
        same = identical_rows(x1, x2)
        same = same if same[0].numel() else None
    n1 = x1.shape[0]
    n2 = n1 if sym else x2.shape[0]
    names = ("nngp", "ntk", "cov1", "cov2") if get is None else (
        (get,) if isinstance(get, str) else get)
    track_ntk = "ntk" in names

    # Plan the storage (see ntkit.kernel) and probe one pair: this validates the network
    # against the inputs (rank, sizes) before any work, and gives the output's shape.
    full = x1.ndim > 2 and any_full(layer.requires_full(False))
    # The probe records its covariance chain: its steps' sizes price a `CovTrace`.
    probe_trace = CovTrace() if x1.ndim > 2 else None
    probe = layer.kernel_map(input_kernel(x1[:1], None, track_ntk=False, full=full,
                                          trace=probe_trace))
    if isinstance(probe, tuple):
        raise ValueError(f"the network ends in {len(probe)} parallel streams; merge them "
                         "with FanInSum() or FanInConcat()")
    needs_grad = inputs_grad or (torch.is_grad_enabled() and probe.nngp.requires_grad)
    if needs_grad:
        if out is not None:
            raise ValueError("out= cannot carry gradients: the inputs or the network's "
                             "hyperparameters require grad; call without out=, or under "
                             "torch.no_grad()")
        return _evaluate_grad(layer, x1, x2, get, names, track_ntk, full, tile, n1, n2,
                              budget, probe, same)
    pair_shape = tuple(probe.nngp.shape[2:])
    cov_shape = tuple(probe.cov1.shape[1:])
    shapes = {"nngp": (n1, n2, *pair_shape), "ntk": (n1, n2, *pair_shape),
              "cov1": (n1, *cov_shape), "cov2": (n2, *cov_shape)}
    out = _check_out(out, names, shapes, dtype)
    zouts = {name: arr for name, arr in out.items() if is_zarr_array(arr)}
    if resume and set(zouts) != set(names):
        raise ValueError("resume=True needs every requested kernel written to a zarr array "
                         f"(out= for each of {list(names)}); got zarr arrays for "
                         f"{sorted(zouts)}")
    if zouts:
        # The chunks dictate the tiles: each tile then rewrites whole chunks only, and the
        # tiling (hence every value) is the same on resume whatever the memory budget.
        from ntkit.engine.storage import chunk_tile

        ztile = chunk_tile(zouts, ("nngp", "ntk"))
        if tile is not None and tile != ztile:
            raise ValueError(f"tile={tile} differs from the zarr output's chunks ({ztile}); "
                             "leave tile=None or create the array with chunks of the tile")
        tile = ztile
    # Arrays that keep only the tiles on and above the diagonal get no mirror tiles.
    upper = frozenset(name for name, arr in zouts.items() if is_upper(arr))
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
            from ntkit.engine.distributed import shared_result

            got = shared_result(shapes[name], dtype)
            if got is not None:
                results[name], path = got
                shared[name] = (path, shapes[name], results[name].numpy().dtype.str)
                continue
        results[name] = torch.empty(shapes[name], dtype=dtype, device=device)

    # Map each example's own covariance chain once and replay it into the tiles (see
    # `ntkit.kernel.CovTrace`): spatial nets only (elsewhere those maps cost nothing), in
    # this process only (Dask tasks map their own), when the recorded variances fit a
    # quarter of the budget, and not when a full spatial cov1/cov2 is itself asked for.
    itemsize = torch.empty((), dtype=dtype).element_size()
    trace_bytes = 0 if probe_trace is None else (n1 + (0 if sym else n2)) * sum(
        st.numel() for st in probe_trace.steps) * itemsize
    use_trace = (probe_trace is not None and not compile and client is None
                 and trace_bytes <= budget // 4
                 and not (probe.full and bool({"cov1", "cov2"} & set(names))))
    if tile is None:
        # Worker threads hold a tile each: split the budget between as many as may run.
        workers_max = _workers(device, 2**31, compile)
        tile = auto_tile(x1, full, dtype, budget // workers_max, n1, n2, traced=use_trace)

    fn = tile_function(layer, track_ntk, sym_tile=False, compiled=compile, full=full)
    fn_diag = tile_function(layer, track_ntk, sym_tile=True, compiled=compile, full=full)

    b1 = tile_slices(n1, tile)
    b2 = b1 if sym else tile_slices(n2, tile)
    pairs = [(i, j) for i in range(len(b1)) for j in range(len(b2)) if not sym or j >= i]
    n_tiles = len(pairs)

    ledgers = []
    if zouts:
        from ntkit.engine.storage import TileLedger, fingerprint

        done = None
        fp0 = fingerprint(layer=layer, name="", names=names, x1=x1, x2=x2, sym=sym,
                          tile=tile, dtype=dtype)  # hashes the inputs once for all arrays
        for name, arr in zouts.items():
            ledger = TileLedger(arr)
            fp = {**fp0, "field": name, **({"upper": True} if name in upper else {})}
            have = ledger.start(fp, resume)
            done = have if done is None else done & have
            ledgers.append(ledger)
        pairs = [p for p in pairs if p not in done]

    def finish_tile(i, j, k):
        _store(results, k, b1[i], b2[j], i, j, sym, upper)
        for ledger in ledgers:  # only once every array holds the tile's chunks
            ledger.mark(i, j)

    pending = set(pairs)
    recs1: dict[int, list[Tensor]] = {}
    recs2: dict[int, list[Tensor]] = {}

    def record(task) -> None:
        # First pass of a traced run: each block's own covariance chain, recorded. With
        # x2 = x1 that is the diagonal tile itself (stored when pending); otherwise the
        # block against one example (2t + 1 maps for t rows), or, for t <= 2, its own
        # diagonal tile (t² + t maps; one example alone costs a single map).
        side, i = task
        xs, blocks, recs = (x1, b1, recs1) if side == 1 else (x2, b2, recs2)
        xr = aligned(xs[blocks[i]])
        tr = CovTrace()
        if sym or xr.shape[0] <= 2:
            k = fn_diag(xr, trace=tr)
            if sym and (i, i) in pending:
                finish_tile(i, i, k)
        else:
            fn(xr, xr[:1], trace=tr)
        recs[i] = tr.steps

    def run_tile(pair) -> None:
        i, j = pair
        r, c = b1[i], b2[j]
        xr = aligned(x1[r])
        tile_same = None if sym else pairs_in_tile(same, r, c)
        if sym and i == j:
            k = fn_diag(xr)
        elif tile_same is not None:  # maps its own covariances (the pairs need them)
            k = fn(xr, aligned(x2[c]), same=tile_same)
        elif use_trace:
            tr = CovTrace(recs1[i], (recs1 if sym else recs2)[j])
            k = fn(xr, aligned((x1 if sym else x2)[c]), trace=tr)
            if tr.pos != len(tr.steps):
                raise RuntimeError("internal error: a tile replayed fewer covariance maps "
                                   "than its recording made")
        else:
            k = fn(xr, aligned((x1 if sym else x2)[c]))
        finish_tile(i, j, k)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_tiles, initial=n_tiles - len(pairs), desc="kernel tiles",
                   unit="tile")

    def run_local(tasks, fn_task, counts) -> None:
        # counts(task): how many output tiles the task finishes (for the progress bar).
        def tick(task):
            if bar is not None and counts(task):
                bar.update(1)

        workers = _workers(device, len(tasks), compile)
        if workers == 1:
            for task in tasks:
                fn_task(task)
                tick(task)
        else:
            _run_parallel(fn_task, tasks, workers, tick)

    phases = [(pairs, run_tile, lambda t: True)]
    if use_trace:
        if sym:
            blocks = sorted({i for p in pairs for i in p})
            first = [(1, i) for i in blocks]
            phases = [(first, record, lambda t: (t[1], t[1]) in pending),
                      ([p for p in pairs if p[0] != p[1]], run_tile, lambda t: True)]
        else:
            first = ([(1, i) for i in sorted({i for i, _ in pairs})]
                     + [(2, j) for j in sorted({j for _, j in pairs})])
            phases = [(first, record, lambda t: False), (pairs, run_tile, lambda t: True)]
    try:
        # Spatial tiles allocate arrays of tens of MiB per layer: keep their freed pages
        # for the next tile instead of page-faulting fresh ones (see engine.allocator;
        # handing them back at the end costs ~0.1-0.3 s, so not for a single tile).
        with retain_freed_memory(device.type == "cpu" and x1.ndim > 2 and len(pairs) > 1
                                 and client is None):
            if client is not None:
                from ntkit.engine.distributed import run_tiles

                # One thread for the driver's copies: the workers may hold every core, and
                # a copy split over busy cores waits at OpenMP barriers (measured,
                # n = 6000 on 2 cores: 21.5 s with 2 threads against 6 s for the
                # cluster's compute).
                with torch_threads(1):
                    try:
                        for i, j, k in run_tiles(client, layer, x1, x2, pairs, b1, b2,
                                                 sym=sym, track_ntk=track_ntk, full=full,
                                                 names=names, shared=shared or None,
                                                 same=same):
                            finish_tile(i, j, k)
                            if bar is not None:
                                bar.update(1)
                    finally:
                        from ntkit.engine.distributed import release_shared

                        for path, _, _ in shared.values():
                            release_shared(path)
            else:
                for tasks, fn_task, counts in phases:
                    run_local(tasks, fn_task, counts)
    finally:
        if bar is not None:
            bar.close()

    for arr in results.values():
        if isinstance(arr, np.memmap):
            arr.flush()
    return _package(results, get, names, probe, sym)


def _evaluate_grad(layer, x1, x2, get, names, track_ntk, full, tile, n1, n2, budget, probe,
                   same=None):
    """The autograd path of `evaluate`: tiles in one thread, assembled with torch.cat.

    In-place writes of tiles into a preallocated output (the fast path) would chain one
    CopySlices node per tile, each backward cloning the whole gradient, and are not safe
    from several threads; concatenation keeps the backward one pass over the tiles.
    ``compile`` is ignored here (eager tiles; the gradients of the duals are custom
    autograd Functions, see `ntkit.dual.autodiff`).
    """
    sym = x2 is None
    if tile is None:
        tile = auto_tile(x1, full, x1.dtype, budget, n1, n2)
    fn = tile_function(layer, track_ntk, sym_tile=False, compiled=False, full=full)
    fn_diag = tile_function(layer, track_ntk, sym_tile=True, compiled=False, full=full)
    b1 = tile_slices(n1, tile)
    b2 = b1 if sym else tile_slices(n2, tile)
    tiles: dict[tuple[int, int], Kernel] = {}
    for i in range(len(b1)):
        for j in range(len(b2)):
            if sym and j < i:
                continue
            if sym and i == j:
                k = fn_diag(x1[b1[i]])
            else:
                k = fn(x1[b1[i]], (x1 if sym else x2)[b2[j]],
                       same=None if sym else pairs_in_tile(same, b1[i], b2[j]))
            _check_finite(k)
            tiles[i, j] = k
    d = len(probe.spatial)

    def block(name: str, i: int, j: int) -> Tensor:
        if sym and j < i:
            return swap_examples(getattr(tiles[j, i], name), d, tiles[j, i].full)
        return getattr(tiles[i, j], name)

    results = {}
    for name in names:
        if name in ("nngp", "ntk"):
            rows = [torch.cat([block(name, i, j) for j in range(len(b2))], dim=1)
                    for i in range(len(b1))]
            results[name] = torch.cat(rows, dim=0)
        elif name == "cov1":
            results[name] = torch.cat([tiles[i, i if sym else 0].cov1 for i in range(len(b1))])
        else:
            results[name] = torch.cat([tiles[0 if not sym else j, j].var2
                                       for j in range(len(b2))])
    return _package(results, get, names, probe, sym)


def tile_slices(n: int, tile: int) -> list[slice]:
    """Consecutive slices of ``tile`` examples covering range(n) (the last may be short)."""
    return [slice(i, min(i + tile, n)) for i in range(0, n, tile)]


def _package(results: dict, get, names: tuple[str, ...], probe: Kernel, sym: bool):
    """What `evaluate` returns for ``get``: a `Kernel`, one array, or a namedtuple."""
    if get is None:
        return Kernel(nngp=results["nngp"], ntk=results["ntk"], cov1=results["cov1"],
                      cov2=results["cov2"], channels=probe.channels, x1_is_x2=sym,
                      spatial=probe.spatial, full=probe.full)
    if isinstance(get, str):
        return results[get]
    return _result_type(names)(*(results[n] for n in names))


def pair_entries(x: Tensor, full: bool) -> int:
    """Entries one example pair stores at the input (the widest layer): 1, |S| or |S|²."""
    positions = math.prod(x.shape[2:]) if x.ndim > 2 else 1
    return positions**2 if full else positions


def auto_tile(x: Tensor, full: bool, dtype: torch.dtype, budget: int, n1: int,
              n2: int, traced: bool = False) -> int:
    """Largest square tile whose working set fits ``budget`` bytes (see module docstring).

    Working set ≈ LIVE_ARRAYS · itemsize · E · (t² + 2t) for E = `pair_entries`.
    ``traced``: the tiles replay a `CovTrace` instead of mapping their own covariances.
    """
    e = pair_entries(x, full) * torch.empty((), dtype=dtype).element_size() * LIVE_ARRAYS
    t = max(1, int(math.isqrt(max(budget // e, 1) + 1) - 1))
    if x.device.type == "cpu":
        # Cache-sized tiles (see CPU_TILE_BYTES). Untraced spatial tiles keep at least 2
        # examples a side: each also maps its examples' own covariances, 2t of them for
        # t² pairs, as costly as a pair each on full storage. Traced ones map none, and a
        # single pair is then fastest (Myrtle-5, float64, 8 images: 40 / 54 / 98 ms per
        # entry with tiles of 1 / 2 / 4, against 72 ms untraced with 2).
        floor = 1 if traced else 2
        cap = DEFAULT_TILE if x.ndim == 2 else max(floor, math.isqrt(CPU_TILE_BYTES // e))
        t = min(t, cap)
    return max(1, min(t, max(n1, n2)))


def _workers(device: torch.device, n_tiles: int, compiled: bool) -> int:
    if device.type != "cpu" or compiled or n_tiles < 2:
        return 1
    return max(1, min(torch.get_num_threads(), n_tiles))


def _run_parallel(run_tile, pairs, workers: int, tick) -> None:
    """Tiles in parallel threads, each op single-threaded.

    A tile's ops are small (a (256, 256) block), so intra-op threading spends its time in
    fork/join barriers, and on a busy machine a barrier waits for a descheduled core
    (measured: 10-25× slower with 2 threads on a loaded 2-core box). Whole tiles per
    thread need no barrier; torch releases the GIL inside each op. Tiles write disjoint
    blocks of the output, so no locking is needed.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ntkit-tile")
    try:
        with torch_threads(1):
            futures = {pool.submit(run_tile, p): p for p in pairs}
            for f in as_completed(futures):
                if f.exception() is not None:
                    break
                tick(futures[f])
            for f in futures:
                if f.done() and f.exception() is not None:
                    raise f.exception()
    finally:
        # On error or Ctrl-C, drop queued tiles rather than finishing them.
        pool.shutdown(wait=True, cancel_futures=True)


def _store(results, k: Kernel, r: slice, c: slice, i: int, j: int, sym: bool,
           upper: frozenset = frozenset()) -> None:
    written = getattr(k, "written", ())  # fields a Dask worker stored (and checked)
    _check_finite(k)
    d = len(k.spatial)
    for name, arr in results.items():
        if name in written:
            continue
        if name in ("nngp", "ntk"):
            t = getattr(k, name)
            _write(arr, r, c, t)
            if sym and i != j and name not in upper:
                _write(arr, c, r, swap_examples(t, d, k.full))
        elif name == "cov1" and j == (i if sym else 0):
            _write(arr, r, None, k.cov1)
        elif name == "cov2" and i == 0:
            _write(arr, c, None, k.var2)


def _check_finite(k: Kernel) -> None:
    # A kernel map can overflow (e.g. Exp at huge norms); say so instead of returning inf/NaN.
    for name in ("nngp", "ntk"):
        t = getattr(k, name)
        if t is not None and not bool(torch.isfinite(t).all()):
            raise FloatingPointError(
                f"the {name} kernel overflowed or became NaN for some inputs (input norms too "
                "large for this activation/depth in this dtype?); try float64 or rescale inputs")
