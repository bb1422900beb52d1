"""Cholesky factorization with automatic jitter and a condition-number estimate.

A kernel matrix can be singular to working precision (duplicate inputs, very deep or
very smooth kernels). Rather than returning NaN, `cholesky_jitter` retries with a
growing multiple of the mean diagonal added, tells the caller (and the user, by a
`NumericalWarning`) how much it added, and raises `NotPositiveDefiniteError`, naming
the spectrum and condition number, when even the largest allowed jitter fails.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import lapack
from torch import Tensor

from ntkit.solvers.checks import check_kernel
from ntkit.solvers.eigh import NumericalWarning, user_stacklevel


class NotPositiveDefiniteError(ValueError):
    """A matrix that must be positive definite is not, even after jitter."""


# A float64 solve with condition number κ loses about log10(κ) of its ~16 digits;
# beyond 1e12 fewer than 4 digits are left, which deserves a warning.
ILL_CONDITIONED = {torch.float64: 1e12, torch.float32: 1e5}


@dataclass(frozen=True)
class CholeskyFactor:
    """Lower Cholesky factor L of ``K + jitter · I``.

    Attributes:
      L: (n, n) lower-triangular factor.
      jitter: absolute amount added to the diagonal (0.0 if none was needed).
      rcond: LAPACK's estimate of the reciprocal 1-norm condition number of the
        factored matrix (nan when it could not be computed).
    """

    L: Tensor
    jitter: float
    rcond: float

    @property
    def condition_number(self) -> float:
        """Estimated 1-norm condition number, 1 / rcond."""
        if math.isnan(self.rcond):
            return math.nan
        return math.inf if self.rcond == 0 else 1.0 / self.rcond

    def solve(self, b: Tensor) -> Tensor:
        """Solve ``(K + jitter I) x = b`` for b of shape (n,) or (n, ...)."""
        flat = b.reshape(b.shape[0], -1).to(self.L.dtype)
        return torch.cholesky_solve(flat, self.L).reshape(b.shape)


def _rcond(L: Tensor, anorm: float) -> float:
    """LAPACK ?pocon: O(n²) estimate of 1/κ₁ from the Cholesky factor."""
    a = L.detach().cpu().numpy()
    fn = lapack.dpocon if a.dtype == np.float64 else lapack.spocon
    try:
        rcond, info = fn(a, anorm, uplo="L")
    except Exception:  # noqa: BLE001 - an estimate is optional; never fail the solve for it
        return math.nan
    return float(rcond) if info == 0 else math.nan


def cholesky_jitter(k, name: str = "kernel", *, max_relative_jitter: float = 1e-6,
                    initial_relative_jitter: float | None = None,
                    warn: bool = True, validate: bool = True) -> CholeskyFactor:
    """Cholesky factor of a symmetric PSD matrix, adding jitter when needed.

    First tries ``K`` as given. On failure, retries with ``K + δ I`` for
    δ = r · mean(diag K), r growing ×10 from ``initial_relative_jitter`` (default
    1e-12 in float64, 1e-6 in float32, i.e. a few thousand ulps) up to
    ``max_relative_jitter``.

    Args:
      k: (n, n) symmetric kernel (numpy or torch).
      name: argument name for messages.
      max_relative_jitter: largest jitter tried, relative to the mean diagonal.
      initial_relative_jitter: first jitter tried after the plain factorization fails.
      warn: warn (`NumericalWarning`) when jitter was added or the factored matrix is
        ill-conditioned (estimated κ above 1e12 in float64).
      validate: run `check_kernel` (callers that already validated pass False).

    Returns:
      `CholeskyFactor` with the factor, the absolute jitter used, and 1/κ₁.

    Raises:
      NotPositiveDefiniteError: the matrix is indefinite beyond what the largest
        jitter can fix; the message gives its extreme eigenvalues and κ.
    """
    if validate:
        k = check_kernel(k, name)
    n = k.shape[0]
    anorm = float(k.abs().sum(0).max())
    L, info = torch.linalg.cholesky_ex(k)
    jitter = 0.0
    if int(info) != 0:
        scale = float(torch.diagonal(k).mean())
        if not scale > 0:
            raise NotPositiveDefiniteError(
                f"{name} is not positive definite: mean diagonal is {scale:.3g} <= 0")
        if initial_relative_jitter is None:
            initial_relative_jitter = 1e-12 if k.dtype == torch.float64 else 1e-6
        rel = initial_relative_jitter
        eye = torch.eye(n, dtype=k.dtype, device=k.device)
        while rel <= max_relative_jitter * (1 + 1e-9):
            jitter = rel * scale
            L, info = torch.linalg.cholesky_ex(k + jitter * eye)
            if int(info) == 0:
                break
            rel *= 10.0
        if int(info) != 0:
            evals = torch.linalg.eigvalsh(k)
            lo, hi = float(evals[0]), float(evals[-1])
            cond = math.inf if lo <= 0 else hi / lo
            raise NotPositiveDefiniteError(
                f"{name} is not positive definite: eigenvalues in [{lo:.3g}, {hi:.3g}], "
                f"condition number {cond:.3g}; Cholesky failed even with jitter "
                f"{max_relative_jitter:.1g} × mean diagonal. Add regularization "
                f"(diag_reg) or check the kernel.")
        anorm += jitter
    rcond = _rcond(L, anorm)
    fac = CholeskyFactor(L, jitter, rcond)
    if warn and jitter > 0:
        warnings.warn(
            f"{name} is singular or indefinite to working precision: Cholesky succeeded "
            f"after adding jitter {jitter:.3g} to the diagonal "
            f"({jitter / scale:.1g} × mean diagonal); estimated condition number of the "
            f"jittered matrix {fac.condition_number:.3g}. Pass diag_reg to regularize "
            f"explicitly.", NumericalWarning, stacklevel=user_stacklevel())
    elif warn and fac.condition_number > ILL_CONDITIONED.get(k.dtype, 1e12):
        warnings.warn(
            f"{name} is ill-conditioned: estimated condition number "
            f"{fac.condition_number:.3g}; solves may lose about "
            f"{math.log10(fac.condition_number):.0f} digits. Consider diag_reg > 0.",
            NumericalWarning, stacklevel=user_stacklevel())
    return fac
