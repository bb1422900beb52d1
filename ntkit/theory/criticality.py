"""Signal propagation in deep random networks and tuning to criticality.

Network (the NNGP theorem's recursion; Roberts–Yaida, Poole et al. 2016, Schoenholz et
al. 2017): layer-1 pre-activations z¹ = b + W x with W_ij ~ N(0, C_w/n₀), b ~ N(0, C_b),
and z^{l+1} = b + W σ(z^l) with W_ij ~ N(0, C_w/n_l). At infinite width the second
moments K^l_{αβ} = E[z_α z_β] follow

    K^{l+1}_{αβ} = C_b + C_w T(K^l_{αα}, K^l_{αβ}, K^l_{ββ}),   T = E[σ(u)σ(v)],

where T (and Tdot = E[σ'(u)σ'(v)]) come from an ntkit `Activation` spec's ``dual``. This is
the 'ntk'-parameterized ``Dense(w_std=√C_w, b_std=√C_b)`` after the activation.

Quantities (all with V(K) = T(K, K, K) = E[σ(z)²], z ~ N(0, K)):

- variance map      F(K) = C_b + C_w V(K); fixed points K* = F(K*).
- χ∥(K) = F'(K) = C_w V'(K) = (C_w/2) E[∂²(σ²)(z)] (heat equation / Price's theorem).
  Computed by autograd through ``dual(K, K, K)`` (or finite differences, ``method="fd"``).
- χ⊥(K) = C_w E[σ'(z)²] = C_w Tdot(K, K, K): the slope of the correlation map at ρ = 1.
- correlation map   ρ ↦ c(ρ) = (C_b + C_w T(K*, ρK*, K*)) / K*, with c(1) = 1 always; its
  slope at ρ is χ_c(ρ) = C_w Tdot(K*, ρK*, K*) (Price), so χ_c(1) = χ⊥.
- depth scales ξ = −1/log χ: a perturbation decays like χ^l = e^{−l/ξ}. ξ∥ uses χ∥(K*),
  ξ⊥ uses χ⊥(K*), and ξ_c uses χ_c at the stable correlation fixed point ρ* (ρ* = 1, so
  ξ_c = ξ⊥, in the ordered phase). Conventions: ξ = +inf at χ = 1 (criticality: power laws
  instead of exponentials, e.g. 1 − ρ_l ≈ 9π²/(2l²) for ReLU at (C_b, C_w) = (0, 2), and
  K_l ≈ 1/(2l) for tanh at (0, 1)); ξ < 0 when χ > 1 (growth on the scale |ξ|); ξ = 0 at χ = 0.
- phases: ordered if χ⊥(K*) < 1 (nearby inputs converge), chaotic if χ⊥(K*) > 1
  (they decorrelate to ρ* < 1); the order-to-chaos boundary is χ⊥(K*) = 1.
- criticality: K* = F(K*) and χ∥(K*) = χ⊥(K*) = 1.

At K = 0 (the critical point of tanh-like activations) σ(√K z) is degenerate and autograd
through √K fails; χ∥(0) and χ⊥(0) mean the limits K → 0⁺, computed by Richardson
extrapolation from K = ε, ε/2, ε/4, ε/8 (ε = 1e-4; error O(ε⁴) for V analytic at 0,
and exact for the positively homogeneous ReLU family). That limit is what a deep network
approaching K* = 0 sees (for ReLU, χ⊥ → 1/2·C_w, not the zero-variance convention of
Tdot at exactly K = 0).

Everything is float64 and on the CPU; inputs may be floats or tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import optimize
from torch import Tensor

F64 = torch.float64

#: K-grid used to bracket fixed points: 0 and geometric points in [_K_MIN, K_max].
_K_MIN = 1e-8
_N_GRID = 600
#: |F(K) − K| below this fraction of the terms counts as zero (a fixed point).
_RTOL = 1e-10
#: ε of the K → 0⁺ limits.
_EPS_LIMIT = 1e-4


# ----------------------------------------------------------------------------- helpers
def _check_act(act):
    if not (hasattr(act, "dual") and callable(act.dual)):
        raise TypeError(f"expected an ntkit Activation spec (with .dual), got "
                        f"{type(act).__name__}")
    return act


def _check_cw(c_w) -> float:
    if isinstance(c_w, bool) or not isinstance(c_w, (int, float, np.floating, np.integer)):
        raise TypeError(f"C_w must be a real number, got {type(c_w).__name__}")
    c_w = float(c_w)
    if not (c_w > 0 and math.isfinite(c_w)):
        raise ValueError(f"C_w must be finite and > 0, got {c_w}")
    return c_w


def _check_cb(c_b) -> float:
    if isinstance(c_b, bool) or not isinstance(c_b, (int, float, np.floating, np.integer)):
        raise TypeError(f"C_b must be a real number, got {type(c_b).__name__}")
    c_b = float(c_b)
    if not (c_b >= 0 and math.isfinite(c_b)):
        raise ValueError(f"C_b must be finite and >= 0, got {c_b}")
    return c_b


def _t(x) -> Tensor:
    t = torch.as_tensor(x, dtype=F64).detach()
    if not bool(torch.isfinite(t).all()):
        raise ValueError("got NaN or inf")
    return t


def _check_k(k, name: str = "K") -> Tensor:
    k = _t(k)
    if bool((k < 0).any()):
        raise ValueError(f"{name} must be >= 0 (a variance), got min {float(k.min())}")
    return k


def _V(act, k: Tensor) -> Tensor:
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
        t = _V(act, kk)
        if not t.requires_grad:  # V independent of K (e.g. the step function)
            return torch.zeros_like(k)
        (g,) = torch.autograd.grad(t.sum(), kk, allow_unused=True)
    return torch.zeros_like(k) if g is None else g.detach()


def _dV_fd(act, k: Tensor) -> Tensor:
    """V'(K) by the 5-point central difference with h = 1e-3·K (K > 0): error O(h⁴)."""
    h = 1e-3 * k
    vals = [_V(act, k + j * h) for j in (-2, -1, 1, 2)]
    return (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * h)


