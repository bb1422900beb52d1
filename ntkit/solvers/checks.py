"""Input conversion and validation for kernel matrices.

Every public entry point of `ntkit.predict` and `ntkit.solvers` goes through these
helpers, so that bad input fails early with a message naming the argument and the
problem, instead of surfacing later as a NaN or a LAPACK error code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

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
    """Raise ValueError if ``x`` holds NaN or ±inf."""
    if not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf)")
    return x


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
        round-off asymmetry cannot leak into eigenvectors or factorizations.
      rtol: asymmetry tolerance; default 1e-8 (float64) or 1e-4 (float32).

    Raises:
      TypeError: not an array.
      ValueError: not 2-D, non-finite, not square or not symmetric.
    """
    k = as_tensor(k, name, dtype, device)
    if k.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n1, n2) kernel matrix, got shape "
                         f"{tuple(k.shape)}")
    check_finite(k, name)
    if not symmetric:
        return k
    if k.shape[0] != k.shape[1]:
        raise ValueError(f"{name} must be square, got shape {tuple(k.shape)}")
    if k.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(k.shape)})")
    if rtol is None:
        rtol = SYMMETRY_RTOL_FLOAT32 if dtype == torch.float32 else SYMMETRY_RTOL_FLOAT64
    scale = float(k.abs().max())
    asym = float((k - k.T).abs().max())
    if asym > rtol * scale:
        raise ValueError(f"{name} is not symmetric: max |K - Kᵀ| = {asym:.3g} exceeds "
                         f"{rtol:.1g} × max |K| = {rtol * scale:.3g}")
    return 0.5 * (k + k.T)


def add_diagonal_regularizer(k: Tensor, diag_reg: float, absolute_scale: bool = False) -> Tensor:
    """Return ``k + δ I`` with δ = diag_reg (absolute) or diag_reg · mean(diag k) (relative).

    The relative scale (the default, as in neural-tangents, where it is written
    ``diag_reg * trace(k) / n``) makes ``diag_reg`` independent of the kernel's units.
    """
    diag_reg = float(diag_reg)
    if not np.isfinite(diag_reg) or diag_reg < 0:
        raise ValueError(f"diag_reg must be a finite number >= 0, got {diag_reg}")
    if diag_reg == 0.0:
        return k
    delta = diag_reg if absolute_scale else diag_reg * float(torch.diagonal(k).mean())
    return k + delta * torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
