"""GPyTorch kernel of an infinitely wide network: `InfiniteWidthKernel` (optional extra).

    import gpytorch
    from ntkit import layers as nl
    from ntkit.gpytorch import InfiniteWidthKernel

    net = nl.serial(nl.Dense(512, w_std=1.0, b_std=0.1), nl.ReLU(), nl.Dense(1))
    covar = InfiniteWidthKernel(net, kind="nngp")        # learnable .w_std, .b_std

    class GP(gpytorch.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean, self.covar = gpytorch.means.ZeroMean(), covar
        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean(x), self.covar(x))

The network's Dense/Conv ``w_std``/``b_std`` become gpytorch parameters (``raw_w_std``,
``raw_b_std`` under a `gpytorch.constraints.Positive` constraint): tied across the layers
by default (one value each, initialized from the first layer; from its first layer with
a bias for b_std), or one per layer with ``per_layer=True`` (then ``.w_std`` has one
entry per Dense/Conv layer, in network order). The kernel itself is computed by ntkit
(``net.kernel``) and differentiated by torch autograd (see `ntkit.dual.autodiff`).

Needs ``gpytorch`` (imported here only; install the ``gpytorch`` extra).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

try:
    import gpytorch
    from gpytorch.constraints import Positive
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("ntkit.gpytorch needs the optional dependency gpytorch "
                      "(pip install gpytorch, or ntkit[gpytorch])") from exc

from ntkit.hyperparameters import KINDS, HyperparameterBinding
from ntkit.layers.base import Layer

__all__ = ["InfiniteWidthKernel"]


class InfiniteWidthKernel(gpytorch.kernels.Kernel):
    """The NNGP or NTK of an ntkit network as a ``gpytorch.kernels.Kernel``.

    Args:
      net: ntkit layer spec (copied; the original is not modified).
      kind: "nngp" or "ntk".
      per_layer: one learnable (w_std, b_std) per Dense/Conv layer instead of tied ones.
      input_shape: per-example shape (channels first, e.g. (1, 8, 8)) that flat inputs
        (n, prod(input_shape)) are reshaped to, for convolutional nets; None: as given.
      w_std_constraint, b_std_constraint: gpytorch constraints (default Positive()).
      **kwargs: passed to ``gpytorch.kernels.Kernel`` (e.g. ``active_dims``).

    Inputs are (n, d) (no gpytorch batch dimensions); the kernel is computed in the
    inputs' dtype. ``diag=True`` returns the diagonal of the full kernel (computed in full).
    """

    has_lengthscale = False

    def __init__(self, net: Layer, kind: str = "nngp", per_layer: bool = False,
                 input_shape: tuple[int, ...] | None = None,
                 w_std_constraint: Any = None, b_std_constraint: Any = None, **kwargs: Any):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        super().__init__(**kwargs)
        self.kind = kind
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)
        self._binding = HyperparameterBinding(net, per_layer)
        self.per_layer = per_layer
        groups = len(self._binding.groups)
        self._has_b = [b is not None for b in self._binding.b_init]
        w_c = Positive() if w_std_constraint is None else w_std_constraint
        b_c = Positive() if b_std_constraint is None else b_std_constraint
        self.register_parameter("raw_w_std", torch.nn.Parameter(torch.zeros(groups)))
        self.register_constraint("raw_w_std", w_c)
        self.w_std = torch.tensor(self._binding.w_init)
        if any(self._has_b):
            self.register_parameter("raw_b_std", torch.nn.Parameter(torch.zeros(groups)))
            self.register_constraint("raw_b_std", b_c)
            self.b_std = torch.tensor([b if b is not None else 1.0 for b in self._binding.b_init])

    # ---- hyperparameters (tied: 0-d; per layer: one entry per Dense/Conv layer) ------
    def _shape(self, t: Tensor) -> Tensor:
        return t if self.per_layer else t[0]

    @property
    def w_std(self) -> Tensor:
        return self._shape(self.raw_w_std_constraint.transform(self.raw_w_std))

    @w_std.setter
    def w_std(self, value: Any) -> None:
        self._set("raw_w_std", value)

    @property
    def b_std(self) -> Tensor | None:
        if not any(self._has_b):
            return None
        return self._shape(self.raw_b_std_constraint.transform(self.raw_b_std))

    @b_std.setter
    def b_std(self, value: Any) -> None:
        if not any(self._has_b):
            raise AttributeError("the network has no biases (every b_std is None)")
        self._set("raw_b_std", value)

    def _set(self, name: str, value) -> None:
        raw = getattr(self, name)
        value = torch.as_tensor(value, dtype=raw.dtype, device=raw.device)
        value = value.expand(raw.shape) if value.ndim == 0 else value
        if value.shape != raw.shape:
            raise ValueError(f"{name[4:]} must be a scalar or have {raw.numel()} entries "
                             f"(one per Dense/Conv layer), got shape {tuple(value.shape)}")
        constraint = getattr(self, f"{name}_constraint")
        self.initialize(**{name: constraint.inverse_transform(value)})

    def network(self) -> Layer:
        """The network with the current hyperparameters written in (as tensors)."""
        w = self.raw_w_std_constraint.transform(self.raw_w_std)
        if any(self._has_b):
            b_all = self.raw_b_std_constraint.transform(self.raw_b_std)
            b = [b_all[g] if self._has_b[g] else None for g in range(len(self._has_b))]
        else:
            b = [None] * len(self._has_b)
        return self._binding.apply(list(w), b)

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False,
                last_dim_is_batch: bool = False, **params: Any) -> Tensor:
        if last_dim_is_batch:
            raise ValueError("InfiniteWidthKernel does not support last_dim_is_batch")
        if x1.ndim != 2 or x2.ndim != 2:
            raise ValueError(f"InfiniteWidthKernel takes (n, d) inputs without batch "
                             f"dimensions, got shapes {tuple(x1.shape)} and {tuple(x2.shape)}")
        same = x1 is x2 or (x1.shape == x2.shape and torch.equal(x1, x2))
        a1, a2 = x1, x2
        if self.input_shape is not None:
            a1 = x1.reshape(-1, *self.input_shape)
            a2 = x2.reshape(-1, *self.input_shape)
        net = self.network()
        # Same inputs that don't need gradients: the symmetric path (exact diagonal).
        k = net.kernel(a1, None if same and not x2.requires_grad else a2, get=self.kind,
                       dtype=x1.dtype)
        return k.diagonal(0, 0, 1) if diag else k
