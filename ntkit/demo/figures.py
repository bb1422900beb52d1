"""The demo's three figures: the gap to the NTK prediction against width, the training
dynamics, and the kernel matrices (matplotlib on Agg canvases, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ntkit.demo.experiment import DemoResult

__all__ = ["FIGURES", "STYLE", "draw_figures"]

#: figure -> file name in the report folder.
FIGURES = {
    "gap": "fig1_gap_vs_width.png",
    "dynamics": "fig2_dynamics.png",
    "kernel": "fig3_kernel.png",
}


#: matplotlib style of the demo's figures (applied with rc_context: no global change).
STYLE = {
    "font.family": "DejaVu Sans", "font.size": 10, "axes.titlesize": 11,
    "axes.titleweight": "bold", "axes.titlelocation": "left", "axes.labelsize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.color": "#e6e6e6", "grid.linewidth": 0.6, "legend.frameon": False,
    "legend.fontsize": 8.5, "savefig.dpi": 150, "figure.dpi": 150,
}


def _figure(ncols: int, figsize: tuple[float, float], **gridspec):
    """(fig, axes) on a pyplot-free Agg canvas: no backend switch, nothing global."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, gridspec_kw=gridspec)


def _num(x: float, fmt: str = ".2f") -> str:
    """A number with a typographic minus sign."""
    return format(x, fmt).replace("-", "\u2212")


def _width_colors(widths):
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    lw = np.log2(np.asarray(widths, float))
    span = max(lw.max() - lw.min(), 1e-9)
    return {m: cmap(0.05 + 0.85 * (x - lw.min()) / span) for m, x in zip(widths, lw, strict=True)}


def _width_colorbar(fig, ax, widths):
    import matplotlib as mpl

    lw = np.log2(np.asarray(widths, float))
    cmap = mpl.colors.ListedColormap([_width_colors(widths)[m] for m in widths])
    bounds = np.concatenate([[lw[0] - 0.5], (lw[:-1] + lw[1:]) / 2, [lw[-1] + 0.5]])
    norm = mpl.colors.BoundaryNorm(bounds, cmap.N)
    cb = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, ticks=lw,
                      fraction=0.05, pad=0.02)
    cb.ax.set_yticklabels([str(m) for m in widths])
    cb.set_label("width m")
    cb.outline.set_visible(False)


