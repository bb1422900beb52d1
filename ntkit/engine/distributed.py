"""Kernel tiles and kernel-vector products on a Dask cluster (``dask.distributed``).

``net.kernel(x1, x2, client=client)`` sends the inputs to the workers once
(``client.scatter``), submits one task per row block of tiles, and writes each block into
the result (or the ``out=`` array, zarr included) as it arrives. Each tile is computed by
the same per-tile function as on one process, in the same tiling, so the result is
bitwise equal to the single-process one for fully-connected nets. (Spatial nets: one
process replays each example's covariance chain into its tiles, `ntkit.kernel.CovTrace`,
while a task maps its own; the same formulas on the same numbers, equal to rounding.)
`dask_matvec` computes K(x, x) @ v blockwise on the workers without forming K.

Workers on the driver's machine write their tiles straight into the result: the driver
allocates it as a file in shared memory (``/dev/shm``, when it has room), each task maps
that file and stores its tiles and their mirrors there, and only small per-example fields
travel back. Sending the tiles instead cost the driver two copies of the matrix (the tile
and its mirror, on the same cores as the workers: +35 % over one process at n = 20k on 2
cores); a worker that cannot see the file (another machine) sends its tiles as before.
The file is unlinked when the call ends, leaving the result in the driver's memory; files
left by a driver that was killed are removed by the next call on that machine.

Any ``distributed.Client`` works. On one machine::

    from distributed import Client, LocalCluster
    client = Client(LocalCluster(n_workers=2, threads_per_worker=1))

(in a script, under ``if __name__ == "__main__":``: the workers are new processes that
import the script again)

On a real cluster, start a scheduler (``dask scheduler``, port 8786) and workers
(``dask worker tcp://scheduler:8786 --nthreads 1``, one per core or per GPU: each task
runs its tiles with one torch thread), on machines that have ntkit installed (the same
version: tasks are pickled functions of ``ntkit.engine``), then::

    from distributed import Client
    client = Client("tcp://scheduler:8786")
    K = net.kernel(x, get="ntk", client=client)

Inputs in RAM are scattered to every worker, so each must fit a worker's memory. Inputs
given as a memmap or zarr array travel by reference and every task reads its own rows:
the workers must then see the same file or store (a shared file system, or object
storage for zarr).

dask and distributed are optional (``pip install -e ".[scale]"``) and imported only here.
"""

from __future__ import annotations

import copy
import glob
import os
import shutil
import uuid
import weakref
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import torch
from torch import Tensor

from ntkit.engine.compiled import tile_function
from ntkit.engine.inputs import LazyBatch, aligned
from ntkit.engine.memory import default_memory_budget
from ntkit.engine.pairs import pairs_in_tile
from ntkit.engine.plan import plan, tile_patterns
from ntkit.engine.schedule import auto_tile, tile_slices
from ntkit.engine.threads import torch_threads
from ntkit.engine.writers import store_tile

# Scattered inputs per client, reused across calls (a solver calls dask_matvec with the
# same x every iteration): {client: [(token, future), ...]}, the most recent few kept.
_SCATTERED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SCATTER_KEEP = 4


def require_distributed():
    """Import ``distributed``, or raise ImportError saying how to install it."""
    try:
        import distributed
    except ImportError as e:
        raise ImportError('the Dask backend needs dask.distributed: pip install -e ".[scale]" '
                          "(or pip install 'dask[distributed]')") from e
    return distributed


def _check_client(client):
    distributed = require_distributed()
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    return distributed


def _portable(layer):
    # A layer used with compile=True caches torch.compile'd functions on itself; those do
    # not pickle, and workers evaluate eagerly anyway.
    if "_ntkit_compiled" in getattr(layer, "__dict__", {}):
        layer = copy.copy(layer)
        del layer.__dict__["_ntkit_compiled"]
    return layer


def _scatter(client, x):
    """A future of ``x`` on every worker, scattered once per (client, data)."""
    from dask.base import tokenize

    if isinstance(x, LazyBatch):
        data, token = x, None  # a reference to a file/store: small, not worth caching
    else:
        data = x.detach().cpu()
        token = tokenize(data.numpy())
        for tok, fut in _SCATTERED.get(client, []):
            if tok == token and fut.status == "finished":
                return fut
    fut = client.scatter(data, broadcast=True, hash=False)
    if token is not None:
        cached = _SCATTERED.setdefault(client, [])
        cached.append((token, fut))
        del cached[:-_SCATTER_KEEP]
    return fut


