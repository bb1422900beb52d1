"""hessian_spectrum: outliers and bulk of a trained classifier's loss Hessian (notes 003,
lecture 10/3 "Loss Hessian"; Sagun et al. 2017, Papyan 2019/2020, Ghorbani et al. 2019).

A small MLP is trained on all 10 digit classes (MSE on one-hot targets) until it fits the
training set. Its loss Hessian H is measured at initialization and after training, three ways:
- the exact P × P matrix (P HVPs, `ntkit.curvature.hessian_matrix`) and `eigvalsh`: truth;
- the top eigenvalues by Lanczos (`hessian_top_eigenvalues`);
- the density by stochastic Lanczos quadrature (`hessian_spectral_density`);
and split as H = G + R, G = JᵀAJ the Gauss–Newton part (`gauss_newton`).

Predictions: about C = 10 outliers separated from a bulk; the outliers are G's (class
structure of the output Jacobian), R is small at a well-fit point; the bulk sits near 0.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ntkit.curvature import (
    gauss_newton,
    hessian_matrix,
    hessian_spectral_density,
    hessian_top_eigenvalues,
    module_loss,
)
from ntkit.lab.framework import Context, digits_subset
from ntkit.lab.registry import experiment


def _subspace_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared cosine of the principal angles between span(a) and span(b) (columns)."""
    qa, _ = torch.linalg.qr(a)
    qb, _ = torch.linalg.qr(b)
    return float((torch.linalg.svdvals(qa.T @ qb) ** 2).mean())


def _analyze(ctx: Context, cfg: dict, model: nn.Module, x, y, labels, tag: str) -> dict:
    """Exact spectrum, Lanczos, SLQ and Gauss–Newton of the model's loss Hessian; claims."""
    c = 10
    k = 3 * c
    with torch.no_grad():
        out = model(x)
        train_loss = float(0.5 * ((out - y) ** 2).mean())
        train_acc = float((out.argmax(1) == labels).double().mean())
    loss_fn, params = module_loss(model, x, y, "mse")
    p = sum(t.numel() for t in params.values())
    h = hessian_matrix(loss_fn, params)
    ev, vecs = torch.linalg.eigh(h)
    ev, vecs = ev.flip(0), vecs.flip(1)
    top = hessian_top_eigenvalues(loss_fn, params, k=c + 2, tol=0)
    gn = gauss_newton(model, x, "mse", form_matrix=True)
    g_ev, g_vecs = torch.linalg.eigh(gn.matrix)
    g_ev, g_vecs = g_ev.flip(0), g_vecs.flip(1)
    sd = hessian_spectral_density(loss_fn, params, n_probes=cfg["n_probes"],
                                  n_steps=cfg["n_steps"], seed=ctx.seed_for("slq") % (2 ** 31))
    ctx.table(f"top_eigenvalues_{tag}", {"rank": list(range(1, k + 1)), "hessian": ev[:k],
                                         "gauss_newton": g_ev[:k]})
    ctx.table(f"density_{tag}", {"grid": sd.grid, "density": sd.density})
    top_k = ev[:k + 1].clamp_min(1e-300)
    ratios = (top_k[:-1] / top_k[1:]).numpy()
    n_out = int(np.argmax(ratios)) + 1
    g_rel = float(((g_ev[:c] - ev[:c]).abs() / ev[:c]).max())
    overlap = _subspace_overlap(vecs[:, :c], g_vecs[:, :c])
    r_norm = float(torch.linalg.matrix_norm(h - gn.matrix, 2))
    thr = cfg["bulk_fraction_of_max"] * float(ev[0])
    frac_exact = float((ev.abs() <= thr).double().mean())
    th = torch.nan_to_num(sd.nodes, nan=0.0)
    slq_moments = {}
    for kpow in (1, 2):        # Gauss quadrature is exact for these: unbiased Hutchinson terms
        per_probe = (th ** kpow * sd.weights).sum(1)
        exact = float((ev ** kpow).mean())
        slq_moments[kpow] = (exact, float(per_probe.mean()),
                             float(per_probe.std() / np.sqrt(per_probe.numel())))
    frac_slq = float(((th.abs() <= thr).double() * sd.weights).sum(1).mean())
    se = slq_moments[1][2]
    return {"tag": tag, "p": p, "ev": ev, "g_ev": g_ev, "top": top, "sd": sd, "ratios": ratios,
            "n_out": n_out, "g_rel": g_rel, "overlap": overlap, "r_norm": r_norm,
            "frac_exact": frac_exact, "frac_slq": frac_slq, "se": se, "thr": thr,
            "slq_moments": slq_moments,
            "train_loss": train_loss, "train_acc": train_acc,
            "lanczos_rel": float(((top - ev[:c + 2]).abs() / ev[:c + 2].abs()).max())}


