"""Mean and covariance of an infinite ensemble of infinitely wide networks trained by
gradient flow on MSE, at any training time (neural-tangents'
``gradient_descent_mse_ensemble``).

At initialization the outputs are a centred GP with the NNGP covariance K; training
by gradient flow with the NTK Θ is linear in the initial outputs, so at time t the
test outputs are Gaussian. With s = learning_rate · t / y.size, φ_s = Θ⁻¹(I - e^{-Θ s})
(computed in the eigenbasis of Θ, finite at zero eigenvalues), d = train, t = test:

- "ntk":  mean = Θ_td φ_s y,
          cov  = K_tt - (Θ_td φ_s K_dt + transpose) + Θ_td φ_s K_dd φ_s Θ_dt;
- "nngp": the same flow with K in place of Θ (only the readout trained), giving
          mean = K_td φ_s y, cov = K_tt - K_td φ_{2s} K_dt.

On the training set (``x_test=None``): mean = (I - e^{-Θ s}) y and cov = e^{-Θ s} K
e^{-Θ s} ("ntk") or K e^{-2 K s} ("nngp"). At t = None (∞) these are the posteriors of
`gp_inference`, computed by a Cholesky solve.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ntkit.predict._utils import (
    KERNEL_NAMES,
    Gaussian,
    canonicalize_get,
    check_learning_rate,
    check_test_test,
    check_test_train,
    expm1_flow,
    flatten_pairs,
    is_array,
    kernel_field,
    pack_output,
    pair_outputs,
    parse_times,
    phi_flow,
    unflatten_pairs,
)
from ntkit.predict.gp import GPPredictor
from ntkit.solvers.checks import add_diagonal_regularizer, check_diag_reg
from ntkit.solvers.eigh import PSDEigh, eigh_psd
from ntkit.solvers.products import t_matmul

__all__ = ["EnsemblePredictor", "gradient_descent_mse_ensemble"]


class _TrainKernels:
    """Lazy view of the train-train kernels for `GPPredictor` (computed on access)."""

    def __init__(self, owner: EnsemblePredictor):
        self._owner = owner

    @property
    def nngp(self) -> Tensor:
        return self._owner._train_kernels(("nngp",))["nngp"]

    @property
    def ntk(self) -> Tensor:
        return self._owner._train_kernels(("ntk",))["ntk"]


def _dependencies(names: tuple[str, ...], compute_cov: bool) -> tuple[str, ...]:
    """Kernels needed: each requested one, and the NNGP for any covariance."""
    deps = tuple(g for g in KERNEL_NAMES if g in names or (g == "nngp" and compute_cov))
    return deps


def _array_key(x: Any) -> str:
    """A content hash of an input batch, to reuse test kernels across calls."""
    a = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    a = np.ascontiguousarray(a)
    h = hashlib.blake2b(a.view(np.uint8).reshape(-1), digest_size=16)
    return f"{a.dtype}{a.shape}{h.hexdigest()}"


class EnsemblePredictor:
    """Predictor returned by `gradient_descent_mse_ensemble`.

    Call as ``ens(t=None, x_test=None, get=None, compute_cov=False, *,
    k_test_train=None, k_test_test=None)``. Caches the train-train kernels, their
    eigendecompositions (finite t) and Cholesky factors (t = None), and the kernels of
    the last test batch.
    """

    def __init__(self, net: Any, x_train: Any, y_train: Any, learning_rate: float = 1.0,
                 diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False, *,
                 k_train_train: Any = None, kernel_kwargs: dict | None = None,
                 dtype: torch.dtype = torch.float64):
        if net is not None and not (hasattr(net, "kernel") or callable(net)):
            raise TypeError("net must have a .kernel(x1, x2, get=...) method or be a kernel "
                            f"function kernel_fn(x1, x2, get); got {type(net).__name__}")
        if net is None and k_train_train is None:
            raise ValueError("pass a net (to compute kernels) or precomputed k_train_train")
        if is_array(k_train_train):
            raise TypeError("k_train_train must name its kernels (a dict, namedtuple or "
                            "Kernel with 'nngp'/'ntk'), not be a bare matrix")
        self.net = net
        self.x_train = x_train
        self.kernel_kwargs = dict(kernel_kwargs or {})
        self.dtype = dtype
        self.learning_rate = check_learning_rate(learning_rate)
        self.diag_reg = float(diag_reg)
        self.diag_reg_absolute_scale = diag_reg_absolute_scale
        check_diag_reg(self.diag_reg)
        self._given_train = k_train_train
        self._computed_train: dict[str, Any] = {}
        # Precomputed (n, n, k, k) kernels: everything runs on the flattened (n·k, n·k)
        # system (see `gradient_descent_mse`); kernels from a net must then be 4-D too.
        given = [kernel_field(k_train_train, g, "k_train_train") for g in KERNEL_NAMES]
        self.n_out = next((pair_outputs(v) for v in given if v is not None), None)
        self._gp = GPPredictor(_TrainKernels(self), y_train, self.diag_reg,
                               diag_reg_absolute_scale, dtype=dtype, eager=False,
                               n_out=self.n_out)
        self.y_train = self._gp.y_train   # (n·k, 1) with (n, n, k, k) kernels
        self._rows = self.y_train.shape[0]   # rows of the (flattened) kernel matrices
        self.n_train = self._rows // (self.n_out or 1)
        if x_train is not None and len(x_train) != self.n_train:
            raise ValueError(f"x_train has {len(x_train)} rows but y_train has "
                             f"{self.n_train}")
        self._eigh: dict[str, PSDEigh] = {}
        self._test_cache: tuple[str, dict[str, Tensor], dict[str, Tensor]] | None = None
        self.kernel_calls = 0  # number of calls to the net's kernel function (for tests)
        # Validate precomputed train kernels now, so bad input fails at construction.
        for g in KERNEL_NAMES:
            if kernel_field(k_train_train, g, "k_train_train") is not None:
                self._gp.kernel(g)

    # ---- kernels -----------------------------------------------------------------------
    def _call_net(self, x1: Any, x2: Any, names: tuple[str, ...], what: str) -> dict:
        if self.net is None:
            raise ValueError(f"the {what} kernel(s) {names} are needed but were not given, "
                             "and there is no net to compute them")
        if x1 is None:
            raise ValueError(f"the {what} kernel(s) {names} are needed: pass the inputs or "
                             "the precomputed kernels")
        self.kernel_calls += 1
        if hasattr(self.net, "kernel"):
            res = self.net.kernel(x1, x2, get=names, **self.kernel_kwargs)
        else:
            res = self.net(x1, x2, names, **self.kernel_kwargs)
        if is_array(res):
            if len(names) != 1:
                raise TypeError(f"the net returned one matrix for get={names}")
            return {names[0]: res}
        out = {}
        for g in names:
            v = kernel_field(res, g, "net.kernel(...)")
            if v is None:
                raise ValueError(f"net.kernel(..., get={names}) returned no {g!r} kernel")
            out[g] = v
        return out

    def _train_kernels(self, names: tuple[str, ...]) -> dict[str, Any]:
        """Train-train kernels (raw; `GPPredictor.kernel` validates and caches them)."""
        have = {g: kernel_field(self._given_train, g, "k_train_train") for g in names}
        missing = tuple(g for g in names if have[g] is None)
        if missing:
            # Compute only the kernels not yet known, in one call to the net.
            cached = self._computed_train
            need = tuple(g for g in missing if g not in cached)
            if need:
                cached.update(self._call_net(self.x_train, None, need, "train-train"))
            have.update({g: cached[g] for g in missing})
        return have

    def kernel(self, g: str) -> Tensor:
        """The validated (n, n) train-train kernel ``g`` (computed on first use)."""
        return self._gp.kernel(g)

    def eigh(self, g: str) -> PSDEigh:
        """Cached eigendecomposition of the regularized train-train kernel ``g``."""
        if g not in self._eigh:
            k = add_diagonal_regularizer(self.kernel(g), self.diag_reg,
                                         self.diag_reg_absolute_scale)
            self._eigh[g] = eigh_psd(k, f"k_train_train.{g}", validate=False)
        return self._eigh[g]

    def _prefetch_train(self, names: tuple[str, ...]) -> None:
        # One net call for all missing train kernels (a kernel map computes nngp and ntk
        # together, so asking for both at once halves the work).
        names = tuple(g for g in names
                      if g not in self._gp._k and g not in self._computed_train)
        if len(names) > 1:
            self._train_kernels(names)

    def _test_kernels(self, x_test: Any, k_test_train: Any, k_test_test: Any,
                      deps: tuple[str, ...], compute_cov: bool
                      ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(test-train kernels for deps, {"nngp": test-test} if compute_cov)."""
        for name, given in (("k_test_train", k_test_train), ("k_test_test", k_test_test)):
            if is_array(given):
                raise TypeError(f"{name} must name its kernels (a dict, namedtuple or Kernel "
                                "with 'nngp'/'ntk'), not be a bare matrix")
        td = {g: kernel_field(k_test_train, g, "k_test_train") for g in deps}
        tt = {}
        if compute_cov:
            tt["nngp"] = kernel_field(k_test_test, "nngp", "k_test_test")
        missing_td = tuple(g for g in deps if td[g] is None)
        missing_tt = tuple(g for g in tt if tt[g] is None)
        if missing_td or missing_tt:
            if x_test is None:
                raise ValueError(
                    f"test kernels {missing_td + tuple('test-test ' + g for g in missing_tt)}"
                    " are needed: pass x_test or the precomputed kernels")
            key = _array_key(x_test)
            if self._test_cache is None or self._test_cache[0] != key:
                self._test_cache = (key, {}, {})
            _, c_td, c_tt = self._test_cache
            need = tuple(g for g in missing_td if g not in c_td)
            if need:
                c_td.update(self._call_net(x_test, self.x_train, need, "test-train"))
            need = tuple(g for g in missing_tt if g not in c_tt)
            if need:
                c_tt.update(self._call_net(x_test, None, need, "test-test"))
            td.update({g: c_td[g] for g in missing_td})
            tt.update({g: c_tt[g] for g in missing_tt})
        dt, dev, n = self.dtype, self._gp.device, self._rows
        if self.n_out is not None:
            td = {g: self._flat(v, f"k_test_train.{g}") for g, v in td.items()}
            tt = {g: self._flat(v, f"k_test_test.{g}") for g, v in tt.items()}
        td = {g: check_test_train(v, n, f"k_test_train.{g}", dt, dev) for g, v in td.items()}
        m = next(iter(td.values())).shape[0]
        for g in deps:
            if td[g].shape[0] != m:
                raise ValueError(f"k_test_train kernels disagree on the number of test "
                                 f"points: {[tuple(v.shape) for v in td.values()]}")
        tt = {g: check_test_test(v, m, f"k_test_test.{g}", dt, dev) for g, v in tt.items()}
        return td, tt

    def _flat(self, k: Any, name: str) -> Any:
        if is_array(k) and k.ndim == 2:   # already a flattened matrix
            return k
        return flatten_pairs(k, name, self.n_out, self.dtype, self._gp.device)

    # ---- predictions -------------------------------------------------------------------
    def __call__(self, t: Any = None, x_test: Any = None, get: Any = None,
                 compute_cov: bool = False, *, k_test_train: Any = None,
                 k_test_test: Any = None) -> Any:
        """Mean [and covariance] of the ensemble's outputs at time(s) ``t``.

        Args:
          t: None (t = ∞), a scalar or an array of times (>= 0) of any shape.
          x_test: (m, d) test inputs; None (and no k_test_train) means predictions on
            the training inputs (unregularized, as in neural-tangents; for regularized
            ones pass x_test=x_train).
          get: "nngp", "ntk", or a tuple of them; None = ("nngp", "ntk").
          compute_cov: also return the (m, m) covariance across test points: the
            spread of the ensemble of randomly initialized networks (its outputs at
            initialization are the NNGP prior), not a Bayesian posterior. For get="ntk"
            it differs from the NTK-GP posterior that ``NTKRegressor.predict(X,
            return_std=True)`` gives by default (``uncertainty="gp"``; the same as
            ``gp_inference(...)("ntkgp", ...)``); ``uncertainty="ensemble"`` there gives
            this one.
          k_test_train: precomputed (m, n) test-train kernels (a dict / namedtuple /
            Kernel with the needed 'nngp'/'ntk'); missing ones are computed from x_test.
          k_test_test: precomputed (m, m) test-test kernels (its 'nngp' is used).

        Returns:
          For a single name: the mean (*t.shape, m, *y.shape[1:]), or a `Gaussian`
          (mean, covariance (*t.shape, m, m)) when ``compute_cov``. For a tuple of names,
          a namedtuple ``Gaussians`` with one such value per name.
        """
        names, single = canonicalize_get(get, KERNEL_NAMES)
        if not isinstance(compute_cov, bool):
            raise TypeError(f"compute_cov must be a bool, got {type(compute_cov).__name__}")
        deps = _dependencies(names, compute_cov)
        on_test = x_test is not None or k_test_train is not None
        td = tt = None
        if on_test:
            td, tt = self._test_kernels(x_test, k_test_train, k_test_test, deps, compute_cov)
        elif k_test_test is not None:
            raise ValueError("k_test_test was given without test inputs or k_test_train")

        if t is None:
            self._prefetch_train(deps)
            out = {g: self._gp.posterior(g, td, tt, compute_cov) for g in names}
            return pack_output(out, names, single)

        times, t_shape = parse_times(t, self.dtype, self._gp.device)
        s = times * self.learning_rate / self.y_train.numel()
        self._prefetch_train(deps)
        out = {}
        for g in names:
            eig = self.eigh(g)
            mean, cov = (self._finite_test(g, eig, s, td, tt, compute_cov) if on_test
                         else self._finite_train(g, eig, s, compute_cov))
            if self.n_out is not None:   # (T, rows·k, 1) -> (T, rows, k)
                mean = mean.reshape(mean.shape[0], -1, self.n_out)
            mean = mean.reshape(t_shape + tuple(mean.shape[1:]))
            if cov is None:
                out[g] = mean
            else:
                cov = 0.5 * (cov + cov.transpose(-1, -2))
                if self.n_out is not None:   # (T, m·k, m·k) -> (T, m, m, k, k)
                    cov = unflatten_pairs(cov, self.n_out)
                out[g] = Gaussian(mean, cov.reshape(t_shape + tuple(cov.shape[1:])))
        return pack_output(out, names, single)

    def _finite_test(self, g: str, eig: PSDEigh, s: Tensor, td: dict, tt: dict,
                     compute_cov: bool) -> tuple[Tensor, Tensor | None]:
        v, lam, cut = eig.eigenvectors, eig.eigenvalues, eig.pinv_cutoff()
        p = phi_flow(lam, s, cut)  # (T, n)
        k_td = td[g]
        b = v.T @ k_td.T  # (n, m): test-train kernel in the eigenbasis
        yv = t_matmul(v, self.y_train.reshape(self._rows, -1))  # (n, c)
        mean = torch.einsum("im,ti,ic->tmc", b, p, yv)
        mean = mean.reshape((s.shape[0], k_td.shape[0]) + tuple(self.y_train.shape[1:]))
        if not compute_cov:
            return mean, None
        nngp_tt = tt["nngp"]
        if g == "nngp":
            p2 = phi_flow(lam, 2 * s, cut)
            cov = nngp_tt - torch.einsum("im,ti,il->tml", b, p2, b)
        else:
            c = v.T @ td["nngp"].T  # (n, m): NNGP test-train in the NTK eigenbasis
            term1 = torch.einsum("ji,ti,im->tjm", v, p, b)  # φ_s Θ_dt, (T, n, m)
            term2 = torch.einsum("im,ti,il->tml", b, p, c)  # Θ_td φ_s K_dt
            quad = term1.transpose(1, 2) @ (self.kernel("nngp") @ term1)
            cov = nngp_tt - term2 - term2.transpose(1, 2) + quad
        return mean, cov

    def _finite_train(self, g: str, eig: PSDEigh, s: Tensor, compute_cov: bool
                      ) -> tuple[Tensor, Tensor | None]:
        v, lam, cut = eig.eigenvectors, eig.eigenvalues, eig.pinv_cutoff()
        mean = eig.apply(-expm1_flow(lam, s, cut), self.y_train)
        if not compute_cov:
            return mean, None
        if g == "nngp":
            decay2 = 1.0 + expm1_flow(lam, 2 * s, cut)  # e^{-2λs}
            cov = torch.einsum("ji,ti,ki->tjk", v, lam * decay2, v)
        else:
            decay = 1.0 + expm1_flow(lam, s, cut)
            e = torch.einsum("ji,ti,ki->tjk", v, decay, v)  # e^{-Θ s}
            cov = e @ self.kernel("nngp") @ e
        return mean, cov


