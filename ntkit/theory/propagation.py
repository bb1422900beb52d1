"""Layer-by-layer second moments of two inputs: predicted (infinite width) and measured
in random finite networks.

`propagate` iterates the recursion of `ntkit.theory.criticality` (or any ntkit layer's
``kernel_map``); `measure_propagation` samples finite networks of a given width, whose
moments converge to it with an O(1/width) bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ntkit.kernel import Kernel
from ntkit.theory.signal_maps import (
    F64,
    as_float64,
    check_activation,
    check_c_b,
    check_c_w,
)

__all__ = ["MeasuredPropagation", "Propagation", "measure_propagation", "propagate"]


# ---------------------------------------------------------------------- propagation
@dataclass(frozen=True)
class Propagation:
    """Layer-wise second moments of a pair of inputs; arrays of length depth (layers 1..L).

    ``K11``, ``K22``: variances; ``K12``: covariance; ``rho`` = K12/√(K11 K22).
    """

    layers: np.ndarray
    K11: np.ndarray
    K22: np.ndarray
    K12: np.ndarray

    @property
    def rho(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.K12 / np.sqrt(self.K11 * self.K22)


def _first_layer(C_w, C_b, x1, x2, K11, K22, K12) -> tuple[float, float, float]:
    if x1 is not None or x2 is not None:
        if x1 is None or x2 is None or any(v is not None for v in (K11, K22, K12)):
            raise ValueError("give either both inputs x1, x2 or the layer-1 moments "
                             "K11, K22, K12")
        a = as_float64(x1).reshape(-1)
        b = as_float64(x2).reshape(-1)
        if a.shape != b.shape or a.numel() == 0:
            raise ValueError(f"x1 and x2 must be vectors of equal length, got {tuple(a.shape)}"
                             f" and {tuple(b.shape)}")
        d = a.numel()
        return (C_b + C_w * float(a @ a) / d, C_b + C_w * float(b @ b) / d,
                C_b + C_w * float(a @ b) / d)
    if any(v is None for v in (K11, K22, K12)):
        raise ValueError("give either both inputs x1, x2 or the layer-1 moments K11, K22, K12")
    k11, k22, k12 = (float(v) for v in (K11, K22, K12))
    if k11 < 0 or k22 < 0 or k12 * k12 > k11 * k22 * (1 + 1e-12):
        raise ValueError(f"(K11, K22, K12) = {(k11, k22, k12)} is not a covariance")
    return k11, k22, k12


def propagate(spec, C_w: float | None, C_b: float | None, depth: int, *, x1=None, x2=None,
              K11: float | None = None, K22: float | None = None,
              K12: float | None = None) -> Propagation:
    """Predicted (infinite-width) layer-wise variances and correlation of two inputs.

    Layer 1 is K¹ = C_b + C_w x1·x2/d from inputs x1, x2 (vectors of length d), or is given
    directly as (K11, K22, K12). Then, for l = 1, …, depth − 1:

    - ``spec`` an `Activation`: K^{l+1} = C_b + C_w T(K^l_11, K^l_12, K^l_22) (and the same
      for the variances), as in the module docstring;
    - ``spec`` any other ntkit `Layer`: it is the per-layer block mapping layer-l
      pre-activation moments to layer l+1, e.g. ``serial(Erf(), Dense(1, √C_w, √C_b))``;
      its ``kernel_map`` is applied to the 2×2 kernel. C_w and C_b then only enter
      layer 1 (needed only with x1, x2).

    Returns:
      `Propagation` with arrays of length ``depth`` (float64 numpy).
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}")
    is_act = hasattr(spec, "dual") and callable(spec.dual)
    if is_act:
        C_w, C_b = check_c_w(C_w), check_c_b(C_b)
    elif not hasattr(spec, "kernel_map"):
        raise TypeError(f"spec must be an ntkit Activation or Layer, got {type(spec).__name__}")
    elif x1 is not None:
        C_w, C_b = check_c_w(C_w), check_c_b(C_b)
    k11, k22, k12 = _first_layer(C_w, C_b, x1, x2, K11, K22, K12)
    out = np.empty((depth, 3))
    out[0] = (k11, k22, k12)
    if is_act:
        var = torch.tensor([k11, k22], dtype=F64)
        cov = torch.tensor([k12], dtype=F64)
        for layer in range(1, depth):
            # The variances through the diagonal call (same tensor thrice), as the kernel
            # map does; the covariance through the 2-D dual.
            tv = spec.dual(var, var, var, need_dot=False)[0]
            tc = spec.dual(var[:1], cov, var[1:], need_dot=False)[0]
            var = C_b + C_w * tv
            cov = C_b + C_w * tc
            out[layer] = (float(var[0]), float(var[1]), float(cov[0]))
    else:
        nngp = torch.tensor([[k11, k12], [k12, k22]], dtype=F64)
        k = Kernel(nngp=nngp, ntk=None, cov1=torch.tensor([k11, k22], dtype=F64), cov2=None,
                   channels=1, x1_is_x2=True)
        for layer in range(1, depth):
            k = spec.kernel_map(k)
            out[layer] = (float(k.nngp[0, 0]), float(k.nngp[1, 1]), float(k.nngp[0, 1]))
    return Propagation(np.arange(1, depth + 1), out[:, 0].copy(), out[:, 1].copy(),
                       out[:, 2].copy())


