"""Figures and the HTML report of the demo experiment.

`write_report(result, out_dir)` writes ``index.html``, three PNG figures and
``results.json`` (every number in the report) into ``out_dir``, atomically: everything
is written into a temporary sibling directory that replaces ``out_dir`` only when
complete, so an interrupted run never leaves a half report.
"""

from __future__ import annotations

import html
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ntkit.demo.experiment import DemoResult, fit_power_law

MARKER = "ntkit-demo-report"  # in results.json: identifies a directory we may replace
FIGURES = {
    "gap": "fig1_gap_vs_width.png",
    "dynamics": "fig2_dynamics.png",
    "kernel": "fig3_kernel.png",
}


class ReportExistsError(FileExistsError):
    """The output path exists and is not a previous ntkit demo report."""


# ---- figures --------------------------------------------------------------------------

def _style() -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.family": "DejaVu Sans", "font.size": 10, "axes.titlesize": 11,
        "axes.titleweight": "bold", "axes.titlelocation": "left", "axes.labelsize": 10,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
        "grid.color": "#e6e6e6", "grid.linewidth": 0.6, "legend.frameon": False,
        "legend.fontsize": 8.5, "savefig.dpi": 150, "figure.dpi": 150,
    })


def _num(x: float, fmt: str = ".2f") -> str:
    """A number with a typographic minus sign."""
    return format(x, fmt).replace("-", "\u2212")


def _width_colors(widths):
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    lw = np.log2(np.asarray(widths, float))
    span = max(lw.max() - lw.min(), 1e-9)
    return {m: cmap(0.05 + 0.85 * (x - lw.min()) / span) for m, x in zip(widths, lw, strict=True)}


def _width_colorbar(fig, ax, widths):
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    lw = np.log2(np.asarray(widths, float))
    cmap = mpl.colors.ListedColormap([_width_colors(widths)[m] for m in widths])
    bounds = np.concatenate([[lw[0] - 0.5], (lw[:-1] + lw[1:]) / 2, [lw[-1] + 0.5]])
    norm = mpl.colors.BoundaryNorm(bounds, cmap.N)
    cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, ticks=lw,
                      fraction=0.05, pad=0.02)
    cb.ax.set_yticklabels([str(m) for m in widths])
    cb.set_label("width m")
    cb.outline.set_visible(False)


def _fig_gap(res: DemoResult, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = res.by_width()
    widths = np.array([r["width"] for r in rows])
    gap = np.array([r["gap_test"] for r in rows])
    gap_tr = np.array([r["gap_train"] for r in rows])
    floor = float(np.mean([r["floor_test"] for r in rows]))
    slope, pref = res.slope("gap_test")
    slope_tr, pref_tr = res.slope("gap_train")
    colors = _width_colors(list(widths))

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.5, 4.3), gridspec_kw={"wspace": 0.28})
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
    plt.close(fig)


def _fig_dynamics(res: DemoResult, path: Path) -> None:
    import matplotlib.pyplot as plt

    cfg = res.config
    widths = list(cfg.widths)
    colors = _width_colors(widths)
    t = res.checkpoints.astype(float)
    tc = res.curve_times
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), gridspec_kw={"wspace": 0.3})
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
        plt.Line2D([], [], color="0.3", lw=1.4, label="finite network (colour = width)"),
        plt.Line2D([], [], color="0.3", lw=1.0, ls=(0, (3, 2)),
                   label="NTK prediction from that network's f₀"),
        plt.Line2D([], [], color="black", lw=1.8, label="NTK, infinite ensemble (f₀ = 0)"),
        plt.Line2D([], [], color="0.55", lw=1.2, ls="--",
                   label="(b) time-discretization floor"),
        plt.Line2D([], [], color="black", lw=1.0, ls=":",
                   label=f"(c) NTK, t = ∞: {res.ntk_inf_acc:.1%}"),
        plt.Line2D([], [], color="#c0392b", lw=1.3, ls="--",
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
    plt.close(fig)


def _fig_kernel(res: DemoResult, path: Path) -> None:
    import matplotlib.pyplot as plt

    labels = res.sorted_labels
    edges = np.flatnonzero(np.diff(labels)) + 0.5
    centres = [(np.flatnonzero(labels == c).mean()) for c in np.unique(labels)]
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.8), gridspec_kw={"wspace": 0.12})
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
    plt.close(fig)


# ---- HTML -----------------------------------------------------------------------------

