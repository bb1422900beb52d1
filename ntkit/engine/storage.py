"""Kernels on disk in zarr arrays that survive crashes: tile bookkeeping and resume.

A kernel written into a zarr array (``net.kernel(..., out=arr)``) is computed in tiles
whose blocks are exactly the array's chunks, so each tile replaces whole chunks and no two
tiles touch the same one. After a tile's chunks are written, an empty marker key
``.ntkit/tiles/<i>.<j>`` is set in the array's store (zarr's ``LocalStore`` writes every
key through a temporary file and ``os.replace``, so a marker, like a chunk, is either
there whole or not at all). A marker therefore proves its tile is on disk; a process
killed at any point (SIGKILL included) leaves at worst a tile whose chunks were written
but not yet marked, and ``resume=True`` computes exactly the unmarked tiles again. Each
tile's values do not depend on which other tiles ran, so the resumed array is
bit-identical to an uninterrupted run.

The arguments that determine the values (shapes, names, dtype, the layer's ``repr``,
the tile, a hash of the inputs) are stored as the attribute ``ntkit_kernel`` before any
tile runs; resuming with different ones raises ValueError instead of mixing two kernels.

Power loss: in a local directory store (zarr's ``LocalStore``: a path given as ``store``)
an array is *durable* by default: before a tile's marker is set, the chunk files that
tile wrote are fsync'ed, with their directories (so the ``os.replace`` that put each one
in place is on disk too); then the marker and its directory are fsync'ed. A power loss or
an OS crash at any point therefore leaves no marker whose tile's chunks are not on disk,
and ``resume=True`` stays correct after it. Starting a run (without resume) also makes
the removal of old markers durable before the new fingerprint is written, and the
fingerprint itself. Cost: a few fsyncs per tile (see `TileLedger.mark`);
``create_kernel_array(..., durable=False)`` (``ntkit kernel --no-fsync``) turns them
off, and markers are then durable against the process dying only. Other stores (memory,
zip, remote) have no files to fsync: their markers are as durable as the store makes
its writes.

A symmetric kernel may be stored as its upper triangle of tiles only
(``create_kernel_array(..., upper=True)``): the tiles below the diagonal are never
written, so zarr never creates their chunks, and the array takes half the disk (40 GB
instead of 80 GB for n = 100k in float64). Reading such an array plainly gives zeros
(the fill value) below the diagonal tiles; `read_block` and
`ntkit.solvers.KernelOperator` read it as the full symmetric matrix.

zarr is optional (``pip install -e ".[scale]"``) and imported only when used.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch

#: Attribute holding the fingerprint of the kernel an array holds.
ATTR = "ntkit_kernel"
#: Attribute marking an array that stores only the tiles on and above the diagonal.
UPPER_ATTR = "ntkit_upper"
#: Attribute saying whether tiles are fsync'ed before they are marked (absent: DURABLE).
DURABLE_ATTR = "ntkit_durable"
#: Whether arrays without DURABLE_ATTR are durable: a crash-safe resume should not
#: depend on having asked for it, and a few fsyncs per tile cost little beside a tile.
DURABLE = True
#: Store prefix (inside the array's node) of the per-tile completion markers.
MARKERS = ".ntkit/tiles/"
#: Inputs up to this size are hashed whole; larger ones by a fixed sample of rows.
HASH_ALL_BYTES = 64 * 2**20
HASH_ROWS = 1024
_FORMAT = 1


def require_zarr():
    """Import zarr (≥ 3), or raise ImportError saying how to install it."""
    try:
        import zarr
    except ImportError as e:
        raise ImportError('on-disk kernels need zarr: pip install -e ".[scale]" '
                          "(or pip install 'zarr>=3')") from e
    if int(zarr.__version__.split(".")[0]) < 3:
        raise ImportError(f"on-disk kernels need zarr >= 3, found {zarr.__version__}: "
                          'pip install -e ".[scale]"')
    return zarr


def is_zarr_array(obj) -> bool:
    """Whether ``obj`` is a zarr array (checked without importing zarr)."""
    return type(obj).__module__.startswith("zarr") and hasattr(obj, "store_path")


def create_kernel_array(store, n1: int, n2: int | None = None, *, tile: int = 256,
                        pair_shape: Sequence[int] = (), dtype: torch.dtype = torch.float64,
                        overwrite: bool = False, compressors=None, upper: bool = False,
                        durable: bool = DURABLE):
    """A new zarr array for an (n1, n2, *pair_shape) kernel, chunked by ``tile`` examples.

    Args:
      store: a path (``"K.zarr"``) or any zarr store.
      n1, n2: numbers of examples (n2 = n1 when None).
      tile: rows and columns per chunk; ``net.kernel(out=arr)`` then computes in tiles of
        this size. 256 suits fully-connected nets on a CPU (see `ntkit.engine.evaluate`).
      pair_shape: the positions a spatial kernel stores per pair ((), for FC nets).
      dtype: float64 (default) or float32.
      overwrite: replace an existing array at ``store`` (else zarr refuses).
      compressors: zarr compressors; None (default) stores raw floats: kernel values
        hardly compress, and zstd doubled the cost of writing a 256×256 float64 chunk
        (30 vs 16 ms on the busy 2-core dev box). Pass "auto" for zarr's default.
      upper: store only the tiles on and above the diagonal of a symmetric kernel
        (``net.kernel(x, out=arr)``, no x2): half the disk. Needs n2 = n1 and no
        pair_shape; read it with `read_block` or ``KernelOperator(kernel=arr)``.
      durable: fsync each tile's chunk files before marking it complete, and the marker
        after (local directory stores; see the module docstring): a power loss then
        cannot leave a tile marked done whose values are not on disk. False skips the
        fsyncs (markers then survive the process dying, not the machine losing power).
        Stored in the array (attribute ``ntkit_durable``), so a resumed run keeps it.

    Example:
      >>> from ntkit.engine.storage import create_kernel_array
      >>> arr = create_kernel_array("K.zarr", 1000, tile=256)  # doctest: +SKIP
      >>> net.kernel(x, get="ntk", out=arr)                    # doctest: +SKIP
    """
    zarr = require_zarr()
    n2 = n1 if n2 is None else n2
    for name, v in (("n1", n1), ("n2", n2), ("tile", tile)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    pair_shape = tuple(int(s) for s in pair_shape)
    if not isinstance(upper, bool):
        raise ValueError(f"upper must be True or False, got {upper!r}")
    if not isinstance(durable, bool):
        raise ValueError(f"durable must be True or False, got {durable!r}")
    if upper and (n2 != n1 or pair_shape):
        raise ValueError("upper=True stores a symmetric (n, n) kernel: it needs n2 = n1 "
                         f"and no pair_shape (got n1={n1}, n2={n2}, pair_shape={pair_shape})")
    arr = zarr.create_array(store=store, shape=(n1, n2, *pair_shape),
                            chunks=(tile, tile, *pair_shape), dtype=np_dtype,
                            fill_value=0.0, overwrite=overwrite, compressors=compressors)
    attrs = {UPPER_ATTR: True} if upper else {}
    if durable != DURABLE:
        attrs[DURABLE_ATTR] = durable
    if attrs:
        arr.update_attributes(attrs)
    return arr


def is_upper(arr) -> bool:
    """Whether ``arr`` is a zarr kernel array that stores only its upper tiles."""
    return is_zarr_array(arr) and bool(arr.attrs.asdict().get(UPPER_ATTR, False))


def is_durable(arr) -> bool:
    """Whether ntkit fsyncs the tiles of zarr array ``arr`` before marking them (see
    `create_kernel_array`): its ``ntkit_durable`` attribute, else `DURABLE`."""
    return bool(arr.attrs.asdict().get(DURABLE_ATTR, DURABLE))


def local_dir(arr) -> str | None:
    """The directory holding zarr array ``arr`` when its store is a local directory
    (``LocalStore``), else None (nothing to fsync)."""
    try:
        from zarr.storage import LocalStore
    except ImportError:
        return None
    store = getattr(getattr(arr, "store_path", None), "store", None)
    if not isinstance(store, LocalStore):
        return None
    return os.path.join(str(store.root), *filter(None, arr.store_path.path.split("/")))


def fsync_path(path: str) -> None:
    """fsync a file or a directory (the latter makes renames and new entries in it
    durable); a no-op for directories on Windows, which cannot open them."""
    if os.path.isdir(path) and os.name == "nt":  # Windows cannot open a directory
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def chunk_files(arr):
    """For a zarr v3 array stored raw (no compressor or filter, little-endian bytes, no
    sharding) in a local directory: a function (i, j) -> path of chunk (i, j)'s file.
    None for any other array.

    Such a file holds the chunk's (tile, tile) values in C order, edge chunks padded to
    full size (the zarr v3 format), so it can be read straight into a buffer: about twice
    zarr's own reading speed on the dev box (1.4 against 0.7 GB/s for a band of
    2 MiB chunks, 16 reads in flight).
    """
    import os

    try:
        from zarr.codecs import BytesCodec
        from zarr.storage import LocalStore
    except ImportError:
        return None
    try:
        store = arr.store_path.store
        ser = arr.serializer
        ok = (isinstance(store, LocalStore) and arr.metadata.zarr_format == 3
              and not arr.compressors and not arr.filters and arr.shards is None
              and isinstance(ser, BytesCodec) and str(getattr(ser.endian, "value",
                                                              ser.endian)) == "little"
              and np.dtype(arr.dtype).byteorder in ("<", "=", "|"))
    except (AttributeError, TypeError):
        return None
    if not ok:
        return None
    root = os.path.join(str(store.root), arr.store_path.path)
    encode = arr.metadata.chunk_key_encoding.encode_chunk_key
    return lambda i, j: os.path.join(root, *encode((i, j)).split("/"))


def read_block(arr, rows: slice, cols: slice) -> np.ndarray:
    """K[rows, cols] of a kernel array, as a numpy array.

    For an upper-tile array (`is_upper`), entry (a, b) is stored at (a, b) when a's tile
    is at most b's and at (b, a) otherwise; both parts are read (each only where needed)
    and merged. Any other array is sliced plainly.
    """
    for name, s in (("rows", rows), ("cols", cols)):
        if not isinstance(s, slice) or s.step not in (None, 1):
            raise TypeError(f"{name} must be a slice with step 1, got {s!r}")
    n = arr.shape[0]
    r0, r1, _ = rows.indices(n)
    c0, c1, _ = cols.indices(arr.shape[1])
    if not is_upper(arr):
        return np.asarray(arr[r0:r1, c0:c1])
    t = arr.chunks[0]
    if r1 <= r0 or c1 <= c0:
        return np.zeros((max(0, r1 - r0), max(0, c1 - c0)), dtype=arr.dtype)
    if (r1 - 1) // t <= c0 // t:       # every row's tile <= every column's: stored as is
        return np.asarray(arr[r0:r1, c0:c1])
    if r0 // t > (c1 - 1) // t:        # every row's tile > every column's: the mirror
        return np.ascontiguousarray(np.asarray(arr[c0:c1, r0:r1]).T)
    above = np.asarray(arr[r0:r1, c0:c1])
    below = np.asarray(arr[c0:c1, r0:r1]).T
    mask = (np.arange(r0, r1) // t)[:, None] <= (np.arange(c0, c1) // t)[None, :]
    return np.where(mask, above, below)


def chunk_tile(arrays: dict, rank_two: Iterable[str]) -> int:
    """The tile size the zarr ``arrays`` dictate: their common chunk length along the
    example axes. ValueError if they disagree or a chunk does not span whole pairs."""
    tiles = set()
    for name, arr in arrays.items():
        chunks = tuple(arr.chunks)
        if getattr(arr, "shards", None) is not None:
            raise ValueError(f"out[{name!r}] is sharded; tiles written concurrently into one "
                             "shard would race: use an unsharded array")
        ex = 2 if name in rank_two else 1
        if chunks[ex:] != tuple(arr.shape[ex:]):
            raise ValueError(f"out[{name!r}] must be chunked along the example axes only "
                             f"(chunks {chunks}, shape {tuple(arr.shape)})")
        if ex == 2 and chunks[0] != chunks[1]:
            raise ValueError(f"out[{name!r}] needs square chunks (tile, tile, ...), got {chunks}")
        tiles.add(chunks[0])
    if len(tiles) != 1:
        raise ValueError(f"the zarr outputs have different chunk sizes {sorted(tiles)}; "
                         "the tiles must match every array's chunks")
    return tiles.pop()


def input_digest(x, n: int) -> str:
    """SHA-256 of an input batch (a tensor, or a `LazyBatch` read by slices).

    Whole when it has at most HASH_ALL_BYTES, else a fixed spread of HASH_ROWS rows (plus
    the shape, hashed by the caller): reading a larger-than-RAM input twice just to hash
    it would double the cost of the run.
    """
    h = hashlib.sha256()
    row_bytes = math.prod(x.shape[1:]) * 8
    if n * row_bytes <= HASH_ALL_BYTES:
        idx: Iterable[int] | None = None
        h.update(_bytes(x[0:n]))
    else:
        idx = np.unique(np.linspace(0, n - 1, HASH_ROWS).astype(np.int64))
        for i in idx:
            h.update(_bytes(x[int(i):int(i) + 1]))
    return ("all:" if idx is None else f"rows{HASH_ROWS}:") + h.hexdigest()


def _bytes(t: torch.Tensor) -> bytes:
    return t.detach().to(torch.float64).cpu().contiguous().numpy().tobytes()


def fingerprint(*, layer, name: str, names: Sequence[str], x1, x2, sym: bool, tile: int,
                dtype: torch.dtype, pattern: tuple | None = None,
                mask_constant: float | None = None) -> dict:
    """What determines the values of the kernel array ``name`` (JSON-serializable);
    ``pattern``: the call's graph patterns (hashed like inputs), if any;
    ``mask_constant``: the call's mask constant, if any."""
    n1 = int(x1.shape[0])
    extra = {} if pattern is None else {"pattern_digests": [
        None if p is None else [list(p.shape), str(p.dtype), input_digest(p, int(p.shape[0]))]
        for p in pattern]}
    if mask_constant is not None:
        extra["mask_constant"] = float(mask_constant)
    return {**extra,
        "format": _FORMAT,
        "field": name,
        "get": list(names),
        "x1_shape": list(x1.shape),
        "x2_shape": None if x2 is None else list(x2.shape),
        "symmetric": bool(sym),
        "tile": int(tile),
        "dtype": str(dtype).removeprefix("torch."),
        "layer": repr(layer),
        "x1_digest": input_digest(x1, n1),
        "x2_digest": None if x2 is None else input_digest(x2, int(x2.shape[0])),
    }


