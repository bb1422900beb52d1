"""Signal-propagation maps of deep random networks at infinite width.

The second moments of the pre-activations follow the recursion of Poole et al. (2016,
"Exponential expressivity in deep neural networks through transient chaos") and Schoenholz
et al. (2017, "Deep information propagation"); see `ntkit.theory.criticality` for the
quantities and conventions. This module holds the maps themselves (variance map F,
correlation map c, their slopes χ∥, χ⊥, χ_c), the depth scale ξ = −1/log χ, and the checked
Gaussian moments they are built from:

- ``second_moment(act, K)``: V(K) = E[σ(z)²], z ~ N(0, K);
- ``second_moment_slope(act, K)``: V'(K), with the K → 0⁺ limit at K = 0;
- ``derivative_moment(act, K)``: Tdot(K, K, K) = E[σ'(z)²], with the same limit.

All are elementwise over K (any shape), float64, on the CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["chi_parallel", "chi_perp", "correlation_map", "depth_scale", "variance_map"]

F64 = torch.float64

#: ε of the K → 0⁺ limits.
_EPS_LIMIT = 1e-4


# ----------------------------------------------------------------- checks and moments
def check_activation(act):
    """``act`` if it is an ntkit Activation spec (has ``.dual``); TypeError otherwise."""
    if not (hasattr(act, "dual") and callable(act.dual)):
        raise TypeError(f"expected an ntkit Activation spec (with .dual), got "
                        f"{type(act).__name__}")
    return act


def check_c_w(c_w) -> float:
    """C_w as a float; TypeError if not a real number, ValueError unless finite and > 0."""
    if isinstance(c_w, bool) or not isinstance(c_w, (int, float, np.floating, np.integer)):
        raise TypeError(f"C_w must be a real number, got {type(c_w).__name__}")
    c_w = float(c_w)
    if not (c_w > 0 and math.isfinite(c_w)):
        raise ValueError(f"C_w must be finite and > 0, got {c_w}")
    return c_w


def check_c_b(c_b) -> float:
    """C_b as a float; TypeError if not a real number, ValueError unless finite and >= 0."""
    if isinstance(c_b, bool) or not isinstance(c_b, (int, float, np.floating, np.integer)):
        raise TypeError(f"C_b must be a real number, got {type(c_b).__name__}")
    c_b = float(c_b)
    if not (c_b >= 0 and math.isfinite(c_b)):
        raise ValueError(f"C_b must be finite and >= 0, got {c_b}")
    return c_b


def as_float64(x) -> Tensor:
    """``x`` as a detached float64 tensor (any shape); ValueError on NaN or inf."""
    t = torch.as_tensor(x, dtype=F64).detach()
    if not bool(torch.isfinite(t).all()):
        raise ValueError("got NaN or inf")
    return t


def check_variance(k, name: str = "K") -> Tensor:
    """``k`` as float64 (any shape), checked finite and >= 0 (a variance)."""
    k = as_float64(k)
    if bool((k < 0).any()):
        raise ValueError(f"{name} must be >= 0 (a variance), got min {float(k.min())}")
    return k


def second_moment(act, k: Tensor) -> Tensor:
    """V(K) = T(K, K, K) = E[σ(z)²], elementwise."""
    return act.dual(k, k, k, need_dot=False)[0]


def _limit0(fn, shape) -> Tensor:
    """lim_{K→0⁺} fn(K) by Richardson extrapolation from K = ε, ε/2, ε/4, ε/8.

    Assumes fn(K) = f₀ + a₁K + a₂K² + a₃K³ + O(K⁴) near 0; the error is O(ε⁴) (≈1e-14
    relative for erf and tanh at ε = 1e-4), with rounding amplified about tenfold.
    """
    e = _EPS_LIMIT / torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=F64)
    r = fn(e)
    for order in (1, 2, 3):  # eliminate the K^order term
        r = (2**order * r[1:] - r[:-1]) / (2**order - 1)
    return r[0].expand(shape).clone()


def _dV_autograd(act, k: Tensor) -> Tensor:
    """V'(K) by autograd through ``dual(K, K, K)`` (K > 0); non-finite entries → nan."""
    with torch.enable_grad():
        kk = k.detach().clone().requires_grad_(True)
        t = second_moment(act, kk)
        if not t.requires_grad:  # V independent of K (e.g. the step function)
            return torch.zeros_like(k)
        (g,) = torch.autograd.grad(t.sum(), kk, allow_unused=True)
    return torch.zeros_like(k) if g is None else g.detach()


def _dV_fd(act, k: Tensor) -> Tensor:
    """V'(K) by the 5-point central difference with h = 1e-3·K (K > 0): error O(h⁴)."""
    h = 1e-3 * k
    vals = [second_moment(act, k + j * h) for j in (-2, -1, 1, 2)]
    return (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * h)


def second_moment_slope(act, k: Tensor, method: str = "autograd") -> Tensor:
    """V'(K) elementwise for K ≥ 0, with the K → 0⁺ limit at K = 0."""
    if method not in ("autograd", "fd"):
        raise ValueError(f"method must be 'autograd' or 'fd', got {method!r}")
    flat = k.reshape(-1)
    out = torch.empty_like(flat)
    pos = flat > 0
    if bool(pos.any()):
        kp = flat[pos]
        g = _dV_autograd(act, kp) if method == "autograd" else _dV_fd(act, kp)
        bad = ~torch.isfinite(g)
        if bool(bad.any()):  # a dual whose gradient is NaN somewhere: fall back to FD
            g = torch.where(bad, _dV_fd(act, kp), g)
        out[pos] = g
    if not bool(pos.all()):
        out[~pos] = _limit0(lambda e: second_moment_slope(act, e, method), (int((~pos).sum()),))
    return out.reshape(k.shape)


