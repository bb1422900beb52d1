"""Output writers: where finished tiles go, and what a kernel call returns.

Results are tensors in memory, numpy arrays (``np.memmap`` keeps a kernel larger than
RAM on disk), zarr arrays (whose chunks set the tiles, `ntkit.engine.storage`), or files
in shared memory that Dask workers write into (`ntkit.engine.distributed`). With x2 = x1
a tile (i, j) above the diagonal is also written mirrored at (j, i), except into arrays
that keep only the upper tiles.
"""

from __future__ import annotations

from collections import namedtuple
from functools import cache

import numpy as np
import torch
from torch import Tensor

import ntkit.dual.native as native
from ntkit.engine.storage import is_zarr_array
from ntkit.kernel import Kernel, swap_examples


@cache
def result_type(names: tuple[str, ...]):
    """The namedtuple type a call with several names in ``get`` returns."""
    return namedtuple("Kernels", names)


def check_out(out, names: tuple[str, ...], shapes: dict, dtype: torch.dtype) -> dict:
    """Validate ``out=``: an array for one name, or a dict name -> array; returns a dict."""
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


def write(dst, rows: slice, cols: slice | None, value: Tensor) -> None:
    """dst[rows, cols] = value (dst[rows] when cols is None), for any output array."""
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


def check_finite(k: Kernel) -> None:
    """Raise FloatingPointError if a tile's nngp/ntk overflowed or became NaN."""
    for name in ("nngp", "ntk"):
        t = getattr(k, name)
        # One reduction first: a NaN or inf entry makes the sum non-finite; a finite sum
        # proves every entry finite, and only a non-finite one needs the entrywise test
        # (the sum of finite entries can overflow).
        if (t is not None and not bool(torch.isfinite(t.sum()))
                and not bool(torch.isfinite(t).all())):
            raise FloatingPointError(
                f"the {name} kernel overflowed or became NaN for some inputs (input norms too "
                "large for this activation/depth in this dtype?); try float64 or rescale inputs")


def store_tile(results: dict, k, r: slice, c: slice, i: int, j: int, sym: bool,
               upper: frozenset = frozenset()) -> None:
    """Write tile (i, j) (rows ``r``, columns ``c``) of every result, and its mirror when
    x2 = x1 (not into arrays named in ``upper``). cov1 comes from the first tile of each
    row block, cov2 from the first row block. Fields listed in ``k.written`` (a Dask
    worker stored them already) are skipped."""
    written = getattr(k, "written", ())
    check_finite(k)
    d = len(k.spatial)
    for name, arr in results.items():
        if name in written:
            continue
        if name in ("nngp", "ntk"):
            t = getattr(k, name)
            write(arr, r, c, t)
            if sym and i != j and name not in upper:
                if not (d == 0 and isinstance(arr, Tensor)
                        and native.transpose_into(t, arr[c, r])):
                    write(arr, c, r, swap_examples(t, d, k.full))
        elif name == "cov1" and j == (i if sym else 0):
            write(arr, r, None, k.cov1)
        elif name == "cov2" and i == 0:
            write(arr, c, None, k.var2)


class MaskCollector:
    """The output masks (``Kernel.mask1``/``mask2``) of a masked kernel call, gathered
    from its tiles by row and column block, for the `Kernel` that ``get=None`` returns
    (the probe's masks are one example's). Inactive (collects nothing) otherwise."""

    def __init__(self, active: bool, sym: bool):
        self.active, self.sym = active, sym
        self.rows: dict[int, torch.Tensor] = {}
        self.cols: dict[int, torch.Tensor] = {}

    def add(self, k, i: int, j: int) -> None:
        if not self.active:
            return
        m1, m2 = getattr(k, "mask1", None), getattr(k, "mask2", None)
        if m1 is not None:
            self.rows.setdefault(i, m1)
        if m2 is not None:
            (self.rows if self.sym else self.cols).setdefault(j, m2)

    def masks(self, n_rows: int, n_cols: int) -> tuple | None:
        """(mask1, mask2) of the whole call (mask2 None when x2 is x1), or None."""
        if not self.active:
            return None
        need = [(self.rows, n_rows)] + ([] if self.sym else [(self.cols, n_cols)])
        if any(len(blocks) != n for blocks, n in need):
            raise RuntimeError("the masks of a get=None kernel are gathered from its tiles, "
                               "and some were not computed in this call (resume=True); "
                               "ask for the fields by name (get=...) instead")
        m1 = torch.cat([self.rows[b] for b in range(n_rows)])
        m2 = None if self.sym else torch.cat([self.cols[b] for b in range(n_cols)])
        return m1, m2


def package(results: dict, get, names: tuple[str, ...], probe: Kernel, sym: bool,
            masks: tuple | None = None):
    """What a kernel call returns for ``get``: a `Kernel`, one array, or a namedtuple.
    ``masks``: the call's output (mask1, mask2) for the `Kernel` (`MaskCollector`)."""
    if get is None:
        # The probe's flags (storage, Gaussianity, stream bookkeeping) describe the whole
        # kernel too, so that it composes: ``net2.kernel(net1.kernel(x, get=None))``.
        m1, m2 = (None, None) if masks is None else masks
        return probe.replace(nngp=results["nngp"], ntk=results["ntk"], cov1=results["cov1"],
                             cov2=results["cov2"], x1_is_x2=sym, trace=None, same=None,
                             mask1=m1, mask2=m2)
    if isinstance(get, str):
        return results[get]
    return result_type(names)(*(results[n] for n in names))


def flush(results: dict) -> None:
    """Flush memory-mapped results to disk."""
    for arr in results.values():
        if isinstance(arr, np.memmap):
            arr.flush()
