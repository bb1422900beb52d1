"""Gradient flow in function space for any differentiable loss, by an ODE solver.

In the NTK regime the outputs on the training set follow

    df/dt = -η Θ ∇_f L(f, y),      f_test' = -η Θ_test,train ∇_f L(f, y),

with t in steps of size η (learning_rate). With heavy-ball momentum μ the continuous
limit (as in neural-tangents) is second order: with s = √η · t,

    df/ds = q,   dq/ds = -Θ ∇_f L - (1 - μ)/√η · q,   q(0) = 0,

so for momentum the scales of ``learning_rate`` and ``t`` are not interchangeable.
The ODE is solved by ``scipy.integrate.solve_ivp`` at tight tolerances; for MSE it
reproduces the closed form of `gradient_descent_mse`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.integrate
import torch
import torch.nn.functional as F
from torch import Tensor

from ntkit.predict._utils import (
    broadcast_init,
    check_learning_rate,
    check_pair_targets,
    check_targets,
    check_test_train,
    flatten_pairs,
    pair_outputs,
    parse_times,
)
from ntkit.solvers.checks import check_kernel

__all__ = [
    "LOSSES",
    "NORMALIZATIONS",
    "ODEPredictor",
    "cross_entropy_loss",
    "gradient_descent",
    "mse_loss",
]

LossFn = Callable[[Tensor, Tensor], Tensor]

#: How the built-in losses average their per-entry terms over the (n, k) outputs:
#: "mean" over all n·k entries (neural-tangents' convention, and `gradient_descent_mse`'s
#: for MSE), or "per_example": summed over the k outputs, averaged over the n examples
#: (``torch.nn.functional.cross_entropy``'s). The two differ by the factor k, so the
#: same learning rate runs k times faster "per_example".
NORMALIZATIONS = ("mean", "per_example")


def _normalize(terms: Tensor, normalization: str) -> Tensor:
    return terms.mean() if normalization == "mean" else terms.sum(-1).mean()


def mse_loss(fx: Tensor, y: Tensor, normalization: str = "mean") -> Tensor:
    """0.5 · (f - y)², averaged by ``normalization`` ("mean": 0.5 · mean((f - y)²) over
    all entries, neural-tangents' and `gradient_descent_mse`'s)."""
    if normalization == "mean":
        return 0.5 * torch.mean((fx - y) ** 2)
    return 0.5 * ((fx - y) ** 2).reshape(fx.shape[0], -1).sum(-1).mean()


def cross_entropy_loss(fx: Tensor, y: Tensor, normalization: str = "mean") -> Tensor:
    """Softmax cross-entropy -y_ic log softmax(f_i)_c of (n, k) outputs.

    ``y`` holds (n, k) one-hot labels or class probabilities. ``normalization="mean"``
    averages over all n·k entries: ``-mean(log_softmax(fx) * y)``, as in
    neural-tangents' examples; "per_example" sums over classes and averages over
    examples, ``torch.nn.functional.cross_entropy(fx, y)``, k times larger.
    """
    return _normalize(-(y * F.log_softmax(fx, dim=-1)), normalization)


LOSSES: dict[str, LossFn] = {"mse": mse_loss, "cross_entropy": cross_entropy_loss}


# Closed-form gradients of the built-in losses, in numpy: autograd on tiny tensors costs
# far more than the arithmetic, and the solver calls this thousands of times. Each is
# the gradient of the per-example sum, divided by the count of the normalization.
def _mse_grad(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    return f - y


def _cross_entropy_grad(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = f - f.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    return p * y.sum(-1, keepdims=True) - y


_LOSS_GRADS = {"mse": _mse_grad, "cross_entropy": _cross_entropy_grad}


def _check_normalization(normalization: Any, loss: Any) -> str | None:
    if normalization is None:
        return "mean" if isinstance(loss, str) else None
    if not isinstance(loss, str):
        raise ValueError("normalization applies to the built-in losses ('mse', "
                         "'cross_entropy'); a callable loss normalizes itself")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; expected 'mean' (over "
                         "all entries, as in neural-tangents) or 'per_example' (sum over "
                         "outputs, mean over examples)")
    return normalization


class ODEPredictor:
    """Predictor returned by `gradient_descent`: ``fx_train_t, fx_test_t = fn(t, ...)``."""

    def __init__(self, loss: str | LossFn, k_train_train: Any, y_train: Any,
                 learning_rate: float = 1.0, momentum: float | None = None, *,
                 rtol: float = 1e-10, atol: float = 1e-12, method: str = "DOP853",
                 normalization: str | None = None):
        self._closed_grad = None
        if isinstance(loss, str) and loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {tuple(LOSSES)} or "
                             "a callable loss(fx, y) -> scalar")
        if not isinstance(loss, str) and not callable(loss):
            raise TypeError(f"loss must be a string or a callable, got {type(loss).__name__}")
        self.normalization = _check_normalization(normalization, loss)
        if isinstance(loss, str):
            self._closed_grad = _LOSS_GRADS[loss]
            base, norm = LOSSES[loss], self.normalization
            self._builtin = base

            def loss(fx: Tensor, y: Tensor) -> Tensor:
                return base(fx, y, norm)
        else:
            self._builtin = None
        self.loss = loss
        # (n, n, k, k) kernels: the force on the flattened outputs is the (n·k, n·k)
        # matrix times the flattened loss gradient (neural-tangents' trace_axes=()).
        self.n_out = pair_outputs(k_train_train)
        if self.n_out is not None:
            y_train = check_pair_targets(y_train, self.n_out, "y_train", torch.float64, None)
            k_train_train = flatten_pairs(k_train_train, "k_train_train", self.n_out,
                                          torch.float64, None)
        k = check_kernel(k_train_train, "k_train_train")
        self.device = k.device
        self.k_train_train = k
        self.y_train = check_targets(y_train, k.shape[0] // (self.n_out or 1),
                                     device=k.device)
        if self._builtin is cross_entropy_loss and self.y_train.ndim != 2:
            raise ValueError("cross_entropy needs y_train of shape (n, k) (one-hot or "
                             f"probabilities), got {tuple(self.y_train.shape)}")
        self.learning_rate = check_learning_rate(learning_rate)
        if momentum is not None:
            momentum = float(momentum)
            if not 0.0 <= momentum < 1.0:
                raise ValueError(f"momentum must be in [0, 1) or None, got {momentum}")
        self.momentum = momentum
        self.rtol, self.atol, self.method = float(rtol), float(atol), method
        # K stays on its device; only the (n, k) state crosses to the host ODE solver.
        self._y = self.y_train.cpu()
        self._y_np = self._y.numpy()

    def _grad_loss(self, f: np.ndarray) -> np.ndarray:
        """∇_f L at flattened train outputs f, as an (n, k) array."""
        if self._closed_grad is not None:
            g = self._closed_grad(f.reshape(self._y_np.shape), self._y_np)
            count = self._y_np.size if self.normalization == "mean" else self._y_np.shape[0]
            return (g / count).reshape(self._y_np.shape[0], -1)
        ft = torch.from_numpy(f).reshape(self._y.shape).requires_grad_(True)
        val = self.loss(ft, self._y)
        if not isinstance(val, Tensor) or val.numel() != 1:
            raise TypeError("loss(fx, y) must return a scalar tensor")
        (g,) = torch.autograd.grad(val.reshape(()), ft)
        g = g.detach().numpy().reshape(self._y.shape[0], -1)
        if not np.isfinite(g).all():
            raise FloatingPointError("the loss gradient became non-finite during the ODE "
                                     "solve; check the loss and the learning rate")
        return g

    def __call__(self, t: Any, fx_train_0: Any = 0.0, fx_test_0: Any = None,
                 k_test_train: Any = None) -> tuple[Tensor | None, Tensor | None]:
        """Outputs at time(s) ``t``.

        Args:
          t: a scalar or array (any shape, any order, >= 0, finite) of training times in
            steps. t = None (∞) is refused: the flow may not converge (cross-entropy on
            separable data drives outputs to infinity); use `gradient_descent_mse` for
            the MSE limit, or a large finite t.
          fx_train_0: outputs on the training set at t = 0 (scalar or broadcastable to
            y_train); None: don't return train outputs (they still evolve, from 0).
          fx_test_0: outputs on the test set at t = 0; None means 0.
          k_test_train: (m, n) test-train kernel ((m, n, k, k) with an (n, n, k, k)
            train kernel); without it no test outputs.

        Returns:
          ``(fx_train_t, fx_test_t)`` with leading time axes ``t.shape``; None for the
          ones not requested.
        """
        if t is None:
            raise ValueError("t=None (infinite time) is not supported by the ODE solver; "
                             "pass finite times (or use gradient_descent_mse for MSE)")
        if k_test_train is None and fx_test_0 is not None:
            raise ValueError("fx_test_0 was given without k_test_train")
        if fx_train_0 is None and k_test_train is None:
            raise ValueError("nothing to predict: fx_train_0 is None and k_test_train is None")
        dt = torch.float64
        y = self.y_train
        times, t_shape = parse_times(t, dt, "cpu", allow_inf=False)
        f0 = broadcast_init(0.0 if fx_train_0 is None else fx_train_0, tuple(y.shape),
                            "fx_train_0", dt, "cpu")
        n_out = y[0].numel()
        k_td = None
        pairs = self.n_out or 1   # rows of the kernel matrices per example
        if k_test_train is not None:
            if self.n_out is not None:
                k_test_train = flatten_pairs(k_test_train, "k_test_train", self.n_out, dt,
                                             self.device)
            k_td = check_test_train(k_test_train, y.shape[0] * pairs, "k_test_train", dt,
                                    self.device)
            ft0 = broadcast_init(0.0 if fx_test_0 is None else fx_test_0,
                                 (k_td.shape[0] // pairs,) + tuple(y.shape[1:]), "fx_test_0",
                                 dt, "cpu")
        n_tr = y.numel()
        n_te = 0 if k_td is None else k_td.shape[0] // pairs * n_out
        z0 = [f0.reshape(-1).numpy()]
        if k_td is not None:
            z0.append(ft0.reshape(-1).numpy())
        z0 = np.concatenate(z0)

        K = self.k_train_train
        dev = self.device
        if self.momentum is None:
            scale = self.learning_rate
            damping = 0.0
        else:
            scale = math.sqrt(self.learning_rate)
            damping = (self.momentum - 1.0) / scale
            z0 = np.concatenate([z0, np.zeros_like(z0)])
        n_f = n_tr + n_te

        def rhs(_s: float, z: np.ndarray) -> np.ndarray:
            g = torch.from_numpy(self._grad_loss(z[:n_tr])).to(dev)  # (n, k)
            if self.n_out is not None:
                g = g.reshape(-1, 1)   # (n·k, 1), rows (i, a) as the flattened kernel's
            parts = [K @ g]
            if k_td is not None:
                parts.append(k_td @ g)
            force = -torch.cat(parts).reshape(-1).cpu().numpy()
            if self.momentum is None:
                return force
            q = z[n_f:]
            return np.concatenate([q, force + damping * q])

        s = times.numpy() * scale
        s_eval, inverse = np.unique(s, return_inverse=True)
        s_end = float(s_eval[-1]) if s_eval.size else 0.0
        if s_end > 0:
            sol = scipy.integrate.solve_ivp(rhs, (0.0, s_end), z0, method=self.method,
                                            t_eval=s_eval, rtol=self.rtol, atol=self.atol)
            if sol.status != 0:
                raise RuntimeError(f"ODE solver failed: {sol.message}")
            zs = sol.y.T  # (len(s_eval), state)
        else:
            zs = np.repeat(z0[None], s_eval.size, axis=0)
        zs = torch.from_numpy(np.ascontiguousarray(zs[inverse.reshape(-1)]))
        fx_train = fx_test = None
        if fx_train_0 is not None:
            fx_train = zs[:, :n_tr].reshape(t_shape + tuple(y.shape)).to(self.device)
        if k_td is not None:
            fx_test = zs[:, n_tr:n_f].reshape(t_shape + tuple(ft0.shape)).to(self.device)
        return fx_train, fx_test


def gradient_descent(loss: str | LossFn, k_train_train: Any, y_train: Any,
                     learning_rate: float = 1.0, momentum: float | None = None, *,
                     rtol: float = 1e-10, atol: float = 1e-12,
                     method: str = "DOP853",
                     normalization: str | None = None) -> ODEPredictor:
    """Predict function-space gradient descent (optionally with momentum) on any loss.

    Args:
      loss: "mse" (0.5 · (f - y)²), "cross_entropy" (softmax cross-entropy, y one-hot
        or probabilities), both averaged as ``normalization`` says, or a callable
        ``loss(fx, y) -> scalar tensor`` on (n, k) torch tensors, differentiable by
        autograd. It should treat examples and outputs symmetrically, since the (n, n)
        kernel acts identically on each output column.
      normalization: for the built-in losses, "mean" (the default: the mean over all
        n·k entries, as neural-tangents' ``predict`` examples and `gradient_descent_mse`
        use, so their learning rates carry over) or "per_example" (summed over the k
        outputs, averaged over the n examples, as ``torch.nn.functional.cross_entropy``;
        ntkit's cross-entropy before version 0.2, k times faster at the same
        learning rate). Must be None for a callable loss.
      k_train_train: (n, n) NTK on the training inputs, or (n, n, k, k) over output pairs
        (neural-tangents' ``trace_axes=()``): then the force is the (n·k, n·k) matrix
        K[(i, a), (j, b)] times the flattened loss gradient, as in `gradient_descent_mse`.
      y_train: (n,) or (n, k) targets ((n, k) with an (n, n, k, k) kernel).
      learning_rate: step size η > 0; times are in steps (absolute time η · t; with
        momentum √η · t).
      momentum: None (plain gradient flow) or μ in [0, 1) (heavy ball, see module doc).
      rtol, atol: tolerances of ``scipy.integrate.solve_ivp``.
      method: its integration method. DOP853 (explicit, 8th order) is accurate; for
        very long times on ill-conditioned kernels (stiff), "LSODA" or "Radau" is faster.

    Returns:
      `ODEPredictor` ``fn``; ``fx_train_t, fx_test_t = fn(t, fx_train_0=0.0,
      fx_test_0=None, k_test_train=None)``: (*t.shape, n, k) and (*t.shape, m, k).

    Example:
      >>> fn = gradient_descent("cross_entropy", k_train_train, y_onehot, 1.0)
      >>> f_train, f_test = fn([0., 10.], fx_train_0=f0, k_test_train=k_te_tr)
    """
    return ODEPredictor(loss, k_train_train, y_train, learning_rate, momentum,
                        rtol=rtol, atol=atol, method=method, normalization=normalization)
