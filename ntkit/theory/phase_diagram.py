"""The order-to-chaos phase diagram on a (σ_w², σ_b²) grid, and its figure.

Ordered where χ⊥(K*) < 1, chaotic where χ⊥(K*) > 1 (Poole et al. 2016, "Exponential
expressivity in deep neural networks through transient chaos"; Schoenholz et al. 2017,
"Deep information propagation"). Conventions: `ntkit.theory.criticality`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ntkit.theory.fixed_points import (
    fixed_point_from,
    stable_correlation,
)
from ntkit.theory.signal_maps import (
    F64,
    check_activation,
    check_variance,
    depth_scale,
    derivative_moment,
    second_moment,
    second_moment_slope,
)

__all__ = ["PhaseDiagram", "order_chaos_boundary", "phase_diagram", "plot_phase_diagram"]


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
    act = check_activation(act)
    if K_star is None:
        u = torch.linspace(0, 1, n, dtype=F64)
        K_star = K_range[0] + (K_range[1] - K_range[0]) * u * u
    k = check_variance(K_star).reshape(-1)
    sw2 = 1.0 / derivative_moment(act, k)
    sb2 = k - sw2 * second_moment(act, k)
    sb2 = torch.where(sb2.abs() <= 1e-13 * (k + 1), torch.zeros_like(sb2), sb2)
    keep = (sb2 >= 0) & torch.isfinite(sw2)
    return sw2[keep].numpy(), sb2[keep].numpy()


def phase_diagram(act, sigma_w2, sigma_b2, *, name: str = "", K0: float = 1.0,
                  K_max: float = 1e6) -> PhaseDiagram:
    """Order/chaos data on the grid sigma_w2 (n_w,) × sigma_b2 (n_b,) (see `PhaseDiagram`).

    K* is the fixed point reached from K0 (vectorized over the grid); grid points where
    the variance diverges get K* = inf and nan elsewhere.
    """
    act = check_activation(act)
    w = np.asarray(sigma_w2, dtype=np.float64).reshape(-1)
    b = np.asarray(sigma_b2, dtype=np.float64).reshape(-1)
    if (w <= 0).any() or (b < 0).any() or not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise ValueError("sigma_w2 must be > 0 and sigma_b2 >= 0, all finite")
    ww, bb = np.meshgrid(w, b)  # (n_b, n_w)
    cw = torch.from_numpy(ww.reshape(-1).copy())
    cb = torch.from_numpy(bb.reshape(-1).copy())
    k = fixed_point_from(act, cw, cb, torch.full_like(cw, float(K0)), K_max)
    fin = torch.isfinite(k)
    nan = torch.full_like(k, float("nan"))
    kf = torch.where(fin, k, torch.zeros_like(k))
    cpar = torch.where(fin, cw * second_moment_slope(act, kf), nan)
    cperp = torch.where(fin, cw * derivative_moment(act, kf), nan)
    rho = torch.where(fin, stable_correlation(act, cw, cb, kf, torch.nan_to_num(cperp)), nan)
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
