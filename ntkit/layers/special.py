"""Two closed-form kernels of neural-tangents' stax: `Gabor` and `ExpNormalized`."""

from __future__ import annotations

import torch
from torch import Tensor

from ntkit.layers.base import Activation

# neural-tangents' floor under sqrt(var1·var2) (a zero-variance example gives 0, not NaN).
_SQRT_FLOOR = 1e-30


class Gabor(Activation):
    """φ(x) = exp(−x²) sin(x), with its closed-form dual (Gaussian integrals of
    exp(−u²−v²) sin(u) sin(v)), as neural-tangents' ``stax.Gabor``.

    Example:
      >>> net = serial(Dense(512), Gabor(), Dense(1))
    """

    def fn(self, x: Tensor) -> Tensor:
        return torch.exp(-x * x) * torch.sin(x)

    def dual(self, var1, cov, var2, need_dot):
        prod, sum_ = var1 * var2, var1 + var2
        diff = 4 * (prod - cov * cov)
        denom = 2 * sum_ + diff + 1
        num = sum_ + diff + 2 * cov
        exp_left = torch.exp(-num / (2 * denom))
        exp_right = torch.exp(2 * cov / denom)
        t = exp_left * (exp_right - 1) / (2 * torch.sqrt(denom))
        if not need_dot:
            return t, None
        shared = 1 + 2 * sum_ + 4 * (cov * cov + prod)
        diff_term = 4 * cov * (diff + 3 * sum_ + 2)
        tdot = exp_left * ((shared - diff_term) + exp_right * (shared + diff_term)) \
            / denom ** 2.5 / 2
        return t, tdot


class ExpNormalized(Activation):
    """The "Gaussian normalized kernel" of Shankar et al. (2020), "Neural Kernels Without
    Tangents": with ρ = cov / sqrt(var1·var2),

      nngp' = sqrt(var1·var2) · exp(γ (ρ + shift)),   ntk' = γ · ntk · exp(γ (ρ + shift)),

    (ρ clipped to [−1, 1] when ``do_clip``), as neural-tangents' ``stax.ExpNormalized``.
    A kernel-only layer: no elementwise function has this dual, so it has no finite
    network (``make_module`` raises NotImplementedError, as neural-tangents' apply_fn).

    Example:
      >>> net = serial(Dense(512), ExpNormalized(gamma=2.0), Dense(1))
    """

    remasks = True

    def __init__(self, gamma: float = 1.0, shift: float = -1.0, do_clip: bool = False):
        for name, v in (("gamma", gamma), ("shift", shift)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"ExpNormalized {name} must be a real number, got "
                                f"{type(v).__name__}")
            if not abs(float(v)) < float("inf"):
                raise ValueError(f"ExpNormalized {name} must be finite, got {v}")
        if not isinstance(do_clip, bool):
            raise TypeError(f"ExpNormalized do_clip must be a bool, got {do_clip!r}")
        self.gamma, self.shift, self.do_clip = float(gamma), float(shift), do_clip

    def fn(self, x: Tensor) -> Tensor:
        raise NotImplementedError("ExpNormalized is a kernel-only layer: it has no finite "
                                  "network")

    def dual(self, var1, cov, var2, need_dot):
        norm = torch.sqrt(torch.clamp(var1 * var2, min=_SQRT_FLOOR))
        rho = cov / norm
        if self.do_clip:
            rho = rho.clamp(-1.0, 1.0)
        e = torch.exp(self.gamma * (rho + self.shift))
        return norm * e, (self.gamma * e if need_dot else None)

    def make_module(self, in_features, generator, dtype):
        raise NotImplementedError("ExpNormalized is a kernel-only layer (neural-tangents has "
                                  "no finite apply_fn for it either): build() is not "
                                  "available for a network that contains it")