_MALLOC_TUNED = False


def _tune_malloc() -> None:
    """Undo, in this worker process, dask's MALLOC_TRIM_THRESHOLD_=65536.

    The nanny starts workers with that variable so that freed memory returns to the OS
    at once; but setting it also freezes glibc's mmap threshold at 128 KiB, so each of a
    tile's (256, 256) float64 temporaries (512 KiB) is mmap'ed, page-faulted and unmapped
    again. Measured on one row block of 8 tiles (depth-3 ReLU, 2-core box): 0.30 s per
    task as started by dask, 0.18 s with these thresholds raised (0.21-0.26 s in a plain
    process). The thresholds keep tile-sized blocks in the heap between tiles.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    from ntkit.engine.allocator import set_thresholds

    # mmap: glibc's dynamic maximum on 64-bit; trim: room for a row block's temporaries.
    # Not glibc: nothing to undo.
    set_thresholds(32 * 2**20, 256 * 2**20)


# ---- results in shared memory -------------------------------------------------------------

#: Where results shared with same-machine workers live (a RAM file system on Linux).
SHM_DIR = "/dev/shm"
_SHM_PREFIX = "ntkit-kernel-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_stale_shared() -> None:
    """Delete result files of drivers that died before unlinking them (kill -9)."""
    for path in glob.glob(os.path.join(SHM_DIR, _SHM_PREFIX + "*")):
        try:
            pid = int(os.path.basename(path)[len(_SHM_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            try:
                os.unlink(path)
            except OSError:
                pass


def shared_result(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[Tensor, str] | None:
    """A zero-filled result tensor backed by a new file in `SHM_DIR` that workers on this
    machine can map and write, and the file's path; None when there is no such file
    system or it has not room for the result (the caller then allocates in RAM)."""
    np_dtype = np.dtype(torch.empty((), dtype=dtype).numpy().dtype)
    nbytes = int(np.prod(shape)) * np_dtype.itemsize
    if nbytes == 0 or not os.path.isdir(SHM_DIR):
        return None
    _remove_stale_shared()
    try:
        if shutil.disk_usage(SHM_DIR).free < nbytes + nbytes // 10 + 2**26:
            return None
        path = os.path.join(SHM_DIR, f"{_SHM_PREFIX}{os.getpid()}-{uuid.uuid4().hex}")
        mm = np.memmap(path, dtype=np_dtype, mode="w+", shape=shape)
    except OSError:
        return None
    return torch.from_numpy(mm), path


def release_shared(path: str) -> None:
    """Unlink a `shared_result` file; the driver's tensor stays valid (its mapping holds
    the memory until the tensor is freed)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _open_shared(shared: dict) -> dict[str, Tensor] | None:
    """Worker side: the driver's shared results as tensors, or None if this worker cannot
    see them (another machine or file system)."""
    views = {}
    for name, (path, shape, dtype) in shared.items():
        try:
            mm = np.memmap(path, dtype=np.dtype(dtype), mode="r+", shape=tuple(shape))
        except (OSError, ValueError):
            return None
        views[name] = torch.from_numpy(mm)
    return views


# ---- kernel tiles ------------------------------------------------------------------------

