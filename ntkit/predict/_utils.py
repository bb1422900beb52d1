"""Shared helpers of `ntkit.predict`: argument checks, kernel containers, time grids,
and the two scalar functions of (eigenvalue, time) that gradient flow on MSE needs."""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ntkit.solvers.checks import as_tensor, check_finite, check_kernel

KERNEL_NAMES = ("nngp", "ntk")


class Gaussian(NamedTuple):
    """A (mean, covariance) pair.

    Attributes:
      mean: (*t_shape, m, k) predicted outputs (m test points, k outputs).
      covariance: (*t_shape, m, m) covariance across test points, the same for each of
        the k outputs (outputs are independent and identically distributed).
    """

    mean: Tensor
    covariance: Tensor


def canonicalize_get(get: Any, allowed: Sequence[str], default: Sequence[str] = KERNEL_NAMES
                     ) -> tuple[tuple[str, ...], bool]:
    """Return (names, single): a tuple of kernel names and whether ``get`` was one string."""
    if get is None:
        return tuple(default), False
    if isinstance(get, str):
        names, single = (get,), True
    elif isinstance(get, (tuple, list)):
        names, single = tuple(get), False
    else:
        raise TypeError(f"get must be a string or a tuple of strings, got {type(get).__name__}")
    if not names:
        raise ValueError("get is empty")
    for g in names:
        if not isinstance(g, str):
            raise TypeError(f"get must contain strings, got {g!r}")
        if g not in allowed:
            raise ValueError(f"unknown get={g!r}; expected one of {tuple(allowed)}")
    if len(set(names)) != len(names):
        raise ValueError(f"get has repeated names: {names}")
    return names, single


def pack_output(out: dict[str, Any], names: tuple[str, ...], single: bool):
    """One value for a single name, else a namedtuple ``Gaussians`` with fields ``names``."""
    if single:
        return out[names[0]]
    return _gaussians_type(names)(**{g: out[g] for g in names})


@functools.cache
def _gaussians_type(names: tuple[str, ...]) -> type:
    # One class per field tuple, so results of repeated calls share a type.
    return collections.namedtuple("Gaussians", names)


def is_array(x: Any) -> bool:
    return isinstance(x, (Tensor, np.ndarray))


def kernel_field(k: Any, g: str, name: str) -> Any:
    """The ``g`` kernel ("nngp"/"ntk") held by ``k``, or None when it holds none.

    ``k`` may be a bare matrix (then it is used for every ``g``, as in neural-tangents),
    a mapping, a namedtuple, or any object with ``nngp``/``ntk`` attributes (such as
    `ntkit.kernel.Kernel`).
    """
    if k is None:
        return None
    if is_array(k):
        return k
    if isinstance(k, Mapping):
        return k.get(g)
    # Only the requested attribute is read: containers may compute kernels lazily.
    try:
        return getattr(k, g)
    except AttributeError:
        if any(hasattr(type(k), h) or h in getattr(k, "__dict__", {}) for h in KERNEL_NAMES):
            return None
    raise TypeError(f"{name}: expected a matrix, a dict or an object with nngp/ntk "
                    f"attributes, got {type(k).__name__}")


def require_field(k: Any, g: str, name: str, why: str = "") -> Any:
    v = kernel_field(k, g, name)
    if v is None:
        raise ValueError(f"{name} has no {g!r} kernel" + (f", which is needed {why}" if why
                                                           else ""))
    return v


def check_targets(y: Any, n: int | None, name: str = "y_train",
                  dtype: torch.dtype = torch.float64,
                  device: torch.device | str | None = None) -> Tensor:
    """y as an (n,) or (n, k) float tensor; n must match the kernel when given."""
    y = as_tensor(y, name, dtype, device)
    if y.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (n,) or (n, k), got {tuple(y.shape)}")
    check_finite(y, name)
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} rows but k_train_train is {n}×{n}")
    if y.numel() == 0:
        raise ValueError(f"{name} is empty")
    return y


def check_test_train(k: Any, n: int, name: str, dtype: torch.dtype,
                     device: torch.device | str | None) -> Tensor:
    k = check_kernel(k, name, symmetric=False, dtype=dtype, device=device)
    if k.shape[1] != n:
        raise ValueError(f"{name} must have shape (m, {n}) to match the {n} training "
                         f"points, got {tuple(k.shape)}")
    return k


def check_test_test(k: Any, m: int, name: str, dtype: torch.dtype,
                    device: torch.device | str | None) -> Tensor:
    k = check_kernel(k, name, dtype=dtype, device=device)
    if k.shape[0] != m:
        raise ValueError(f"{name} must have shape ({m}, {m}) to match the {m} test "
                         f"points of k_test_train, got {tuple(k.shape)}")
    return k


def check_learning_rate(lr: Any) -> float:
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise TypeError(f"learning_rate must be a number, got {type(lr).__name__}") from None
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"learning_rate must be a finite number > 0, got {lr}")
    return lr


