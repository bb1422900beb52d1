"""scikit-learn estimators backed by infinite-width NTK / NNGP kernels.

- `NTKRegressor`, `NNGPRegressor`: kernel regression with the NTK or the NNGP of a
  fully-connected network (or any layer spec passed as ``net``), at training time ``t``
  of gradient flow on MSE (``t=None``: t = ∞, i.e. kernel ridge regression with ridge
  ``diag_reg``). ``predict(X, return_std=True)`` also gives the predictive standard
  deviation of the latent function (see below).
- `NTKClassifier`, `NNGPClassifier`: the same on centred one-hot targets (one-hot minus
  1/C; Arora et al. 2020, "Harnessing the power of infinitely wide deep nets on
  small-data tasks"); the predicted class is the argmax of the C outputs.

Convolutional nets take flat rows too: ``input_shape`` (a per-example shape, channels
first, e.g. ``(1, 8, 8)`` or ``(1, 40)``) reshapes each row of X (n, prod(input_shape))
to (n, *input_shape) before the kernel is computed::

    NTKClassifier(net=models.myrtle(5), input_shape=(1, 8, 8)).fit(X, y)   # X: (n, 64)

They follow scikit-learn's conventions (``fit``/``predict``/``score``, ``get_params``,
``clone``, pipelines, ``GridSearchCV``) and pass ``check_estimator``. Inputs are numpy
arrays; everything is computed in float64.

Predictions (η = ``learning_rate``, N = y.size, s = η t / N, K = the kernel chosen by
the class, evaluated on train (d) and test (*) inputs, K_dd regularized by ``diag_reg``):

    mean(t) = K_*d K_dd⁻¹ (I − exp(−s K_dd)) y          (t = None: K_*d K_dd⁻¹ y)
    var(t)  = K_** − K_*d K_dd⁻¹ (I − exp(−2 s K_dd)) K_d*  (t = None: K_** − K_*d K_dd⁻¹ K_d*)

i.e. the mean of an infinite ensemble of infinitely wide networks trained from a
zero-mean start, and the variance of a GP with prior covariance K trained by gradient
flow on MSE. At t = None this is the GP posterior: the NNGP posterior for the NNGP
estimators and the NTK-GP posterior (He et al. 2020) for the NTK ones. The variance is
that of the latent function: it does not include the ``diag_reg`` "noise". These are
`ntkit.predict.gradient_descent_mse_ensemble` in its "nngp" mode with K as the kernel.

"NTK std" has two meanings, chosen by ``predict(..., uncertainty=)``: "gp" (default,
above: the NTK-GP posterior for the NTK estimators) or "ensemble" (the spread of an
infinite ensemble of randomly initialized networks trained by the NTK flow, i.e.
``gradient_descent_mse_ensemble(...)(t, X, "ntk", compute_cov=True)``). They coincide
for the NNGP estimators.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ntkit.engine.memory import check_memory_budget
from ntkit.hyperparameters import fit_marginal_likelihood
from ntkit.layers import activations as _act
from ntkit.layers.base import Layer
from ntkit.layers.branching import serial
from ntkit.layers.dense import Dense
from ntkit.predict import gradient_descent_mse_ensemble
from ntkit.solvers.checks import check_kernel, ridge_shift
from ntkit.solvers.kernel_ridge import (
    check_solver,
    predict_batched,
    resolve_solver,
    solve_ridge,
)
from ntkit.solvers.operator import KernelOperator

__all__ = ["ACTIVATIONS", "UNCERTAINTIES", "NNGPClassifier", "NNGPRegressor", "NTKClassifier",
           "NTKRegressor", "make_network"]

# Activation names accepted by the estimators and the CLI -> no-argument spec factories.
ACTIVATIONS: dict[str, type[Layer]] = {
    "relu": _act.ReLU,
    "erf": _act.Erf,
    "tanh": _act.Tanh,
    "gelu": _act.GELU,
    "identity": _act.Identity,
    "abs": _act.Abs,
    "sigmoid": _act.Sigmoid,
    "softplus": _act.Softplus,
    "silu": _act.SiLU,
    "sin": _act.Sin,
    "sign": _act.Sign,
}

#: The two meanings of a predictive spread (`_KernelRegressor.predict`'s ``uncertainty``).
UNCERTAINTIES = ("gp", "ensemble")

# Test rows per kernel evaluation when a predictive variance is requested: the
# test-test block is only (chunk, chunk), so memory stays O(chunk · n_train).
_STD_CHUNK = 512
#: Centers of the Nyström preconditioner / solve when n_centers is None: Falkon's
#: theory asks for M ≳ √n centers; 1000 covers n up to 10⁶ at M²·8 B = 8 MB.
DEFAULT_CENTERS = 1000


def make_network(depth: int = 1, activation: str = "relu", w_std: float = 1.5,
                 b_std: float = 0.05, *, width: int = 512, out_features: int = 1) -> Layer:
    """A fully-connected layer spec: ``depth`` × [Dense(width), activation], Dense(out).

    Args:
      depth: number of hidden layers (0: a linear model).
      activation: a name in `ACTIVATIONS` ("relu", "erf", "tanh", "gelu", ...).
      w_std, b_std: weight and bias standard deviations of every Dense layer (NTK
        parameterization); the defaults are neural-tangents' README example's.
      width: hidden width of the finite network ``build`` makes; the kernels are its
        infinite-width limits and do not depend on it.
      out_features: output width of the finite network.

    Returns:
      ``serial(Dense(width, w_std, b_std), act, ..., Dense(out_features, w_std, b_std))``.
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 0:
        raise ValueError(f"depth must be an int >= 0, got {depth!r}")
    if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of "
                         f"{sorted(ACTIVATIONS)}")
    act = ACTIVATIONS[activation.lower()]
    layers: list[Layer] = []
    for _ in range(int(depth)):
        layers += [Dense(width, w_std, b_std), act()]
    layers.append(Dense(out_features, w_std, b_std))
    return serial(*layers)


