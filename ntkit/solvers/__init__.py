"""Factorizations and solvers for kernel matrices.

- `eigh_psd`: cached-friendly eigendecomposition, eigenvalues clamped at 0.
- `cholesky_jitter`: Cholesky with automatic jitter, reporting the jitter used and an
  estimate of the condition number.
- `check_kernel`, `add_diagonal_regularizer`: validation and regularization helpers.
- `KernelOperator`: matrix-free ``(K + δ I) v`` with kernel tiles computed on the fly
  (or read from a cached on-disk kernel), never holding n × n.
- `pcg`: preconditioned conjugate gradients, several right-hand sides, warm start,
  callback, progress bar.
- `NystromPreconditioner` (Falkon's form) and `nystrom_solve` (subset of regressors).
- `solve_ridge`, `predict_batched`: kernel ridge by solver name ("auto", "cholesky",
  "pcg", "nystrom"), and batched predictions.
"""

from ntkit.solvers.checks import add_diagonal_regularizer, as_tensor, check_finite, check_kernel
from ntkit.solvers.cholesky import CholeskyFactor, NotPositiveDefiniteError, cholesky_jitter
from ntkit.solvers.eigh import NumericalWarning, PSDEigh, eigh_psd
from ntkit.solvers.kernel_ridge import (
    SOLVERS,
    RidgeSolution,
    predict_batched,
    resolve_solver,
    solve_ridge,
)
from ntkit.solvers.nystrom import (
    NystromPreconditioner,
    NystromSolution,
    nystrom_solve,
    sample_centers,
)
from ntkit.solvers.operator import KernelOperator
from ntkit.solvers.pcg import PCGResult, pcg

__all__ = [
    "SOLVERS",
    "CholeskyFactor",
    "KernelOperator",
    "NotPositiveDefiniteError",
    "NumericalWarning",
    "NystromPreconditioner",
    "NystromSolution",
    "PCGResult",
    "PSDEigh",
    "RidgeSolution",
    "add_diagonal_regularizer",
    "as_tensor",
    "check_finite",
    "check_kernel",
    "cholesky_jitter",
    "eigh_psd",
    "nystrom_solve",
    "pcg",
    "predict_batched",
    "resolve_solver",
    "sample_centers",
    "solve_ridge",
]