def _fig_gap(res: DemoResult, path: Path) -> None:
    rows = res.by_width()
    widths = np.array([r["width"] for r in rows])
    gap = np.array([r["gap_test"] for r in rows])
    gap_tr = np.array([r["gap_train"] for r in rows])
    floor = float(np.mean([r["floor_test"] for r in rows]))
    slope, pref = res.slope("gap_test")
    slope_tr, pref_tr = res.slope("gap_train")
    colors = _width_colors(list(widths))

    fig, (ax, bx) = _figure(2, (11.5, 4.3), wspace=0.28)
    for r in res.runs:  # individual networks
        ax.scatter(r.width, r.gap_test, s=12, color="#1f4e9c", alpha=0.25, lw=0, zorder=2)
    ax.plot(widths, gap, "o", color="#1f4e9c", ms=6.5, zorder=3,
            label="test outputs (mean over nets)")
    ax.plot(widths, gap_tr, "s", color="#d9822b", ms=5.5, mfc="white", mew=1.4, zorder=3,
            label="train outputs")
    xx = np.geomspace(widths[0] / 1.3, widths[-1] * 1.3, 50)
    ax.plot(xx, pref * xx ** slope, "-", color="#1f4e9c", lw=1.3, zorder=2,
            label=f"fit, test: slope {_num(slope)}")
    ax.plot(xx, pref_tr * xx ** slope_tr, "-", color="#d9822b", lw=1.0, alpha=0.8, zorder=2,
            label=f"fit, train: slope {_num(slope_tr)}")
    ref = gap[0] * (xx / widths[0]) ** -0.5
    ax.plot(xx, ref, ":", color="0.35", lw=1.3, label="theory: slope −1/2")
    ax.axhline(floor, color="0.6", lw=1.0, ls="--")
    ax.text(xx[0] * 1.05, floor * 1.2, f"time-discretization floor, {floor:.1e} "
            "(the gap left at infinite width)", fontsize=8, color="0.4", va="bottom")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(widths)
    ax.set_xticklabels([str(m) for m in widths])
    ax.set_xlabel("hidden width m")
    ax.set_ylabel(r"RMS$(f_\mathrm{net} - f_\mathrm{NTK})$  at  $t = T$")
    ax.set_title("(a) Gap to the infinite-width prediction")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 0.14))
    ax.set_ylim(floor * 0.5, max(gap.max(), gap_tr.max()) * 1.8)

    first = next(r for r in res.runs if r.width == widths[0] and r.final_test_net is not None)
    last = next(r for r in res.runs if r.width == widths[-1] and r.final_test_net is not None)
    lim = 0.0
    for r, z in ((first, 2), (last, 3)):
        a, b = r.final_test_ntk.ravel(), r.final_test_net.ravel()
        lim = max(lim, np.abs(a).max(), np.abs(b).max())
        bx.scatter(a, b, s=5, alpha=0.45, lw=0, color=colors[r.width], zorder=z,
                   label=f"width {r.width}: RMS gap {r.gap_test:.3f}")
    lim *= 1.05
    bx.plot([-lim, lim], [-lim, lim], color="0.3", lw=0.8, zorder=1)
    bx.set_xlim(-lim, lim)
    bx.set_ylim(-lim, lim)
    bx.set_aspect("equal")
    bx.set_xlabel("NTK prediction from the net's own f₀  (test outputs)")
    bx.set_ylabel("trained finite network  (test outputs)")
    bx.set_title("(b) Test outputs at t = T: narrowest vs widest")
    leg = bx.legend(loc="upper left", markerscale=3)
    for h in leg.legend_handles:
        h.set_alpha(1)
    fig.savefig(path, bbox_inches="tight")


def _fig_dynamics(res: DemoResult, path: Path) -> None:
    from matplotlib.lines import Line2D

    cfg = res.config
    widths = list(cfg.widths)
    colors = _width_colors(widths)
    t = res.checkpoints.astype(float)
    tc = res.curve_times
    fig, axes = _figure(3, (15, 4.3), wspace=0.3)
    ax, gx, cx = axes
    first = {m: next(r for r in res.runs if r.width == m) for m in widths}
    pos = t > 0  # log time axis
    for m in widths:
        r = first[m]
        ax.plot(t[pos], r.train_loss[pos], color=colors[m], lw=1.4)
        ax.plot(t[pos], r.ntk_train_loss[pos], color=colors[m], lw=1.0, ls=(0, (3, 2)))
        rs = [q for q in res.runs if q.width == m]
        gx.plot(t[pos], np.mean([q.gap_test_t[pos] for q in rs], axis=0), color=colors[m],
                lw=1.5)
        cx.plot(t, r.test_acc, color=colors[m], lw=1.4)
        cx.plot(t, r.ntk_test_acc, color=colors[m], lw=1.0, ls=(0, (3, 2)))
    floor_t = np.mean([q.floor_test_t[pos] for q in res.runs], axis=0)
    gx.plot(t[pos], floor_t, color="0.55", lw=1.2, ls="--")
    p = tc > 0
    ax.plot(tc[p], res.ntk_mean_loss[p], color="black", lw=1.8)
    # At t = 0 the ensemble mean is exactly 0 and its argmax meaningless: start after it.
    cx.plot(tc[p], res.ntk_mean_acc[p], color="black", lw=1.8)
    cx.axhline(res.nngp_acc, color="#c0392b", lw=1.3, ls="--")
    cx.axhline(res.ntk_inf_acc, color="black", lw=1.0, ls=":")
    # One legend for the figure, by line style (the colour bar gives the widths).
    proxies = [
        Line2D([], [], color="0.3", lw=1.4, label="finite network (colour = width)"),
        Line2D([], [], color="0.3", lw=1.0, ls=(0, (3, 2)),
                   label="NTK prediction from that network's f₀"),
        Line2D([], [], color="black", lw=1.8, label="NTK, infinite ensemble (f₀ = 0)"),
        Line2D([], [], color="0.55", lw=1.2, ls="--",
                   label="(b) time-discretization floor"),
        Line2D([], [], color="black", lw=1.0, ls=":",
                   label=f"(c) NTK, t = ∞: {res.ntk_inf_acc:.1%}"),
        Line2D([], [], color="#c0392b", lw=1.3, ls="--",
                   label=f"(c) NNGP posterior mean: {res.nngp_acc:.1%}")]
    fig.legend(handles=proxies, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 0.0),
               fontsize=9.5, handlelength=2.8, columnspacing=2.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training time t (GD steps)")
    ax.set_ylabel(r"train loss $\frac{1}{2}\,\mathrm{mean}\,(f - y)^2$")
    ax.set_title("(a) Training loss")
    gx.set_xscale("log")
    gx.set_yscale("log")
    gx.set_xlabel("training time t (GD steps)")
    gx.set_ylabel(r"RMS$(f_\mathrm{net} - f_\mathrm{NTK})$, test outputs")
    gx.set_title("(b) Gap over training")
    cx.set_xscale("symlog", linthresh=1.0)
    cx.set_xlim(0, t[-1] * 1.05)
    cx.set_ylim(0, 1.0)
    cx.set_xlabel("training time t (GD steps; linear below 1)")
    cx.set_ylabel("test accuracy")
    cx.set_title("(c) Test accuracy")
    _width_colorbar(fig, cx, widths)
    fig.savefig(path, bbox_inches="tight")


