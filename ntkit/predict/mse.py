"""Closed-form gradient flow on the squared loss in function space.

Convention (as in neural-tangents): the loss is 0.5 · mean((f - y)²) over all N =
y.size entries of the targets, and time ``t`` counts steps of size ``learning_rate``,
so the training outputs follow

    df/dt = -learning_rate · K (f - y) / N,

applied to each output column with the same (n, n) kernel K. Hence

    f_train(t) = y + exp(-η t K / N) (f_train(0) - y)
    f_test(t)  = f_test(0) + K_test,train K⁻¹ (I - exp(-η t K / N)) (y - f_train(0)).

Finite times use a cached eigendecomposition of K (eigenvalues clamped at 0); t = None
(t = ∞) uses a cached Cholesky solve, as in neural-tangents.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ntkit.predict._utils import (
    broadcast_init,
    check_learning_rate,
    check_pair_targets,
    check_targets,
    check_test_train,
    expm1_flow,
    flatten_pairs,
    pair_outputs,
    parse_times,
    phi_flow,
)
from ntkit.solvers.checks import add_diagonal_regularizer, check_kernel
from ntkit.solvers.cholesky import CholeskyFactor
from ntkit.solvers.eigh import PSDEigh, eigh_psd
from ntkit.solvers.kernel_ridge import DENSE_SOLVERS, RidgeSolver, check_solver, ridge_solver

__all__ = ["MSEPredictor", "gradient_descent_mse"]


class MSEPredictor:
    """Predictions of gradient flow on MSE; returned by `gradient_descent_mse`.

    Call it as ``fx_train_t, fx_test_t = fn(t, fx_train_0, fx_test_0, k_test_train)``.
    The factorizations of the regularized train-train kernel are computed on first use
    and cached: `eigh` (finite t) and `cholesky` (t = None).
    """

    def __init__(self, k_train_train: Any, y_train: Any, learning_rate: float = 1.0,
                 diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False, *,
                 dtype: torch.dtype = torch.float64, solver: str = "cholesky",
                 tol: float = 1e-10, max_iter: int | None = None,
                 n_centers: int | None = None):
        check_solver(solver, DENSE_SOLVERS)
        self.n_out = pair_outputs(k_train_train)
        self._y_shape: tuple[int, ...] | None = None
        if self.n_out is not None:
            # (n, n, k, k): the flow of the (n·k, n·k) matrix on the flattened targets,
            # as neural-tangents does; y.size (the loss normalization) is unchanged.
            y2 = check_pair_targets(y_train, self.n_out, "y_train", dtype, None)
            k_train_train = flatten_pairs(k_train_train, "k_train_train", self.n_out, dtype,
                                          None)
            self._y_shape = tuple(y2.shape)
            y_train = y2.reshape(-1, 1)
        k = check_kernel(k_train_train, "k_train_train", dtype=dtype)
        self.dtype = dtype
        self.device = k.device
        self.y_train = check_targets(y_train, k.shape[0], dtype=dtype, device=k.device)
        self.learning_rate = check_learning_rate(learning_rate)
        self.k_train_train = k
        self._k_reg = add_diagonal_regularizer(k, diag_reg, diag_reg_absolute_scale)
        self._diag_reg = (float(diag_reg), diag_reg_absolute_scale)
        self._eigh: PSDEigh | None = None
        self._chol: CholeskyFactor | None = None
        self.solver = solver
        self._pcg_options = dict(tol=tol, max_iter=max_iter, n_centers=n_centers)
        self._solve: RidgeSolver | None = None

    @property
    def n_train(self) -> int:
        """Rows of the (flattened) train-train matrix: n, or n·k for (n, n, k, k) kernels."""
        return self.k_train_train.shape[0]

    @property
    def eigh(self) -> PSDEigh:
        """Cached eigendecomposition of the regularized train-train kernel."""
        if self._eigh is None:
            self._eigh = eigh_psd(self._k_reg, "k_train_train", validate=False)
        return self._eigh

    def _ridge_solver(self, solver: str) -> RidgeSolver:
        reg, absolute = self._diag_reg
        return ridge_solver(self.k_train_train, reg, solver, absolute_scale=absolute,
                            name="k_train_train", regularized=self._k_reg,
                            factor=self._chol, **self._pcg_options)

    @property
    def cholesky(self) -> CholeskyFactor:
        """Cached Cholesky factor of the regularized train-train kernel (with its jitter)."""
        if self._chol is None:
            self._chol = self._ridge_solver("cholesky").factor
        return self._chol

    def solve(self, b: Tensor) -> Tensor:
        """(K + δ I)⁻¹ b by the chosen solver (from `ntkit.solvers.ridge_solver`: the
        cached Cholesky factor, or PCG); used at t = ∞."""
        if self._solve is None:
            self._solve = self._ridge_solver(self.solver)
            if self._chol is None:
                self._chol = self._solve.factor
        return self._solve(b)

    def __call__(self, t: Any = None, fx_train_0: Any = 0.0, fx_test_0: Any = None,
                 k_test_train: Any = None) -> tuple[Tensor | None, Tensor | None]:
        """Outputs at time(s) ``t``.

        Args:
          t: None (t = ∞, by a linear solve), a scalar, or an array of times of any
            shape (training steps; fractional allowed; ``inf`` allowed). Must be >= 0.
          fx_train_0: network outputs on the training set at t = 0: a scalar or an
            array broadcastable to y_train's shape. None: skip train predictions (the
            test predictions then start from train outputs 0).
          fx_test_0: outputs on the test set at t = 0 (scalar or (m, k) array); None
            means 0. Only used with ``k_test_train``.
          k_test_train: (m, n) kernel between test and train inputs ((m, n, k, k) when
            the train-train kernel is (n, n, k, k)). Without it no test predictions are
            made.

        Returns:
          ``(fx_train_t, fx_test_t)``: (*t.shape, *y_train.shape) and
          (*t.shape, m, *y_train.shape[1:]); either is None when not requested
          (fx_train_0 None, or k_test_train None). For t = None the time axes are absent.
        """
        if self.n_out is not None:
            return self._call_pairs(t, fx_train_0, fx_test_0, k_test_train)
        return self._call(t, fx_train_0, fx_test_0, k_test_train)

    def _call_pairs(self, t, fx_train_0, fx_test_0, k_test_train):
        """`__call__` for (n, n, k, k) kernels: flatten the inputs, reshape the outputs."""
        (n, k), dtype, dev = self._y_shape, self.dtype, self.device
        if fx_train_0 is not None:
            fx_train_0 = broadcast_init(fx_train_0, (n, k), "fx_train_0", dtype,
                                        dev).reshape(-1, 1)
        if k_test_train is not None:
            k_test_train = flatten_pairs(k_test_train, "k_test_train", k, dtype, dev)
            if fx_test_0 is not None:
                m = k_test_train.shape[0] // k
                fx_test_0 = broadcast_init(fx_test_0, (m, k), "fx_test_0", dtype,
                                           dev).reshape(-1, 1)
        fx_train, fx_test = self._call(t, fx_train_0, fx_test_0, k_test_train)

        def back(f):   # (*t, rows·k, 1) -> (*t, rows, k)
            return None if f is None else f.reshape(*f.shape[:-2], -1, k)

        return back(fx_train), back(fx_test)

    def _call(self, t, fx_train_0, fx_test_0, k_test_train):
        dtype, dev, y = self.dtype, self.device, self.y_train
        if k_test_train is None and fx_test_0 is not None:
            raise ValueError("fx_test_0 was given without k_test_train; pass k_test_train "
                             "to get test predictions")
        if fx_train_0 is None and k_test_train is None:
            raise ValueError("nothing to predict: fx_train_0 is None and k_test_train is "
                             "None")
        f0 = None if fx_train_0 is None else broadcast_init(fx_train_0, tuple(y.shape),
                                                            "fx_train_0", dtype, dev)
        k_td = None
        ft0 = None
        if k_test_train is not None:
            k_td = check_test_train(k_test_train, self.n_train, "k_test_train", dtype, dev)
            test_shape = (k_td.shape[0],) + tuple(y.shape[1:])
            ft0 = broadcast_init(0.0 if fx_test_0 is None else fx_test_0, test_shape,
                                 "fx_test_0", dtype, dev)
        # Residual at t = 0; an absent fx_train_0 counts as zero outputs (neural-tangents).
        r0 = -y if f0 is None else f0 - y

        if t is None:
            fx_train = None if f0 is None else y.clone()
            fx_test = None
            if k_td is not None:
                fx_test = ft0 - k_td @ self.solve(r0)
            return fx_train, fx_test

        times, t_shape = parse_times(t, dtype, dev)
        eig = self.eigh
        s = times * self.learning_rate / y.numel()
        cutoff = eig.pinv_cutoff()
        fx_train = fx_test = None
        if f0 is not None:
            d = eig.apply(expm1_flow(eig.eigenvalues, s, cutoff), r0)
            fx_train = (f0 + d).reshape(t_shape + tuple(y.shape))
        if k_td is not None:
            d = eig.apply(phi_flow(eig.eigenvalues, s, cutoff), r0)  # (T, n, ...)
            d = torch.einsum("mn,tn...->tm...", k_td, d)
            fx_test = (ft0 - d).reshape(t_shape + tuple(ft0.shape))
        return fx_train, fx_test


def gradient_descent_mse(k_train_train: Any, y_train: Any, learning_rate: float = 1.0,
                         diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False, *,
                         dtype: torch.dtype = torch.float64, solver: str = "cholesky",
                         tol: float = 1e-10, max_iter: int | None = None,
                         n_centers: int | None = None) -> MSEPredictor:
    """Predict the outcome of continuous-time gradient descent on the squared loss.

    The loss is 0.5 · mean((f - y)²) over all entries of ``y_train`` (neural-tangents'
    normalization), and time runs in units of ``learning_rate``: the flow is
    ``df/dt = -learning_rate · K (f - y) / y_train.size``.

    Args:
      k_train_train: (n, n) NTK (or NNGP) on the training inputs, numpy or torch;
        symmetric and PSD. The same kernel acts on each of the k output columns. Or
        (n, n, k, k), K[i, j, a, b] between output a of example i and output b of
        example j (``ntkit.empirical_ntk(..., trace_outputs=False)``, neural-tangents'
        ``trace_axes=()``): the flow then uses the (n·k, n·k) matrix K[(i, a), (j, b)]
        on the flattened targets (``diag_reg`` scales with its mean diagonal), and
        ``k_test_train`` must be (m, n, k, k). Θ ⊗ I_k gives the (n, n) Θ's predictions.
      y_train: (n,) or (n, k) targets ((n, k) with an (n, n, k, k) kernel).
      learning_rate: step size η > 0.
      diag_reg: regularization δ: the flow uses ``K + δ I`` (after scaling, below).
      diag_reg_absolute_scale: True: δ = diag_reg; False (default): δ = diag_reg ·
        mean(diag K).
      dtype: compute and output dtype (float64 by default).
      solver: how t = None (t = ∞) solves (K + δ I)⁻¹: "cholesky" (default, cached),
        "pcg" (conjugate gradients, no factorization) or "auto" (Cholesky while 2 n²
        entries fit the default memory budget). Finite t always uses `eigh`.
      tol, max_iter, n_centers: PCG options (see `ntkit.solvers.pcg`; n_centers adds the
        Nyström preconditioner).

    Returns:
      `MSEPredictor` ``fn``; ``fx_train_t, fx_test_t = fn(t, fx_train_0=0.0,
      fx_test_0=None, k_test_train=None)``; see `MSEPredictor.__call__`.

    Example:
      >>> import ntkit.layers as nl
      >>> net = nl.serial(nl.Dense(512), nl.ReLU(), nl.Dense(2))
      >>> g = torch.Generator().manual_seed(0)
      >>> x = torch.randn(20, 3, dtype=torch.float64, generator=g)
      >>> xt = torch.randn(5, 3, dtype=torch.float64, generator=g)
      >>> y = torch.randn(20, 2, dtype=torch.float64, generator=g)
      >>> fn = gradient_descent_mse(net.kernel(x, get="ntk"), y, learning_rate=0.1)
      >>> f_train, f_test = fn([0., 10., 100.], fx_train_0=0.0,
      ...                      k_test_train=net.kernel(xt, x, get="ntk"))
      >>> f_train.shape, f_test.shape               # (T, n, k), (T, m, k)
      (torch.Size([3, 20, 2]), torch.Size([3, 5, 2]))
      >>> f_train_inf, _ = fn(None)                  # t = ∞ interpolates the targets
      >>> bool(torch.allclose(f_train_inf, y))
      True
      >>> k4 = net.kernel(x, get="ntk")[:, :, None, None] * torch.eye(2)   # Θ ⊗ I_2
      >>> f4, _ = gradient_descent_mse(k4, y, learning_rate=0.1)(10.0)   # (n, n, k, k)
      >>> f4.shape, bool(torch.allclose(f4, fn(10.0)[0]))
      (torch.Size([20, 2]), True)
    """
    return MSEPredictor(k_train_train, y_train, learning_rate, diag_reg,
                        diag_reg_absolute_scale, dtype=dtype, solver=solver, tol=tol,
                        max_iter=max_iter, n_centers=n_centers)