class TileLedger:
    """Completion markers of one zarr kernel array (see module docstring).

    ``durable``: fsync tiles before marking them; None (default) reads it from the
    array (`is_durable`). Only local directory stores have files to fsync."""

    def __init__(self, arr, durable: bool | None = None):
        require_zarr()
        self.arr = arr
        self._sp = arr.store_path
        self._dir = local_dir(arr)
        self.durable = (is_durable(arr) if durable is None else bool(durable)) \
            and self._dir is not None
        self._fp: dict | None = None
        self._dirs_synced: set[str] = set()

    def _key(self, i: int, j: int):
        return self._sp / f"{MARKERS}{i}.{j}"

    def stored_fingerprint(self) -> dict | None:
        return self.arr.attrs.asdict().get(ATTR)

    def start(self, fp: dict, resume: bool) -> set[tuple[int, int]]:
        """Begin a run: on resume, check ``fp`` against the stored one and return the
        tiles already done; otherwise (or for an array never written by ntkit) forget
        all markers, store ``fp`` and return the empty set."""
        self._fp = fp
        old = self.stored_fingerprint()
        if resume and old is not None:
            if old != fp:
                diff = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
                detail = "; ".join(f"{k}: stored {old.get(k)!r}, now {fp.get(k)!r}"
                                   for k in diff)
                raise ValueError(f"cannot resume: the array holds a different kernel "
                                 f"({detail}); recompute without resume=True, or pass "
                                 "the original arguments")
            return self.done()
        # Markers go before the new fingerprint: a run killed in between leaves a
        # fingerprint with no markers, which resumes from scratch (correct, if slow).
        # Durably so: a power loss must not bring old markers back under the new one.
        self.clear()
        if self.durable:
            self._sync(os.path.join(self._dir, *MARKERS.rstrip("/").split("/")))
        self.arr.update_attributes({ATTR: fp})
        if self.durable:
            self._sync(os.path.join(self._dir, "zarr.json" if self.arr.metadata.zarr_format
                                    == 3 else ".zattrs"))
        return set()

    def tile_chunks(self, i: int, j: int) -> list[tuple[int, ...]]:
        """The chunks of this array that tile (i, j) writes (as `writers.store_tile`
        does): the tile and its mirror for nngp/ntk, row block i for cov1 (at the
        first tile of the row), column block j for cov2 (at the first row block)."""
        fp = self._fp
        if fp is None:
            raise RuntimeError("TileLedger.start must run before tiles are marked")
        pad = (0,) * (len(self.arr.shape) - (2 if fp["field"] in ("nngp", "ntk") else 1))
        sym = fp["symmetric"]
        if fp["field"] in ("nngp", "ntk"):
            out = [(i, j, *pad)]
            if sym and i != j and not fp.get("upper", False):
                out.append((j, i, *pad))
            return out
        if fp["field"] == "cov1":
            return [(i, *pad)] if j == (i if sym else 0) else []
        if fp["field"] == "cov2":
            return [(j, *pad)] if i == 0 else []
        raise ValueError(f"unknown kernel field {fp['field']!r}")

    def mark(self, i: int, j: int) -> None:
        """Record tile (i, j) as complete; call only after its chunks are written.
        (`mark_many` for one tile.)"""
        self.mark_many([(i, j)])

    def mark_many(self, tiles: Sequence[tuple[int, int]]) -> None:
        """Record ``tiles`` as complete; call only after their chunks are written.

        Durable arrays: first fsync the chunk files those tiles wrote (`tile_chunks`)
        and then their directories, then set the markers and fsync them and their
        directory, so no marker reaches the disk before the values it vouches for.
        A batch shares its directory fsyncs."""
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        if self.durable:
            encode = self.arr.metadata.encode_chunk_key
            self._sync_all([os.path.join(self._dir, *encode(c).split("/"))
                            for i, j in tiles for c in self.tile_chunks(i, j)])
        empty = default_buffer_prototype().buffer.from_bytes(b"")
        for i, j in tiles:
            # The async StorePath.set through zarr's sync(), like done() and clear():
            # StorePath.set_sync only exists from zarr 3.1.6 (which needs numpy >= 2).
            sync(self._key(i, j).set(empty))
        if self.durable:
            self._sync_all([os.path.join(self._dir, *f"{MARKERS}{i}.{j}".split("/"))
                            for i, j in tiles])

    def _sync_all(self, paths: Sequence[str]) -> None:
        """fsync ``paths`` (those that exist), then each directory holding one, then
        the directories' parents up to the array's for directories new to this run."""
        dirs = []
        for path in paths:
            if os.path.exists(path):
                fsync_path(path)
            d = os.path.dirname(path)
            while not os.path.isdir(d) and d != self._dir:  # removed along with path
                d = os.path.dirname(d)
            dirs.append(d)
        seen = set()
        for d in dirs:
            while d not in seen:
                seen.add(d)
                fsync_path(d)
                if d == self._dir or d in self._dirs_synced or os.path.dirname(d) == d:
                    break
                self._dirs_synced.add(d)
                d = os.path.dirname(d)

    def _sync(self, path: str) -> None:
        self._sync_all([path])

    def done(self) -> set[tuple[int, int]]:
        """The tiles marked complete."""
        from zarr.core.sync import sync

        prefix = self._prefix()

        async def keys():
            return [k async for k in self._sp.store.list_prefix(prefix)]

        out = set()
        for k in sync(keys()):
            i, j = k[len(prefix):].split(".")
            out.add((int(i), int(j)))
        return out

    def clear(self) -> None:
        from zarr.core.sync import sync

        sync(self._sp.store.delete_dir(self._prefix().rstrip("/")))

    def _prefix(self) -> str:
        path = self._sp.path
        return f"{path}/{MARKERS}" if path else MARKERS


