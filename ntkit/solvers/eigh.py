"""Symmetric eigendecomposition of a PSD kernel, eigenvalues clamped at 0.

Kernel matrices are positive semidefinite in exact arithmetic, but their smallest
eigenvalues come out of ``eigh`` as round-off of either sign. Functions of the kernel
used by gradient-flow predictions (``exp(-λt)``, ``(1 - exp(-λt))/λ``) blow up for
negative λ, so eigenvalues are clamped at 0, and a warning is raised only when the
negative part is larger than round-off (the matrix is genuinely indefinite).
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ntkit.solvers.checks import check_kernel
from ntkit.solvers.products import t_matmul

__all__ = [
    "NumericalWarning",
    "PSDEigh",
    "eigh_psd",
    "user_stacklevel",
]


class NumericalWarning(UserWarning):
    """Conditioning problems: jitter added, indefinite or ill-conditioned kernels."""


def user_stacklevel() -> int:
    """``stacklevel`` for `warnings.warn` that points at the first frame outside ntkit.

    Called from the function that warns; the warning then shows the user's line rather
    than an internal one, however deep inside ntkit the check ran.
    """
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("ntkit."):
        frame = frame.f_back
        level += 1
    return level


# Eigenvalues of a PSD matrix computed in floating point are accurate to about
# n · eps · λ_max; negative eigenvalues within this multiple of that bound are
# treated as round-off and clamped silently.
_NEG_EIG_SLACK = 100.0


@dataclass(frozen=True)
class PSDEigh:
    """Eigendecomposition ``K = V diag(λ) Vᵀ`` of a symmetric PSD matrix.

    Attributes:
      eigenvalues: (n,) ascending, clamped at 0.
      eigenvectors: (n, n) orthonormal columns V.
      min_eigenvalue: the smallest eigenvalue before clamping (may be negative).
      max_eigenvalue: the largest eigenvalue.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    min_eigenvalue: float
    max_eigenvalue: float

    @property
    def condition_number(self) -> float:
        """λ_max / λ_min of the unclamped spectrum; inf when λ_min <= 0."""
        if self.min_eigenvalue <= 0:
            return math.inf
        return self.max_eigenvalue / self.min_eigenvalue

    def apply(self, fn_evals: Tensor, rhs: Tensor) -> Tensor:
        """Compute ``V diag(g) Vᵀ rhs`` for each row g of ``fn_evals``.

        Args:
          fn_evals: (T, n) values of a function of the eigenvalues, one row per time.
          rhs: (n, ...) right-hand side.

        Returns:
          (T, n, ...).
        """
        v = self.eigenvectors
        flat = rhs.reshape(rhs.shape[0], -1)
        proj = t_matmul(v, flat)  # (n, c): rhs in the eigenbasis, shared across times
        out = torch.einsum("ji,ti,ic->tjc", v, fn_evals, proj)
        return out.reshape((fn_evals.shape[0],) + tuple(rhs.shape))

    def pinv_cutoff(self) -> float:
        """Eigenvalues at or below this are numerically zero (rank-revealing cutoff)."""
        eps = torch.finfo(self.eigenvalues.dtype).eps
        return self.eigenvalues.shape[0] * eps * max(self.max_eigenvalue, 0.0)


def eigh_psd(k: Any, name: str = "kernel", *, warn: bool = True, validate: bool = True) -> PSDEigh:
    """Eigendecompose a symmetric PSD kernel matrix, clamping eigenvalues at 0.

    Args:
      k: (n, n) symmetric kernel (numpy or torch); validated (finite, square, symmetric).
      name: argument name for messages.
      warn: emit a `NumericalWarning` when the matrix is indefinite beyond round-off.
      validate: run `check_kernel` (callers that already validated pass False).

    Returns:
      `PSDEigh` with clamped eigenvalues (ascending) and the unclamped extremes.
    """
    if validate:
        k = check_kernel(k, name)
    evals, evecs = torch.linalg.eigh(k)
    lo, hi = float(evals[0]), float(evals[-1])
    n = k.shape[0]
    eps = torch.finfo(k.dtype).eps
    scale = max(abs(lo), abs(hi))
    if warn and lo < -_NEG_EIG_SLACK * n * eps * scale:
        warnings.warn(
            f"{name} is not positive semidefinite: smallest eigenvalue {lo:.3g} "
            f"(relative {lo / scale:.2g} of the largest, {hi:.3g}); negative eigenvalues "
            f"are clamped at 0. Check how the kernel was computed.",
            NumericalWarning, stacklevel=user_stacklevel())
    return PSDEigh(evals.clamp_min(0.0), evecs, lo, hi)
