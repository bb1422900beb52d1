"""Nyström methods with M centers: Falkon's preconditioner and the plain Nyström solve.

Notation: K the (n, n) kernel, δ > 0 the absolute ridge (ntkit's ``diag_reg`` times the
mean diagonal of K, or ``diag_reg`` itself with ``diag_reg_absolute_scale``), so the
exact system is ``(K + δ I) α = y``. M centers are a seeded uniform sample of the
training points; K_nM = K[:, centers], K_MM = K[centers, centers] = Tᵀ T (T upper
triangular, Cholesky with jitter when K_MM is singular).

**Preconditioner** (Falkon: Rudi et al. 2017, Meanti et al. 2020, in the form for the
full n × n system). The Nyström approximation K̂ = K_nM K_MM⁻¹ K_Mn = U Uᵀ with
U = K_nM T⁻¹ satisfies 0 ≼ K̂ ≼ K, and P = K̂ + δ I is inverted by Woodbury:

    P⁻¹ r = (r − U G⁻¹ Uᵀ r) / δ,   G = δ I + Uᵀ U = Aᵀ A.

``gram="exact"`` forms Uᵀ U = T⁻ᵀ (K_Mn K_nM) T⁻¹ in one streamed pass over K_nM, so P
is SPD for sure and P⁻¹(K + δI) has its spectrum in [1, 1 + ‖K − K̂‖/δ]. ``gram="falkon"``
uses Falkon's estimate K_Mn K_nM ≈ (n/M) K_MM² (exact in expectation for uniform
centers), which gives

    G = n (T Tᵀ / M + (δ/n) I),  A = chol(T Tᵀ / M + λ I),  λ = δ / n,

i.e. Falkon's two M × M Cholesky factors with its λ (Falkon's system is K + λ n I). It
costs O(M³) instead of O(n M²), but P⁻¹ is SPD only when Uᵀ U ≺ G, which the estimate
does not guarantee; `pcg` raises if it is not.

**Plain Nyström** (subset of regressors): f(x) = K(x, centers) β with

    (K_Mn K_nM + δ K_MM) β = K_Mn y,

accumulated in one streamed pass over row panels of K_nM (an M × M and an M × k sum),
then solved as (T⁻ᵀ K_Mn K_nM T⁻¹ + δ I) γ = T⁻ᵀ K_Mn y, β = T⁻¹ γ, an SPD system for
δ > 0 even when K_MM is singular. With M = n this is the exact solve (K + δ I)⁻¹ y.
Memory: O(M² + panel · M); time: n M kernel entries and n M² flops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ntkit.solvers.cholesky import cholesky_jitter
from ntkit.solvers.operator import KernelOperator
from ntkit.solvers.products import t_matmul

__all__ = [
    "NystromPreconditioner",
    "NystromSolution",
    "effective_ridge",
    "nystrom_solve",
    "sample_centers",
]

_GRAMS = ("exact", "falkon")


def sample_centers(n: int, n_centers: int, seed: int = 0) -> Tensor:
    """Sorted indices of ``n_centers`` distinct training points, uniform, seeded."""
    if isinstance(n_centers, bool) or not isinstance(n_centers, int) or n_centers < 1:
        raise ValueError(f"n_centers must be a positive int, got {n_centers!r}")
    if n_centers > n:
        raise ValueError(f"n_centers = {n_centers} exceeds the number of training points "
                         f"{n}")
    if n_centers == n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=gen)[:n_centers].sort().values


def _upper_factor(k_mm: Tensor) -> Tensor:
    """T upper with Tᵀ T = K_MM (+ jitter when singular)."""
    fac = cholesky_jitter(k_mm, "K_MM (Nyström centers)", max_relative_jitter=1e-4,
                          warn=False)
    return fac.L.mT


def _tri(T: Tensor, b: Tensor, transpose: bool) -> Tensor:
    """T⁻¹ b (transpose False) or T⁻ᵀ b (transpose True) for upper T."""
    if transpose:
        return torch.linalg.solve_triangular(T.mT, b, upper=False)
    return torch.linalg.solve_triangular(T, b, upper=True)


def _shift(op: KernelOperator) -> float:
    if not op.shift > 0:
        raise ValueError("Nyström methods need a positive ridge: the operator's shift "
                         f"(δ) is {op.shift}; set diag_reg > 0")
    return op.shift


def _check_y(y: Tensor, n: int) -> Tensor:
    if not isinstance(y, Tensor) or y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"y must be a tensor of shape ({n},) or ({n}, k), got "
                         f"{getattr(y, 'shape', type(y).__name__)}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y contains NaN or inf")
    return y


def _stream_gram(op: KernelOperator, idx: Tensor, y: Tensor | None, keep: bool):
    """One pass over K[:, idx]: (K_Mn K_nM, K_Mn y or None, K_nM if keep else None)."""
    m = len(idx)
    gram = torch.zeros(m, m, dtype=op.dtype)
    rhs = None if y is None else torch.zeros(m, y.shape[1], dtype=op.dtype)
    kept = torch.empty(op.n, m, dtype=op.dtype) if keep else None
    for rows, k in op.iter_columns(idx):
        gram.addmm_(k.T, k)
        if rhs is not None:
            rhs += t_matmul(k, y[rows])
        if kept is not None:
            kept[rows] = k
    return 0.5 * (gram + gram.T), rhs, kept


class NystromPreconditioner:
    """P⁻¹ for P = K_nM K_MM⁻¹ K_Mn + δ I (see module docstring), as ``R ↦ P⁻¹ R``.

    Args:
      op: the `KernelOperator` of K + δ I (δ = ``op.shift`` > 0).
      n_centers: M.
      seed: seed of the uniform center sample.
      gram: "exact" (default; one streamed pass, always SPD) or "falkon" (Falkon's
        (n/M) K_MM² estimate, O(M³)).
      store: keep K_nM (n × M) in memory; default: when it fits ``op.memory_budget``.
        Otherwise each application recomputes it in two streamed passes.

    Attributes:
      centers: (M,) sorted center indices; k_nm: the stored K_nM (or None).
    """

    def __init__(self, op: KernelOperator, n_centers: int, *, seed: int = 0,
                 gram: str = "exact", store: bool | None = None):
        if not isinstance(op, KernelOperator):
            raise TypeError(f"op must be a KernelOperator, got {type(op).__name__}")
        if gram not in _GRAMS:
            raise ValueError(f"gram must be one of {_GRAMS}, got {gram!r}")
        self.op, self.delta = op, _shift(op)
        self.centers = sample_centers(op.n, n_centers, seed)
        m, n = len(self.centers), op.n
        itemsize = torch.empty((), dtype=op.dtype).element_size()
        if store is None:
            store = n * m * itemsize <= op.memory_budget
        self.gram = gram
        k_mm = op.principal(self.centers)
        self.T = _upper_factor(k_mm)
        self.k_nm = None
        if gram == "exact":
            g0, _, self.k_nm = _stream_gram(op, self.centers, None, bool(store))
            g = _tri(self.T, _tri(self.T, g0, True).mT, True)  # T⁻ᵀ G0 T⁻¹ (symmetric)
            g = 0.5 * (g + g.mT)
            g.diagonal().add_(self.delta)
            self.A = torch.linalg.cholesky(g).mT  # upper, G = Aᵀ A
            self._g_scale = 1.0
        else:
            tt = self.T @ self.T.mT / m
            tt.diagonal().add_(self.delta / n)
            self.A = torch.linalg.cholesky(0.5 * (tt + tt.mT)).mT
            self._g_scale = float(n)  # G = n Aᵀ A
            if store:
                self.k_nm = torch.cat([k for _, k in op.iter_columns(self.centers)])

    def _k_mn_times(self, r: Tensor) -> Tensor:
        if self.k_nm is not None:
            return t_matmul(self.k_nm, r)
        out = torch.zeros(len(self.centers), r.shape[1], dtype=r.dtype)
        for rows, k in self.op.iter_columns(self.centers):
            out += t_matmul(k, r[rows])
        return out

    def _k_nm_times(self, z: Tensor) -> Tensor:
        if self.k_nm is not None:
            return self.k_nm @ z
        out = torch.empty(self.op.n, z.shape[1], dtype=z.dtype)
        for rows, k in self.op.iter_columns(self.centers):
            out[rows] = k @ z
        return out

    def __call__(self, r: Tensor) -> Tensor:
        flat = r.reshape(r.shape[0], -1)
        w = _tri(self.T, self._k_mn_times(flat), True)  # Uᵀ r = T⁻ᵀ K_Mn r
        # G⁻¹ w = A⁻¹ A⁻ᵀ w / scale
        z = torch.linalg.solve_triangular(self.A.mT, w, upper=False)
        z = torch.linalg.solve_triangular(self.A, z, upper=True) / self._g_scale
        out = (flat - self._k_nm_times(_tri(self.T, z, False))) / self.delta
        return out.reshape(r.shape)


@dataclass
class NystromSolution:
    """Result of `nystrom_solve`: f(x) = K(x, x[centers]) @ coef.

    Attributes:
      centers: (M,) sorted indices of the centers in the training set.
      coef: (M,) or (M, k) coefficients β (the shape of y's trailing axes).
    """

    centers: Tensor
    coef: Tensor


def nystrom_solve(op: KernelOperator, y: Tensor, n_centers: int, *,
                  seed: int = 0) -> NystromSolution:
    """Plain Nyström (subset-of-regressors) ridge solve; see the module docstring.

    Args:
      op: `KernelOperator` of K + δ I (δ = ``op.shift`` > 0 is the ridge).
      y: (n,) or (n, k) targets.
      n_centers: M (M = n gives the exact solution of (K + δ I) α = y).
      seed: seed of the uniform center sample.

    Returns:
      `NystromSolution` (centers, coefficients β with f = K(·, centers) β).
    """
    if not isinstance(op, KernelOperator):
        raise TypeError(f"op must be a KernelOperator, got {type(op).__name__}")
    delta = _shift(op)
    y = _check_y(y, op.n).to(op.dtype)
    idx = sample_centers(op.n, n_centers, seed)
    flat = y.reshape(op.n, -1)
    g0, rhs, _ = _stream_gram(op, idx, flat, keep=False)
    T = _upper_factor(op.principal(idx))
    g = _tri(T, _tri(T, g0, True).mT, True)
    g = 0.5 * (g + g.mT)
    g.diagonal().add_(delta)
    fac = cholesky_jitter(g, "Nyström system", warn=False, validate=False)
    gamma = torch.cholesky_solve(_tri(T, rhs, True), fac.L)
    coef = _tri(T, gamma, False)
    if not bool(torch.isfinite(coef).all()):
        raise FloatingPointError("the Nyström solve produced non-finite coefficients; "
                                 f"K_MM is too ill-conditioned (try a larger ridge), M={len(idx)}")
    return NystromSolution(idx, coef.reshape((len(idx),) + tuple(y.shape[1:])))


def effective_ridge(diag_mean: float, diag_reg: float, absolute: bool = False) -> float:
    """δ from ntkit's ``diag_reg`` convention (relative to mean(diag K) unless absolute)."""
    diag_reg = float(diag_reg)
    if not (math.isfinite(diag_reg) and diag_reg >= 0):
        raise ValueError(f"diag_reg must be a finite number >= 0, got {diag_reg}")
    return diag_reg if absolute else diag_reg * float(diag_mean)