_CSS = """
:root { --ink:#1d232b; --muted:#5d6773; --rule:#dfe3e8; --accent:#1f4e9c; --bg:#ffffff; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font: 16px/1.55 "Source Sans 3","Source Sans Pro","Helvetica Neue",Arial,sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 40px 48px 64px; }
header { border-bottom: 1px solid var(--rule); padding-bottom: 18px; margin-bottom: 26px; }
.kicker { color: var(--accent); font-weight: 600; letter-spacing: .08em;
  text-transform: uppercase; font-size: 12.5px; }
h1 { font: 600 31px/1.25 Georgia,"Times New Roman",serif; margin: 6px 0 8px; }
.lede { color: var(--muted); font-size: 17px; margin: 0; max-width: 900px; }
h2 { font: 600 21px/1.3 Georgia,"Times New Roman",serif; margin: 38px 0 10px; }
.cards { display:grid; grid-template-columns: repeat(4, 1fr); gap: 14px; margin: 4px 0 8px; }
.card { border:1px solid var(--rule); border-radius:8px; padding: 12px 16px 10px; }
.card .v { font: 600 26px/1.2 Georgia,serif; }
.card .l { color: var(--muted); font-size: 13.5px; line-height:1.35; }
figure { margin: 14px 0 8px; }
figure img { width: 100%; display: block; }
figure.narrow img { max-width: 900px; }
figcaption { color: #333b45; font-size: 14.5px; margin-top: 8px; max-width: 1060px; }
figcaption b { color: var(--ink); }
table { border-collapse: collapse; font-size: 14px; margin: 8px 0;
  font-variant-numeric: tabular-nums; }
th, td { padding: 5px 12px; text-align: right; border-bottom: 1px solid var(--rule); }
th { font-weight: 600; color: var(--muted); font-size: 12.5px; border-bottom: 1.5px solid #aab;
  vertical-align: bottom; }
td:first-child, th:first-child { text-align: left; }
tr.ref td { color: #333b45; background: #f7f8fa; }
.note { color: var(--muted); font-size: 13.5px; max-width: 1000px; }
.cols { display:grid; grid-template-columns: 1fr 1fr; gap: 36px; }
.kv td { text-align:left; padding: 3px 14px 3px 0; }
.kv td:first-child { color: var(--muted); }
.nw { white-space: nowrap; }
code { white-space: nowrap; font-size: 13px;
  font-family: "JetBrains Mono","SFMono-Regular",Menlo,Consolas,monospace;
  background:#f3f5f7; padding: 1px 5px; border-radius: 4px; }
footer { margin-top: 40px; color: var(--muted); font-size: 13px;
  border-top: 1px solid var(--rule); padding-top: 12px; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _html(res: DemoResult, meta: dict[str, Any]) -> str:
    cfg = res.config
    s = res.summary()
    rows = res.by_width()
    slope, slope_tr = s["slope_test"], s["slope_train"]
    floor = float(np.mean([r["floor_test"] for r in rows]))
    arch = (f"{cfg.depth} hidden layer{'s' if cfg.depth != 1 else ''} · "
            f"{cfg.activation} · Dense(m, w<sub>std</sub>={cfg.w_std:.3g}, "
            f"b<sub>std</sub>={cfg.b_std:.3g}) · NTK parameterization")
    T = int(res.checkpoints[-1])
    w0, w1 = cfg.widths[0], cfg.widths[-1]
    g0, g1 = rows[0]["gap_test"], rows[-1]["gap_test"]

    table = ["<table><thead><tr><th>model</th><th>nets</th><th>test gap<br>RMS</th>"
             "<th>relative<br>test gap</th><th>train gap<br>RMS</th><th>train loss<br>at T</th>"
             "<th>test acc.<br>(network)</th><th>test acc.<br>(NTK from f₀)</th>"
             "<th>train time<br>(s)</th></tr></thead><tbody>"]
    for r in rows:
        table.append(
            f"<tr><td>width {r['width']}</td><td>{r['seeds']}</td><td>{r['gap_test']:.4f}</td>"
            f"<td>{r['rel_gap_test']:.1%}</td><td>{r['gap_train']:.4f}</td>"
            f"<td>{r['train_loss']:.4f}</td><td>{r['test_acc']:.1%}</td>"
            f"<td>{r['ntk_test_acc']:.1%}</td><td>{r['seconds']:.1f}</td></tr>")
    table.append(
        f"<tr class='ref'><td>NTK, infinite ensemble (f₀ = 0), t = {T}</td><td>∞</td>"
        f"<td colspan=4></td><td colspan=2 style='text-align:center'>"
        f"{res.ntk_mean_acc[-1]:.1%}</td><td></td></tr>"
        f"<tr class='ref'><td>NTK kernel regression, t = ∞</td><td>∞</td><td colspan=4></td>"
        f"<td colspan=2 style='text-align:center'>{res.ntk_inf_acc:.1%}</td><td></td></tr>"
        f"<tr class='ref'><td>NNGP posterior mean (Bayesian, t = ∞)</td><td>∞</td>"
        f"<td colspan=4></td><td colspan=2 style='text-align:center'>{res.nngp_acc:.1%}</td>"
        f"<td></td></tr></tbody></table>")

    config_rows = [
        ("data", f"scikit-learn digits, 8×8 images (d = 64), 10 classes; stratified split, "
                 f"{cfg.n_train} train / {cfg.n_test} test; standardized with train statistics"),
        ("targets", "centred one-hot, onehot(y) − 1/10; prediction = argmax"),
        ("architecture", arch),
        ("widths", ", ".join(str(m) for m in cfg.widths)),
        ("networks per width", ", ".join(f"{m}: {cfg.seeds_for(m)}" for m in cfg.widths)),
        ("loss", "½ · mean((f − y)²) over all n·10 outputs, full batch"),
        ("learning rate", f"η = {res.learning_rate:.4g} = {cfg.lr_fraction} · N / "
                          f"λ<sub>max</sub>(Θ), N = {cfg.n_train * 10}, "
                          f"λ<sub>max</sub> = {res.lambda_max:.4g}"),
        ("training", f"{cfg.steps} steps of gradient descent (t = steps)"),
        ("seed", cfg.seed),
        ("precision", "float64 throughout"),
    ]
    prov_rows = [
        ("ntkit", meta["ntkit"]), ("torch", meta["torch"]),
        ("scikit-learn", meta["sklearn"]), ("numpy", meta["numpy"]),
        ("python", meta["python"]), ("machine", meta["machine"]),
        ("started", meta["started"]),
        ("run time", f"{meta['total_seconds']:.1f} s (kernels {res.kernel_seconds:.2f} s, "
                     f"networks {sum(r['seconds'] for r in rows):.1f} s)"),
        ("command", f"<code>{_e(meta['command'])}</code>"),
    ]

    def kv(items):
        return ("<table class='kv'>" + "".join(
            f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in items) + "</table>")

    quick = (" <b>Quick smoke-test configuration:</b> small sizes, numbers are not "
             "meaningful." if cfg.quick else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ntkit demo · finite networks vs the NTK</title>
<style>{_CSS}</style></head>
<body><main>
<header>
  <div class="kicker">ntkit {_e(meta['ntkit'])} · demo report</div>
  <h1>Wide networks trained by gradient descent follow their neural tangent kernel</h1>
  <p class="lede">Networks of width {w0}–{w1}, built from one layer spec, trained on
  digits by full-batch gradient descent, and compared throughout training with the
  closed-form infinite-width prediction started from the same initial outputs. The distance
  shrinks as <b class="nw">m<sup>{_num(slope)}</sup></b>; theory predicts
  <span class="nw">m<sup>−1/2</sup></span>.{quick}</p>
</header>

<div class="cards">
  <div class="card"><div class="v">{_num(slope)}</div><div class="l">fitted slope of the
  test-output gap vs width (log–log); theory −0.5</div></div>
  <div class="card"><div class="v">{g0 / g1:.1f}×</div><div class="l">gap reduction from
  width {w0} ({g0:.3f}) to {w1} ({g1:.4f})</div></div>
  <div class="card"><div class="v">{res.ntk_inf_acc:.1%} · {res.nngp_acc:.1%}</div>
  <div class="l">test accuracy of NTK and NNGP kernel regression (t = ∞)</div></div>
  <div class="card"><div class="v">{meta['total_seconds']:.0f} s</div><div class="l">
  total run time, {len(res.runs)} networks trained ({_e(meta['machine_short'])})</div></div>
</div>

<h2>1 · Finite networks converge to the NTK prediction at rate m<sup>−1/2</sup></h2>
<figure><img src="{FIGURES['gap']}" alt="gap versus width">
<figcaption><b>(a)</b> Root-mean-square difference, at the final time t = {T}, between the
outputs of a trained width-m network and the NTK prediction
<code>gradient_descent_mse(Θ, y, η)(t, f₀)</code> started from that network's own initial
outputs f₀, on the {cfg.n_test} test images (blue; small dots are individual networks, large
dots their mean) and the {cfg.n_train} training images (orange). Least-squares fits in
log–log give slopes <b>{_num(slope)}</b> (test) and <b>{_num(slope_tr)}</b> (train); the
dotted line has the theoretical slope −1/2. The dashed line is the gap that would remain
even at infinite width because the networks take discrete steps and the prediction is
continuous-time ({floor:.1e}, measured with the exact linear recursion): it is far below
every measured gap, so the trend is a width effect. <b>(b)</b> Test outputs of the
narrowest and the widest network (first initialization) against their NTK predictions:
the cloud collapses onto the diagonal as width grows.</figcaption></figure>

{''.join(table)}
<p class="note">Gaps are RMS over test points × 10 outputs, averaged over the networks of a
width; the relative gap divides by the RMS change of the NTK prediction, |f_NTK(T) − f₀|.
Single networks keep their random initial function f₀ in their test outputs, which costs
accuracy; the NTK prediction from the same f₀ carries the same cost (column “NTK from f₀”),
while the infinite ensemble averages it away (grey rows).</p>

<h2>2 · Training dynamics: loss, gap, and accuracy over time</h2>
<figure><img src="{FIGURES['dynamics']}" alt="dynamics">
<figcaption><b>(a)</b> Training loss of one network per width (solid, colour = width) and of
the NTK prediction from its f₀ (dashed); black: the infinite-ensemble mean prediction
(f₀ = 0). <b>(b)</b> The test-output gap over training, averaged over the networks of each
width, and (grey dashed) the part of a gap that discrete time steps alone produce: the
exact linear recursion with the infinite-width kernel against the continuous-time closed
form. In the first few large steps this discretization gap is comparable to the width
effect of the widest networks; after t ≈ 20 it is negligible, and the gaps, ordered by
width at all times, are finite-width effects.
<b>(c)</b> Test accuracy over training time: finite networks (solid) track their NTK
predictions (dashed); black: NTK infinite ensemble; dotted: NTK at t = ∞; red dashed: NNGP
posterior mean. Time is in gradient-descent steps of size η = {res.learning_rate:.3g}; the
closed form uses the same time units, so curves line up step for step.</figcaption></figure>

<h2>3 · The kernels</h2>
<figure class="narrow"><img src="{FIGURES['kernel']}" alt="kernel matrices">
<figcaption>Infinite-width NTK Θ and NNGP K of the {cfg.n_train} training images, rows and
columns sorted by digit and normalized to unit diagonal (cosine similarity in the kernel's
feature space). Block structure along the diagonal is what lets kernel regression
classify: images of the same digit are more similar than images of different digits. The
NTK adds to the NNGP the contribution of the hidden layer's parameters, so the two matrices
look alike.</figcaption></figure>

<div class="cols">
<div><h2>Setup</h2>{kv([(k, v if isinstance(v, str) and '<' in v else _e(v))
                        for k, v in config_rows])}</div>
<div><h2>Provenance</h2>{kv(prov_rows)}
<p class="note">All numbers are in <code>results.json</code> next to this page.</p></div>
</div>
<footer>Generated by <code>ntkit demo</code>. Conventions follow neural-tangents: input
kernel x·x′/d, NTK parameterization, loss ½·mean((f − y)²), time in units of the learning
rate.</footer>
</main></body></html>
"""