def _dV(act, k: Tensor, method: str = "autograd") -> Tensor:
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
        out[~pos] = _limit0(lambda e: _dV(act, e, method), (int((~pos).sum()),))
    return out.reshape(k.shape)


def _tdot_diag(act, k: Tensor) -> Tensor:
    """Tdot(K, K, K) = E[σ'(z)²] for K ≥ 0, with the K → 0⁺ limit at K = 0."""
    flat = k.reshape(-1)
    out = torch.empty_like(flat)
    pos = flat > 0
    if bool(pos.any()):
        kp = flat[pos]
        out[pos] = act.dual(kp, kp, kp, need_dot=True)[1]
    if not bool(pos.all()):
        out[~pos] = _limit0(lambda e: _tdot_diag(act, e), (int((~pos).sum()),))
    return out.reshape(k.shape)


def _bracketed_root(fn, lo: Tensor, hi: Tensor, *, atol: float = 0.0,
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
    act, C_w, C_b = _check_act(act), _check_cw(C_w), _check_cb(C_b)
    return C_b + C_w * _V(act, _check_k(K))


def chi_parallel(act, C_w: float, K, method: str = "autograd") -> Tensor:
    """χ∥(K) = dF/dK = C_w V'(K) = (C_w/2) E[∂²(σ²)(z)], elementwise (K ≥ 0).

    ``method``: "autograd" (through ``dual(K, K, K)``) or "fd" (5-point central difference
    of the variance map, h = 1e-3 K). K = 0 gives the limit K → 0⁺.
    """
    return _check_cw(C_w) * _dV(_check_act(act), _check_k(K), method)


def chi_perp(act, C_w: float, K) -> Tensor:
    """χ⊥(K) = C_w E[σ'(z)²] = C_w Tdot(K, K, K), elementwise (K = 0: limit K → 0⁺)."""
    return _check_cw(C_w) * _tdot_diag(_check_act(act), _check_k(K))


def correlation_map(act, C_w: float, C_b: float, K_star: float, rho) -> Tensor:
    """c(ρ) = (C_b + C_w T(K*, ρK*, K*)) / K* elementwise over ρ ∈ [−1, 1]; K* > 0."""
    act, C_w, C_b = _check_act(act), _check_cw(C_w), _check_cb(C_b)
    k = float(K_star)
    if not (k > 0 and math.isfinite(k)):
        raise ValueError(f"the correlation map needs a finite K* > 0, got {K_star}")
    rho = _t(rho)
    if bool((rho.abs() > 1).any()):
        raise ValueError("rho must lie in [-1, 1]")
    kt = torch.full_like(rho, k)
    return (C_b + C_w * act.dual(kt, rho * k, kt, need_dot=False)[0]) / k


def _correlation_slope(act, C_w: float, k: float, rho: Tensor) -> Tensor:
    kt = torch.full_like(rho, k)
    return C_w * act.dual(kt, rho * k, kt, need_dot=True)[1]


# -------------------------------------------------------------------- fixed points
@dataclass(frozen=True)
class FixedPoint:
    """A fixed point ``value`` of a 1-D map, its ``slope`` there (χ), and stability |χ| < 1."""

    value: float
    slope: float

    @property
    def stable(self) -> bool:
        return abs(self.slope) < 1.0


@dataclass(frozen=True)
class VarianceFixedPoints:
    """All fixed points K* of F in [0, K_max], increasing.

    ``degenerate``: F(K) = K on the whole grid (a line of fixed points, e.g. ReLU at
    C_b = 0, C_w = 2); ``points`` is then empty.
    """

    points: tuple[FixedPoint, ...]
    degenerate: bool


def _k_grid(k_max: float) -> Tensor:
    return torch.cat([torch.zeros(1, dtype=F64),
                      torch.logspace(math.log10(_K_MIN), math.log10(k_max), _N_GRID,
                                     dtype=F64)])


def _residual(act, C_w: Tensor, C_b: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """g = F(K) − K and its zero tolerance, elementwise (broadcast)."""
    v = _V(act, k)
    g = C_b + C_w * v - k
    tol = _RTOL * (C_b + C_w * v.abs() + k) + 1e-300
    return g, tol


def variance_fixed_points(act, C_w: float, C_b: float, *, K_max: float = 1e6
                          ) -> VarianceFixedPoints:
    """All K* ∈ [0, K_max] with F(K*) = K*, each with χ∥(K*) as its slope.

    Found by bracketing sign changes of F(K) − K on a grid (0 and 600 geometric points in
    [1e-8, K_max]) and refining by bisection; grid points where F(K) = K to ~1e-10
    relative count as roots. A double root between grid points can be missed.
    """
    act, C_w, C_b = _check_act(act), _check_cw(C_w), _check_cb(C_b)
    grid = _k_grid(K_max)
    g, tol = _residual(act, torch.tensor(C_w, dtype=F64), torch.tensor(C_b, dtype=F64), grid)
    zero = g.abs() <= tol
    if bool(zero.all()):
        return VarianceFixedPoints((), True)
    roots = [float(grid[i]) for i in torch.nonzero(zero).flatten().tolist()]
    sgn = torch.sign(torch.where(zero, torch.zeros_like(g), g))
    for i in range(len(grid) - 1):
        if sgn[i] * sgn[i + 1] < 0:
            lo, hi = (grid[i], grid[i + 1]) if sgn[i] > 0 else (grid[i + 1], grid[i])
            r = _bracketed_root(lambda k, _i: C_b + C_w * _V(act, k) - k,
                                lo.reshape(1), hi.reshape(1))
            roots.append(float(r[0]))
    roots.sort()
    chis = _dV(act, torch.tensor(roots, dtype=F64)) * C_w if roots else torch.zeros(0)
    pts = tuple(FixedPoint(r, float(c)) for r, c in zip(roots, chis, strict=True))
    return VarianceFixedPoints(pts, False)


def _fixed_point_from(act, C_w: Tensor, C_b: Tensor, k0: Tensor, k_max: float) -> Tensor:
    """K* reached by iterating F from K0, vectorized over (C_w, C_b, K0) (1-D, equal length).

    For a nondecreasing F (V' ≥ 0: ReLU, tanh, erf, ... ; checked on the grid), iterates
    move monotonically to the nearest fixed point in the direction of F(K0) − K0; +inf if
    there is none below K_max (the variance diverges).
    """
    grid = _k_grid(k_max)
    vg = _V(act, grid)
    if bool((torch.diff(vg) < -1e-12 * vg.abs()[1:]).any()):
        raise ValueError("the variance map of this activation is not monotone in K; "
                         "use variance_fixed_points and pick a fixed point explicitly")
    cw, cb = C_w[:, None], C_b[:, None]
    g = cb + cw * vg - grid  # (N, G)
    tol = _RTOL * (cb + cw * vg.abs() + grid) + 1e-300
    zero = g.abs() <= tol
    g0, tol0 = _residual(act, C_w, C_b, k0)
    out = torch.full_like(k0, float("nan"))
    at = g0.abs() <= tol0
    out[at] = k0[at]
    lo = torch.zeros_like(k0)
    hi = torch.zeros_like(k0)
    todo = torch.zeros_like(k0, dtype=torch.bool)
    for n in torch.nonzero(~at).flatten().tolist():
        above = grid > k0[n]
        if g0[n] > 0:  # F(K0) > K0: increases to the first root above K0
            cand = torch.nonzero(above & ((g[n] <= 0) | zero[n])).flatten()
            if len(cand) == 0:
                out[n] = float("inf")
                continue
            i = int(cand[0])
            if zero[n, i]:
                out[n] = grid[i]
                continue
            lo[n] = grid[i - 1] if (i > 0 and grid[i - 1] > k0[n]) else k0[n]
            hi[n] = grid[i]
        else:  # decreases to the last root below K0 (g(0) = C_b + C_w σ(0)² ≥ 0 exists)
            cand = torch.nonzero(~above & (grid < k0[n]) & ((g[n] >= 0) | zero[n])).flatten()
            i = int(cand[-1])
            if zero[n, i]:
                out[n] = grid[i]
                continue
            lo[n] = grid[i]
            hi[n] = grid[i + 1] if grid[i + 1] < k0[n] else k0[n]
        todo[n] = True
    if bool(todo.any()):
        idx = torch.nonzero(todo).flatten()
        cw_t, cb_t = C_w[idx], C_b[idx]
        out[idx] = _bracketed_root(lambda k, i: cb_t[i] + cw_t[i] * _V(act, k) - k,
                                   lo[idx], hi[idx])
    return out


def variance_fixed_point(act, C_w: float, C_b: float, K0: float = 1.0, *,
                         K_max: float = 1e6) -> float:
    """The fixed point K* that the variance recursion reaches from K⁰ = ``K0``.

    Returns K0 itself when it is a fixed point (e.g. any K for ReLU at (0, 2)), and +inf
    when the variance grows without bound (no fixed point above K0 below ``K_max``).
    Needs a nondecreasing variance map (raises ValueError otherwise).
    """
    act, C_w, C_b = _check_act(act), _check_cw(C_w), _check_cb(C_b)
    k0 = _check_k(K0).reshape(1)
    out = _fixed_point_from(act, torch.tensor([C_w], dtype=F64), torch.tensor([C_b], dtype=F64),
                            k0, K_max)
    return float(out[0])


def correlation_fixed_points(act, C_w: float, C_b: float, K_star: float
                             ) -> tuple[FixedPoint, ...]:
    """All ρ* ∈ [−1, 1] with c(ρ*) = ρ*, increasing, each with slope χ_c(ρ*).

    ρ = 1 is always one (slope χ⊥(K*)). Others are bracketed on an 801-point grid and
    refined with Brent's method; a root within 1/400 of 1 (near the order-chaos boundary)
    may be missed.
    """
    act, C_w, C_b = _check_act(act), _check_cw(C_w), _check_cb(C_b)
    k = float(K_star)
    grid = torch.linspace(-1, 1, 801, dtype=F64)
    h = correlation_map(act, C_w, C_b, k, grid) - grid
    tol = 1e-12 * (1 + grid.abs())
    zero = h.abs() <= tol
    zero[-1] = False  # ρ = 1 is added explicitly below
    roots = [float(grid[i]) for i in torch.nonzero(zero).flatten().tolist()]
    sgn = torch.sign(torch.where(zero, torch.zeros_like(h), h))
    sgn[-1] = 0

    def f(r: float) -> float:
        return float(correlation_map(act, C_w, C_b, k, torch.tensor([r], dtype=F64))[0]) - r

    for i in range(len(grid) - 2):
        if sgn[i] * sgn[i + 1] < 0:
            roots.append(optimize.brentq(f, float(grid[i]), float(grid[i + 1]), xtol=1e-15,
                                         rtol=4 * np.finfo(float).eps))
    roots = sorted(roots) + [1.0]
    slopes = _correlation_slope(act, C_w, k, torch.tensor(roots, dtype=F64))
    return tuple(FixedPoint(r, float(s)) for r, s in zip(roots, slopes, strict=True))


def _stable_rho_vec(act, C_w: Tensor, C_b: Tensor, k: Tensor, chi_p: Tensor) -> Tensor:
    """Stable correlation fixed point ρ*, vectorized: 1 where χ⊥ ≤ 1, else the root in [0, 1).

    In [0, 1], c(ρ) is increasing and convex (its derivatives are E[σ'σ'], E[σ''σ''] ≥ 0
    by Mehler's expansion) with c(0) ≥ 0 and c(1) = 1, so for χ⊥ = c'(1) > 1 there is
    exactly one root ρ* in [0, 1), where c'(ρ*) < 1. Newton's method on h(ρ) = c(ρ) − ρ from
    ρ = 0 then increases monotonically to ρ* (h convex and decreasing left of ρ*): no
    overshoot, quadratic convergence, h' = C_w Tdot/K* − 1 from the same dual call.
    """
    rho = torch.ones_like(k)
    chaotic = (chi_p > 1 + 1e-9) & (k > 0) & torch.isfinite(k)
    if bool(chaotic.any()):
        idx = torch.nonzero(chaotic).flatten()
        cw, cb, kk = C_w[idx], C_b[idx], k[idx]
        r = torch.zeros_like(kk)
        active = torch.ones_like(kk, dtype=torch.bool)
        for _ in range(100):
            i = torch.nonzero(active).flatten()
            if len(i) == 0:
                break
            ki, ri = kk[i], r[i]
            t, tdot = act.dual(ki, ri * ki, ki, need_dot=True)
            h = (cb[i] + cw[i] * t) / ki - ri
            dh = cw[i] * tdot - 1  # d/dρ of C_w T(K, ρK, K)/K is C_w Tdot (Price)
            step = torch.where(dh < 0, -h / dh, torch.zeros_like(h))
            # Rounding can make h slightly negative at the root: never step backwards.
            step = step.clamp_min(0)
            r_new = torch.minimum(ri + step, torch.ones_like(ri))
            r[i] = r_new
            active[i] = (r_new - ri).abs() > 1e-14
        rho[idx] = r
    return rho


# ------------------------------------------------------------------------ summaries
@dataclass(frozen=True)
class DepthScales:
    """Fixed points, susceptibilities and depth scales at one (C_w, C_b) (module docstring)."""

    C_w: float
    C_b: float
    K_star: float
    chi_par: float
    chi_perp: float
    rho_star: float
    chi_c: float
    xi_par: float
    xi_perp: float
    xi_c: float

    @property
    def phase(self) -> str:
        """'ordered' (χ⊥ < 1), 'chaotic' (χ⊥ > 1) or 'critical' (χ⊥ = 1 to 1e-9)."""
        if abs(self.chi_perp - 1) <= 1e-9:
            return "critical"
        return "ordered" if self.chi_perp < 1 else "chaotic"


def depth_scales(act, C_w: float, C_b: float, K0: float = 1.0, *, K_max: float = 1e6
                 ) -> DepthScales:
    """χ∥, χ⊥, χ_c and ξ∥, ξ⊥, ξ_c at the fixed point reached from K0 (module docstring).

    If the variance diverges (K* = inf) every field but K* is nan.
    """
    act, C_w, C_b = _check_act(act), _check_cw(C_w), _check_cb(C_b)
    k = variance_fixed_point(act, C_w, C_b, K0, K_max=K_max)
    if not math.isfinite(k):
        nan = float("nan")
        return DepthScales(C_w, C_b, k, nan, nan, nan, nan, nan, nan, nan)
    kt = torch.tensor([k], dtype=F64)
    cpar = float(chi_parallel(act, C_w, kt)[0])
    cperp = float(chi_perp(act, C_w, kt)[0])
    rho = float(_stable_rho_vec(act, torch.tensor([C_w], dtype=F64),
                                torch.tensor([C_b], dtype=F64), kt,
                                torch.tensor([cperp], dtype=F64))[0])
    chi_c = cperp if rho == 1.0 else float(_correlation_slope(act, C_w, k,
                                                              torch.tensor([rho], dtype=F64))[0])
    return DepthScales(C_w, C_b, k, cpar, cperp, rho, chi_c, depth_scale(max(cpar, 0.0)),
                       depth_scale(cperp), depth_scale(chi_c))


@dataclass(frozen=True)
class CriticalPoint:
    """An initialization (C_b, C_w) with fixed point K* and χ∥(K*) = χ⊥(K*) = 1.

    ``degenerate``: every K ≥ 0 is a critical fixed point at these (C_b, C_w) (the ReLU
    family); ``K_star`` then echoes the K0 that was asked about.

    ``attracting``: nearby variances flow into K* (at a critical point this is decided
    beyond linear order, by the sign of F(K) − K on either side). tanh and erf at K* = 0:
    True (K_l ≈ 1/(2l) for tanh). GELU/SiLU at K* = 0: False (F(K) − K ≈ 6K²/π > 0 for
    GELU). At K* > 0, F(K) − K ≈ F''(K*)(K − K*)²/2 has one sign on both sides, so the
    point is only half-stable: False. Degenerate points: False (neutral).
    """

    C_b: float
    C_w: float
    K_star: float
    chi_par: float
    chi_perp: float
    degenerate: bool = False
    attracting: bool = False


def critical_points(act, *, K_max: float = 100.0, K0: float = 1.0) -> tuple[CriticalPoint, ...]:
    """All critical initializations (C_b ≥ 0, C_w > 0, K* ∈ [0, K_max]) of an activation.

    Method: χ⊥(K) = 1 fixes C_w(K) = 1/Tdot(K, K, K); then χ∥ = χ⊥ iff
    h(K) = V'(K) − Tdot(K, K, K) = 0 (for smooth σ, h = E[σσ''] — the lecture's condition);
    and K* = F(K*) fixes C_b(K) = K − C_w(K) V(K), which must be ≥ 0. Roots of h are
    bracketed on a grid of K (0 and geometric points in [1e-6, K_max]); K = 0 uses the
    K → 0⁺ limits. If h ≡ 0 on the grid (positively homogeneous σ such as ReLU) the result
    is one degenerate point with K_star = K0.

    Examples: ReLU → (C_b, C_w) = (0, 2), any K*; tanh → (0, 1), K* = 0;
    erf(x) → (0, π/4), K* = 0.
    """
    act = _check_act(act)
    grid = torch.cat([torch.zeros(1, dtype=F64),
                      torch.logspace(-6, math.log10(K_max), 300, dtype=F64)])
    dv = _dV(act, grid)
    td = _tdot_diag(act, grid)
    h = dv - td
    tol = 1e-8 * (dv.abs() + td.abs()) + 1e-300
    zero = h.abs() <= tol

    def point(k: float, degenerate: bool = False) -> CriticalPoint | None:
        kt = torch.tensor([k], dtype=F64)
        tdk = float(_tdot_diag(act, kt)[0])
        if not tdk > 0:
            return None
        cw = 1.0 / tdk
        cb = k - cw * float(_V(act, kt)[0])
        if cb < -1e-9 * max(k, 1e-300):
            return None
        cb = max(cb, 0.0)
        if abs(cb) <= 1e-12 * max(k, 1.0):
            cb = 0.0  # rounding of K − C_w V(K) in the homogeneous case
        attracting = False
        if not degenerate:
            delta = 1e-3 * max(k, 1.0)
            probe = torch.tensor([k + delta, max(k - delta, 0.0)], dtype=F64)
            g = cb + cw * _V(act, probe) - probe
            attracting = bool(g[0] < 0) and (k == 0.0 or bool(g[1] > 0))
        return CriticalPoint(cb, cw, k, float(cw * _dV(act, kt)[0]), cw * tdk, degenerate,
                             attracting)

    if bool(zero.all()):
        p = point(float(K0), True)
        return () if p is None else (p,)
    roots = [float(grid[i]) for i in torch.nonzero(zero).flatten().tolist()]
    sgn = torch.sign(torch.where(zero, torch.zeros_like(h), h))

    def hf(k: float) -> float:
        kt = torch.tensor([k], dtype=F64)
        return float(_dV(act, kt)[0] - _tdot_diag(act, kt)[0])

    for i in range(len(grid) - 1):
        if sgn[i] * sgn[i + 1] < 0:
            roots.append(optimize.brentq(hf, float(grid[i]), float(grid[i + 1]),
                                         xtol=1e-300, rtol=1e-13))
    pts = [point(k) for k in sorted(roots)]
    return tuple(p for p in pts if p is not None)


def critical_initialization(act, *, K_max: float = 100.0, K0: float = 1.0) -> CriticalPoint:
    """The critical initialization with the smallest K* (see `critical_points`)."""
    pts = critical_points(act, K_max=K_max, K0=K0)
    if not pts:
        raise ValueError(f"{act!r} has no critical initialization with C_b >= 0 and "
                         f"K* <= {K_max}")
    return pts[0]


# ------------------------------------------------------------------- phase diagram
@dataclass
class PhaseDiagram:
    """Order/chaos data on a (σ_w², σ_b²) = (C_w, C_b) grid; arrays are (n_b, n_w).

    Fields: ``sigma_w2`` (n_w,), ``sigma_b2`` (n_b,), ``K_star``, ``chi_par``,
    ``chi_perp``, ``rho_star`` (stable correlation fixed point), ``chi_c``, ``xi_par``,
    ``xi_c`` (depth scales; inf on the critical line), and the boundary χ⊥(K*) = 1 as a
    curve ``boundary_w2``, ``boundary_b2`` (from `order_chaos_boundary`).
    """

    name: str
    sigma_w2: np.ndarray
    sigma_b2: np.ndarray
    K_star: np.ndarray
    chi_par: np.ndarray
    chi_perp: np.ndarray
    rho_star: np.ndarray
    chi_c: np.ndarray
    xi_par: np.ndarray
    xi_c: np.ndarray
    boundary_w2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    boundary_b2: np.ndarray = field(default_factory=lambda: np.zeros(0))


def order_chaos_boundary(act, K_star=None, *, n: int = 200, K_range=(0.0, 10.0)
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The order-to-chaos line χ⊥(K*) = 1 in the (σ_w², σ_b²) plane, parametrized by K*.

    For each K* ≥ 0: σ_w² = 1/Tdot(K*, K*, K*) (χ⊥ = 1) and σ_b² = K* − σ_w² V(K*)
    (K* is a fixed point). Points with σ_b² < 0 are dropped. Exact: no root finding.
    K* defaults to n points from K_range (quadratically spaced, denser near 0).

    Returns:
      (sigma_w2, sigma_b2), numpy arrays along the line. For erf(x) this is the closed form
      σ_w² = (π/4)√(1 + 4K*), σ_b² = K* − (√(1 + 4K*)/2) arcsin(2K*/(1 + 2K*)).
    """
    act = _check_act(act)
    if K_star is None:
        u = torch.linspace(0, 1, n, dtype=F64)
        K_star = K_range[0] + (K_range[1] - K_range[0]) * u * u
    k = _check_k(K_star).reshape(-1)
    sw2 = 1.0 / _tdot_diag(act, k)
    sb2 = k - sw2 * _V(act, k)
    sb2 = torch.where(sb2.abs() <= 1e-13 * (k + 1), torch.zeros_like(sb2), sb2)
    keep = (sb2 >= 0) & torch.isfinite(sw2)
    return sw2[keep].numpy(), sb2[keep].numpy()


def phase_diagram(act, sigma_w2, sigma_b2, *, name: str = "", K0: float = 1.0,
                  K_max: float = 1e6) -> PhaseDiagram:
    """Order/chaos data on the grid sigma_w2 (n_w,) × sigma_b2 (n_b,) (see `PhaseDiagram`).

    K* is the fixed point reached from K0 (vectorized over the grid); grid points where
    the variance diverges get K* = inf and nan elsewhere.
    """
    act = _check_act(act)
    w = np.asarray(sigma_w2, dtype=np.float64).reshape(-1)
    b = np.asarray(sigma_b2, dtype=np.float64).reshape(-1)
    if (w <= 0).any() or (b < 0).any() or not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise ValueError("sigma_w2 must be > 0 and sigma_b2 >= 0, all finite")
    ww, bb = np.meshgrid(w, b)  # (n_b, n_w)
    cw = torch.from_numpy(ww.reshape(-1).copy())
    cb = torch.from_numpy(bb.reshape(-1).copy())
    k = _fixed_point_from(act, cw, cb, torch.full_like(cw, float(K0)), K_max)
    fin = torch.isfinite(k)
    nan = torch.full_like(k, float("nan"))
    kf = torch.where(fin, k, torch.zeros_like(k))
    cpar = torch.where(fin, cw * _dV(act, kf), nan)
    cperp = torch.where(fin, cw * _tdot_diag(act, kf), nan)
    rho = torch.where(fin, _stable_rho_vec(act, cw, cb, kf, torch.nan_to_num(cperp)), nan)
    kk = kf.clamp_min(1e-300)
    chi_c = torch.where(rho < 1, cw * act.dual(kk, rho.nan_to_num(1.0) * kk, kk, True)[1],
                        cperp)
    chi_c = torch.where(fin, chi_c, nan)

    def xi(c: Tensor) -> np.ndarray:
        out = np.full(c.shape, np.nan)
        ok = torch.isfinite(c).numpy()
        out[ok] = depth_scale(c.numpy()[ok].clip(min=0), atol=1e-9)
        return out

    shape = ww.shape
    bw, bb2 = order_chaos_boundary(act, K_range=(0.0, float(max(10.0, 4 * b.max()))))
    return PhaseDiagram(name or repr(act), w, b, k.numpy().reshape(shape),
                        cpar.numpy().reshape(shape), cperp.numpy().reshape(shape),
                        rho.numpy().reshape(shape), chi_c.numpy().reshape(shape),
                        xi(cpar).reshape(shape), xi(chi_c).reshape(shape), bw, bb2)


def plot_phase_diagram(diagrams, path, *, title: str | None = None) -> Path:
    """Draw phase diagrams to a PNG (matplotlib, Agg canvas; no global backend change).

    One panel per diagram: log χ⊥(K*) as a diverging color map (blue: ordered, red:
    chaotic) with the order-to-chaos line χ⊥ = 1 drawn over it, plus every diagram's
    boundary line in a final overlay panel.

    Args:
      diagrams: a `PhaseDiagram` or a sequence of them.
      path: output file (.png).

    Returns:
      The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    if isinstance(diagrams, PhaseDiagram):
        diagrams = [diagrams]
    diagrams = list(diagrams)
    if not diagrams:
        raise ValueError("no phase diagrams to plot")
    n = len(diagrams) + (1 if len(diagrams) > 1 else 0)
    fig = Figure(figsize=(4.2 * n, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, d in zip(axes, diagrams, strict=False):
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log(d.chi_perp)
        lim = float(np.nanmax(np.abs(z[np.isfinite(z)]))) if np.isfinite(z).any() else 1.0
        mesh = ax.pcolormesh(d.sigma_w2, d.sigma_b2, np.ma.masked_invalid(z), cmap="RdBu_r",
                             norm=TwoSlopeNorm(0.0, -lim - 1e-12, lim + 1e-12),
                             shading="auto")
        fig.colorbar(mesh, ax=ax, label="log χ⊥(K*)")
        ax.plot(d.boundary_w2, d.boundary_b2, "k-", lw=1.5, label="χ⊥ = 1")
        ax.set_xlim(d.sigma_w2.min(), d.sigma_w2.max())
        ax.set_ylim(d.sigma_b2.min(), d.sigma_b2.max())
        ax.set_xlabel("σ_w²")
        ax.set_ylabel("σ_b²")
        ax.set_title(d.name)
        ax.text(0.05, 0.9, "ordered", transform=ax.transAxes)
        ax.text(0.7, 0.1, "chaotic", transform=ax.transAxes)
    if len(diagrams) > 1:
        ax = axes[-1]
        for d in diagrams:
            ax.plot(d.boundary_w2, d.boundary_b2, lw=1.5, label=d.name)
        ax.set_xlim(min(d.sigma_w2.min() for d in diagrams),
                    max(d.sigma_w2.max() for d in diagrams))
        ax.set_ylim(min(d.sigma_b2.min() for d in diagrams),
                    max(d.sigma_b2.max() for d in diagrams))
        ax.set_xlabel("σ_w²")
        ax.set_ylabel("σ_b²")
        ax.set_title("order-to-chaos lines")
        ax.legend()
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


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
        a = _t(x1).reshape(-1)
        b = _t(x2).reshape(-1)
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
        C_w, C_b = _check_cw(C_w), _check_cb(C_b)
    elif not hasattr(spec, "kernel_map"):
        raise TypeError(f"spec must be an ntkit Activation or Layer, got {type(spec).__name__}")
    elif x1 is not None:
        C_w, C_b = _check_cw(C_w), _check_cb(C_b)
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
        from ntkit.kernel import Kernel

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
    act, C_w, C_b = _check_act(act), _check_cw(C_w), _check_cb(C_b)
    for name, v in (("depth", depth), ("width", width), ("n_nets", n_nets)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if method not in ("gaussian", "weights"):
        raise ValueError(f"method must be 'gaussian' or 'weights', got {method!r}")
    x = torch.stack([_t(x1).reshape(-1), _t(x2).reshape(-1)]).to(dtype)
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
