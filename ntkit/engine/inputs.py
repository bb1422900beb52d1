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
        if arr.dtype == object:
            raise TypeError(f"{name} must be a numeric array, got an object array")
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


def as_pair(x1, x2, dtype: torch.dtype | None = None, *,
            spatial: bool = False) -> tuple[Tensor, Tensor | None]:
    """Validate (x1, x2); x2 may be None. Both end on x1's device."""
    x1 = as_batch(x1, "x1", dtype, spatial=spatial)
    if x2 is None:
        return x1, None
    x2 = as_batch(x2, "x2", dtype, spatial=spatial).to(x1.device)
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
