"""Validation and conversion of user inputs, shared by every public entry point."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

KERNEL_FIELDS = ("nngp", "ntk", "cov1", "cov2")


def as_batch(x, name: str, dtype: torch.dtype | None = None, *, spatial: bool = False) -> Tensor:
    """Convert ``x`` to a finite (n, d) floating tensor, or raise a clear error.

    With ``spatial=True``, channels-first batches (n, C, *S) with 1 to 3 spatial axes are
    accepted too.

    Accepts torch tensors and numpy arrays (or nested lists) of any floating dtype.
    ``dtype`` (if given) is the dtype to compute in; the device is kept.
    """
    if isinstance(x, Tensor):
        t = x
    elif isinstance(x, (np.ndarray, list, tuple)):
        arr = np.asarray(x)
        if arr.dtype == object or arr.dtype.kind not in "biufc":
            raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must have a floating dtype (float32/float64/...), got {t.dtype}; "
                        f"convert it with .double()")
    if t.ndim != 2 and not (spatial and 3 <= t.ndim <= 5):
        what = ("2-D (n_examples, n_features), or channels first (n, C, L) / (n, C, H, W) "
                "for convolutional networks" if spatial else "2-D (n_examples, n_features)")
        raise ValueError(f"{name} must be {what}; got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (0 rows)")
    if any(s == 0 for s in t.shape[1:]):
        raise ValueError(f"{name} has an empty feature axis: shape {tuple(t.shape)}")
    if dtype is not None:
        t = t.to(dtype)
    if not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        where = f"row {bad[0]}, column {bad[1]}" if t.ndim == 2 else f"index {tuple(bad)}"
        raise ValueError(f"{name} contains NaN or inf (first at {where})")
    return t


def is_lazy(x) -> bool:
    """Whether ``x`` is an on-disk array read tile by tile (see `LazyBatch`): a
    ``np.memmap``, or an array-like that is not in RAM (zarr, h5py: has ``shape``,
    ``dtype`` and slicing, but is no tensor, ndarray or list)."""
    if isinstance(x, np.memmap):
        return True
    if isinstance(x, (Tensor, np.ndarray, list, tuple, LazyBatch)):
        return isinstance(x, LazyBatch)
    return all(hasattr(x, a) for a in ("shape", "dtype", "__getitem__"))


class LazyBatch:
    """A batch of examples left on disk; ``batch[a:b]`` reads those rows as a tensor.

    The engine slices its inputs per tile, so an input larger than RAM (a ``np.memmap``
    or a zarr array) costs only the rows of the tiles in flight. Each slice is converted
    to ``dtype`` and checked for NaN/inf when read (the error names the row), instead of
    up front, which would read the whole input.

    Pickles by reference: a memmap as (file, offset, dtype, shape), reopened read-only;
    a zarr array as its store path. So Dask workers on the same file system read the
    rows they need themselves.
    """

    def __init__(self, source, name: str, dtype: torch.dtype | None, *, spatial: bool = False):
        shape = tuple(int(s) for s in source.shape)
        kind = np.dtype(source.dtype).kind
        if kind != "f":
            raise TypeError(f"{name} must have a floating dtype (float32/float64/...), got "
                            f"{source.dtype}; convert it first")
        if len(shape) != 2 and not (spatial and 3 <= len(shape) <= 5):
            raise ValueError(f"{name} must be 2-D (n_examples, n_features) or channels first "
                             f"(n, C, ...); got shape {shape}")
        if shape[0] == 0 or any(s == 0 for s in shape[1:]):
            raise ValueError(f"{name} is empty: shape {shape}")
        self.source = source
        self.name = name
        self.shape = torch.Size(shape)
        self.ndim = len(shape)
        self.dtype = dtype if dtype is not None else _torch_dtype(source.dtype)
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> Tensor:
        if not isinstance(rows, slice):
            raise TypeError("a LazyBatch is read by row slices, e.g. batch[0:256]")
        start = rows.indices(self.shape[0])[0]
        arr = np.array(self.source[rows])  # a copy of these rows only
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(self.dtype)
        if not bool(torch.isfinite(t).all()):
            bad = (~torch.isfinite(t)).nonzero()[0].tolist()
            raise ValueError(f"{self.name} contains NaN or inf (first in row {start + bad[0]})")
        return t

    def same_source(self, other) -> bool:
        """Whether ``other`` reads the same array (x2 is x1: the symmetric case)."""
        if not isinstance(other, LazyBatch):
            return False
        a, b = self.source, other.source
        if a is b:
            return True
        if isinstance(a, np.memmap) and isinstance(b, np.memmap):
            return (a.filename is not None and a.filename == b.filename
                    and a.offset == b.offset and a.shape == b.shape and a.dtype == b.dtype
                    and a.strides == b.strides)
        return False

    def __reduce__(self):
        src = self.source
        if _whole_memmap(src):
            return (_reopen_memmap, (src.filename, src.offset, src.dtype.str, src.shape,
                                     self.name, self.dtype, self.ndim > 2))
        return (_rebuild, (src, self.name, self.dtype, self.ndim > 2))


def _rebuild(src, name, tdtype, spatial):
    return LazyBatch(src, name, tdtype, spatial=spatial)


def _whole_memmap(a) -> bool:
    """Whether ``a`` is an entire, contiguous np.memmap of a file (not a slice of one):
    then (file, offset, dtype, shape) describe it and it can be reopened elsewhere."""
    import mmap

    if not (isinstance(a, np.memmap) and a.filename is not None and a.flags.c_contiguous):
        return False
    m = getattr(a, "_mmap", None)
    if m is None:
        return False
    start = np.frombuffer(m, dtype=np.uint8).ctypes.data
    return a.ctypes.data - start == a.offset % mmap.ALLOCATIONGRANULARITY


def _reopen_memmap(filename, offset, dtype, shape, name, tdtype, spatial):
    mm = np.memmap(filename, mode="r", dtype=np.dtype(dtype), shape=shape, offset=offset)
    return LazyBatch(mm, name, tdtype, spatial=spatial)


def _torch_dtype(np_dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype


#: Byte alignment of tile operands (torch's CPU allocator aligns to 64 bytes).
ALIGNMENT = 64


def aligned(t: Tensor) -> Tensor:
    """``t`` itself if contiguous and ALIGNMENT-aligned, else an aligned contiguous copy.

    MKL's GEMM rounds differently depending on the operands' alignment (measured: an
    (256, 5) @ (5, 256) float64 product changes in the last bit when x starts 8 bytes
    off a 16-byte boundary). Tile operands are row slices of an input, read from a file
    or received by a Dask worker at varying addresses; aligning them makes every tile's
    value a function of its rows only, so a resumed or distributed run is bitwise equal
    to an uninterrupted local one. The copy is of (tile, d) entries, small next to the
    tile's (tile, tile) work.
    """
    if t.is_contiguous() and t.data_ptr() % ALIGNMENT == 0:
        return t
    return t.contiguous().clone() if t.is_contiguous() else t.contiguous()


def as_pair(x1, x2, dtype: torch.dtype | None = None, *,
            spatial: bool = False, lazy: bool = False) -> tuple[Tensor, Tensor | None]:
    """Validate (x1, x2); x2 may be None. Both end on x1's device.

    With ``lazy=True``, memmaps and zarr arrays stay on disk as a `LazyBatch` (read per
    tile); everything else is converted as by `as_batch`.
    """
    def one(x, name):
        if lazy and is_lazy(x):
            return x if isinstance(x, LazyBatch) else LazyBatch(x, name, dtype, spatial=spatial)
        return as_batch(x, name, dtype, spatial=spatial)

    x1 = one(x1, "x1")
    if x2 is None:
        return x1, None
    x2 = one(x2, "x2")
    if isinstance(x2, Tensor):
        x2 = x2.to(x1.device)
    if x2.shape[1:] != x1.shape[1:]:
        what = "feature dimensions" if x1.ndim == 2 and x2.ndim == 2 else "per-example shapes"
        a = x1.shape[1] if x1.ndim == 2 and x2.ndim == 2 else tuple(x1.shape[1:])
        b = x2.shape[1] if x1.ndim == 2 and x2.ndim == 2 else tuple(x2.shape[1:])
        raise ValueError(f"x1 and x2 have different {what}: {a} vs {b}")
    return x1, x2


def check_get(get, allowed: Sequence[str] = KERNEL_FIELDS) -> tuple[str, ...] | str | None:
    """Normalize ``get``: None, a single name, or a tuple of unique known names."""
    if get is None:
        return None
    names = (get,) if isinstance(get, str) else get
    try:
        names = tuple(names)
    except TypeError:
        raise TypeError(f"get must be a name, a tuple of names or None, got {get!r}") from None
    if not names:
        raise ValueError("get is empty; ask for at least one of " + ", ".join(allowed))
    for n in names:
        if not isinstance(n, str) or n not in allowed:
            raise ValueError(f"unknown kernel name {n!r} in get; expected one of {tuple(allowed)}")
    if len(set(names)) != len(names):
        raise ValueError(f"get names a kernel twice: {names}")
    return get if isinstance(get, str) else names


def check_dtype(dtype) -> torch.dtype:
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype (torch.float64, torch.float32), "
                        f"got {dtype!r}")
    return dtype
