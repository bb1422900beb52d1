"""Preconditioned conjugate gradients for SPD systems with several right-hand sides.

Solves ``A X = B`` for a symmetric positive definite A given only as a product
``X ↦ A X`` (e.g. a `KernelOperator`, whose cost is one pass over the kernel whatever
the number of columns), with an optional SPD preconditioner ``R ↦ P⁻¹ R``.

The k columns run k independent CG recurrences in lockstep (the product is shared, the
step sizes are per column; Saad, "Iterative methods for sparse linear systems", alg.
9.1). A column stops moving once its relative residual ‖b − A x‖ / ‖b‖ is at most
``tol``; the solve stops when all have, or after ``max_iter`` iterations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ntkit.solvers.checks import as_tensor, check_finite
from ntkit.solvers.cholesky import NotPositiveDefiniteError

__all__ = [
    "Operator",
    "PCGResult",
    "pcg",
]

Operator = Callable[[Tensor], Tensor]


@dataclass
class PCGResult:
    """Outcome of `pcg`.

    Attributes:
      x: solution, the shape of b ((n,) or (n, k)).
      iterations: CG iterations run (products with A, not counting the initial residual).
      residual_history: one (k,) tensor per iteration (index 0: the start) of the
        recursive relative residuals ‖r‖ / ‖b‖ per column.
      converged: True if every column reached ``tol``.
      validation_history: the values of ``validation(x)`` per iteration (empty if no
        validation function was given).
    """

    x: Tensor
    iterations: int
    residual_history: list[Tensor] = field(default_factory=list)
    converged: bool = False
    validation_history: list[float] = field(default_factory=list)

    @property
    def residual(self) -> Tensor:
        """Final relative residual per column, (k,)."""
        return self.residual_history[-1]


def _check_positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def pcg(matvec: Operator, b: Tensor, *, precond: Operator | None = None, x0: Tensor | None = None,
        tol: float = 1e-8, max_iter: int | None = None,
        callback: Callable[..., bool | None] | None = None,
        validation: Callable[[Tensor], float] | None = None, progress: bool = False,
        dtype: torch.dtype = torch.float64) -> PCGResult:
    """Solve ``A x = b`` by (preconditioned) conjugate gradients.

    Args:
      matvec: X (n, k) ↦ A X, A symmetric positive definite (a `KernelOperator`, a
        dense tensor's ``__matmul__``, ...).
      b: (n,) or (n, k) right-hand side(s).
      precond: R (n, k) ↦ P⁻¹ R for an SPD preconditioner P ≈ A (e.g.
        `NystromPreconditioner`); None: plain CG.
      x0: warm start of b's shape (None: zeros).
      tol: relative residual ‖b − A x‖ / ‖b‖ per column at which that column stops.
      max_iter: iteration cap (default: n, where exact arithmetic would have converged).
      callback: called after each iteration as ``callback(iteration, residual_norms,
        validation_error)`` (residual_norms: (k,) relative residuals; validation_error:
        the value of ``validation(x)``, or None); returning True stops the solve.
      validation: x ↦ a float (e.g. a validation error), evaluated every iteration and
        recorded in ``validation_history``.
      progress: show a tqdm bar with the largest relative residual.
      dtype: compute dtype.

    Returns:
      `PCGResult` (solution, iterations, residual history, converged flag).

    Raises:
      NotPositiveDefiniteError: A or the preconditioner showed a non-positive curvature
        pᵀ A p ≤ 0 or rᵀ P⁻¹ r < 0 (not SPD, or too ill-conditioned for this dtype).
      ValueError / TypeError: bad shapes, non-finite input, bad options.

    Example:
      >>> g = torch.Generator().manual_seed(0)
      >>> m = torch.randn(50, 50, dtype=torch.float64, generator=g)
      >>> a = m @ m.T + 50 * torch.eye(50, dtype=torch.float64)   # SPD
      >>> b = torch.ones(50, 2, dtype=torch.float64)                # two right-hand sides
      >>> res = pcg(lambda v: a @ v, b, tol=1e-10)
      >>> res.converged, res.x.shape
      (True, torch.Size([50, 2]))
      >>> bool(torch.allclose(a @ res.x, b, rtol=1e-8))
      True
    """
    if not callable(matvec):
        raise TypeError(f"matvec must be callable, got {type(matvec).__name__}")
    if precond is not None and not callable(precond):
        raise TypeError(f"precond must be callable or None, got {type(precond).__name__}")
    b = check_finite(as_tensor(b, "b", dtype), "b")
    if b.ndim not in (1, 2) or b.shape[0] == 0:
        raise ValueError(f"b must have shape (n,) or (n, k), got {tuple(b.shape)}")
    tol = float(tol)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol}")
    n = b.shape[0]
    max_iter = n if max_iter is None else _check_positive_int("max_iter", max_iter)
    B = b.reshape(n, -1)
    if x0 is None:
        X = torch.zeros_like(B)
        R = B.clone()
    else:
        x0 = check_finite(as_tensor(x0, "x0", dtype, b.device), "x0")
        if x0.shape != b.shape:
            raise ValueError(f"x0 must have b's shape {tuple(b.shape)}, got "
                             f"{tuple(x0.shape)}")
        X = x0.reshape(n, -1).clone()
        R = B - _apply(matvec, X, "matvec")
    bnorm = torch.linalg.vector_norm(B, dim=0)
    # A zero right-hand side has the solution 0: measure its residual absolutely.
    scale = torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm))
    if x0 is not None:
        X[:, bnorm == 0] = 0.0
        R[:, bnorm == 0] = 0.0
    res = torch.linalg.vector_norm(R, dim=0) / scale
    history = [res.clone()]
    vals: list[float] = []
    active = res > tol
    Z = _apply(precond, R, "precond") if precond is not None else R
    rz = (R * Z).sum(0)
    P = Z.clone()
    it = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc="pcg", unit="it")
    try:
        while bool(active.any()) and it < max_iter:
            AP = _apply(matvec, P, "matvec")
            pap = (P * AP).sum(0)
            if bool((pap[active] <= 0).any()):
                raise NotPositiveDefiniteError(
                    f"conjugate gradients met a non-positive curvature pᵀAp = "
                    f"{float(pap[active].min()):.3g} at iteration {it + 1}: the operator is "
                    "not positive definite (add regularization)")
            alpha = torch.where(active, rz / torch.where(active, pap, 1.0), 0.0)
            X += alpha * P
            R -= alpha * AP
            it += 1
            res = torch.linalg.vector_norm(R, dim=0) / scale
            history.append(res.clone())
            active = active & (res > tol)
            val = None
            if validation is not None:
                val = float(validation(X.reshape(b.shape)))
                vals.append(val)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(residual=f"{float(res.max()):.2e}")
            if callback is not None and callback(it, res.clone(), val):
                break
            if not bool(active.any()):
                break
            Z = _apply(precond, R, "precond") if precond is not None else R
            rz_new = (R * Z).sum(0)
            if bool((rz_new[active] < 0).any()):
                raise NotPositiveDefiniteError(
                    f"the preconditioner is not positive definite: rᵀP⁻¹r = "
                    f"{float(rz_new[active].min()):.3g} < 0 at iteration {it}")
            beta = torch.where(active, rz_new / torch.where(rz > 0, rz, 1.0), 0.0)
            P = Z + beta * P
            rz = rz_new
    finally:
        if bar is not None:
            bar.close()
    converged = bool((history[-1] <= tol).all())
    return PCGResult(X.reshape(b.shape), it, history, converged, vals)


def _apply(op: Operator, v: Tensor, name: str) -> Tensor:
    out = op(v)
    if not isinstance(out, Tensor) or out.shape != v.shape:
        raise ValueError(f"{name} must map an ({v.shape[0]}, k) tensor to one of the same "
                         f"shape, got {getattr(out, 'shape', type(out).__name__)}")
    return out.to(v.dtype)