def parse_times(t: Any, dtype: torch.dtype, device: torch.device | str | None,
                allow_inf: bool = True) -> tuple[Tensor, tuple[int, ...]]:
    """Times as a flat (T,) tensor plus their original shape. Negative or NaN → ValueError."""
    t = as_tensor(t, "t", dtype, device)
    if bool(torch.isnan(t).any()):
        raise ValueError("t contains NaN")
    if bool((t < 0).any()):
        raise ValueError(f"t must be >= 0 (training time), got min {float(t.min()):.3g}")
    if not allow_inf and bool(torch.isinf(t).any()):
        raise ValueError("t must be finite here")
    return t.reshape(-1), tuple(t.shape)


def broadcast_init(f0: Any, shape: tuple[int, ...], name: str, dtype: torch.dtype,
                   device: torch.device | str | None) -> Tensor:
    """Initial outputs (scalar or array) broadcast to ``shape``."""
    f0 = as_tensor(f0, name, dtype, device)
    check_finite(f0, name)
    try:
        return torch.broadcast_to(f0, shape)
    except RuntimeError:
        raise ValueError(f"{name} of shape {tuple(f0.shape)} does not broadcast to the "
                         f"output shape {shape}") from None


# ---- functions of (eigenvalue λ >= 0, scaled time s >= 0) ------------------------------
# Gradient flow on MSE, df/ds = -K (f - y) with s = learning_rate · t / y.size, has
#   f(s) - y = exp(-K s) (f0 - y),
#   f_test(s) = f_test0 - K_test,train K⁻¹ (1 - exp(-K s)) (f0 - y).
# In the eigenbasis these are expm1(-λ s) and φ(λ, s) = (1 - exp(-λ s)) / λ. φ is
# written as s · g(λ s), g(x) = -expm1(-x) / x, so that it stays exact at λ = 0
# (φ → s: a flat direction moves linearly in time), and at s = ∞ it is the
# pseudo-inverse: 1/λ on numerically positive eigenvalues, 0 on the null space.


def _g(x: Tensor) -> Tensor:
    small = x < 1e-8
    safe = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, 1.0 - 0.5 * x, -torch.expm1(-safe) / safe)


def expm1_flow(evals: Tensor, s: Tensor, cutoff: float) -> Tensor:
    """exp(-λ s) - 1 for evals (n,) and s (T,) → (T, n); null directions at s=∞ stay put."""
    lam = evals[None, :]
    s = s[:, None]
    inf = torch.isinf(s)
    x = torch.where(inf, torch.zeros_like(lam * s), lam * torch.where(inf, 0.0, s))
    val = torch.expm1(-x)
    return torch.where(inf, torch.where(lam > cutoff, -1.0, 0.0), val)


def phi_flow(evals: Tensor, s: Tensor, cutoff: float) -> Tensor:
    """(1 - exp(-λ s)) / λ for evals (n,) and s (T,) → (T, n), finite everywhere."""
    lam = evals[None, :]
    s = s[:, None]
    inf = torch.isinf(s)
    s_fin = torch.where(inf, 0.0, s)
    val = s_fin * _g(lam * s_fin)
    pos = lam > cutoff
    at_inf = torch.where(pos, 1.0 / torch.where(pos, lam, 1.0), 0.0)
    return torch.where(inf, at_inf, val)


# ---- (n1, n2, k, k) kernels over output units (neural-tangents' trace_axes=()) ---------
# neural-tangents' predict takes kernels whose output axes are not traced, in its zipped
# layout K[i, j, a, b] (example i output a, example j output b); it solves with the
# (n1·k, n2·k) matrix K[(i, a), (j, b)] (its ``make_2d``) against the flattened targets.


def pair_outputs(k: Any) -> int | None:
    """k for an (n1, n2, k, k) kernel array, None for anything else (matrices, containers)."""
    if is_array(k) and k.ndim == 4:
        return int(k.shape[2])
    return None


def flatten_pairs(k: Any, name: str, n_out: int, dtype: torch.dtype,
                  device: torch.device | str | None) -> Tensor:
    """(n1, n2, k, k) -> (n1·k, n2·k), rows (i, a) and columns (j, b) in row-major order."""
    k = as_tensor(k, name, dtype, device)
    if k.ndim != 4 or k.shape[2] != n_out or k.shape[3] != n_out:
        raise ValueError(f"{name} must have shape (n1, n2, {n_out}, {n_out}) like the "
                         f"train-train kernel (k = {n_out} outputs), got {tuple(k.shape)}")
    n1, n2 = k.shape[:2]
    return k.permute(0, 2, 1, 3).reshape(n1 * n_out, n2 * n_out)


def unflatten_pairs(k: Tensor, n_out: int) -> Tensor:
    """(…, m1·k, m2·k) -> (…, m1, m2, k, k), the inverse of `flatten_pairs`."""
    *lead, r, c = k.shape
    k = k.reshape(*lead, r // n_out, n_out, c // n_out, n_out)
    return k.transpose(-3, -2)


def check_pair_targets(y: Any, n_out: int, name: str, dtype: torch.dtype,
                       device: torch.device | str | None) -> Tensor:
    """Targets (n, k) for an (n, n, k, k) kernel."""
    y = as_tensor(y, name, dtype, device)
    if y.ndim != 2 or y.shape[1] != n_out:
        raise ValueError(f"{name} must have shape (n, {n_out}) to go with an (n, n, {n_out}, "
                         f"{n_out}) kernel, got {tuple(y.shape)}")
    return y
