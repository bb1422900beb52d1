"""Kernel ridge solves ``(K + δ I) α = y`` by a chosen method, and batched predictions.

This is the one place that maps a solver name to an algorithm, shared by
`ntkit.sklearn` and `ntkit.predict`:

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
from ntkit.solvers.cholesky import cholesky_jitter
from ntkit.solvers.nystrom import NystromPreconditioner, nystrom_solve
from ntkit.solvers.operator import KernelOperator, rows_as_tensor
from ntkit.solvers.pcg import PCGResult, pcg

SOLVERS = ("auto", "cholesky", "pcg", "nystrom")


def check_solver(solver: Any) -> str:
    """Validate a solver name (ValueError naming the choices)."""
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
    return solver


def resolve_solver(solver: str, n: int, memory_budget: int | None,
                   dtype: torch.dtype = torch.float64) -> str:
    """The concrete solver for "auto": Cholesky while 2 n² entries fit the budget."""
    check_solver(solver)
    if solver != "auto":
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
        k.diagonal().add_(op.shift)
        return RidgeSolution("cholesky", cholesky_jitter(k, "kernel", validate=False).solve(y))
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


DENSE_SOLVERS = ("auto", "cholesky", "pcg")


def dense_ridge_solver(k: Tensor, delta: float, solver: str = "cholesky", *,
                       tol: float = 1e-10, max_iter: int | None = None,
                       n_centers: int | None = None,
                       memory_budget: int | None = None) -> Callable[[Tensor], Tensor] | None:
    """A solve ``b ↦ (K + δ I)⁻¹ b`` by PCG for an in-memory kernel, or None for Cholesky.

    Used by `ntkit.predict` at t = ∞: "pcg" (or "auto" when 2 n² entries exceed the
    budget) avoids the O(n³) factorization; ``n_centers`` adds the Nyström
    preconditioner (needs δ > 0). Returns None when the caller should factor (Cholesky).
    A PCG solve that misses ``tol`` warns (RuntimeWarning) with its residual.
    """
    if not isinstance(solver, str) or solver not in DENSE_SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected one of {DENSE_SOLVERS}")
    solver = resolve_solver(solver, k.shape[0], memory_budget, k.dtype)
    if solver == "cholesky":
        return None
    op = KernelOperator(kernel=k, shift=delta, dtype=k.dtype, memory_budget=memory_budget)
    pre = None
    if n_centers is not None:
        pre = NystromPreconditioner(op, n_centers)

    def solve(b: Tensor) -> Tensor:
        res = pcg(op.matvec, b, precond=pre, tol=tol, max_iter=max_iter, dtype=k.dtype)
        if not res.converged:
            warnings.warn(f"PCG did not reach tol={tol:g} in {res.iterations} iterations "
                          f"(relative residual {float(res.residual.max()):.2e})",
                          RuntimeWarning, stacklevel=3)
        return res.x
    return solve