def _fig_kernel(res: DemoResult, path: Path) -> None:
    labels = res.sorted_labels
    edges = np.flatnonzero(np.diff(labels)) + 0.5
    centres = [(np.flatnonzero(labels == c).mean()) for c in np.unique(labels)]
    fig, axes = _figure(2, (10.5, 4.8), wspace=0.12)
    im = None
    panels = (("NTK Θ", res.kernel_ntk), ("NNGP K", res.kernel_nngp))
    for ax, (name, k) in zip(axes, panels, strict=True):
        d = np.sqrt(np.diag(k))
        corr = k / np.outer(d, d)  # cosine similarity: removes the per-image norm
        im = ax.imshow(corr, cmap="magma", vmin=float(np.percentile(corr, 1)), vmax=1.0,
                       interpolation="nearest")
        for e in edges:
            ax.axhline(e, color="white", lw=0.5, alpha=0.7)
            ax.axvline(e, color="white", lw=0.5, alpha=0.7)
        ax.set_xticks(centres)
        ax.set_xticklabels([str(c) for c in np.unique(labels)])
        ax.set_yticks(centres)
        ax.set_yticklabels([str(c) for c in np.unique(labels)])
        ax.tick_params(length=0)
        ax.grid(False)
        ax.set_xlabel("training image (sorted by digit)")
        ax.set_title(f"{name}(x, x′) / √(k(x,x) k(x′,x′))")
    cb = fig.colorbar(im, ax=axes, fraction=0.025, pad=0.02)
    cb.set_label("normalized kernel")
    cb.outline.set_visible(False)
    fig.savefig(path, bbox_inches="tight")


def draw_figures(res: DemoResult, folder: str | Path) -> list[str]:
    """Draw the three figures of ``res`` into ``folder`` as the files of `FIGURES`, in
    that order, and return those file names."""
    import matplotlib

    folder = Path(folder)
    with matplotlib.rc_context(STYLE):
        _fig_gap(res, folder / FIGURES["gap"])
        _fig_dynamics(res, folder / FIGURES["dynamics"])
        _fig_kernel(res, folder / FIGURES["kernel"])
    return list(FIGURES.values())
