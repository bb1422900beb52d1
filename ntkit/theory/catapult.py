"""The catapult phase: the two-variable (output, NTK) recursion of gradient descent on a
two-layer ReLU net (Lewkowycz, Bahri, Dyer, Sohl-Dickstein & Gur-Ari 2020, "The large
learning rate phase of deep learning: the catapult mechanism").

A one-hidden-layer ReLU network without biases on one example (x, y),

    z = Σ_i v_i σ(u_iᵀx/√d)/√m,    loss ½(z − y)²,   step η,

is exactly bilinear in (u, v) while no pre-activation a_i = u_iᵀx/√d changes sign (inactive
units get zero gradient and stay frozen). Write r = z − y, λ = ‖∇_θ z‖² (the NTK on x),
c = ‖x‖²/d and κ = c/m. One gradient-descent step then gives exactly

    r(t+1) = r(t)·[1 − ηλ(t) + κ η² r(t) z(t)]                     (1)
    λ(t+1) = λ(t) + κ η r(t)·[η λ(t) r(t) − 4 z(t)]                 (2)

(derivation: a_i' = a_i − η r c v_i/√m, v_i' = v_i − η r a_i/√m; expand z' and
λ' = Σ_active (a_i'² + c v_i'²)/m). For y = 0 this is the case of Lewkowycz et al.
(2020), whose "uv model" f = vᵀu·x/√m is this recursion
with every unit active (κ = x²/m).

Phases (m ≫ 1, Lewkowycz et al. 2020): η < 2/λ₀ lazy (λ ≈ λ₀);
2/λ₀ < η < 4/λ₀ catapult (the loss grows to O(m), λ falls below 2/η, then converges);
η > 4/λ₀ divergence (for the uv model; deep ReLU nets diverge near 12/λ₀ instead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["CatapultTrajectory", "catapult_step", "catapult_trajectory", "phase",
           "phase_boundaries", "relu_net_state"]


def _num(v, name: str) -> float:
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(v.shape)}")
        v = v.item()
    if isinstance(v, np.ndarray):
        if v.size != 1:
            raise ValueError(f"{name} must be a scalar, got shape {v.shape}")
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def catapult_step(residual, ntk, *, target, eta, kappa) -> tuple[float, float]:
    """One step of the recursion: (r, λ) ↦ (r', λ') by eqs. (1)–(2) above.

    Args:
      residual: r = z − y. ntk: λ = ‖∇_θ z‖². target: y. eta: step size.
      kappa: ‖x‖²/(m d), the second-order coefficient (1/m times the input kernel).
    """
    r, lam = _num(residual, "residual"), _num(ntk, "ntk")
    y, eta, kappa = _num(target, "target"), _num(eta, "eta"), _num(kappa, "kappa")
    if eta < 0 or kappa < 0:
        raise ValueError(f"eta and kappa must be >= 0, got eta={eta}, kappa={kappa}")
    z = r + y
    return (r * (1.0 - eta * lam + kappa * eta * eta * r * z),
            lam + kappa * eta * r * (eta * lam * r - 4.0 * z))


@dataclass
class CatapultTrajectory:
    """Iterates of the recursion: ``residual`` and ``ntk`` are (steps + 1,) float64 tensors
    (NaN after divergence); ``loss`` = ½ residual²; ``diverged`` if |r| exceeded the cap."""

    residual: Tensor
    ntk: Tensor
    loss: Tensor
    diverged: bool


def catapult_trajectory(z0, ntk0, *, target, eta, kappa, steps: int,
                        cap: float = 1e12) -> CatapultTrajectory:
    """Iterate the recursion from (z0 − y, λ0) for ``steps`` steps (stops at |r| > cap)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    y = _num(target, "target")
    r, lam = _num(z0, "z0") - y, _num(ntk0, "ntk0")
    rs, ls = np.full(steps + 1, np.nan), np.full(steps + 1, np.nan)
    rs[0], ls[0] = r, lam
    diverged = False
    for t in range(steps):
        r, lam = catapult_step(r, lam, target=y, eta=eta, kappa=kappa)
        if not (abs(r) <= cap and math.isfinite(lam)):
            diverged = True
            break
        rs[t + 1], ls[t + 1] = r, lam
    res = torch.from_numpy(rs)
    return CatapultTrajectory(res, torch.from_numpy(ls), 0.5 * res ** 2, diverged)


def phase_boundaries(ntk0) -> tuple[float, float]:
    """(2/λ₀, 4/λ₀): the lazy/catapult and catapult/divergent learning rates (uv model)."""
    lam = _num(ntk0, "ntk0")
    if lam <= 0:
        raise ValueError(f"ntk0 must be > 0, got {lam}")
    return 2.0 / lam, 4.0 / lam


def phase(eta, ntk0) -> str:
    """'lazy', 'catapult' or 'divergent' by the uv-model boundaries of `phase_boundaries`."""
    lo, hi = phase_boundaries(ntk0)
    e = _num(eta, "eta")
    return "lazy" if e < lo else ("catapult" if e < hi else "divergent")


def relu_net_state(u, v, x) -> tuple[float, float, float, Tensor]:
    """(z, λ, κ, active) of z = Σ v_i ReLU(u_iᵀx/√d)/√m on one input.

    Args:
      u: (m, d) first-layer weights. v: (m,) readout. x: (d,) the example.

    Returns:
      z, the NTK λ = Σ_active (a_i² + c v_i²)/m with c = ‖x‖²/d, κ = c/m and the (m,) boolean
      mask of active units (a_i > 0).
    """
    u, v, x = (torch.as_tensor(t, dtype=torch.float64) for t in (u, v, x))
    if u.ndim != 2 or v.ndim != 1 or x.ndim != 1 or u.shape != (v.shape[0], x.shape[0]):
        raise ValueError(f"expected u (m, d), v (m,), x (d,); got {tuple(u.shape)}, "
                         f"{tuple(v.shape)}, {tuple(x.shape)}")
    for name, t in (("u", u), ("v", v), ("x", x)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf")
    m, d = u.shape
    a = u @ x / math.sqrt(d)
    act = a > 0
    c = float(x @ x) / d
    z = float((v * a.clamp_min(0)).sum()) / math.sqrt(m)
    lam = float(((a ** 2 + c * v ** 2) * act).sum()) / m
    return z, lam, c / m, act
