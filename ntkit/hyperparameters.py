"""Kernel hyperparameters (w_std, b_std of Dense/Conv layers) fitted by GP marginal likelihood.

Pure torch. The kernel of a network is differentiable in its layers' ``w_std``/``b_std``
when they are 0-d tensors (see `ntkit.layers.Dense`), so the GP evidence

    −log p(y | X) = ½ tr(Yᵀ (K + σ² I)⁻¹ Y) + (k/2) log det(K + σ² I) + (nk/2) log 2π,

with K = the network's NNGP (or NTK) on X and Y (n, k) independent output columns, is
minimized over (w_std, b_std, σ²) by L-BFGS on their logarithms (positivity for free).

- `HyperparameterBinding`: a private copy of a network whose Dense/Conv stds are tied
  (one w_std, one b_std for all of them, started from the first layer's values) or per
  layer; `binding.apply(w, b)` writes tensors into the copy. `ntkit.gpytorch` uses it too.
- `gp_negative_log_likelihood(K, y, noise)`: the formula above.
- `fit_marginal_likelihood(net, x, y, ...)`: the fit; returns a `MarginalLikelihoodFit`
  (the `ntkit.sklearn` estimators copy what they need from it).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ntkit.engine.inputs import as_batch
from ntkit.layers.base import Layer
from ntkit.layers.conv import Conv
from ntkit.layers.dense import Dense

__all__ = [
    "B_STD_FLOOR",
    "KINDS",
    "HyperparameterBinding",
    "MarginalLikelihoodFit",
    "affine_layers",
    "fit_marginal_likelihood",
    "gp_negative_log_likelihood",
]

#: Where a learnable b_std whose initial value is 0 starts: a log (or any positivity)
#: parameterization cannot start at 0 itself.
B_STD_FLOOR = 1e-2
KINDS = ("nngp", "ntk")


def affine_layers(net: Layer) -> list[Layer]:
    """The Dense and Conv layers of ``net``, in network order (each once)."""
    if not isinstance(net, Layer):
        raise TypeError(f"net must be an ntkit layer spec, got {type(net).__name__}")
    found: list[Layer] = []
    seen: set[int] = set()

    def walk(obj) -> None:
        if isinstance(obj, (Dense, Conv)):
            if id(obj) not in seen:
                seen.add(id(obj))
                found.append(obj)
            return
        if isinstance(obj, Layer):
            for value in vars(obj).values():
                walk(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value)

    walk(net)
    return found


class HyperparameterBinding:
    """A copy of ``net`` whose Dense/Conv ``w_std``/``b_std`` are set from tensors.

    Groups: tied (``per_layer=False``): one group holding every Dense/Conv layer;
    per layer: one group per layer. ``w_init``/``b_init`` (floats, one per group) are the
    group's first layer's values (b: its first layer with a bias; a 0 is raised to
    `B_STD_FLOOR`); ``b_init[g]`` is None when no layer of group g has a bias.
    """

    def __init__(self, net: Layer, per_layer: bool = False):
        if not isinstance(per_layer, bool):
            raise TypeError(f"per_layer must be True or False, got {per_layer!r}")
        layers = affine_layers(net)
        if not layers:
            raise ValueError("the network has no Dense or Conv layer: no w_std/b_std to learn")
        self.net = _copy_net(net)
        self.layers = affine_layers(self.net)
        self.per_layer = per_layer
        self.groups = [[la] for la in self.layers] if per_layer else [self.layers]
        self.w_init = [float(g[0].w_std) for g in self.groups]
        self.b_init: list[float | None] = []
        for g in self.groups:
            with_bias = [la for la in g if la.b_std is not None]
            self.b_init.append(None if not with_bias
                               else max(float(with_bias[0].b_std), B_STD_FLOOR))

    def apply(self, w_std: Sequence[Tensor] | Tensor, b_std: Sequence[Tensor | None] | Tensor
              ) -> Layer:
        """Write the groups' values (0-d tensors) into the copy; returns the copy."""
        for g, layers in enumerate(self.groups):
            for la in layers:
                la.w_std = w_std[g]
                if la.b_std is not None:
                    la.b_std = b_std[g]
        return self.net

    def frozen(self, w_std: Sequence[float], b_std: Sequence[float | None]) -> Layer:
        """A fresh copy of the network with the given plain-float values."""
        self.apply([torch.tensor(float(w)) for w in w_std],
                   [None if b is None else torch.tensor(float(b)) for b in b_std])
        net = _copy_net(self.net)
        for la in affine_layers(net):
            la.w_std = float(la.w_std)
            la.b_std = None if la.b_std is None else float(la.b_std)
        return net