def _metadata(res: DemoResult, command: str, started: float) -> dict[str, Any]:
    import sklearn
    import torch

    import ntkit

    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores"
    return dict(
        ntkit=ntkit.__version__, torch=torch.__version__, sklearn=sklearn.__version__,
        numpy=np.__version__, python=platform.python_version(), machine=machine,
        machine_short=f"{os.cpu_count()} CPU cores",
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        command=command, total_seconds=res.seconds,
    )


def check_target(out: Path) -> None:
    """Refuse to replace anything but an empty directory or a previous demo report."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise ReportExistsError(f"{out} exists and is not a directory")
    entries = list(out.iterdir())
    if not entries:
        return
    try:
        tag = json.loads((out / "results.json").read_text()).get("generator")
    except (OSError, ValueError, AttributeError):
        tag = None
    if tag != MARKER:
        raise ReportExistsError(f"{out} exists and is not an ntkit demo report; "
                                "choose another --out")


def write_report(res: DemoResult, out_dir: str | os.PathLike, *, command: str = "ntkit demo",
                 started: float | None = None) -> Path:
    """Write the report atomically; returns the path of ``index.html``.

    Raises:
      ReportExistsError: ``out_dir`` exists and is neither empty nor a previous report.
    """
    _style()
    import matplotlib.pyplot as plt

    out = Path(out_dir).absolute()
    check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time() - res.seconds if started is None else started
    meta = _metadata(res, command, started)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _fig_gap(res, tmp / FIGURES["gap"])
        _fig_dynamics(res, tmp / FIGURES["dynamics"])
        _fig_kernel(res, tmp / FIGURES["kernel"])
        summary = res.summary()
        summary.update(generator=MARKER, meta=meta, figures=FIGURES)
        (tmp / "results.json").write_text(json.dumps(summary, indent=2))
        (tmp / "index.html").write_text(_html(res, meta), encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        _swap_in(tmp, out)
    except BaseException:
        plt.close("all")
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out`` by the finished directory ``tmp`` with renames only."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(old)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)  # put the previous report back
        raise
    shutil.rmtree(old, ignore_errors=True)


def recomputed_slope(results_json: dict[str, Any]) -> float:
    """The log–log slope recomputed from the per-width gaps stored in results.json."""
    w = [r["width"] for r in results_json["widths"]]
    g = [r["gap_test"] for r in results_json["widths"]]
    return fit_power_law(w, g)[0]
