"""Exact Gaussian-process posteriors of infinitely wide networks (t = ∞).

For test inputs with kernels K (NNGP) and Θ (NTK), train kernels regularized as
``K + δ I`` for the solves (δ from ``diag_reg``), and targets y:

- ``"nngp"``: Bayesian posterior of the NNGP:
  mean = K_td K⁻¹ y,  cov = K_tt - K_td K⁻¹ K_dt;
- ``"ntk"``: distribution of an infinite ensemble of infinitely wide networks trained
  to convergence by gradient flow on MSE (Lee et al. 2019, "Wide neural networks of
  any depth evolve as linear models"):
  mean = Θ_td Θ⁻¹ y,
  cov  = K_tt - (Θ_td Θ⁻¹ K_dt + transpose) + Θ_td Θ⁻¹ K_dd Θ⁻¹ Θ_dt;
- ``"ntkgp"``: posterior of a GP with the NTK as prior covariance (He et al. 2020):
  mean = Θ_td Θ⁻¹ y,  cov = Θ_tt - Θ_td Θ⁻¹ Θ_dt.

Subscripts: d = train (data), t = test. These are neural-tangents' ``gp_inference``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ntkit.predict._utils import (
    KERNEL_NAMES,
    Gaussian,
    canonicalize_get,
    check_pair_targets,
    check_targets,
    check_test_test,
    check_test_train,
    flatten_pairs,
    is_array,
    kernel_field,
    pack_output,
    pair_outputs,
    require_field,
    unflatten_pairs,
)
from ntkit.solvers.checks import check_diag_reg, check_kernel
from ntkit.solvers.cholesky import CholeskyFactor
from ntkit.solvers.kernel_ridge import DENSE_SOLVERS, RidgeSolver, check_solver, ridge_solver

__all__ = ["GP_GETS", "GPPredictor", "gp_inference"]

GP_GETS = ("nngp", "ntk", "ntkgp")


class GPPredictor:
    """GP posterior predictor; returned by `gp_inference`.

    Holds the train-train kernels (validated lazily, per kernel name) and caches the
    Cholesky factor of each regularized kernel and K⁻¹ y.
    """

    def __init__(self, k_train_train: Any, y_train: Any, diag_reg: float = 0.0,
                 diag_reg_absolute_scale: bool = False, *,
                 dtype: torch.dtype = torch.float64, eager: bool = True,
                 solver: str = "cholesky", tol: float = 1e-10, max_iter: int | None = None,
                 n_centers: int | None = None, n_out: int | None = None):
        self.dtype = dtype
        check_solver(solver, DENSE_SOLVERS)
        self.solver, self._pcg_options = solver, dict(tol=tol, max_iter=max_iter,
                                                      n_centers=n_centers)
        self._solvers: dict[str, RidgeSolver] = {}
        self.diag_reg = float(diag_reg)
        self.diag_reg_absolute_scale = diag_reg_absolute_scale
        self._source = k_train_train
        self._k: dict[str, Tensor] = {}
        self._chol: dict[str, CholeskyFactor] = {}
        self._kinv_y: dict[str, Tensor] = {}
        check_diag_reg(self.diag_reg)
        # The number of training points comes from y; kernels are checked against it.
        self.device = y_train.device if isinstance(y_train, Tensor) else torch.device("cpu")
        # (n, n, k, k) kernels (decided by the first one): solves with (n·k, n·k) matrices
        # on the flattened targets, as neural-tangents does.
        self.n_out: int | None = n_out   # given by an owner whose kernels come later
        self._y_shape: tuple[int, ...] | None = None
        if eager:
            present = [g for g in KERNEL_NAMES
                       if kernel_field(k_train_train, g, "k_train_train") is not None]
            if not present:
                raise ValueError("k_train_train holds neither an 'nngp' nor an 'ntk' kernel")
            raw = kernel_field(k_train_train, present[0], "k_train_train")
            self.n_out = pair_outputs(raw)
            first = check_kernel(self._flat(raw, "k_train_train"), "k_train_train", dtype=dtype)
            self.device = first.device
        if self.n_out is not None:
            y2 = check_pair_targets(y_train, self.n_out, "y_train", dtype, self.device)
            self._y_shape = tuple(y2.shape)
            y_train = y2.reshape(-1, 1)
        self.y_train = check_targets(y_train, None, dtype=dtype, device=self.device)
        self.n_train = self.y_train.shape[0]
        if eager:
            for g in present:
                self.kernel(g)

    def _flat(self, k: Any, name: str) -> Any:
        """An (n1, n2, k, k) kernel as its (n1·k, n2·k) matrix; others unchanged (a
        matrix is checked against the flattened shape by the caller)."""
        if self.n_out is None or (is_array(k) and k.ndim == 2):
            return k
        return flatten_pairs(k, name, self.n_out, self.dtype, self.device)

    def _share_bare_matrix(self, g: str) -> bool:
        # A bare matrix serves every mode; validate and factor it only once.
        if not is_array(self._source):
            return False
        other = next((h for h in self._k if h != g), None)
        if other is None:
            return False
        self._k[g] = self._k[other]
        return True

    def kernel(self, g: str, why: str = "") -> Tensor:
        """The validated (n, n) train-train kernel ``g`` ("nngp" or "ntk")."""
        if g not in self._k and not self._share_bare_matrix(g):
            k = require_field(self._source, g, "k_train_train", why)
            k = self._flat(k, f"k_train_train.{g}")
            k = check_kernel(k, f"k_train_train.{g}", dtype=self.dtype, device=self.device)
            if k.shape[0] != self.n_train:
                raise ValueError(f"k_train_train.{g} has shape {tuple(k.shape)} but y_train "
                                 f"has {self.n_train} rows")
            self._k[g] = k
        return self._k[g]

    def cholesky(self, g: str) -> CholeskyFactor:
        """Cached Cholesky factor of the regularized train-train kernel ``g``."""
        factor = self.solve(g).factor
        if factor is not None:
            return factor
        if g not in self._chol:
            other = next((h for h in self._chol if self._k.get(h) is self.kernel(g)), None)
            self._chol[g] = (self._chol[other] if other is not None
                             else self._ridge_solver(g, "cholesky").factor)
        return self._chol[g]

    def _ridge_solver(self, g: str, solver: str) -> RidgeSolver:
        return ridge_solver(self.kernel(g), self.diag_reg, solver,
                            absolute_scale=self.diag_reg_absolute_scale,
                            name=f"k_train_train.{g}", **self._pcg_options)

    def solve(self, g: str) -> RidgeSolver:
        """``b ↦ (K_g + δ I)⁻¹ b`` by the chosen solver, from `ntkit.solvers.ridge_solver`
        (cached; modes that share one bare matrix share one solver)."""
        if g not in self._solvers:
            k = self.kernel(g)
            other = next((h for h in self._solvers if self._k.get(h) is k), None)
            self._solvers[g] = (self._solvers[other] if other is not None
                                else self._ridge_solver(g, self.solver))
        return self._solvers[g]

    def _k_inv_y(self, g: str) -> Tensor:
        if g not in self._kinv_y:
            self._kinv_y[g] = self.solve(g)(self.y_train)
        return self._kinv_y[g]

    def posterior(self, g: str, k_test_train: Any = None, k_test_test: Any = None,
                  compute_cov: bool = False) -> Tensor | Gaussian:
        """Posterior for one mode ``g`` in ("nngp", "ntk", "ntkgp"); see `gp_inference`.

        With (n, n, k, k) kernels: mean (m, k), covariance (m, m, k, k) in the kernels'
        layout (neural-tangents' zipped axes).
        """
        out = self._posterior(g, k_test_train, k_test_test, compute_cov)
        if self.n_out is None:
            return out
        k = self.n_out
        if isinstance(out, Gaussian):
            return Gaussian(out.mean.reshape(-1, k), unflatten_pairs(out.covariance, k))
        return out.reshape(-1, k)

    def _posterior(self, g: str, k_test_train: Any, k_test_test: Any,
                   compute_cov: bool) -> Tensor | Gaussian:
        kk = "ntk" if g == "ntkgp" else g
        solve = self.solve(kk)
        y = self.y_train
        if k_test_train is None:
            # The posterior on the (unregularized) training set is y, with no variance.
            mean = y.clone()
            if not compute_cov:
                return mean
            return Gaussian(mean, torch.zeros(self.n_train, self.n_train, dtype=self.dtype,
                                              device=self.device))
        k_td = self._test_train(k_test_train, kk, f"needed for get={g!r}")
        mean = k_td @ self._k_inv_y(kk)
        if not compute_cov:
            return mean
        m = k_td.shape[0]
        if g == "ntk":
            why = "for the 'ntk' posterior covariance"
            nngp_td = self._test_train(k_test_train, "nngp", why)
            nngp_dd = self.kernel("nngp", why)
            nngp_tt = self._test_test(k_test_test, "nngp", m, why)
            a = solve(k_td.T)  # Θ⁻¹ Θ_dt, (n, m)
            cross = k_td @ solve(nngp_td.T)  # Θ_td Θ⁻¹ K_dt
            cov = nngp_tt - cross - cross.T + a.T @ nngp_dd @ a
        else:  # "nngp" or "ntkgp": posterior of a GP with prior covariance kk
            k_tt = self._test_test(k_test_test, kk, m, f"for the {g!r} posterior covariance")
            cov = k_tt - k_td @ solve(k_td.T)
        return Gaussian(mean, 0.5 * (cov + cov.T))

    def _test_train(self, k: Any, g: str, why: str) -> Tensor:
        v = self._flat(require_field(k, g, "k_test_train", why), f"k_test_train.{g}")
        return check_test_train(v, self.n_train, f"k_test_train.{g}", self.dtype, self.device)

    def _test_test(self, k: Any, g: str, m: int, why: str) -> Tensor:
        if k is None:
            raise ValueError(f"k_test_test is needed {why}")
        v = self._flat(require_field(k, g, "k_test_test", why), f"k_test_test.{g}")
        return check_test_test(v, m, f"k_test_test.{g}", self.dtype, self.device)

    def __call__(self, get: Any = None, k_test_train: Any = None, k_test_test: Any = None) -> Any:
        """Posterior on a test set.

        Args:
          get: "nngp", "ntk", "ntkgp", or a tuple of them; None = ("nngp", "ntk").
          k_test_train: (m, n) test-train kernel(s): a matrix (used for every mode) or a
            container with ``nngp``/``ntk``. The "ntk" covariance needs both. None:
            predictions on the training set (mean y_train, zero covariance).
          k_test_test: (m, m) test-test kernel(s); when given, covariances are returned.
            "nngp"/"ntk" use its NNGP, "ntkgp" its NTK. With k_test_train None, any
            non-None value (e.g. True) asks for the (zero) train-set covariance.

        Returns:
          For a single name: the mean (m, *y.shape[1:]) or a `Gaussian` (mean,
          covariance (m, m)). For a tuple: a namedtuple ``Gaussians`` with one such
          value per name.
        """
        names, single = canonicalize_get(get, GP_GETS)
        compute_cov = k_test_test is not None
        out = {g: self.posterior(g, k_test_train, k_test_test, compute_cov) for g in names}
        return pack_output(out, names, single)


def gp_inference(k_train_train: Any, y_train: Any, diag_reg: float = 0.0,
                 diag_reg_absolute_scale: bool = False, *,
                 dtype: torch.dtype = torch.float64, solver: str = "cholesky",
                 tol: float = 1e-10, max_iter: int | None = None,
                 n_centers: int | None = None) -> GPPredictor:
    """Exact NNGP / NTK / NTK-GP posterior (the t = ∞ limit of `gradient_descent_mse_ensemble`).

    Args:
      k_train_train: (n, n) train-train kernel(s): a matrix (used for every mode) or a
        container (dict, namedtuple, `ntkit.kernel.Kernel`) with ``nngp`` and/or ``ntk``.
        The "ntk" covariance needs both. Or (n, n, k, k) kernels over output pairs
        (``ntkit.empirical_ntk(..., trace_outputs=False)``, neural-tangents'
        ``trace_axes=()``), all kernels alike: solves then use the (n·k, n·k) matrices
        K[(i, a), (j, b)] on the flattened targets, test kernels are (m, n, k, k) and
        (m, m, k, k), and covariances come back as (m, m, k, k).
      y_train: (n,) or (n, k) targets ((n, k) with (n, n, k, k) kernels).
      diag_reg: δ added to the diagonal of the train-train kernel before solving.
      diag_reg_absolute_scale: True: δ = diag_reg; False (default): diag_reg times the
        mean diagonal of that kernel.
      dtype: compute and output dtype (float64 by default).
      solver: "cholesky" (default; factored once, cached), "pcg" (conjugate gradients
        on the kernel in memory: no O(n³) factorization; every solve, the covariance's
        m right-hand sides included, runs PCG to ``tol``), or "auto" (Cholesky while
        2 n² entries fit the default memory budget, else PCG).
      tol, max_iter, n_centers: PCG relative residual, iteration cap (None: n), and
        Nyström preconditioner centers (None: plain CG; needs diag_reg > 0).

    Returns:
      `GPPredictor` ``gp``; ``out = gp(get, k_test_train, k_test_test)``: the mean
      (m, *y.shape[1:]) or a `Gaussian` (mean, covariance (m, m)); see
      `GPPredictor.__call__`. Cholesky factors are cached across calls; a singular
      kernel is factored with jitter and a `NumericalWarning` giving the jitter used.

    "ntk" is the distribution of trained randomly initialized networks (its covariance
    is the ensemble's spread, as `gradient_descent_mse_ensemble`'s); "ntkgp" is the
    Bayesian posterior of a GP with the NTK as prior (what
    ``ntkit.sklearn.NTKRegressor.predict(X, return_std=True)`` returns by default).

    Example:
      >>> import ntkit.layers as nl
      >>> net = nl.serial(nl.Dense(512), nl.ReLU(), nl.Dense(1))
      >>> g = torch.Generator().manual_seed(0)
      >>> x = torch.randn(20, 3, dtype=torch.float64, generator=g)
      >>> xt = torch.randn(5, 3, dtype=torch.float64, generator=g)
      >>> gp = gp_inference(net.kernel(x, get=("nngp", "ntk")), torch.sin(x[:, :1]),
      ...                   diag_reg=1e-4)
      >>> post = gp("ntkgp", net.kernel(xt, x, get="ntk"), net.kernel(xt, get="ntk"))
      >>> post.mean.shape, post.covariance.shape
      (torch.Size([5, 1]), torch.Size([5, 5]))
      >>> gp("nngp", net.kernel(xt, x, get="nngp")).shape     # mean only
      torch.Size([5, 1])
    """
    return GPPredictor(k_train_train, y_train, diag_reg, diag_reg_absolute_scale, dtype=dtype,
                       solver=solver, tol=tol, max_iter=max_iter, n_centers=n_centers)