def _check_real(name: str, value: Any, *, low: float, strict: bool = False,
                allow_none: bool = False) -> float | None:
    """A finite real hyperparameter >= low (> low if strict), or None if allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < low or (strict and v == low):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be finite and {op} {low}, got {value!r}")
    return v


class _KernelEstimator(BaseEstimator):
    """Shared machinery: the spec, the kernel solves, mean and variance predictions."""

    _kernel_name: str = "ntk"  # which kernel of the spec drives the predictions

    def __init__(self, depth: int = 1, activation: str = "relu", w_std: float = 1.5,
                 b_std: float = 0.05, t: float | None = None, diag_reg: float = 1e-4,
                 learning_rate: float = 1.0, net: Layer | None = None,
                 input_shape: tuple[int, ...] | None = None, solver: str = "auto",
                 n_centers: int | None = None, max_iter: int | None = None,
                 tol: float = 1e-8, memory_budget: int | None = None, client: Any = None,
                 optimize_hyperparameters: bool = False):
        self.optimize_hyperparameters = optimize_hyperparameters
        self.depth = depth
        self.activation = activation
        self.w_std = w_std
        self.b_std = b_std
        self.t = t
        self.diag_reg = diag_reg
        self.learning_rate = learning_rate
        self.net = net
        self.input_shape = input_shape
        self.solver = solver
        self.n_centers = n_centers
        self.max_iter = max_iter
        self.tol = tol
        self.memory_budget = memory_budget
        self.client = client

    # ---- pieces ----------------------------------------------------------------------
    def _spec(self) -> Layer:
        if self.net is not None:
            if not isinstance(self.net, Layer):
                raise ValueError(f"net must be an ntkit layer spec (e.g. serial(...)), got "
                                 f"{type(self.net).__name__}")
            return self.net
        w = _check_real("w_std", self.w_std, low=0.0)
        b = _check_real("b_std", self.b_std, low=0.0)
        return make_network(self.depth, self.activation, w, b)

    def _input_shape(self, n_features: int) -> tuple[int, ...] | None:
        """The validated ``input_shape`` (None: rows are used as they are)."""
        shape = self.input_shape
        if shape is None:
            return None
        if self.net is None:
            raise ValueError("input_shape reshapes rows for a convolutional `net`; the "
                             "default fully-connected network takes flat rows (set net=...)")
        if (not isinstance(shape, (tuple, list)) or not shape
                or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                           and v >= 1 for v in shape)):
            raise ValueError(f"input_shape must be a tuple of positive ints such as "
                             f"(1, 8, 8) (channels first), got {shape!r}")
        shape = tuple(int(v) for v in shape)
        if math.prod(shape) != n_features:
            raise ValueError(f"input_shape {shape} has {math.prod(shape)} entries but X has "
                             f"{n_features} features per row")
        return shape

    def _kernel(self, x1: np.ndarray, x2: np.ndarray | None = None) -> torch.Tensor:
        # Copies: torch cannot wrap read-only arrays (sklearn's memmap checks) without warning.
        t1 = torch.tensor(x1, dtype=torch.float64)
        t2 = None if x2 is None else torch.tensor(x2, dtype=torch.float64)
        if self.input_shape_ is not None:
            t1 = t1.reshape(-1, *self.input_shape_)
            t2 = None if t2 is None else t2.reshape(-1, *self.input_shape_)
        return self.spec_.kernel(t1, t2, get=self._kernel_name)

    def _check_solver_params(self, n: int) -> str:
        """Validate solver, n_centers, max_iter, tol; return the concrete solver."""
        check_solver(self.solver)
        if self.n_centers is not None and (isinstance(self.n_centers, bool) or not isinstance(
                self.n_centers, numbers.Integral) or self.n_centers < 1):
            raise ValueError(f"n_centers must be a positive int or None, got "
                             f"{self.n_centers!r}")
        if self.max_iter is not None and (isinstance(self.max_iter, bool) or not isinstance(
                self.max_iter, numbers.Integral) or self.max_iter < 1):
            raise ValueError(f"max_iter must be a positive int or None, got {self.max_iter!r}")
        _check_real("tol", self.tol, low=0.0, strict=True)
        if self.memory_budget is not None:
            _check_real("memory_budget", self.memory_budget, low=0.0, strict=True)
        if self.t is not None and not (isinstance(self.t, numbers.Real)
                                       and math.isinf(self.t)):
            # Finite training times need the eigendecomposition of the dense kernel.
            if self.solver not in ("auto", "cholesky"):
                raise ValueError(f"solver={self.solver!r} solves the t = ∞ (ridge) system "
                                 f"only; finite t={self.t!r} needs solver='cholesky'")
            return "cholesky"
        return resolve_solver(self.solver, n, self.memory_budget)

    def _rows(self, x) -> Any:
        """x reshaped to (n, *input_shape) when set (a view for numpy arrays)."""
        if self.input_shape_ is None:
            return x
        return x.reshape(-1, *self.input_shape_)

    def _fit_targets(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Solve for float64 targets Y ((n,) or (n, k)) with the chosen solver."""
        self.spec_ = self._spec()
        self.input_shape_ = self._input_shape(X.shape[1])
        t = _check_real("t", self.t, low=0.0, allow_none=True)
        lr = _check_real("learning_rate", self.learning_rate, low=0.0, strict=True)
        reg = _check_real("diag_reg", self.diag_reg, low=0.0)
        if t is not None and math.isinf(t):
            t = None
        self.t_ = t
        self.solver_ = self._check_solver_params(X.shape[0])
        self.X_train_ = np.array(X, dtype=np.float64, order="C")
        if self.optimize_hyperparameters is not False:
            reg = self._fit_hyperparameters(Y)
        self.kernel_train_ = None
        self.predictor_ = None
        self.solution_ = None
        # sklearn's convention for estimators with max_iter: n_iter_ >= 1; a direct
        # solve (Cholesky, Nyström) counts as one.
        self.n_iter_ = 1
        y = torch.tensor(Y, dtype=torch.float64)
        # What the "ensemble" uncertainty needs at predict time.
        self.y_fit_, self.learning_rate_, self.diag_reg_fit_ = Y, lr, reg
        if self.solver_ == "cholesky":
            self.kernel_train_ = check_kernel(self._kernel(self.X_train_), "kernel")
        if t is not None:
            # Finite training time: the closed-form flow (an eigendecomposition of K).
            # The class's kernel plays the part of the "nngp" (prior and flow) kernel of
            # the ensemble predictor: its "nngp" mode is exactly the GP-trained-by-flow
            # formulas of the module docstring, for either kernel.
            self.predictor_ = gradient_descent_mse_ensemble(
                None, None, y, learning_rate=lr, diag_reg=reg,
                k_train_train={"nngp": self.kernel_train_})
            return
        # t = ∞: kernel ridge regression through the one solver dispatch.
        if self.solver_ == "cholesky":
            op = KernelOperator(kernel=self.kernel_train_, memory_budget=self.memory_budget)
            # The same δ as ntkit.predict's: diag_reg · mean(diag K).
            op.shift = ridge_shift(torch.diagonal(self.kernel_train_), reg)
        else:
            op = KernelOperator(self.spec_, self._rows(self.X_train_), get=self._kernel_name,
                                memory_budget=self.memory_budget, client=self.client)
            op.shift = ridge_shift(op.diagonal(), reg)
        n = X.shape[0]
        m = min(n, DEFAULT_CENTERS) if self.n_centers is None else int(self.n_centers)
        if self.solver_ == "pcg" and op.shift == 0:
            m = None  # the Nyström preconditioner needs a ridge: plain CG
        self.solution_ = solve_ridge(op, y, self.solver_, n_centers=m,
                                     max_iter=self.max_iter, tol=self.tol)
        info = self.solution_.info
        self.n_iter_ = 1 if info is None else max(1, info.iterations)
        if info is not None and not info.converged:
            warnings.warn(f"PCG did not reach tol={self.tol:g} in {info.iterations} "
                          f"iterations (relative residual {float(info.residual.max()):.2e}); "
                          f"raise max_iter or n_centers", RuntimeWarning, stacklevel=3)

    def _fit_hyperparameters(self, Y: np.ndarray) -> float:
        """Fit spec_'s tied w_std, b_std and the noise by marginal likelihood; set the
        fitted attributes; return diag_reg_ (the noise relative to mean(diag K))."""
        if not isinstance(self.optimize_hyperparameters, bool):
            raise ValueError(f"optimize_hyperparameters must be True or False, got "
                             f"{self.optimize_hyperparameters!r}")
        x = torch.tensor(self._rows(self.X_train_), dtype=torch.float64)
        fit = fit_marginal_likelihood(self.spec_, x, torch.as_tensor(Y, dtype=torch.float64),
                                      kind=self._kernel_name)
        self.spec_ = fit.net
        self.hyperparameter_fit_ = fit
        self.w_std_, self.b_std_, self.noise_ = fit.w_std[0], fit.b_std[0], fit.noise
        self.diag_reg_ = fit.relative_noise(x)
        return self.diag_reg_

    def _test_kernel_fn(self, cols: np.ndarray):
        ref = torch.tensor(self._rows(cols), dtype=torch.float64)

        def fn(xb: torch.Tensor) -> torch.Tensor:
            xb = xb if self.input_shape_ is None else xb.reshape(-1, *self.input_shape_)
            return self.spec_.kernel(xb, ref, get=self._kernel_name,
                                     memory_budget=self.memory_budget)
        return fn

    def _predict_mean(self, X: np.ndarray) -> np.ndarray:
        """Mean predictions in test batches (a (batch, n_train) kernel block at a time)."""
        if self.t_ is not None:
            def fn(xb):
                k_td = self._kernel(xb.numpy(), self.X_train_)
                return self.predictor_(self.t_, get="nngp", k_test_train={"nngp": k_td})
            n_cols = self.X_train_.shape[0]
            outs = [fn(torch.from_numpy(X[sl])) for sl in _batches(
                len(X), n_cols, self.memory_budget)]
            return torch.cat(outs).numpy()
        sol = self.solution_
        cols = self.X_train_ if sol.centers is None else self.X_train_[sol.centers.numpy()]
        return predict_batched(self._test_kernel_fn(cols), X, sol.coef, n_cols=len(cols),
                               memory_budget=self.memory_budget).numpy()

    def _posterior(self, xs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (m, ...), covariance (m, m)) of the latent function at test rows xs."""
        k_td = self._kernel(xs, self.X_train_)
        k_tt = self._kernel(xs)
        if self.t_ is not None:
            g = self.predictor_(self.t_, get="nngp", compute_cov=True,
                                k_test_train={"nngp": k_td}, k_test_test={"nngp": k_tt})
            return g.mean, g.covariance
        # t = ∞: the GP posterior K_** − K_*d (K_dd + δ I)⁻¹ K_d*, with the factor of the
        # fit (the formula of ntkit.predict.gp_inference's "nngp" mode).
        k_tt = check_kernel(k_tt, "kernel")
        cov = k_tt - k_td @ self.solution_.factor.solve(k_td.T)
        return k_td @ self.solution_.coef, 0.5 * (cov + cov.T)

    def _predict_var(self, X: np.ndarray, full: bool) -> tuple[np.ndarray, np.ndarray]:
        """(mean, variance (m,)) or, with ``full``, (mean, covariance (m, m))."""
        if self.solver_ != "cholesky":
            raise ValueError(f"return_std / return_cov need solver='cholesky' (fitted with "
                             f"solver={self.solver_!r}, which solves for the mean only)")
        chunks = [slice(0, len(X))] if full else [
            slice(i, min(i + _STD_CHUNK, len(X))) for i in range(0, len(X), _STD_CHUNK)]
        means, covs = [], []
        for sl in chunks:
            mean, cov = self._posterior(X[sl])
            means.append(mean.numpy())
            cov = cov.numpy()
            covs.append(cov if full else np.diagonal(cov).copy())
        mean = np.concatenate(means, axis=0)
        if full:
            return mean, covs[0]
        # Round-off can make a vanishing variance slightly negative.
        return mean, np.maximum(np.concatenate(covs), 0.0)

    def _predict_ensemble_var(self, X: np.ndarray, full: bool
                              ) -> tuple[np.ndarray, np.ndarray]:
        """Like `_predict_var`, with the covariance of the ensemble of randomly
        initialized networks trained by the NTK flow (`gradient_descent_mse_ensemble`'s
        "ntk" mode, the NNGP as prior)."""
        if self.solver_ != "cholesky":
            raise ValueError(f"return_std / return_cov need solver='cholesky' (fitted with "
                             f"solver={self.solver_!r}, which solves for the mean only)")
        # Built per call (predict leaves the fitted estimator unchanged, as scikit-learn
        # expects); its NNGP train kernel is computed here.
        x = torch.tensor(self._rows(self.X_train_), dtype=torch.float64)
        ens = gradient_descent_mse_ensemble(
            self.spec_, x, torch.tensor(self.y_fit_, dtype=torch.float64),
            learning_rate=self.learning_rate_, diag_reg=self.diag_reg_fit_,
            k_train_train={"ntk": self.kernel_train_})
        chunks = [slice(0, len(X))] if full else [
            slice(i, min(i + _STD_CHUNK, len(X))) for i in range(0, len(X), _STD_CHUNK)]
        means, covs = [], []
        for sl in chunks:
            xs = torch.tensor(self._rows(X[sl]), dtype=torch.float64)
            g = ens(self.t_, xs, "ntk", compute_cov=True)
            means.append(g.mean.numpy())
            cov = g.covariance.numpy()
            covs.append(cov if full else np.diagonal(cov).copy())
        mean = np.concatenate(means, axis=0)
        if full:
            return mean, covs[0]
        return mean, np.maximum(np.concatenate(covs), 0.0)

    def _validate_predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "solver_")
        return validate_data(self, X, reset=False, dtype=np.float64)


def _batches(m: int, n_cols: int, memory_budget: int | None) -> list[slice]:
    """Test-row slices so that a (batch, n_cols) float64 block (×4 for its working
    copies) fits the memory budget."""
    b = max(1, min(m, check_memory_budget(memory_budget) // (32 * max(1, n_cols))))
    return [slice(i, min(i + b, m)) for i in range(0, m, b)]


class _KernelRegressor(RegressorMixin, _KernelEstimator):
    def fit(self, X: Any, y: Any) -> _KernelRegressor:
        """Fit on X (n, d) and targets y (n,) or (n, k); returns self."""
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, multi_output=True)
        y = np.asarray(y, dtype=np.float64)
        self._fit_targets(X, y)
        return self

    def predict(self, X: Any, return_std: bool = False, return_cov: bool = False,
                uncertainty: str = "gp"):
        """Predictive mean at X (m, d): (m,) for 1-D y, (m, k) for 2-D y.

        Args:
          return_std: also return the predictive standard deviation of the latent
            function, of the mean's shape (the same for every output column).
          return_cov: also return the (m, m) predictive covariance (shared by every
            output column). At most one of the two.
          uncertainty: which spread ``return_std``/``return_cov`` give; the two differ
            for the NTK estimators and coincide for the NNGP ones:

            - "gp" (default): the posterior of a GP whose prior covariance is the
              class's kernel, trained by gradient flow for time t (t = None: the exact
              posterior). For `NTKRegressor` this is the NTK-GP (He et al. 2020,
              "Bayesian deep ensembles via the neural tangent kernel"):
              ``ntkit.predict.gp_inference(...)("ntkgp", ...)``.
            - "ensemble": the spread of an infinite ensemble of infinitely wide
              networks, each initialized at random (the NNGP prior) and trained by
              gradient flow (Lee et al. 2019): the covariance of
              ``ntkit.predict.gradient_descent_mse_ensemble(...)(t, x, "ntk",
              compute_cov=True)``. Needs the NNGP kernel too (computed on demand).

        Returns:
          ``mean``, ``(mean, std)`` or ``(mean, cov)``.
        """
        if return_std and return_cov:
            raise ValueError("at most one of return_std and return_cov may be True")
        if uncertainty not in UNCERTAINTIES:
            raise ValueError(f"unknown uncertainty {uncertainty!r}; expected 'gp' (the GP "
                             "posterior with the class's kernel as prior) or 'ensemble' "
                             "(the spread of randomly initialized wide networks)")
        X = self._validate_predict(X)
        if not (return_std or return_cov):
            return self._predict_mean(X)
        if uncertainty == "ensemble" and self._kernel_name == "ntk":
            mean, var = self._predict_ensemble_var(X, full=return_cov)
        else:
            mean, var = self._predict_var(X, full=return_cov)
        if return_cov:
            return mean, var
        std = np.sqrt(var)
        if mean.ndim == 2:
            std = np.repeat(std[:, None], mean.shape[1], axis=1)
        return mean, std

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class _KernelClassifier(ClassifierMixin, _KernelEstimator):
    def fit(self, X: Any, y: Any) -> _KernelClassifier:
        """Fit on X (n, d) and class labels y (n,); returns self.

        Regresses the centred one-hot targets onehot(y) − 1/C with the kernel.
        """
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        enc = LabelEncoder().fit(y)
        self.classes_ = enc.classes_
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in "
                             f"the data, but the data contains only one class: "
                             f"{self.classes_[0]!r}")
        codes = enc.transform(y)
        targets = np.eye(n_classes)[codes] - 1.0 / n_classes
        self._fit_targets(X, targets)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Kernel outputs for each class, (m, C); for 2 classes, (m,) = f₁ − f₀."""
        f = self._predict_mean(self._validate_predict(X))
        return f[:, 1] - f[:, 0] if len(self.classes_) == 2 else f

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (m,): the argmax of the C kernel outputs."""
        f = self._predict_mean(self._validate_predict(X))
        return self.classes_[np.argmax(f, axis=1)]


_PARAMS_DOC = """
    Args:
      depth: number of hidden layers of the fully-connected network (small is fast).
      activation: activation name ("relu", "erf", "tanh", "gelu", ...; see
        `ntkit.sklearn.ACTIVATIONS`).
      w_std, b_std: weight and bias standard deviations (NTK parameterization).
      t: training time of gradient flow on MSE, in steps of ``learning_rate``; None
        (default) means t = ∞ (kernel ridge regression).
      diag_reg: ridge δ, relative to the mean diagonal of the train kernel.
      learning_rate: step size η; only η·t matters.
      net: an ntkit layer spec used instead of depth/activation/w_std/b_std.
      input_shape: per-example shape (channels first) that each flat row of X is
        reshaped to before the kernel, e.g. (1, 8, 8) for 8×8 images or (1, 40) for
        sequences, for a convolutional ``net``; its product must equal n_features
        (ValueError at fit otherwise). None (default): rows are used as they are.
      solver: how the t = ∞ system (K + δ I) α = y is solved: "cholesky" (dense), "pcg"
        (matrix-free conjugate gradients, kernel tiles recomputed per iteration, with a
        Nyström preconditioner of n_centers centers), "nystrom" (plain Nyström /
        subset of regressors with n_centers centers: an approximation), or "auto"
        (default: Cholesky while the kernel and its factor fit memory_budget, PCG
        beyond). Finite t needs "cholesky" (or "auto"); return_std/return_cov too.
      n_centers: Nyström centers M (None: min(n, 1000)).
      max_iter, tol: PCG iteration cap (None: n) and relative-residual tolerance.
      memory_budget: bytes for kernel tiles and prediction batches (None: default of
        `ntkit.engine.memory`).
      client: a ``dask.distributed.Client``: PCG's kernel-vector products run on its
        cluster (``ntkit.engine.distributed.dask_matvec``).
      optimize_hyperparameters: fit the Dense/Conv w_std and b_std (tied across layers)
        and the noise by GP marginal likelihood of the training targets under this
        class's kernel, starting from the given values (`ntkit.hyperparameters`); the
        fitted noise variance sets diag_reg (diag_reg_ = noise_ / mean diagonal of K).

    Attributes (after fit):
      X_train_: (n, d) training inputs; solver_: the solver used; kernel_train_: (n, n)
      train kernel (Cholesky only, else None); predictor_: the `ntkit.predict`
      ensemble predictor (finite t only, else None); solution_: the
      `ntkit.solvers.RidgeSolution` of the t = ∞ solve (every solver; None at finite
      t); n_iter_: PCG iterations (1 for the direct solvers); spec_: the layer spec;
      input_shape_: the validated input_shape (a tuple) or None; n_features_in_;
      y_fit_, learning_rate_, diag_reg_fit_: the targets, step size and ridge of the
      solve (``uncertainty="ensemble"`` rebuilds the ensemble predictor from them).
      With optimize_hyperparameters: w_std_, b_std_ (fitted floats; b_std_ None without
      biases), noise_ (noise variance), diag_reg_, and hyperparameter_fit_ (the
      `ntkit.hyperparameters.MarginalLikelihoodFit`).
