"""A matrix-free kernel operator: ``v ↦ (K + shift · I) v`` without holding K.

K is the (n, n) train-train kernel of a layer spec on inputs x. Its blocks are either
computed on the fly, tile by tile, by ``net.kernel(xa, xb, get=...)`` (each unordered
pair of tiles once: K is symmetric, so an off-diagonal tile serves both K_ij v_j and
K_ji v_i), or read from a cached kernel: any 2-D array-like that slices as
``arr[i0:i1, :]`` (a tensor, a numpy array or ``np.memmap``, a zarr array). Only one
tile (or one row panel of a cached kernel) is alive at a time, so the memory is
O(tile² + n·k), never O(n²).

A cached kernel stored as its upper tiles only (``create_kernel_array(..., upper=True)``,
half the disk) is read as the full symmetric matrix: each product reads every stored
tile once, in bands of one chunk row, and applies it to both sides, like a computed tile.

The inputs x may be an ``np.memmap`` or a zarr array larger than RAM: rows are sliced
and converted to ``dtype`` one tile at a time.

Tile sizes follow ``memory_budget`` (default `ntkit.engine.memory.default_memory_budget`):
a computed tile of t × t entries holds the result plus the engine's working set, about
`TILE_ARRAYS` arrays of that size, so t = √(budget / (TILE_ARRAYS · itemsize)), capped at
`MAX_TILE` (the engine tiles further inside, so larger blocks only add memory).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ntkit.engine.evaluate import tile_slices
from ntkit.engine.memory import check_memory_budget
from ntkit.engine.storage import chunk_files, is_upper, read_block
from ntkit.solvers.products import t_matmul

__all__ = [
    "DIAG_TILE",
    "MAX_TILE",
    "TILE_ARRAYS",
    "KernelOperator",
    "rows_as_tensor",
]

#: Arrays of a tile's size alive per computed tile: the result, its transpose product,
#: and the engine's own working set (which it bounds by the same budget, below).
TILE_ARRAYS = 4
#: Largest block handed to the engine in one call. The engine splits it into cache-sized
#: tiles and runs them in threads, so beyond a few thousand rows a larger block only
#: raises the peak memory.
MAX_TILE = 4096
#: Rows of the diagonal blocks used for `KernelOperator.diagonal`: it costs
#: n · DIAG_TILE kernel entries instead of n², and the blocks stay big enough for the
#: engine's per-call overhead to be small.
DIAG_TILE = 256

_GETS = ("ntk", "nngp")


def rows_as_tensor(x: Any, rows: slice | np.ndarray | Tensor, dtype: torch.dtype,
                   name: str = "x") -> Tensor:
    """Rows of ``x`` (tensor, numpy array/memmap or zarr array) as a float tensor.

    ``rows`` is a slice or a sorted integer index array. Only those rows are read.
    """
    if isinstance(x, Tensor):
        if not isinstance(rows, slice):
            rows = torch.as_tensor(np.asarray(rows), dtype=torch.long, device=x.device)
        return x[rows].to(dtype)
    if isinstance(rows, slice):
        block = x[rows]
    elif isinstance(x, np.ndarray):
        block = x[np.asarray(rows)]
    elif hasattr(x, "oindex"):  # zarr: orthogonal (per-axis) integer selection
        block = x.oindex[np.asarray(rows)]
    else:
        block = np.stack([np.asarray(x[int(i)]) for i in np.asarray(rows)])
    arr = np.asarray(block)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must have a floating dtype, got {arr.dtype}")
    return torch.from_numpy(np.array(arr, dtype=_np_dtype(dtype), order="C"))


def _np_dtype(dtype: torch.dtype) -> type:
    return np.float64 if dtype == torch.float64 else np.float32


def _check_array_like(a: Any, name: str, ndim: int | None = None) -> tuple[int, ...]:
    shape = getattr(a, "shape", None)
    if shape is None or not hasattr(a, "__getitem__"):
        raise TypeError(f"{name} must be an array-like with .shape and slicing (tensor, "
                        f"numpy array, np.memmap, zarr array), got {type(a).__name__}")
    shape = tuple(int(s) for s in shape)
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {shape}")
    if not shape or shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {shape})")
    dt = getattr(a, "dtype", None)
    floating = (dt.is_floating_point if isinstance(dt, torch.dtype)
                else np.dtype(dt).kind == "f") if dt is not None else False
    if not floating:
        raise TypeError(f"{name} must have a floating dtype, got {dt}")
    return shape


def _read_chunk(path: str, dst: np.ndarray) -> None:
    """Read one raw chunk file into ``dst`` (C-contiguous, the chunk's size); a chunk
    never written reads as zeros (zarr's fill value for kernel arrays)."""
    try:
        with open(path, "rb", buffering=0) as f:
            got = f.readinto(memoryview(dst).cast("B"))
    except FileNotFoundError:
        dst.fill(0.0)
        return
    if got != dst.nbytes:
        raise ValueError(f"chunk file {path} holds {got} bytes, expected {dst.nbytes}")


def _read_ahead(read, keys: list) -> Iterator[tuple[Any, Any]]:
    """Yield (key, read(key)) in order, reading the next key in a background thread
    while the caller works on the current one: a product from disk then costs about
    max(read, multiply) per block instead of their sum (a 12k upper-tile zarr kernel
    from the page cache: zarr's read 0.78 s, the multiplies 0.59 s per product)."""
    if not keys:
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="ntkit-read") as ex:
        nxt = ex.submit(read, keys[0])
        for i, key in enumerate(keys):
            cur = nxt.result()
            nxt = ex.submit(read, keys[i + 1]) if i + 1 < len(keys) else None
            yield key, cur


class KernelOperator:
    """The symmetric PSD operator ``K + shift · I`` on n training inputs, matrix-free.

    Args:
      net: layer spec whose ``kernel`` gives K (needed unless ``kernel`` is given; with
        both, ``net`` serves cross-kernels to new inputs, e.g. centers or test points).
      x: (n, d) or channels-first (n, C, ...) training inputs: tensor, numpy array,
        ``np.memmap`` or zarr array.
      get: which kernel, "ntk" or "nngp".
      kernel: optional cached (n, n) kernel, any array-like sliceable as
        ``arr[i0:i1, :]`` (tensor, numpy array, ``np.memmap``, zarr array, including
        one holding only its upper tiles); its blocks are read instead of computed.
      shift: absolute amount δ >= 0 added to the diagonal (the ridge).
      tile: block size in rows (default: from ``memory_budget``, see module docstring).
      memory_budget: bytes the blocks may hold at once (None: the device default).
      dtype: compute dtype (float64 by default).
      client: a ``dask.distributed.Client``; when given, `matvec` is delegated to
        ``ntkit.engine.distributed.dask_matvec`` (computed kernels only).

    Attributes:
      n: number of training points; n_matvecs: products computed so far (each is one
      pass over K).
    """

    def __init__(self, net: Any = None, x: Any = None, *, get: str = "ntk",
                 kernel: Any = None, shift: float = 0.0, tile: int | None = None,
                 memory_budget: int | None = None, dtype: torch.dtype = torch.float64,
                 client: Any = None):
        if get not in _GETS:
            raise ValueError(f"get must be one of {_GETS}, got {get!r}")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if kernel is None and (net is None or x is None):
            raise ValueError("KernelOperator needs a layer spec and inputs (net, x), or a "
                             "cached kernel=")
        if net is not None and not hasattr(net, "kernel"):
            raise TypeError(f"net must be an ntkit layer spec, got {type(net).__name__}")
        self.net, self.x, self.get, self.dtype = net, x, get, dtype
        n = None
        if x is not None:
            n = _check_array_like(x, "x")[0]
        if kernel is not None:
            shape = _check_array_like(kernel, "kernel", ndim=2)
            if shape[0] != shape[1]:
                raise ValueError(f"kernel must be square, got shape {shape}")
            if n is not None and shape[0] != n:
                raise ValueError(f"kernel is {shape[0]}×{shape[1]} but x has {n} rows")
            n = shape[0]
            if client is not None:
                raise ValueError("client= distributes computed kernels; it cannot be "
                                 "combined with a cached kernel=")
        self.kernel_array = kernel
        self._upper = kernel is not None and is_upper(kernel)
        self.n = int(n)
        shift = float(shift)
        if not (math.isfinite(shift) and shift >= 0):
            raise ValueError(f"shift must be a finite number >= 0, got {shift}")
        self.shift = shift
        self.memory_budget = check_memory_budget(memory_budget)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if tile is None:
            tile = math.isqrt(max(1, self.memory_budget // (TILE_ARRAYS * itemsize)))
            tile = max(1, min(tile, MAX_TILE))
        elif isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
            raise ValueError(f"tile must be a positive int, got {tile!r}")
        self.tile = min(tile, self.n)
        self.client = client
        self.n_matvecs = 0
        self._diag: Tensor | None = None

    # ---- blocks ----------------------------------------------------------------------
    def _x(self, rows) -> Tensor:
        return rows_as_tensor(self.x, rows, self.dtype)

    def kernel_to(self, z: Tensor, rows: slice) -> Tensor:
        """K(x[rows], z): (len(rows), m) cross-kernel to other inputs z (m, ...)."""
        if self.net is None:
            raise ValueError("cross-kernels to new inputs need the layer spec (net=)")
        return self.net.kernel(self._x(rows), z.to(self.dtype), get=self.get,
                               dtype=self.dtype, memory_budget=self.memory_budget)

    def block(self, rows: slice, cols: slice) -> Tensor:
        """K[rows, cols] (computed, or read from the cached kernel)."""
        if self._upper:
            return torch.from_numpy(np.array(read_block(self.kernel_array, rows, cols),
                                             dtype=_np_dtype(self.dtype), order="C"))
        if self.kernel_array is not None:
            blk = self.kernel_array[rows, cols]
            if isinstance(blk, Tensor):
                return blk.to(self.dtype)
            return torch.from_numpy(np.array(blk, dtype=_np_dtype(self.dtype), order="C"))
        xr = self._x(rows)
        if rows == cols:
            return self.net.kernel(xr, get=self.get, dtype=self.dtype,
                                   memory_budget=self.memory_budget)
        return self.net.kernel(xr, self._x(cols), get=self.get, dtype=self.dtype,
                               memory_budget=self.memory_budget)

    def columns(self, idx: Tensor, rows: slice) -> Tensor:
        """K[rows, idx]: (len(rows), len(idx)) for sorted column indices ``idx``.

        From an upper-tile cache these columns are computed when ``net`` is given (the
        stored ones are scattered over every chunk, and computing them is cheaper than
        reading all of K), and read symmetrically otherwise.
        """
        if self._computes_columns:
            return self.kernel_to(self._x(idx.cpu().numpy()), rows)
        if self._upper:
            return self.block(rows, slice(0, self.n))[:, idx]
        return self._panel(rows)[:, idx]

    def principal(self, idx: Tensor) -> Tensor:
        """K[idx, idx]: (M, M) kernel among the points of sorted indices ``idx``
        (computed from an upper-tile cache when ``net`` is given, as in `columns`)."""
        if self._computes_columns:
            return self.net.kernel(self._x(idx.cpu().numpy()), get=self.get,
                                   dtype=self.dtype, memory_budget=self.memory_budget)
        if self._upper:
            ix = idx.cpu().numpy()
            stored = torch.from_numpy(np.array(self.kernel_array.oindex[ix, ix],
                                               dtype=_np_dtype(self.dtype)))
            t = self.kernel_array.chunks[0]
            tiles = torch.as_tensor(ix // t)
            return torch.where(tiles[:, None] <= tiles[None, :], stored, stored.T)
        rows = rows_as_tensor(self.kernel_array, idx.cpu().numpy(), self.dtype, "kernel")
        return rows[:, idx]

    @property
    def _computes_columns(self) -> bool:
        # Columns K[:, idx] and K[idx, idx] come from net: always without a cache, and
        # from an upper-tile cache when net and x are given (see `columns`).
        return self.kernel_array is None or (self._upper and self.net is not None
                                             and self.x is not None)

    def row_blocks(self, width: int) -> list[slice]:
        """Row slices of a panel height such that a (rows, width) block fits the budget."""
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        h = max(1, self.memory_budget // (TILE_ARRAYS * itemsize * max(1, width)))
        h = min(h, self.n)
        return [slice(i, min(i + h, self.n)) for i in range(0, self.n, h)]

    def iter_columns(self, idx: Tensor) -> Iterator[tuple[slice, Tensor]]:
        """Stream K[:, idx] as (rows, K[rows, idx]) panels, each within the budget."""
        width = len(idx) if self._computes_columns else self.n
        for rows in self.row_blocks(width):
            yield rows, self.columns(idx, rows)

    def diagonal(self) -> Tensor:
        """diag(K), (n,), without the shift; cached.

        Computed from `DIAG_TILE`-row diagonal blocks (n · DIAG_TILE entries), or read
        from the cached kernel's diagonal blocks.
        """
        if self._diag is None:
            parts = []
            for i in range(0, self.n, DIAG_TILE):
                r = slice(i, min(i + DIAG_TILE, self.n))
                parts.append(torch.diagonal(self.block(r, r)).clone())
            self._diag = torch.cat(parts)
        return self._diag

    # ---- products --------------------------------------------------------------------
    def matvec(self, v: Tensor) -> Tensor:
        """(K + shift · I) v for v of shape (n,) or (n, k); one pass over K."""
        if not isinstance(v, Tensor):
            raise TypeError(f"v must be a torch.Tensor, got {type(v).__name__}")
        if v.ndim not in (1, 2) or v.shape[0] != self.n:
            raise ValueError(f"v must have shape ({self.n},) or ({self.n}, k), got "
                             f"{tuple(v.shape)}")
        flat = v.reshape(self.n, -1).to(self.dtype)
        self.n_matvecs += 1
        if self.client is not None:
            # Kept tiny on purpose: the distributed engine owns the tiling there.
            from ntkit.engine.distributed import dask_matvec

            out = dask_matvec(self.client, self.net, self.x, flat, get=self.get,
                              tile=self.tile, dtype=self.dtype).to(self.dtype)
        elif self._upper:
            out = self._matvec_upper(flat)
        elif self.kernel_array is not None:
            out = self._matvec_cached(flat)
        else:
            out = self._matvec_computed(flat)
        if self.shift:
            out = out + self.shift * flat
        return out.reshape(v.shape)

    __matmul__ = matvec

    def _matvec_cached(self, v: Tensor) -> Tensor:
        out = torch.empty_like(v)
        for rows in self.row_blocks(self.n):
            panel = self._panel(rows)
            out[rows] = panel @ v
        return out

    def _matvec_upper(self, v: Tensor) -> Tensor:
        files = chunk_files(self.kernel_array)
        if files is not None and self.dtype == torch.float64 and np.dtype(
                self.kernel_array.dtype) == np.float64:
            return self._matvec_upper_files(v, files)
        return self._matvec_upper_zarr(v)

    def _matvec_upper_files(self, v: Tensor, files) -> Tensor:
        # Raw chunk files (`ntkit.engine.storage.chunk_files`): a band of one chunk row,
        # cut into pieces of g chunks that fit the budget, is read chunk by chunk into a
        # (g, t, t) buffer by a pool of threads (the reads release the GIL), one piece
        # ahead of the products. The products run in numpy: its BLAS did these skinny
        # (t × t) @ (t × k) products at 2.3 GB/s of kernel against torch's 1.1 GB/s
        # (2 threads, dev box).
        from concurrent.futures import ThreadPoolExecutor

        arr, n = self.kernel_array, self.n
        t = arr.chunks[0]
        nb = -(-n // t)
        k = v.shape[1]
        g = max(1, self.memory_budget // (TILE_ARRAYS * 8 * t * t))
        vp = np.zeros((nb * t, k))
        vp[:n] = v.cpu().numpy()
        out = np.zeros((nb * t, k))
        pieces = [(i, j0, min(j0 + g, nb)) for i in range(nb) for j0 in range(i, nb, g)]
        if self.n_matvecs % 2 == 0:  # see _matvec_upper_zarr
            pieces.reverse()
        # Two buffers, filled in turn: piece p + 1 is read into one while the products
        # use the other (fresh buffers per piece page-faulted the whole kernel in again
        # on every product).
        bufs = [np.empty((min(g, nb), t, t)) for _ in range(min(2, len(pieces)))]
        pieces = [(*p, q % 2) for q, p in enumerate(pieces)]

        with ThreadPoolExecutor(16, thread_name_prefix="ntkit-chunk") as pool:
            def read(p):
                i, j0, j1, which = p
                buf = bufs[which][:j1 - j0]
                list(pool.map(lambda j: _read_chunk(files(i, j), buf[j - j0]), range(j0, j1)))
                # Edge chunks: whatever lies beyond n rows/columns must not count.
                if n % t:
                    if j1 == nb:
                        buf[-1, :, n % t:] = 0.0
                    if i == nb - 1:
                        buf[:, n % t:, :] = 0.0
                return buf

            for (i, j0, j1, _), buf in _read_ahead(read, pieces):
                rows = slice(i * t, (i + 1) * t)
                out[rows] += np.matmul(buf, vp[j0 * t:j1 * t].reshape(j1 - j0, t, k)).sum(0)
                if j0 == i:  # the diagonal chunk counts once
                    buf, j0 = buf[1:], j0 + 1
                if j1 > j0:
                    out[j0 * t:j1 * t] += np.matmul(buf.transpose(0, 2, 1),
                                                    vp[rows]).reshape(-1, k)
        return torch.from_numpy(out[:n]).to(v.dtype)

    def _matvec_upper_zarr(self, v: Tensor) -> Tensor:
        # Band a = one chunk row of stored tiles (a, b >= a), read in column pieces that
        # fit the budget; the diagonal tile is stored whole, the others serve K_ab v_b
        # and K_ba v_a = K_abᵀ v_a.
        arr, n = self.kernel_array, self.n
        t = arr.chunks[0]
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        width = max(t, self.memory_budget // (TILE_ARRAYS * itemsize * t)) // t * t
        out = torch.zeros_like(v)
        np_dtype = _np_dtype(self.dtype)
        pieces = [(a0, min(a0 + t, n), c0, min(c0 + width, n))
                  for a0 in range(0, n, t) for c0 in range(a0, n, width)]
        # Every other product walks the bands backwards: it starts on those the previous
        # one read last, which may still be in the page cache when K exceeds RAM (a
        # 40 GB kernel on a 24 GB machine: about 8 GB per product came from the cache,
        # judging from 70 s per product at the disk's 450 MB/s).
        if self.n_matvecs % 2 == 0:
            pieces.reverse()

        def read(p):
            a0, a1, c0, c1 = p
            return torch.from_numpy(np.ascontiguousarray(arr[a0:a1, c0:c1], dtype=np_dtype))

        for (a0, a1, c0, c1), blk in _read_ahead(read, pieces):
            out[a0:a1] += blk @ v[c0:c1]
            if c0 == a0:  # the diagonal tile counts once
                blk, c0 = blk[:, a1 - a0:], a1
            if c1 > c0:
                out[c0:c1] += t_matmul(blk, v[a0:a1])
        return out

    def _panel(self, rows: slice) -> Tensor:
        """Rows of the cached kernel as a tensor. `rows_as_tensor` slices tensors without
        a copy but copies numpy arrays; a C-ordered numpy array / memmap of the compute
        dtype is wrapped here instead (a panel of a 40k kernel is ~1 GB: a copy per panel
        doubled the memory traffic of every product)."""
        k = self.kernel_array
        if isinstance(k, np.ndarray) and k.dtype == _np_dtype(self.dtype):
            block = k[rows]
            if block.flags.c_contiguous:
                import warnings

                with warnings.catch_warnings():  # read-only memmap: torch only reads it
                    warnings.simplefilter("ignore", UserWarning)
                    return torch.from_numpy(block)
        return rows_as_tensor(k, rows, self.dtype, "kernel")

    def _matvec_computed(self, v: Tensor) -> Tensor:
        t, n = self.tile, self.n
        out = torch.zeros_like(v)
        blocks = tile_slices(n, t)
        for a, ra in enumerate(blocks):
            xa = self._x(ra)
            out[ra] += self.net.kernel(xa, get=self.get, dtype=self.dtype,
                                       memory_budget=self.memory_budget) @ v[ra]
            for rb in blocks[a + 1:]:
                k = self.net.kernel(xa, self._x(rb), get=self.get, dtype=self.dtype,
                                    memory_budget=self.memory_budget)
                out[ra] += k @ v[rb]
                out[rb] += t_matmul(k, v[ra])  # symmetry: K_ba = K_abᵀ, computed once
        return out

    def __repr__(self) -> str:
        src = "cached kernel" if self.kernel_array is not None else f"{self.get} of net"
        return (f"KernelOperator(n={self.n}, {src}, shift={self.shift:.3g}, "
                f"tile={self.tile})")