def _claims(ctx: Context, cfg: dict, r: dict) -> None:
    c, tag, ev = 10, r["tag"], r["ev"]
    ctx.claim(f"[{tag}] Lanczos top-12 eigenvalues vs exact eigvalsh (max relative error)", 0.0,
              r["lanczos_rel"], 1e-8, note=f"P = {r['p']}; both exact in float64: round-off")
    n_out = r["n_out"]
    ctx.claim(f"[{tag}] number of outliers (largest eigenvalue ratio gap among the top 3C)",
              float(c), float(n_out), 1.0,
              note=f"gap λ_{n_out}/λ_{n_out + 1} = {r['ratios'][n_out - 1]:.3g}, and "
                   f"λ_{c}/λ_{c + 1} = {r['ratios'][c - 1]:.3g}. Papyan (2019, 2020): C "
                   "outliers for MSE with C outputs (C − 1 for cross-entropy); ±1 for that "
                   f"ambiguity. Train loss {r['train_loss']:.3g}, accuracy {r['train_acc']:.3f}")
    ctx.claim(f"[{tag}] top-C eigenvalues of G vs of H (max relative difference)", 0.0,
              r["g_rel"], 0.05,
              note=f"‖H − G‖₂ = {r['r_norm']:.3g} vs λ_C(H) = {float(ev[c - 1]):.3g}: by Weyl "
                   "the eigenvalues move by at most ‖H − G‖₂; 5% = 'the outliers are G's'")
    ctx.claim(f"[{tag}] overlap of the top-C eigenspaces of H and G (mean cos² of principal "
              "angles)", "≥ 0.9", r["overlap"], "one-sided", holds=bool(r["overlap"] >= 0.9),
              note="the outlier directions themselves are G's (Davis–Kahan: close when "
                   "‖H − G‖₂ is small against the eigengaps)")
    ctx.claim(f"[{tag}] fraction of eigenvalues with |λ| ≤ {cfg['bulk_fraction_of_max']:g}·λ_max "
              "(exact)", "≥ 0.9", r["frac_exact"], "one-sided", holds=bool(r["frac_exact"] >= 0.9),
              note="the bulk concentrates near 0 (Sagun et al. 2017: most of the spectrum sits "
                   "at ~0 in an over-parameterized net)")
    for kpow, (exact, est, se) in r["slq_moments"].items():
        ctx.claim(f"[{tag}] SLQ moment (1/P) tr H^{kpow} vs exact", exact, est, 4 * se,
                  note=f"{cfg['n_probes']} Rademacher probes, {cfg['n_steps']} Lanczos steps: "
                       "the quadrature is exact for polynomials, so the estimate is Hutchinson's "
                       f"(unbiased); tolerance 4 standard errors ({se:.2g}). SLQ's own bulk "
                       f"fraction: {r['frac_slq']:.3f} (a discontinuous function, so only "
                       "approximate)")


@experiment("hessian_spectrum",
            "Trained 10-class MLP: ~C Hessian outliers from the Gauss–Newton part, bulk near "
            "0; Lanczos/SLQ against the exact Hessian")
def hessian_spectrum(ctx: Context) -> str:
    if ctx.quick:
        cfg = {"n_train": 50, "width": 12, "steps": 1500, "lr": 0.01, "n_probes": 8,
               "n_steps": 60, "bulk_fraction_of_max": 0.01}
    else:
        cfg = {"n_train": 200, "width": 20, "steps": 3000, "lr": 0.01, "n_probes": 16,
               "n_steps": 100, "bulk_fraction_of_max": 0.01}
    ctx.config.update(cfg)
    c = 10
    x, labels = digits_subset(cfg["n_train"], ctx.seed_for("data"), norm="unit")
    x = 3.0 * x
    y = torch.nn.functional.one_hot(labels, c).to(x.dtype)
    torch.manual_seed(ctx.seed_for("model") % (2 ** 31))
    w = cfg["width"]
    model = nn.Sequential(nn.Linear(64, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(),
                          nn.Linear(w, c)).double()
    init = _analyze(ctx, cfg, model, x, y, labels, "init")
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    for _ in range(cfg["steps"]):
        opt.zero_grad()
        loss = 0.5 * ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    trained = _analyze(ctx, cfg, model, x, y, labels, "trained")
    ctx.config.update({"n_params": trained["p"], "train_loss": trained["train_loss"],
                       "train_accuracy": trained["train_acc"]})
    _claims(ctx, cfg, init)
    _claims(ctx, cfg, trained)
    k = 3 * c
    r = trained
    ev, g_ev, top, sd, p = r["ev"], r["g_ev"], r["top"], r["sd"], r["p"]

    # figures
    fig, (a1, a2) = ctx.new_figure(ncols=2)
    a1.semilogy(np.arange(1, k + 1), init["ev"][:k].clamp_min(1e-12), "s", mfc="none",
                color="0.6", label="H at init (exact)")
    a1.semilogy(np.arange(1, k + 1), ev[:k].clamp_min(1e-12), "o", label="H trained (exact)")
    a1.semilogy(np.arange(1, k + 1), g_ev[:k].clamp_min(1e-12), "x", label="G (Gauss–Newton)")
    a1.semilogy(np.arange(1, c + 3), top, ".", color="k", label="Lanczos")
    a1.axvline(c + 0.5, color="0.5", ls=":", label=f"C = {c}")
    a1.set_xlabel("rank")
    a1.set_ylabel("eigenvalue")
    a1.set_title("top of the spectrum")
    a1.legend(fontsize=7)
    a1.grid(True, which="both", alpha=0.3)
    a2.semilogy(sd.grid, sd.density.clamp_min(1e-8), "-", label="SLQ density")
    hist, edges = np.histogram(ev.numpy(), bins=80, density=True)
    a2.semilogy(0.5 * (edges[1:] + edges[:-1]), np.maximum(hist, 1e-8), "k.", ms=3,
                label="exact eigenvalue histogram")
    a2.set_xlabel("eigenvalue")
    a2.set_ylabel("density")
    a2.set_title(f"spectral density (P = {p})")
    a2.legend(fontsize=7)
    a2.grid(True, alpha=0.3)
    ctx.savefig(fig, "spectrum")

    return "; ".join(
        f"{q['tag']}: P = {q['p']}, train acc {q['train_acc']:.3f}, {q['n_out']} outliers "
        f"(gap ×{q['ratios'][q['n_out'] - 1]:.3g}), top-{c} of G within {q['g_rel']:.2g} of H, "
        f"{q['frac_exact']:.3f} of eigenvalues within {cfg['bulk_fraction_of_max']:g}·λ_max "
        f"of 0 (SLQ {q['frac_slq']:.3f})" for q in (init, trained)) + "."