"""


_EXAMPLE = """
    Example:
      >>> from sklearn.datasets import make_regression
      >>> X, y = make_regression(n_samples=60, n_features=4, noise=0.1, random_state=0)
      >>> reg = {cls}(depth=2, diag_reg=1e-3).fit(X[:50], y[:50])
      >>> reg.predict(X[50:]).shape
      (10,)
      >>> mean, std = reg.predict(X[50:], return_std=True)   # "gp" uncertainty
      >>> std.shape
      (10,)
"""

_CLASSIFIER_EXAMPLE = """
    Example:
      >>> from sklearn.datasets import make_classification
      >>> X, y = make_classification(n_samples=60, n_features=5, random_state=0)
      >>> clf = {cls}(depth=1).fit(X[:50], y[:50])
      >>> clf.predict(X[50:]).shape, clf.classes_.tolist()
      ((10,), [0, 1])
"""


class NTKRegressor(_KernelRegressor):
    __doc__ = ("Regression with the infinite-width NTK: the mean of wide networks trained "
               "for time t,\nwith NTK-GP predictive uncertainty (or, with "
               "``predict(..., uncertainty='ensemble')``,\nthe spread of randomly "
               "initialized networks).\n" + _PARAMS_DOC
               + _EXAMPLE.format(cls="NTKRegressor"))
    _kernel_name = "ntk"


class NNGPRegressor(_KernelRegressor):
    __doc__ = ("Regression with the NNGP kernel: the Bayesian posterior of an infinitely "
               "wide network\n(t = None), or its readout-only training for time t.\n"
               + _PARAMS_DOC + _EXAMPLE.format(cls="NNGPRegressor"))
    _kernel_name = "nngp"


class NTKClassifier(_KernelClassifier):
    __doc__ = ("Classification by NTK regression on centred one-hot targets, argmax "
               "decision.\n" + _PARAMS_DOC + _CLASSIFIER_EXAMPLE.format(cls="NTKClassifier"))
    _kernel_name = "ntk"


class NNGPClassifier(_KernelClassifier):
    __doc__ = ("Classification by NNGP regression on centred one-hot targets, argmax "
               "decision.\n" + _PARAMS_DOC + _CLASSIFIER_EXAMPLE.format(cls="NNGPClassifier"))
    _kernel_name = "nngp"
