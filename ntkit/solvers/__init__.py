"""Factorizations of kernel matrices with conditioning safeguards.

- `eigh_psd`: cached-friendly eigendecomposition, eigenvalues clamped at 0.
- `cholesky_jitter`: Cholesky with automatic jitter, reporting the jitter used and an
  estimate of the condition number.
- `check_kernel`, `add_diagonal_regularizer`: validation and regularization helpers.
"""

from ntkit.solvers.checks import add_diagonal_regularizer, as_tensor, check_finite, check_kernel
from ntkit.solvers.cholesky import CholeskyFactor, NotPositiveDefiniteError, cholesky_jitter
from ntkit.solvers.eigh import NumericalWarning, PSDEigh, eigh_psd

__all__ = [
    "CholeskyFactor",
    "NotPositiveDefiniteError",
    "NumericalWarning",
    "PSDEigh",
    "add_diagonal_regularizer",
    "as_tensor",
    "check_finite",
    "check_kernel",
    "cholesky_jitter",
    "eigh_psd",
]