def _row_block(layer, x1, x2, i: int, js: list[int], b1, b2, sym: bool, track_ntk: bool,
               full: bool, names: tuple[str, ...], shared: dict | None = None,
               same=None, pattern=None, mask_constant=None) -> dict:
    """Worker task: tiles (i, j) for j in js, exactly as `ntkit.engine.evaluate` does.

    Fields in ``shared`` (name -> (path, shape, dtype) of the driver's `shared_result`)
    are stored into that file here, with the same `store_tile` as one process (finiteness
    check, tile and mirror), when this worker can open it; "written" then lists them.
    Otherwise returns plain numpy arrays (which dask sends without pickling them:
    returning the tiles' tensors made the kernel 4.6× slower than one process at
    n = 8000), and only the fields the caller stores (``names``): "nngp"/"ntk" as one
    (rows, Σ cols, ...) block in the order of js; "cov1" of the tile that `store_tile` takes
    it from; "var2" per tile.
    """
    _tune_malloc()
    views = _open_shared(shared) if shared else None
    written = tuple(views) if views else ()
    with torch_threads(1):
        fn = tile_function(layer, track_ntk, sym_tile=False, compiled=False, full=full,
                           mask_constant=mask_constant)
        fn_diag = tile_function(layer, track_ntk, sym_tile=True, compiled=False, full=full,
                                mask_constant=mask_constant)
        xr = aligned(x1[b1[i]])
        other = x1 if sym else x2
        pair = {n: [] for n in ("nngp", "ntk") if n in names and n not in written}
        out: dict = {"cov1": None, "var2": [], "written": written}
        for j in js:
            diag = sym and i == j
            pat = tile_patterns(pattern, b1[i], None if diag else b2[j], sym)
            if diag:
                k = fn_diag(xr, same=pairs_in_tile(same, b1[i], b1[i]), pattern=pat)
            else:
                k = fn(xr, aligned(other[b2[j]]), same=pairs_in_tile(same, b1[i], b2[j]),
                       pattern=pat)
            if views:
                store_tile(views, k, b1[i], b2[j], i, j, sym)
            for n, parts in pair.items():
                parts.append(getattr(k, n).numpy())
            if "cov1" in names and j == (i if sym else 0):
                out["cov1"] = k.cov1.numpy()
            if "cov2" in names:
                out["var2"].append(k.var2.numpy())
            out["spatial"], out["full"] = k.spatial, k.full
            # The output masks (for a get=None Kernel; `ntkit.engine.writers.MaskCollector`).
            out["mask1"] = None if k.mask1 is None else k.mask1.numpy()
            out.setdefault("mask2", []).append(None if k.mask2 is None else k.mask2.numpy())
    for n, parts in pair.items():
        out[n] = np.concatenate(parts, axis=1)
    return out


def run_tiles(client, layer, x1, x2, pairs, b1, b2, *, sym: bool, track_ntk: bool,
              full: bool, names: tuple[str, ...], shared: dict | None = None,
              same=None, pattern=None,
              mask_constant=None) -> Iterator[tuple[int, int, SimpleNamespace]]:
    """Compute the tiles ``pairs`` on the cluster; yield (i, j, tile) as they come, the
    tile holding the fields of ``names`` (nngp, ntk, cov1, var2) plus spatial and full,
    and ``written``: the fields a worker already stored into the ``shared`` results
    (name -> (path, shape, dtype) of `shared_result` files), which the tile then lacks.
    ``same``: identical example pairs of x1 and x2 (`ntkit.engine.pairs`), or None.
    ``pattern``: the call's graph patterns (`ntkit.engine.plan.Plan.pattern`), or None.
    ``mask_constant``: the call's (validated) mask constant, or None.

    One task per row block i (all its pending tiles). Cancels what is left if the
    consumer stops early or a task fails.
    """
    distributed = _check_client(client)
    rows: dict[int, list[int]] = {}
    for i, j in pairs:
        rows.setdefault(i, []).append(j)
    if not rows:
        return
    fx1 = _scatter(client, x1)
    fx2 = None if x2 is None else _scatter(client, x2)
    layer = _portable(layer)
    futures = {client.submit(_row_block, layer, fx1, fx2, i, js, b1, b2, sym, track_ntk,
                             full, tuple(names), shared, same, pattern, mask_constant,
                             pure=False): i
               for i, js in rows.items()}
    try:
        for fut in distributed.as_completed(list(futures)):
            i = futures[fut]
            res = fut.result()
            start = 0
            for pos, j in enumerate(rows[i]):
                width = b2[j].stop - b2[j].start
                tile = SimpleNamespace(spatial=res["spatial"], full=res["full"], nngp=None,
                                       ntk=None, cov1=None, var2=None,
                                       written=res["written"])
                for n in ("nngp", "ntk"):
                    if n in res:
                        tile.__dict__[n] = torch.from_numpy(res[n][:, start:start + width])
                if res["cov1"] is not None and j == (i if sym else 0):
                    tile.cov1 = torch.from_numpy(res["cov1"])
                if res["var2"]:
                    tile.var2 = torch.from_numpy(res["var2"][pos])
                m1, m2 = res.get("mask1"), res.get("mask2", [None] * (pos + 1))[pos]
                tile.mask1 = None if m1 is None else torch.from_numpy(m1)
                tile.mask2 = None if m2 is None else torch.from_numpy(m2)
                start += width
                yield i, j, tile
            fut.release()
    finally:
        client.cancel([f for f in futures if not f.done()])