def _copy_net(net: Layer) -> Layer:
    """A deep copy of a spec, without per-layer torch.compile caches."""
    caches = {}

    def strip(obj) -> None:
        if isinstance(obj, Layer):
            if "_ntkit_compiled" in vars(obj):
                caches[id(obj)] = (obj, obj.__dict__.pop("_ntkit_compiled"))
            for value in vars(obj).values():
                strip(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                strip(value)

    strip(net)
    try:
        return copy.deepcopy(net)
    finally:
        for obj, cache in caches.values():
            obj.__dict__["_ntkit_compiled"] = cache


def gp_negative_log_likelihood(k: Tensor, y: Tensor, noise: Tensor | float) -> Tensor:
    """−log N(y; 0, K + noise·I), summed over the k columns of y.

    Args:
      k: (n, n) symmetric PSD prior covariance.
      y: (n,) or (n, k) targets (columns independent, each with covariance K + noise·I).
      noise: noise variance (> 0, or ≥ 0 if K is positive definite).

    Raises:
      ValueError on shape mismatch; torch.linalg.LinAlgError (with a message) if
      K + noise·I is not positive definite.
    """
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"k must be a square (n, n) matrix, got shape {tuple(k.shape)}")
    y2 = y.reshape(-1, 1) if y.ndim == 1 else y
    if y2.ndim != 2 or y2.shape[0] != k.shape[0]:
        raise ValueError(f"y must be (n,) or (n, k) with n = {k.shape[0]}, got shape "
                         f"{tuple(y.shape)}")
    n, cols = y2.shape
    a = k + noise * torch.eye(n, dtype=k.dtype, device=k.device)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise torch.linalg.LinAlgError(
            "K + noise·I is not positive definite (Cholesky failed at row "
            f"{int(info)}): increase the noise or check the kernel")
    alpha = torch.cholesky_solve(y2, chol)
    logdet = 2 * chol.diagonal().log().sum()
    return 0.5 * (y2 * alpha).sum() + 0.5 * cols * logdet + 0.5 * n * cols * math.log(2 * math.pi)


@dataclass
class MarginalLikelihoodFit:
    """Result of `fit_marginal_likelihood`.

    w_std, b_std: fitted values, one per group (a single entry when tied; b entries are
    None for groups without a bias); noise: fitted noise variance σ²; nll: final
    −log p(y | X); net: a copy of the network with the fitted plain-float values;
    history: nll after each L-BFGS iteration.
    """

    w_std: list[float]
    b_std: list[float | None]
    noise: float
    nll: float
    net: Layer
    history: list[float] = field(default_factory=list)
    kind: str = "nngp"

    def relative_noise(self, x: Tensor) -> float:
        """The noise relative to the fitted kernel's mean diagonal on ``x`` (n, ...):
        ``noise / mean(diag K)``, the ``diag_reg`` that gives the same ridge in ntkit's
        relative convention (`ntkit.predict`, `ntkit.sklearn`)."""
        with torch.no_grad():
            k = self.net.kernel(x, get=self.kind)
        return self.noise / float(k.diagonal().mean())


def fit_marginal_likelihood(net: Layer, x: Any, y: Any, *, kind: str = "nngp",
                            per_layer: bool = False,
                            noise: float | None = None, init_noise: float | None = None,
                            max_iter: int = 100, dtype: torch.dtype = torch.float64
                            ) -> MarginalLikelihoodFit:
    """Fit the network's Dense/Conv w_std, b_std (and the noise) by GP marginal likelihood.

    Args:
      net: layer spec (not modified); its values are the starting point.
      x: (n, d) or channels-first (n, C, *S) inputs.
      y: (n,) or (n, k) real targets (columns independent draws of the same GP).
      kind: "nngp" or "ntk": which kernel of the network is the GP prior covariance.
      per_layer: one (w_std, b_std) per Dense/Conv layer instead of one tied pair.
      noise: fixed noise variance σ² > 0, or None to learn it too.
      init_noise: starting σ² when learned (default: 10% of the mean squared target).
      max_iter: L-BFGS iterations (strong-Wolfe line search).
      dtype: compute dtype.

    Returns:
      A `MarginalLikelihoodFit`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    x = as_batch(x, "x", dtype, spatial=True)
    y_shape = tuple(y.shape) if isinstance(y, Tensor) else np.shape(y)
    if len(y_shape) == 0 or y_shape[0] == 0:
        raise ValueError(f"y must be targets of shape (n,) or (n, k) with n >= 1 rows, got "
                         f"shape {y_shape}")
    y = as_batch(np.ascontiguousarray(y).reshape(len(y), -1) if not isinstance(y, Tensor)
                 else y.reshape(y.shape[0], -1), "y", dtype)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    if noise is not None and not (isinstance(noise, (int, float)) and noise > 0
                                  and math.isfinite(noise)):
        raise ValueError(f"noise must be a finite number > 0 or None, got {noise!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    binding = HyperparameterBinding(net, per_layer)
    log_w = torch.tensor([math.log(w) for w in binding.w_init], dtype=dtype, requires_grad=True)
    has_b = [b is not None for b in binding.b_init]
    log_b = torch.tensor([math.log(b) if b is not None else 0.0 for b in binding.b_init],
                         dtype=dtype, requires_grad=True)
    params = [log_w, log_b]
    if noise is None:
        s2 = init_noise if init_noise is not None else 0.1 * float((y * y).mean())
        if not (s2 > 0 and math.isfinite(s2)):
            raise ValueError(f"init_noise must be > 0, got {s2!r}")
        log_noise = torch.tensor(math.log(s2), dtype=dtype, requires_grad=True)
        params.append(log_noise)

    def current():
        w = log_w.exp()
        b = log_b.exp()
        s2 = log_noise.exp() if noise is None else torch.tensor(noise, dtype=dtype)
        return w, [b[g] if has_b[g] else None for g in range(len(has_b))], s2

    def nll() -> Tensor:
        w, b, s2 = current()
        k = binding.apply(list(w), b).kernel(x, get=kind, dtype=dtype)
        return gp_negative_log_likelihood(k, y, s2)

    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)
    history: list[float] = []

    def closure():
        opt.zero_grad()
        loss = nll()
        loss.backward()
        history.append(float(loss.detach()))
        return loss

    opt.step(closure)
    with torch.no_grad():
        w, b, s2 = current()
        final = float(nll())
    w_list = [float(v) for v in w]
    b_list = [None if v is None else float(v) for v in b]
    return MarginalLikelihoodFit(w_std=w_list, b_std=b_list, noise=float(s2), nll=final,
                                 net=binding.frozen(w_list, b_list), history=history,
                                 kind=kind)