def derivative_moment(act, k: Tensor) -> Tensor:
    """Tdot(K, K, K) = E[σ'(z)²] for K ≥ 0, with the K → 0⁺ limit at K = 0."""
    flat = k.reshape(-1)
    out = torch.empty_like(flat)
    pos = flat > 0
    if bool(pos.any()):
        kp = flat[pos]
        out[pos] = act.dual(kp, kp, kp, need_dot=True)[1]
    if not bool(pos.all()):
        out[~pos] = _limit0(lambda e: derivative_moment(act, e), (int((~pos).sum()),))
    return out.reshape(k.shape)


def bracketed_root(fn, lo: Tensor, hi: Tensor, *, atol: float = 0.0,
                    iters: int = 200) -> Tensor:
    """Vectorized Illinois (modified regula falsi) for roots of fn in [lo, hi].

    ``fn(x, idx)`` evaluates the function at x for the problems ``idx`` (so each element
    can carry its own parameters); fn(lo) and fn(hi) must differ in sign (or be 0).
    Only unconverged elements are evaluated each step; convergence is superlinear, with a
    bisection step whenever the secant point falls outside the bracket.
    """
    a, b = lo.clone(), hi.clone()
    all_idx = torch.arange(a.numel())
    fa, fb = fn(a, all_idx), fn(b, all_idx)
    out = torch.where(fa == 0, a, b)
    active = (fa != 0) & (fb != 0)
    eps = 4 * torch.finfo(F64).eps
    for _ in range(iters):
        if not bool(active.any()):
            break
        idx = torch.nonzero(active).flatten()
        ai, bi, fai, fbi = a[idx], b[idx], fa[idx], fb[idx]
        c = bi - fbi * (bi - ai) / (fbi - fai)
        lo_i, hi_i = torch.minimum(ai, bi), torch.maximum(ai, bi)
        bad = ~((c > lo_i) & (c < hi_i))
        c = torch.where(bad, 0.5 * (ai + bi), c)
        fc = fn(c, idx)
        flip = fc * fbi < 0
        # Illinois: halve the retained endpoint's value when the same end stays, which
        # prevents regula falsi's one-sided stagnation.
        a[idx] = torch.where(flip, bi, ai)
        fa[idx] = torch.where(flip, fbi, fai * 0.5)
        b[idx], fb[idx] = c, fc
        out[idx] = c
        width = (b[idx] - a[idx]).abs()
        conv = (fc == 0) | (width <= eps * c.abs() + atol)
        active[idx] = ~conv
    return out


def depth_scale(chi, atol: float = 1e-12):
    """ξ = −1/log χ (see module docstring): +inf if |χ − 1| ≤ atol, negative if χ > 1.

    Accepts a float (returns a float) or an array/tensor (returns a numpy array).
    """
    c = np.asarray(torch.as_tensor(chi, dtype=F64).numpy(), dtype=np.float64)
    if bool((c < 0).any()) or not bool(np.isfinite(c).all()):
        raise ValueError("chi must be finite and >= 0")
    with np.errstate(divide="ignore"):
        xi = np.where(np.abs(c - 1) <= atol, np.inf,
                      np.where(c == 0, 0.0, -1.0 / np.log(np.where(c == 0, 0.5, c))))
    return float(xi) if xi.ndim == 0 else xi


# ------------------------------------------------------------------- maps and slopes
def variance_map(act, C_w: float, C_b: float, K) -> Tensor:
    """F(K) = C_b + C_w E[σ(z)²], z ~ N(0, K), elementwise over K (any shape)."""
    act, C_w, C_b = check_activation(act), check_c_w(C_w), check_c_b(C_b)
    return C_b + C_w * second_moment(act, check_variance(K))


def chi_parallel(act, C_w: float, K, method: str = "autograd") -> Tensor:
    """χ∥(K) = dF/dK = C_w V'(K) = (C_w/2) E[∂²(σ²)(z)], elementwise (K ≥ 0).

    ``method``: "autograd" (through ``dual(K, K, K)``) or "fd" (5-point central difference
    of the variance map, h = 1e-3 K). K = 0 gives the limit K → 0⁺.
    """
    return check_c_w(C_w) * second_moment_slope(check_activation(act), check_variance(K), method)


def chi_perp(act, C_w: float, K) -> Tensor:
    """χ⊥(K) = C_w E[σ'(z)²] = C_w Tdot(K, K, K), elementwise (K = 0: limit K → 0⁺)."""
    return check_c_w(C_w) * derivative_moment(check_activation(act), check_variance(K))


def correlation_map(act, C_w: float, C_b: float, K_star: float, rho) -> Tensor:
    """c(ρ) = (C_b + C_w T(K*, ρK*, K*)) / K* elementwise over ρ ∈ [−1, 1]; K* > 0."""
    act, C_w, C_b = check_activation(act), check_c_w(C_w), check_c_b(C_b)
    k = float(K_star)
    if not (k > 0 and math.isfinite(k)):
        raise ValueError(f"the correlation map needs a finite K* > 0, got {K_star}")
    rho = as_float64(rho)
    if bool((rho.abs() > 1).any()):
        raise ValueError("rho must lie in [-1, 1]")
    kt = torch.full_like(rho, k)
    return (C_b + C_w * act.dual(kt, rho * k, kt, need_dot=False)[0]) / k


def correlation_slope(act, C_w: float, k: float, rho: Tensor) -> Tensor:
    """χ_c(ρ) = C_w Tdot(K*, ρK*, K*), the slope of the correlation map at ρ (elementwise)."""
    kt = torch.full_like(rho, k)
    return C_w * act.dual(kt, rho * k, kt, need_dot=True)[1]
