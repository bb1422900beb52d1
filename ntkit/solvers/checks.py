"""Input conversion and validation for kernel matrices.

Every public entry point of `ntkit.predict` and `ntkit.solvers` goes through these
helpers, so that bad input fails early with a message naming the argument and the
problem, instead of surfacing later as a NaN or a LAPACK error code.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "SYMMETRY_RTOL_FLOAT32",
    "SYMMETRY_RTOL_FLOAT64",
    "add_diagonal_regularizer",
    "as_tensor",
    "check_diag_reg",
    "check_finite",
    "check_kernel",
    "max_asymmetry",
    "ridge_shift",
]

# Relative asymmetry tolerated in a "symmetric" kernel. Kernels computed tile by tile
# (or by autodiff) are symmetric only up to round-off, which grows with the number of
# operations per entry; 1e-8 of the largest entry is far above float64 round-off and
# far below any real asymmetry (a transposed or mismatched matrix).
SYMMETRY_RTOL_FLOAT64 = 1e-8
SYMMETRY_RTOL_FLOAT32 = 1e-4


def as_tensor(x: Any, name: str, dtype: torch.dtype = torch.float64,
              device: torch.device | str | None = None) -> Tensor:
    """Convert a tensor, numpy array or number to a floating tensor of ``dtype``.

    Raises TypeError for objects that are not numeric arrays (strings, None, dicts).
    """
    if isinstance(x, Tensor):
        t = x
    elif isinstance(x, (np.ndarray, np.generic, int, float, list, tuple)):
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as e:  # ragged lists
            raise TypeError(f"{name}: cannot convert to an array ({e})") from None
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
        # (np.ascontiguousarray would turn 0-d arrays into 1-d ones.)
        t = torch.from_numpy(arr if arr.flags.c_contiguous else arr.copy(order="C"))
    else:
        raise TypeError(f"{name}: expected a torch tensor or numpy array, got {type(x).__name__}")
    if t.is_complex():
        raise TypeError(f"{name}: complex values are not supported")
    if t.dtype == torch.bool:
        t = t.to(torch.int64)
    return t.to(dtype=dtype, device=device if device is not None else t.device)


def check_finite(x: Tensor, name: str) -> Tensor:
    """Raise ValueError if ``x`` holds NaN or ±inf.

    One reduction without temporaries: NaN propagates through ``aminmax`` and ±inf shows
    in an extreme, so both extremes are finite iff every entry is. The entries are
    counted only on the error path.
    """
    if x.numel() and not _extremes_finite(x):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf)")
    return x


def _extremes(x: Tensor) -> tuple[float, float]:
    lo, hi = torch.aminmax(x)
    # One host sync for both numbers.
    lo, hi = torch.stack((lo, hi)).tolist()
    return lo, hi


def _extremes_finite(x: Tensor) -> bool:
    lo, hi = _extremes(x)
    return math.isfinite(lo) and math.isfinite(hi)


# Square tiles compared with their mirror on the CPU: a tile and its transpose both fit
# in L2, so the strided read of the mirror stays cheap (a whole-matrix ``K - Kᵀ`` reads
# one operand column-wise out of cache and allocates n² temporaries).
_CPU_TILE = 128


def max_asymmetry(k: Tensor, memory_budget: int | None = None) -> float:
    """max |K - Kᵀ| of a square matrix, reading each off-diagonal pair once.

    On the CPU, 128×128 tiles of the lower triangle are compared with their mirrors; on
    other devices, row panels as tall as ``memory_budget`` allows (one panel temporary),
    since there a few large kernels beat many small ones. NaN propagates (the result is
    NaN when an off-diagonal entry is NaN).
    """
    n = k.shape[0]
    if n <= 1:
        return 0.0
    parts = []
    if k.device.type == "cpu":
        b = _CPU_TILE
        buf = torch.empty(b * b, dtype=k.dtype)
        for i in range(0, n, b):
            for j in range(0, i + 1, b):
                a = k[i:i + b, j:j + b]
                o = buf[:a.numel()].view(a.shape)
                torch.sub(a, k[j:j + b, i:i + b].T, out=o)
                parts.append(torch.linalg.vector_norm(o, float("inf")))
    else:
        from ntkit.engine.memory import check_memory_budget

        budget = check_memory_budget(memory_budget, k.device)
        b = max(1, min(n, budget // max(1, 2 * n * k.element_size())))
        for i in range(0, n, b):
            j = min(i + b, n)
            parts.append(torch.linalg.vector_norm(k[i:j, :j] - k[:j, i:j].T, float("inf")))
    return float(torch.stack(parts).amax())


def check_kernel(k: Any, name: str, *, symmetric: bool = True,
                 dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None,
                 rtol: float | None = None) -> Tensor:
    """Validate a kernel matrix and return it as a tensor.

    Args:
      k: (n1, n2) kernel matrix, numpy or torch.
      name: argument name, used in error messages.
      symmetric: require a square matrix, symmetric up to ``rtol`` times its largest
        absolute entry; it is then returned exactly symmetrized, (K + Kᵀ)/2, so that
        round-off asymmetry cannot leak into eigenvectors or factorizations. An exactly
        symmetric K is returned as is (no copy, and on its own device): callers keep a
        reference to it, so don't modify it in place afterwards.
      rtol: asymmetry tolerance; default 1e-8 (float64) or 1e-4 (float32).

    Raises:
      TypeError: not an array.
      ValueError: not 2-D, non-finite, not square or not symmetric.
    """
    k = as_tensor(k, name, dtype, device)
    if k.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n1, n2) kernel matrix, got shape "
                         f"{tuple(k.shape)}")
    if symmetric:
        if k.shape[0] != k.shape[1]:
            raise ValueError(f"{name} must be square, got shape {tuple(k.shape)}")
        if k.shape[0] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(k.shape)})")
    if k.numel() == 0:
        return k
    # Two passes over K in all: its extremes (finiteness and scale at once), then its
    # asymmetry. A copy is made only when K is not exactly symmetric already.
    lo, hi = _extremes(k)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        check_finite(k, name)  # raises, with counts
    if not symmetric:
        return k
    if rtol is None:
        rtol = SYMMETRY_RTOL_FLOAT32 if dtype == torch.float32 else SYMMETRY_RTOL_FLOAT64
    scale = max(abs(lo), abs(hi))
    asym = max_asymmetry(k)
    if asym > rtol * scale:
        raise ValueError(f"{name} is not symmetric: max |K - Kᵀ| = {asym:.3g} exceeds "
                         f"{rtol:.1g} × max |K| = {rtol * scale:.3g}")
    if asym == 0.0:
        return k
    return 0.5 * (k + k.T)


def check_diag_reg(diag_reg: Any) -> float:
    """``diag_reg`` as a float; ValueError unless it is a finite number >= 0."""
    diag_reg = float(diag_reg)
    if not np.isfinite(diag_reg) or diag_reg < 0:
        raise ValueError(f"diag_reg must be a finite number >= 0, got {diag_reg}")
    return diag_reg


def ridge_shift(diagonal: Tensor, diag_reg: float, absolute_scale: bool = False) -> float:
    """The absolute ridge δ: ``diag_reg``, or ``diag_reg · mean(diagonal)`` (relative)."""
    diag_reg = check_diag_reg(diag_reg)
    return diag_reg if absolute_scale else diag_reg * float(diagonal.mean())


def add_diagonal_regularizer(k: Tensor, diag_reg: float, absolute_scale: bool = False) -> Tensor:
    """Return ``k + δ I`` with δ = diag_reg (absolute) or diag_reg · mean(diag k) (relative).

    The relative scale (the default, as in neural-tangents, where it is written
    ``diag_reg * trace(k) / n``) makes ``diag_reg`` independent of the kernel's units.
    """
    delta = ridge_shift(torch.diagonal(k), diag_reg, absolute_scale)
    if float(diag_reg) == 0.0:
        return k
    # A copy with the diagonal shifted in place: no n×n identity, one pass.
    out = k.clone()
    out.diagonal().add_(delta)
    return out