def gradient_descent_mse_ensemble(net: Any, x_train: Any, y_train: Any,
                                  learning_rate: float = 1.0, diag_reg: float = 0.0,
                                  diag_reg_absolute_scale: bool = False, *,
                                  k_train_train: Any = None, kernel_kwargs: dict | None = None,
                                  dtype: torch.dtype = torch.float64) -> EnsemblePredictor:
    """Gaussian outputs of an infinite ensemble of infinitely wide networks trained by
    gradient flow on 0.5 · mean((f - y)²), at any time (t in units of learning_rate).

    Args:
      net: where kernels come from: an ntkit layer spec (``net.kernel(x1, x2, get=...)``
        returning a namedtuple with ``nngp``/``ntk``), or a neural-tangents-style kernel
        function ``kernel_fn(x1, x2, get)``. May be None when every needed kernel is
        passed precomputed.
      x_train: (n, d) training inputs (None when k_train_train holds all needed kernels).
      y_train: (n,) or (n, k) targets.
      learning_rate: step size η > 0.
      diag_reg: δ added to the diagonal of the train-train kernels (relative to their
        mean diagonal unless ``diag_reg_absolute_scale``).
      diag_reg_absolute_scale: interpret ``diag_reg`` in absolute units.
      k_train_train: precomputed train-train kernels (dict / namedtuple / Kernel with
        'nngp' and/or 'ntk'); used instead of computing them. Missing ones come from net.
        (n, n, k, k) kernels over output pairs (neural-tangents' ``trace_axes=()``) run
        on the flattened (n·k, n·k) system as in `gradient_descent_mse`; test kernels are
        then (m, n, k, k) and (m, m, k, k), covariances (*t.shape, m, m, k, k), and any
        kernel the net computes must have that layout too.
      kernel_kwargs: extra keyword arguments for ``net.kernel`` (e.g. tile sizes).
      dtype: compute and output dtype (float64 by default).

    Returns:
      `EnsemblePredictor` ``ens``; ``mean, cov = ens(t, x_test, get="ntk",
      compute_cov=True)``: mean (*t.shape, m, *y.shape[1:]) and covariance
      (*t.shape, m, m); see `EnsemblePredictor.__call__`. "ntk" with covariance needs
      both the NTK and the NNGP; "nngp" needs only the NNGP.

    Two meanings of "NTK std": the covariance here is the ensemble's spread over random
    initializations (Lee et al. 2019). The NTK-GP posterior (He et al. 2020), a GP with
    the NTK as prior, is ``gp_inference(...)("ntkgp", ...)`` and what
    ``ntkit.sklearn.NTKRegressor.predict(X, return_std=True)`` returns by default; pass
    ``uncertainty="ensemble"`` there for this one.

    Example:
      >>> import ntkit.layers as nl
      >>> net = nl.serial(nl.Dense(512), nl.ReLU(), nl.Dense(1))
      >>> g = torch.Generator().manual_seed(0)
      >>> x_train = torch.randn(20, 3, dtype=torch.float64, generator=g)
      >>> x_test = torch.randn(5, 3, dtype=torch.float64, generator=g)
      >>> ens = gradient_descent_mse_ensemble(net, x_train, torch.sin(x_train[:, :2]))
      >>> out = ens([10.0, 100.0], x_test, "ntk", compute_cov=True)
      >>> out.mean.shape, out.covariance.shape      # (T, m, k), (T, m, m)
      (torch.Size([2, 5, 2]), torch.Size([2, 5, 5]))
      >>> ens(None, x_test, "nngp").shape            # t = ∞: the NNGP posterior mean
      torch.Size([5, 2])
    """
    return EnsemblePredictor(net, x_train, y_train, learning_rate, diag_reg,
                             diag_reg_absolute_scale, k_train_train=k_train_train,
                             kernel_kwargs=kernel_kwargs, dtype=dtype)
