"""Kernel ridge solves ``(K + δ I) α = y`` by a chosen method, and batched predictions.

This is the one place that maps a solver name to an algorithm. Every t = ∞ solve of
`ntkit.sklearn`, `ntkit.predict` and `ntkit.hyperparameters`' estimator fits goes
through it: `ridge_solver` for a kernel held in memory (``ntkit.predict``, and the
dense branches of `solve_ridge`), `solve_ridge` for a `KernelOperator` (computed or
cached kernels; ``ntkit.sklearn``). Solver names are checked by lookup
(`check_solver`), never by trying a solve:

- "cholesky": dense factorization (needs the n × n kernel in memory);
- "pcg": conjugate gradients on the matrix-free `KernelOperator`, preconditioned by
  `NystromPreconditioner` when ``n_centers`` is given (exact up to ``tol``);
- "nystrom": the plain Nyström (subset-of-regressors) solve with M = ``n_centers``
  centers (an approximation; f = K(·, centers) β);
- "auto": "cholesky" while the kernel and its factor (2 n² entries) fit
  ``memory_budget``, "pcg" beyond.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ntkit.engine.memory import check_memory_budget
from ntkit.solvers.checks import add_diagonal_regularizer, ridge_shift
from ntkit.solvers.cholesky import CholeskyFactor, cholesky_jitter
from ntkit.solvers.nystrom import NystromPreconditioner, nystrom_solve
from ntkit.solvers.operator import KernelOperator, rows_as_tensor
from ntkit.solvers.pcg import PCGResult, pcg

__all__ = [
    "DENSE_SOLVERS",
    "SOLVERS",
    "RidgeSolution",
    "RidgeSolver",
    "check_solver",
    "predict_batched",
    "resolve_solver",
    "ridge_solver",
    "solve_ridge",
]

#: Solver names for a `KernelOperator` (`solve_ridge`).
SOLVERS = ("auto", "cholesky", "pcg", "nystrom")
#: Solver names for an in-memory kernel (`ridge_solver`, `ntkit.predict`): "nystrom"
#: is an approximation with its own predictor form, so it is offered on operators only.
DENSE_SOLVERS = ("auto", "cholesky", "pcg")


def check_solver(solver: Any, allowed: tuple[str, ...] = SOLVERS) -> str:
    """Return ``solver`` if it is one of ``allowed``; otherwise a ValueError naming them.

    Example:
      >>> check_solver("qr")
      Traceback (most recent call last):
      ValueError: unknown solver 'qr'; expected one of 'auto', 'cholesky', 'pcg', 'nystrom'
    """
    if not isinstance(solver, str) or solver not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"unknown solver {solver!r}; expected one of {names}")
    return solver


def resolve_solver(solver: str, n: int, memory_budget: int | None,
                   dtype: torch.dtype = torch.float64) -> str:
    """The concrete solver: "auto" becomes Cholesky while 2 n² entries fit the budget,
    "pcg" beyond; any other valid name is returned as it is."""
    if check_solver(solver) != "auto":
        return solver
    itemsize = torch.empty((), dtype=dtype).element_size()
    return "cholesky" if 2 * n * n * itemsize <= check_memory_budget(memory_budget) else "pcg"


@dataclass
class RidgeSolution:
    """Coefficients of a kernel ridge solve: f(x) = K(x, x_train[centers]) @ coef.

    Attributes:
      solver: the method used ("cholesky", "pcg" or "nystrom").
      coef: (n,) / (n, k) for exact solvers, (M,) / (M, k) for "nystrom".
      centers: (M,) indices for "nystrom", None otherwise (all training points).
      info: the `PCGResult` for "pcg" (its ``x`` is ``coef``), else None.
    """

    solver: str
    coef: Tensor
    centers: Tensor | None = None
    info: PCGResult | None = None
    #: The Cholesky factor of K + δ I ("cholesky" only): further solves with the same
    #: system, e.g. a posterior covariance, reuse it.
    factor: CholeskyFactor | None = None


class RidgeSolver:
    """``b ↦ (K + δ I)⁻¹ b`` for an in-memory (n, n) kernel, by one concrete method.

    Made by `ridge_solver`. Attributes: ``solver`` ("cholesky" or "pcg"), ``delta``
    (the absolute δ), ``factor`` (the `CholeskyFactor` for "cholesky", else None).
    Call it on b of shape (n,) or (n, k).
    """

    def __init__(self, solver: str, delta: float, fn: Callable[[Tensor], Tensor],
                 factor: CholeskyFactor | None = None):
        self.solver, self.delta, self.factor, self._fn = solver, delta, factor, fn

    def __call__(self, b: Tensor) -> Tensor:
        return self._fn(b)

    def __repr__(self) -> str:
        return f"RidgeSolver({self.solver!r}, delta={self.delta:.3g})"


def ridge_solver(k: Tensor, diag_reg: float = 0.0, solver: str = "cholesky", *,
                 absolute_scale: bool = False, tol: float = 1e-10,
                 max_iter: int | None = None, n_centers: int | None = None,
                 memory_budget: int | None = None, name: str = "kernel",
                 regularized: Tensor | None = None, factor: CholeskyFactor | None = None,
                 inplace: bool = False) -> RidgeSolver:
    """The solve ``b ↦ (K + δ I)⁻¹ b`` for a kernel in memory, by solver name.

    Args:
      k: (n, n) validated symmetric kernel.
      diag_reg: δ if ``absolute_scale``, else δ / mean(diag K) (ntkit's and
        neural-tangents' convention).
      solver: "cholesky" (factored once, with automatic jitter), "pcg" (conjugate
        gradients to ``tol``, no O(n³) factorization; ``n_centers`` adds the Nyström
        preconditioner, which needs δ > 0) or "auto" (Cholesky while 2 n² entries fit
        ``memory_budget``, PCG beyond).
      name: the kernel's name in warnings and errors.
      regularized: K + δ I when the caller already holds it (saves a copy).
      factor: the Cholesky factor of K + δ I when the caller already holds it (used
        when the solver resolves to "cholesky").
      inplace: Cholesky may shift k's own diagonal (the caller gives it up).

    Returns:
      A `RidgeSolver`. A PCG solve that misses ``tol`` warns (RuntimeWarning) with its
      residual.
    """
    solver = resolve_solver(check_solver(solver, DENSE_SOLVERS), k.shape[0], memory_budget,
                            k.dtype)
    delta = ridge_shift(torch.diagonal(k), diag_reg, absolute_scale)
    if solver == "cholesky" and factor is not None:
        return RidgeSolver("cholesky", delta, factor.solve, factor)
    if solver == "cholesky":
        if regularized is None:
            if inplace:
                k.diagonal().add_(delta)
                regularized = k
            else:
                regularized = add_diagonal_regularizer(k, diag_reg, absolute_scale)
        factor = cholesky_jitter(regularized, name, validate=False)
        return RidgeSolver("cholesky", delta, factor.solve, factor)
    op = KernelOperator(kernel=k, shift=delta, dtype=k.dtype, memory_budget=memory_budget)
    pre = None if n_centers is None else NystromPreconditioner(op, n_centers)

    def solve(b: Tensor) -> Tensor:
        res = pcg(op.matvec, b, precond=pre, tol=tol, max_iter=max_iter, dtype=k.dtype)
        if not res.converged:
            warnings.warn(f"PCG did not reach tol={tol:g} in {res.iterations} iterations "
                          f"(relative residual {float(res.residual.max()):.2e})",
                          RuntimeWarning, stacklevel=3)
        return res.x
    return RidgeSolver("pcg", delta, solve)


def solve_ridge(op: KernelOperator, y: Tensor, solver: str = "pcg", *,
                n_centers: int | None = None, max_iter: int | None = None,
                tol: float = 1e-8, seed: int = 0, x0: Tensor | None = None,
                callback: Callable[..., Any] | None = None,
                validation: Callable[[Tensor], float] | None = None,
                progress: bool = False) -> RidgeSolution:
    """Solve ``(K + δ I) α = y`` with K and δ = ``op.shift`` from the operator.

    Args:
      op: `KernelOperator` (computed or cached kernel).
      y: (n,) or (n, k) targets.
      solver: "auto", "cholesky", "pcg" or "nystrom" (see module docstring).
      n_centers: M for the Nyström preconditioner ("pcg"; None: plain CG) or the
        Nyström solve ("nystrom"; required).
      max_iter, tol, x0, callback, validation, progress: passed to `pcg`.
      seed: seed of the center sample.

    Returns:
      `RidgeSolution`.

    Example:
      >>> op = KernelOperator(net, x_train, get="ntk", shift=1e-3)
      >>> sol = solve_ridge(op, y_train, "pcg", n_centers=200, tol=1e-8)
      >>> sol.coef.shape, sol.info.converged     # ((n,) or (n, k), True)
    """
    solver = resolve_solver(solver, op.n, op.memory_budget, op.dtype)
    if solver == "nystrom":
        if n_centers is None:
            raise ValueError("solver='nystrom' needs n_centers (the number M of centers)")
        s = nystrom_solve(op, y, n_centers, seed=seed)
        return RidgeSolution("nystrom", s.coef, s.centers)
    if solver == "cholesky":
        if op.kernel_array is not None:
            # A copy: the diagonal is shifted in place below, and a tensor kernel's
            # slice would be the caller's own storage.
            k = rows_as_tensor(op.kernel_array, slice(None), op.dtype, "kernel").clone()
        else:
            k = op.net.kernel(rows_as_tensor(op.x, slice(None), op.dtype), get=op.get,
                              dtype=op.dtype, memory_budget=op.memory_budget)
        rs = ridge_solver(k, op.shift, "cholesky", absolute_scale=True, inplace=True)
        return RidgeSolution("cholesky", rs(y), factor=rs.factor)
    precond = None if n_centers is None else NystromPreconditioner(op, n_centers, seed=seed)
    res = pcg(op.matvec, y, precond=precond, x0=x0, tol=tol, max_iter=max_iter,
              callback=callback, validation=validation, progress=progress, dtype=op.dtype)
    return RidgeSolution("pcg", res.x, None, res)


def predict_batched(kernel_fn: Callable[[Tensor], Tensor], x_test: Any, coef: Tensor, *,
                    n_cols: int, memory_budget: int | None = None,
                    dtype: torch.dtype = torch.float64) -> Tensor:
    """``K(x_test, train) @ coef`` in row batches so that a (batch, n_cols) block fits.

    Args:
      kernel_fn: maps a (b, ...) batch of test inputs to its (b, n_cols) kernel against
        the training points (or centers) that ``coef`` refers to.
      x_test: (m, ...) inputs: tensor, numpy array, memmap or zarr array.
      coef: (n_cols,) or (n_cols, k).
      memory_budget: bytes for one kernel block (None: the default budget).
    """
    m = int(x_test.shape[0])
    itemsize = torch.empty((), dtype=dtype).element_size()
    budget = check_memory_budget(memory_budget)
    b = max(1, min(m, budget // (4 * itemsize * max(1, n_cols))))
    outs = []
    for i in range(0, m, b):
        xb = rows_as_tensor(x_test, slice(i, min(i + b, m)), dtype, "X")
        outs.append(kernel_fn(xb) @ coef)
    return torch.cat(outs)
