"""Fixed points of the variance and correlation maps, depth scales and criticality.

K* = F(K*) for the variance map and ρ* = c(ρ*) for the correlation map (Poole et al. 2016,
"Exponential expressivity in deep neural networks through transient chaos"; Schoenholz
et al. 2017, "Deep information propagation"); the depth scales ξ∥, ξ_c at those fixed
points; and the critical initializations χ∥(K*) = χ⊥(K*) = 1 (Roberts, Yaida & Hanin 2022,
"The Principles of Deep Learning Theory", ch. 5). Conventions: `ntkit.theory.criticality`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize
from torch import Tensor

from ntkit.theory.signal_maps import (
    F64,
    bracketed_root,
    check_activation,
    check_c_b,
    check_c_w,
    check_variance,
    chi_parallel,
    chi_perp,
    correlation_map,
    correlation_slope,
    depth_scale,
    derivative_moment,
    second_moment,
    second_moment_slope,
)

__all__ = [
    "CriticalPoint", "DepthScales", "FixedPoint", "VarianceFixedPoints",
    "correlation_fixed_points", "critical_initialization", "critical_points", "depth_scales",
    "variance_fixed_point", "variance_fixed_points",
]

#: K-grid used to bracket fixed points: 0 and geometric points in [_K_MIN, K_max].
_K_MIN = 1e-8
_N_GRID = 600
#: |F(K) − K| below this fraction of the terms counts as zero (a fixed point).
_RTOL = 1e-10


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
    v = second_moment(act, k)
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
    act, C_w, C_b = check_activation(act), check_c_w(C_w), check_c_b(C_b)
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
            r = bracketed_root(lambda k, _i: C_b + C_w * second_moment(act, k) - k,
                                lo.reshape(1), hi.reshape(1))
            roots.append(float(r[0]))
    roots.sort()
    chis = (second_moment_slope(act, torch.tensor(roots, dtype=F64)) * C_w if roots
            else torch.zeros(0))
    pts = tuple(FixedPoint(r, float(c)) for r, c in zip(roots, chis, strict=True))
    return VarianceFixedPoints(pts, False)


def fixed_point_from(act, C_w: Tensor, C_b: Tensor, k0: Tensor, k_max: float) -> Tensor:
    """K* reached by iterating F from K0, vectorized over (C_w, C_b, K0) (1-D, equal length).

    For a nondecreasing F (V' ≥ 0: ReLU, tanh, erf, ... ; checked on the grid), iterates
    move monotonically to the nearest fixed point in the direction of F(K0) − K0; +inf if
    there is none below K_max (the variance diverges).
    """
    grid = _k_grid(k_max)
    vg = second_moment(act, grid)
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
        out[idx] = bracketed_root(lambda k, i: cb_t[i] + cw_t[i] * second_moment(act, k) - k,
                                   lo[idx], hi[idx])
    return out


def variance_fixed_point(act, C_w: float, C_b: float, K0: float = 1.0, *,
                         K_max: float = 1e6) -> float:
    """The fixed point K* that the variance recursion reaches from K⁰ = ``K0``.

    Returns K0 itself when it is a fixed point (e.g. any K for ReLU at (0, 2)), and +inf
    when the variance grows without bound (no fixed point above K0 below ``K_max``).
    Needs a nondecreasing variance map (raises ValueError otherwise).
    """
    act, C_w, C_b = check_activation(act), check_c_w(C_w), check_c_b(C_b)
    k0 = check_variance(K0).reshape(1)
    out = fixed_point_from(act, torch.tensor([C_w], dtype=F64), torch.tensor([C_b], dtype=F64),
                            k0, K_max)
    return float(out[0])


def correlation_fixed_points(act, C_w: float, C_b: float, K_star: float
                             ) -> tuple[FixedPoint, ...]:
    """All ρ* ∈ [−1, 1] with c(ρ*) = ρ*, increasing, each with slope χ_c(ρ*).

    ρ = 1 is always one (slope χ⊥(K*)). Others are bracketed on an 801-point grid and
    refined with Brent's method; a root within 1/400 of 1 (near the order-chaos boundary)
    may be missed.
    """
    act, C_w, C_b = check_activation(act), check_c_w(C_w), check_c_b(C_b)
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
    slopes = correlation_slope(act, C_w, k, torch.tensor(roots, dtype=F64))
    return tuple(FixedPoint(r, float(s)) for r, s in zip(roots, slopes, strict=True))


def stable_correlation(act, C_w: Tensor, C_b: Tensor, k: Tensor, chi_p: Tensor) -> Tensor:
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
    act, C_w, C_b = check_activation(act), check_c_w(C_w), check_c_b(C_b)
    k = variance_fixed_point(act, C_w, C_b, K0, K_max=K_max)
    if not math.isfinite(k):
        nan = float("nan")
        return DepthScales(C_w, C_b, k, nan, nan, nan, nan, nan, nan, nan)
    kt = torch.tensor([k], dtype=F64)
    cpar = float(chi_parallel(act, C_w, kt)[0])
    cperp = float(chi_perp(act, C_w, kt)[0])
    rho = float(stable_correlation(act, torch.tensor([C_w], dtype=F64),
                                torch.tensor([C_b], dtype=F64), kt,
                                torch.tensor([cperp], dtype=F64))[0])
    chi_c = cperp if rho == 1.0 else float(correlation_slope(act, C_w, k,
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
    h(K) = V'(K) − Tdot(K, K, K) = 0 (for smooth σ, h = E[σσ'']; Roberts, Yaida & Hanin
    2022, ch. 5);
    and K* = F(K*) fixes C_b(K) = K − C_w(K) V(K), which must be ≥ 0. Roots of h are
    bracketed on a grid of K (0 and geometric points in [1e-6, K_max]); K = 0 uses the
    K → 0⁺ limits. If h ≡ 0 on the grid (positively homogeneous σ such as ReLU) the result
    is one degenerate point with K_star = K0.

    Examples: ReLU → (C_b, C_w) = (0, 2), any K*; tanh → (0, 1), K* = 0;
    erf(x) → (0, π/4), K* = 0.
    """
    act = check_activation(act)
    grid = torch.cat([torch.zeros(1, dtype=F64),
                      torch.logspace(-6, math.log10(K_max), 300, dtype=F64)])
    dv = second_moment_slope(act, grid)
    td = derivative_moment(act, grid)
    h = dv - td
    tol = 1e-8 * (dv.abs() + td.abs()) + 1e-300
    zero = h.abs() <= tol

    def point(k: float, degenerate: bool = False) -> CriticalPoint | None:
        kt = torch.tensor([k], dtype=F64)
        tdk = float(derivative_moment(act, kt)[0])
        if not tdk > 0:
            return None
        cw = 1.0 / tdk
        cb = k - cw * float(second_moment(act, kt)[0])
        if cb < -1e-9 * max(k, 1e-300):
            return None
        cb = max(cb, 0.0)
        if abs(cb) <= 1e-12 * max(k, 1.0):
            cb = 0.0  # rounding of K − C_w V(K) in the homogeneous case
        attracting = False
        if not degenerate:
            delta = 1e-3 * max(k, 1.0)
            probe = torch.tensor([k + delta, max(k - delta, 0.0)], dtype=F64)
            g = cb + cw * second_moment(act, probe) - probe
            attracting = bool(g[0] < 0) and (k == 0.0 or bool(g[1] > 0))
        return CriticalPoint(cb, cw, k, float(cw * second_moment_slope(act, kt)[0]), cw * tdk,
                             degenerate, attracting)

    if bool(zero.all()):
        p = point(float(K0), True)
        return () if p is None else (p,)
    roots = [float(grid[i]) for i in torch.nonzero(zero).flatten().tolist()]
    sgn = torch.sign(torch.where(zero, torch.zeros_like(h), h))

    def hf(k: float) -> float:
        kt = torch.tensor([k], dtype=F64)
        return float(second_moment_slope(act, kt)[0] - derivative_moment(act, kt)[0])

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