class TileMarker:
    """Marks finished tiles in every ledger of a kernel call (call `add` after a tile's
    chunks are written in every array, `close` at the end).

    Without durable ledgers each tile is marked at once. With them, a background thread
    fsyncs and marks the tiles in batches (`TileLedger.mark_many`), so the flushes
    overlap the computation of the next tiles instead of stalling it; `close` waits for
    every tile added (also when the run failed: the tiles written are kept) and raises
    what the thread raised."""

    def __init__(self, ledgers: Sequence[TileLedger]):
        import queue
        import threading

        self.ledgers = list(ledgers)
        self._err: BaseException | None = None
        self._thread = None
        if any(ledger.durable for ledger in self.ledgers):
            self._q: queue.SimpleQueue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._run, name="ntkit-tile-marker",
                                            daemon=True)
            self._thread.start()

    def add(self, i: int, j: int) -> None:
        if self._thread is None:
            for ledger in self.ledgers:
                ledger.mark(i, j)
            return
        if self._err is not None:
            raise self._err
        self._q.put((i, j))

    def close(self) -> None:
        if self._thread is None:
            return
        self._q.put(None)
        self._thread.join()
        if self._err is not None:
            raise self._err

    def _run(self) -> None:
        import queue

        stop = False
        while not stop:
            batch = [self._q.get()]
            while True:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            tiles = [t for t in batch if t is not None]
            if tiles and self._err is None:
                try:
                    for ledger in self.ledgers:
                        ledger.mark_many(tiles)
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                    self._err = e


def tile_count(fp: dict) -> int:
    """How many tiles the kernel described by fingerprint ``fp`` has."""
    t = fp["tile"]
    b1 = math.ceil(fp["x1_shape"][0] / t)
    if fp["symmetric"]:
        return b1 * (b1 + 1) // 2
    return b1 * math.ceil(fp["x2_shape"][0] / t)


def kernel_progress(arr) -> tuple[int, int]:
    """(tiles done, tiles in all) of a zarr kernel array written by ntkit; (0, 0) for an
    array ntkit never wrote to. The kernel is complete when both are equal."""
    ledger = TileLedger(arr)
    fp = ledger.stored_fingerprint()
    if fp is None:
        return 0, 0
    return len(ledger.done()), tile_count(fp)