@dataclass(frozen=True)
class MeasuredPropagation:
    """Layer-wise moments measured in finite random networks (means over ``n_nets``).

    ``K11``, ``K22``, ``K12``, ``rho``: (depth,) means of the per-network estimates
    (1/n) Σ_i z_i(x_a) z_i(x_b); the ``*_se`` fields are standard errors of those means
    across networks (nan for one network).
    """

    layers: np.ndarray
    K11: np.ndarray
    K22: np.ndarray
    K12: np.ndarray
    rho: np.ndarray
    K11_se: np.ndarray
    K22_se: np.ndarray
    K12_se: np.ndarray
    rho_se: np.ndarray
    width: int
    n_nets: int


def measure_propagation(act, C_w: float, C_b: float, depth: int, width: int, x1, x2, *,
                        n_nets: int = 1, seed: int = 0, method: str = "gaussian",
                        dtype: torch.dtype = torch.float64) -> MeasuredPropagation:
    """Moments of two inputs measured layer by layer in random finite networks.

    Each network: z¹ = √C_b b + √(C_w/d) W x, z^{l+1} = √C_b b + √(C_w/n) W σ(z^l), all
    hidden widths n = ``width``, fresh W, b ~ N(0, 1) per layer (the recursion of
    `propagate`, to which the means converge as width → ∞, with O(1/width) bias).

    ``method``:
      - "weights": draws every W (n × n) explicitly; O(depth·n²) per network.
      - "gaussian" (default): the same process, sampled exactly in law at O(depth·n):
        given layer l, the pairs (z_i^{l+1}(x1), z_i^{l+1}(x2)) are i.i.d. over i and
        Gaussian with covariance C_b + (C_w/n) [σ(z^l(x_a))·σ(z^l(x_b))]_{ab}, because the
        rows of a fresh W are independent Gaussians. So width 10⁴ at depth 100 is cheap.
    """
    act, C_w, C_b = check_activation(act), check_c_w(C_w), check_c_b(C_b)
    for name, v in (("depth", depth), ("width", width), ("n_nets", n_nets)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if method not in ("gaussian", "weights"):
        raise ValueError(f"method must be 'gaussian' or 'weights', got {method!r}")
    x = torch.stack([as_float64(x1).reshape(-1), as_float64(x2).reshape(-1)]).to(dtype)
    if x.shape[1] == 0:
        raise ValueError("x1 and x2 must be non-empty vectors of equal length")
    d = x.shape[1]
    gen = torch.Generator().manual_seed(int(seed))
    res = np.empty((n_nets, depth, 4))
    sb, sw = math.sqrt(C_b), math.sqrt(C_w)
    for net in range(n_nets):
        fan_in, h = d, x
        for layer in range(depth):
            if method == "weights" or layer == 0:
                w = torch.randn(width, fan_in, generator=gen, dtype=dtype)
                b = torch.randn(width, generator=gen, dtype=dtype)
                z = (h @ w.T) * (sw / math.sqrt(fan_in)) + sb * b  # (2, width)
            else:
                cov = C_b + (C_w / fan_in) * (h @ h.T)
                g = torch.randn(2, width, generator=gen, dtype=dtype)
                a, c, e = cov[0, 0], cov[0, 1], cov[1, 1]
                l11 = a.clamp_min(0).sqrt()
                l21 = torch.where(l11 > 0, c / l11.clamp_min(torch.finfo(dtype).tiny),
                                  torch.zeros_like(c))
                l22 = (e - l21 * l21).clamp_min(0).sqrt()
                z = torch.stack([l11 * g[0], l21 * g[0] + l22 * g[1]])
            m = (z @ z.T / width).double()
            res[net, layer] = (float(m[0, 0]), float(m[1, 1]), float(m[0, 1]),
                               float(m[0, 1] / torch.sqrt(m[0, 0] * m[1, 1])))
            h, fan_in = act.fn(z), width
    mean = res.mean(0)
    se = res.std(0, ddof=1) / math.sqrt(n_nets) if n_nets > 1 else np.full_like(mean, np.nan)
    return MeasuredPropagation(np.arange(1, depth + 1), mean[:, 0], mean[:, 1], mean[:, 2],
                               mean[:, 3], se[:, 0], se[:, 1], se[:, 2], se[:, 3], width,
                               n_nets)
