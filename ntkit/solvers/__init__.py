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
- `solve_ridge` (a `KernelOperator`), `ridge_solver` (a kernel in memory),
  `predict_batched`: the one dispatch from a solver name ("auto", "cholesky", "pcg",
  "nystrom") to an algorithm for t = ∞ ridge/GP solves, used by `ntkit.sklearn` and
  `ntkit.predict`; `check_solver` validates a name by lookup.
"""

from ntkit.solvers.checks import add_diagonal_regularizer, as_tensor, check_finite, check_kernel
from ntkit.solvers.cholesky import CholeskyFactor, NotPositiveDefiniteError, cholesky_jitter
from ntkit.solvers.eigh import NumericalWarning, PSDEigh, eigh_psd
from ntkit.solvers.kernel_ridge import (
    DENSE_SOLVERS,
    SOLVERS,
    RidgeSolution,
    RidgeSolver,
    check_solver,
    predict_batched,
    resolve_solver,
    ridge_solver,
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
    "DENSE_SOLVERS",
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
    "RidgeSolver",
    "add_diagonal_regularizer",
    "as_tensor",
    "check_finite",
    "check_solver",
    "check_kernel",
    "cholesky_jitter",
    "eigh_psd",
    "nystrom_solve",
    "pcg",
    "predict_batched",
    "resolve_solver",
    "ridge_solver",
    "sample_centers",
    "solve_ridge",
]
