"""Mercer spectra of dot-product kernels on the sphere, and the widths of their RKHS balls.

**Kernel on the sphere.** For a fully-connected spec (Dense layers and elementwise
activations, in `serial`), the NNGP and the NTK between two inputs depend only on the two
input variances and the input covariance. ntkit's input kernel is ``x·x'/d``, so on inputs
with ``‖x‖² = d`` (the sphere of radius √d: unit input variance, the convention of every
ntkit kernel) the spec's kernel is a function of the cosine alone,

    k(x, x') = κ(t),   t = x·x'/d = ⟨u, u'⟩,   u = x/√d ∈ S^{d−1} (the unit sphere).

`dot_product_eigenvalues` evaluates κ through the spec's own kernel map on the pair
``x = √d·e₁``, ``x' = √d·(t e₁ + √(1 − t²) e₂)`` (d-dimensional inputs, so that the
'standard' parameterization sees the true fan-in d).

**Funk–Hecke.** With σ the *uniform probability measure* on S^{d−1}, the integral operator
(Tf)(u) = ∫ κ(⟨u, v⟩) f(v) dσ(v) acts on every spherical harmonic of degree k by the
eigenvalue

    μ_k = c_d ∫_{−1}^{1} κ(t) P_k(t) (1 − t²)^{(d−3)/2} dt,   c_d = Γ(d/2) / (√π Γ((d−1)/2)),

with P_k = C_k^{(d−2)/2} / C_k^{(d−2)/2}(1) the Gegenbauer (Legendre in d = 3, Chebyshev in
d = 2) polynomial normalized to P_k(1) = 1, and multiplicity N(d, k) = dim of the degree-k
harmonics. These μ_k are the limits of the eigenvalues of K/n for a Gram matrix K on n
i.i.d. uniform points.

**Quadrature.** The Gegenbauer weight makes this a Gauss–Jacobi integral in t, but kinked
activations (ReLU, step) give κ a √(1 − t) or (1 − t)^{3/2} singularity at t = ±1, where
Gauss–Jacobi in t converges only algebraically. In the angle θ = arccos t the same kernels
are analytic on [0, π] (e.g. the arc-cosine kernels are polynomials in θ, sin θ, cos θ), so
we integrate μ_k = c_d ∫_0^π κ(cos θ) P_k(cos θ) sin^{d−2}θ dθ with composite Gauss–Legendre
nodes in θ (24 per panel), doubling the panels until two rules agree to round-off. P_k is
evaluated by its three-term recurrence (stable on [−1, 1]); sums are exactly rounded.

**Accuracy.** The kernel values are float64, so each μ_k carries an absolute error of a few
ε·max|κ| (ε = 2.2e-16; measured ≤ 1.5e-16·μ_0 in d = 3): relative accuracy 1e-10 holds
while μ_k ≳ 1e-6·μ_max. That covers
the first 20 eigenvalues of the ReLU NTK/NNGP in d = 3 (tested against closed forms); in
high d, where μ_k falls like k^{−d}, the smallest ones are accurate to ~1e-16·μ_max in
absolute terms only, and eigenvalues that vanish by symmetry come out as ±1e-17-sized
numbers.

`n_widths` turns a spectrum into the Kolmogorov / linear n-widths of the RKHS unit ball in
L²(σ) (an ellipsoid with semi-axes √μ, each repeated N(d, k) times) and two-sided bounds on
its entropy numbers (Pinkus 1985, "n-Widths in approximation theory"; Carl & Stephani
1990, "Entropy, compactness and the approximation of operators").
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ntkit.layers.base import Activation, Layer
from ntkit.layers.branching import Serial
from ntkit.layers.dense import Dense

F64 = torch.float64
KINDS = ("ntk", "nngp")
_Q = 24            # nodes per panel
_MIN_PANELS = 4
_MAX_NODES = 6144


class SphereSpectrum(NamedTuple):
    """Mercer spectrum of a dot-product kernel on S^{d−1} (uniform probability measure).

    Attributes:
      eigenvalues: (k_max + 1,) float64, μ_k for degrees k = 0 … k_max.
      multiplicities: (k_max + 1,) int64, N(d, k) (how often μ_k repeats).
      d: the sphere's ambient dimension.
      nodes: number of (composite Gauss–Legendre, in θ) nodes of the rule that converged.
    """

    eigenvalues: Tensor
    multiplicities: Tensor
    d: int
    nodes: int


class NWidths(NamedTuple):
    """Widths and entropy numbers of the ellipsoid {Σ c_i √μ_i φ_i : ‖c‖ ≤ 1} in L².

    All fields are (len(n),) float64 arrays, one entry per requested n.

    Attributes:
      n: the requested n (number of parameters / bits).
      kolmogorov: Kolmogorov n-width d_n = σ_{n+1} (σ = √μ sorted descending, 1-based).
      linear: linear n-width; equal to d_n for an ellipsoid in a Hilbert space (attained by
        orthogonal projection on the top n axes).
      entropy_lower: ε_n ≥ max_k (σ_1⋯σ_k)^{1/k} 2^{−n/k} (volume: 2^n balls of radius ε
        must cover the k-dimensional section).
      entropy_upper: ε_n ≤ min_k √(ε_k² + σ_{k+1}²), where ε_k solves
        ∏_{i≤k} (4σ_i/ε_k + 2) = 2^n (a maximal ε-packing of the k-dimensional section; the
        rest of the ellipsoid lies within σ_{k+1} of it).
    """

    n: np.ndarray
    kolmogorov: np.ndarray
    linear: np.ndarray
    entropy_lower: np.ndarray
    entropy_upper: np.ndarray


# ----------------------------------------------------------------------------- helpers
def _check_fc(net: Layer) -> None:
    """Raise unless ``net`` is built of Dense layers and activations only (possibly nested
    `serial`): only then is its kernel a function of the cosine on the sphere."""
    if isinstance(net, Serial):
        for layer in net.layers:
            _check_fc(layer)
        return
    if isinstance(net, (Dense, Activation)):
        return
    if isinstance(net, Layer):
        raise ValueError(
            f"dot_product_eigenvalues supports fully-connected specs only (Dense, elementwise "
            f"activations, serial); got a {type(net).__name__} layer")
    raise TypeError(f"net must be an ntkit layer spec, got {type(net).__name__}")


def _check_int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if int(v) < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return int(v)


def multiplicity(d: int, k: int) -> int:
    """N(d, k): the dimension of the degree-k spherical harmonics on S^{d−1}.

    N(d, 0) = 1, N(d, 1) = d, and N(d, k) = C(k+d−1, d−1) − C(k+d−3, d−1) (homogeneous
    polynomials of degree k minus those of degree k − 2); e.g. 2k + 1 for d = 3 and 2 for
    d = 2, k ≥ 1. Exact integer arithmetic.
    """
    d = _check_int("d", d, 2)
    k = _check_int("k", k, 0)
    if k == 0:
        return 1
    if k == 1:
        return d
    return math.comb(k + d - 1, d - 1) - math.comb(k + d - 3, d - 1)


def gegenbauer_normalized(d: int, k_max: int, t: Tensor) -> Tensor:
    """P_k(t) for k = 0 … k_max on S^{d−1}, normalized to P_k(1) = 1: shape (k_max+1, *t.shape).

    Recurrence (k + d − 3) P_k = (2k + d − 4) t P_{k−1} − (k − 1) P_{k−2}, P_0 = 1,
    P_1 = t (Legendre for d = 3, Chebyshev T_k for d = 2).
    """
    d = _check_int("d", d, 2)
    k_max = _check_int("k_max", k_max, 0)
    out = torch.empty((k_max + 1, *t.shape), dtype=t.dtype)
    out[0] = 1.0
    if k_max >= 1:
        out[1] = t
    for k in range(2, k_max + 1):
        out[k] = ((2 * k + d - 4) * t * out[k - 1] - (k - 1) * out[k - 2]) / (k + d - 3)
    return out


def kernel_of_cosine(net: Layer, d: int, t: Tensor, kind: str = "ntk") -> Tensor:
    """κ(t): the spec's ``kind`` kernel between two inputs of squared norm d and cosine t.

    Args:
      net: a fully-connected spec.
      d: input dimension (≥ 2).
      t: (m,) cosines in [−1, 1].
      kind: "ntk" or "nngp".

    Returns:
      (m,) float64: ``net.kernel(x, x', get=kind)`` with x = √d e₁ and
      x' = √d (t e₁ + √(1 − t²) e₂).
    """
    _check_fc(net)
    d = _check_int("d", d, 2)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    t = torch.as_tensor(t, dtype=F64).reshape(-1)
    if not bool(torch.isfinite(t).all()) or bool((t.abs() > 1).any()):
        raise ValueError("cosines t must be finite and lie in [-1, 1]")
    return _kappa_theta(net, d, torch.arccos(t), kind, cos=t)


def _kappa_theta(net: Layer, d: int, theta: Tensor, kind: str,
                 cos: Tensor | None = None) -> Tensor:
    r = math.sqrt(d)
    x1 = torch.zeros((1, d), dtype=F64)
    x1[0, 0] = r
    x2 = torch.zeros((theta.numel(), d), dtype=F64)
    x2[:, 0] = r * (torch.cos(theta) if cos is None else cos)
    x2[:, 1] = r * torch.sin(theta)
    return net.kernel(x1, x2, get=kind)[0]


def _panel_rule(panels: int) -> tuple[Tensor, Tensor]:
    """Composite Gauss–Legendre rule on [0, π]: ``panels`` equal panels of _Q nodes each.

    Composite rather than one high-order rule: numpy's n-point nodes and weights lose
    accuracy as n grows (≈1e-14 relative error in ∫ sin³ at n = 512–1024), while a 24-point
    rule is accurate to round-off and panels add resolution for P_k's oscillations.
    """
    x, w = np.polynomial.legendre.leggauss(_Q)
    h = math.pi / panels
    left = np.arange(panels)[:, None] * h
    theta = (left + (x[None, :] + 1.0) * (h / 2)).ravel()
    weights = np.broadcast_to(w * (h / 2), (panels, _Q)).ravel()
    return torch.tensor(theta, dtype=F64), torch.tensor(weights, dtype=F64)


def _funk_hecke(net: Layer, d: int, k_max: int, kind: str, panels: int) -> Tensor:
    theta, w = _panel_rule(panels)
    kappa = _kappa_theta(net, d, theta, kind)
    if not bool(torch.isfinite(kappa).all()):
        raise ValueError(f"the spec's {kind} kernel is not finite on the sphere")
    # c_d = Γ(d/2)/(√π Γ((d−1)/2)) in logs (no overflow for large d).
    c_d = math.exp(math.lgamma(d / 2) - math.lgamma((d - 1) / 2) - 0.5 * math.log(math.pi))
    p = gegenbauer_normalized(d, k_max, torch.cos(theta))
    terms = (p * (w * kappa * torch.sin(theta) ** (d - 2))).numpy()
    # Exactly rounded sums (math.fsum): μ_k ≪ the terms for large k, so plain summation's
    # round-off would add to the error.
    return torch.tensor([c_d * math.fsum(row) for row in terms], dtype=F64)


# ----------------------------------------------------------------------------- public
def dot_product_eigenvalues(net: Layer, d: int, k_max: int, kind: str = "ntk") -> SphereSpectrum:
    """Mercer eigenvalues μ_0 … μ_{k_max} of a fully-connected spec's kernel on S^{d−1}.

    Scaling: the spec is evaluated on inputs with ‖x‖² = d (ntkit's input kernel x·x'/d then
    has unit variance and equals the cosine t); the eigenvalues are those of the integral
    operator against the uniform *probability* measure on the sphere, i.e. the limits of
    eig(K/n) for n uniform points, each μ_k repeated N(d, k) times (see module docstring).

    Args:
      net: fully-connected spec: Dense layers and elementwise activations in `serial`
        (anything else raises ValueError, a non-spec TypeError).
      d: ambient dimension of the sphere (int ≥ 2).
      k_max: largest degree (int ≥ 0).
      kind: "ntk" or "nngp".

    Returns:
      `SphereSpectrum` (eigenvalues (k_max+1,) float64, multiplicities (k_max+1,) int64,
      d, nodes). Accurate to ~1e-16·max μ in absolute terms (1e-10 relative for μ_k ≳
      1e-6·max μ, e.g. the first 21 of the ReLU kernels in d = 3: max 6.6e-11 measured).

    Raises:
      ValueError: unknown kind, non-FC spec, d < 2, k_max < 0, non-finite kernel, or no
        convergence by 6144 nodes. TypeError: non-int d/k_max, or net not a spec.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    _check_fc(net)
    d = _check_int("d", d, 2)
    k_max = _check_int("k_max", k_max, 0)
    # Enough nodes to resolve P_{k_max}·sin^{d−2} (degree k_max + d in θ) exactly, then
    # double until two rules agree to round-off.
    panels = max(_MIN_PANELS, -(-(k_max + d) // 6))
    mu = _funk_hecke(net, d, k_max, kind, panels)
    while True:
        mu2 = _funk_hecke(net, d, k_max, kind, 2 * panels)
        scale = float(mu2.abs().max())
        change = float((mu2 - mu).abs().max())
        if change <= 16 * torch.finfo(F64).eps * max(scale, 1e-300):
            break
        if 2 * panels * _Q >= _MAX_NODES:
            raise ValueError(f"Funk–Hecke quadrature did not converge with {2 * panels * _Q} "
                             f"nodes (change {change:.3e}); is κ smooth in the angle?")
        panels, mu = 2 * panels, mu2
    mult = torch.tensor([multiplicity(d, k) for k in range(k_max + 1)], dtype=torch.int64)
    return SphereSpectrum(mu2, mult, d, 2 * panels * _Q)


def sorted_axes(eigenvalues, multiplicities) -> np.ndarray:
    """σ_1 ≥ σ_2 ≥ …: √μ_k repeated N(d, k) times, sorted descending (float64 numpy).

    Negative eigenvalues of size round-off (|μ| ≤ 1e-12·max μ, e.g. those zero by symmetry)
    are clamped to 0; larger negative ones raise ValueError (not a PSD kernel).
    """
    mu = torch.as_tensor(eigenvalues).detach().cpu()
    m = torch.as_tensor(multiplicities).detach().cpu()
    if mu.ndim != 1 or m.ndim != 1 or mu.numel() != m.numel() or mu.numel() == 0:
        raise ValueError(f"eigenvalues and multiplicities must be 1-D of equal nonzero length, "
                         f"got shapes {tuple(mu.shape)} and {tuple(m.shape)}")
    if not mu.is_floating_point():
        raise TypeError(f"eigenvalues must be floating point, got {mu.dtype}")
    if m.is_floating_point() or m.dtype == torch.bool:
        if m.dtype == torch.bool or not bool((m == m.round()).all()):
            raise TypeError("multiplicities must be integers")
    mu = mu.to(F64).numpy()
    m = m.to(torch.int64).numpy()
    if not np.isfinite(mu).all():
        raise ValueError("eigenvalues contain NaN or inf")
    if (m < 0).any():
        raise ValueError("multiplicities must be >= 0")
    top = float(np.abs(mu).max())
    if (mu < -1e-12 * top).any():
        raise ValueError(f"eigenvalues must be >= 0 (PSD kernel), got min {mu.min():.3e}")
    sigma = np.sqrt(np.clip(mu, 0.0, None))
    return np.sort(np.repeat(sigma, m))[::-1].copy()


def n_widths(eigenvalues, multiplicities, n) -> NWidths:
    """n-widths and entropy numbers of the RKHS unit ball in L² (see `NWidths`).

    The ball is the ellipsoid with semi-axes σ = √μ (each repeated its multiplicity), truncated
    to the eigenvalues given: a finite-dimensional section of the true ball (exact widths
    for n < the number of axes; beyond it they are 0).

    Args:
      eigenvalues: (K,) nonnegative floats μ_k (tensor or array).
      multiplicities: (K,) nonnegative integers.
      n: an int ≥ 0 or a 1-D sequence of them.

    Returns:
      `NWidths`; entropy numbers as rigorous bounds entropy_lower ≤ ε_n ≤ entropy_upper
      (ε_n: smallest radius of 2^n balls covering the ellipsoid).
    """
    sigma = sorted_axes(eigenvalues, multiplicities)
    ns = np.atleast_1d(np.asarray(n))
    if ns.ndim != 1 or ns.size == 0 or not np.issubdtype(ns.dtype, np.integer):
        raise TypeError(f"n must be an int or a 1-D sequence of ints, got {n!r}")
    if (ns < 0).any():
        raise ValueError("n must be >= 0")
    sig_pad = np.concatenate([sigma, [0.0]])
    width = sig_pad[np.minimum(ns, sigma.size)]
    pos = sigma[sigma > 0]
    logs = np.cumsum(np.log(pos))
    ks = np.arange(1, pos.size + 1)
    lower = np.empty(ns.size)
    upper = np.empty(ns.size)
    for i, nn in enumerate(ns):
        if pos.size == 0:
            lower[i] = upper[i] = 0.0
            continue
        lower[i] = float(np.exp(np.max((logs - nn * math.log(2.0)) / ks)))
        upper[i] = _entropy_upper(pos, int(nn))
    return NWidths(ns.astype(np.int64), width, width.copy(), lower, upper)


def _entropy_upper(sigma: np.ndarray, n: int) -> float:
    """min over k of √(ε_k² + σ_{k+1}²), ε_k from ∏_{i≤k}(4σ_i/ε + 2) = 2^n (bisection)."""
    best = float(sigma[0])        # k = 0: one ball of radius σ_1 around 0
    # Each factor is > 2, so k ≤ n − 1 dimensions at most can be packed with 2^n centres.
    # A min over a sub-grid of k is still an upper bound; a geometric grid keeps it cheap.
    kmax = min(n - 1, sigma.size)
    if kmax < 1:
        return best
    grid = np.unique(np.concatenate([np.arange(1, min(kmax, 16) + 1),
                                     np.round(np.geomspace(1, kmax, 96)).astype(int)]))
    for k in grid:
        k = int(k)
        log4s = np.log(4 * sigma[:k])
        # hi: every factor ≤ 2^{n/k} there (so bits ≤ n); in logs to avoid overflow.
        hi = float(log4s[0]) - (n / k) * math.log(2.0) - math.log1p(-2.0 ** (1.0 - n / k))
        lo = hi - 800.0
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            # Σ log2(4σ_i/ε + 2), as logaddexp to stay finite for tiny ε
            bits = float(np.logaddexp(log4s - mid, math.log(2.0)).sum()) / math.log(2.0)
            if bits > n:
                lo = mid
            else:
                hi = mid
        eps_k = math.exp(hi)
        tail = float(sigma[k]) if k < sigma.size else 0.0
        best = min(best, math.hypot(eps_k, tail))
    return best