# ---- kernel-vector products ----------------------------------------------------------------

def _row_matvec(layer, x, v, rows: slice, tile: int, get: str, full: bool) -> np.ndarray:
    """Worker task: K(x[rows], x) @ v, one (rows, tile) kernel block at a time."""
    n = x.shape[0]
    track_ntk = get == "ntk"
    _tune_malloc()
    with torch_threads(1):
        fn = tile_function(layer, track_ntk, sym_tile=False, compiled=False, full=full)
        fn_diag = tile_function(layer, track_ntk, sym_tile=True, compiled=False, full=full)
        xr = aligned(x[rows])
        acc = torch.zeros(rows.stop - rows.start, v.shape[1], dtype=v.dtype)
        for c in tile_slices(n, tile):
            k = fn_diag(xr) if c == rows else fn(xr, aligned(x[c]))
            block = getattr(k, get)
            if not bool(torch.isfinite(block).all()):
                raise FloatingPointError(f"the {get} kernel overflowed or became NaN")
            acc += block @ v[c]
    return acc.numpy()


def dask_matvec(client, net, x, v, *, get: str = "ntk", tile: int | None = None,
                dtype: torch.dtype = torch.float64) -> Tensor:
    """K(x, x) @ v on a Dask cluster, without ever forming the (n, n) kernel K.

    Each task computes one block of rows of K, tile by tile, and multiplies it into v
    on its worker; only the (rows, k) products come back. x is scattered once per client
    and reused by later calls with the same data (a solver's iterations); v travels with
    every call.

    Args:
      client: a ``distributed.Client`` (see the module docstring for real clusters).
      net: a layer spec (e.g. ``ntkit.layers.serial(...)``) ending in one output per pair
        (a fully-connected readout or a flattened/pooled spatial one).
      x: (n, d) inputs (or channels first), a tensor, numpy array, memmap or zarr array.
      v: (n,) or (n, k) vector(s).
      get: "ntk" or "nngp".
      tile: rows and columns per kernel block (default: as `net.kernel` chooses).
      dtype: compute and result dtype (float64 by default).

    Returns:
      K(x, x) @ v, of v's shape, in ``dtype``. Diagonal blocks are the exactly symmetric
      ones of `net.kernel`; off-diagonal blocks K(x_r, x_c) are computed as such (not
      mirrored), so the product equals ``net.kernel(x, get=get) @ v`` to rounding.
    """
    _check_client(client)
    if get not in ("ntk", "nngp"):
        raise ValueError(f"get must be 'ntk' or 'nngp', got {get!r}")
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be a positive int, got {tile!r}")
    p = plan(net, x, None, get, dtype=dtype)
    x, dtype, full, probe = p.x1, p.dtype, p.full, p.probe
    n = x.shape[0]
    if isinstance(v, np.ndarray):
        v = torch.from_numpy(np.ascontiguousarray(v))
    if not isinstance(v, Tensor):
        raise TypeError(f"v must be a torch.Tensor or numpy array, got {type(v).__name__}")
    if not v.dtype.is_floating_point:
        raise TypeError(f"v must have a floating dtype, got {v.dtype}")
    if v.ndim not in (1, 2) or v.shape[0] != n:
        raise ValueError(f"v must have shape ({n},) or ({n}, k) for x of {n} rows, "
                         f"got {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("v contains NaN or inf")
    if probe.nngp.shape[2:] != ():
        raise ValueError("dask_matvec needs a network with one output per example pair "
                         "(end spatial networks in Flatten or global pooling)")
    if tile is None:
        tile = auto_tile(x, full, dtype, default_memory_budget(x.device), n, n)

    v2 = v.detach().cpu().to(dtype).reshape(n, -1).contiguous()
    fx = _scatter(client, x)
    fv = client.scatter(v2, broadcast=True, hash=False)
    net = _portable(net)
    blocks = tile_slices(n, tile)
    futures = [client.submit(_row_matvec, net, fx, fv, r, tile, get, full, pure=False)
               for r in blocks]
    out = torch.empty(n, v2.shape[1], dtype=dtype)
    try:
        for fut, r in zip(futures, blocks, strict=True):
            out[r] = torch.from_numpy(fut.result())
    finally:
        client.cancel([f for f in futures if not f.done()])
        del fv
    return out.reshape(v.shape) if v.ndim == 1 else out
