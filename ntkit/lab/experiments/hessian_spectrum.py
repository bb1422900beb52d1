"""hessian_spectrum: outliers and bulk of a trained classifier's loss Hessian (Papyan 2019,
"Measurements of three-level hierarchical structure in the outliers in the spectrum of
deepnet Hessians"; Papyan 2020, "Traces of class/cross-class structure pervade deep learning
spectra"; Sagun et al. 2017, "Empirical analysis of the Hessian of over-parametrized neural
networks").

A ReLU MLP with P ≫ nC parameters is trained on the 10 digit classes (MSE on one-hot
targets, ½·mean over all n·C entries) to a near-zero loss. At that well-trained point its
loss Hessian H is measured three ways:
- the exact P × P matrix (P HVPs, `ntkit.curvature.hessian_matrix`) and `eigvalsh`: truth;
- the top eigenvalues by Lanczos (`hessian_top_eigenvalues`);
- the density by stochastic Lanczos quadrature (`hessian_spectral_density`);
and split as H = G + R, G = JᵀAJ the Gauss–Newton part (`gauss_newton`), R = Σ_o (∂ℓ/∂f_o)
∇²f_o the residual term.

Why C outliers (MSE). The loss is quadratic in the last layer W (C × p), so that block of H
is exactly G's: I_C ⊗ Σ̃/C with Σ̃ = (1/n) Σ_i h̃_i h̃_iᵀ the second moment of the last
features (with a 1 for the bias). Its eigenvalues come in groups of C, one group per
eigen-direction of Σ̃: the global feature mean gives the top group (C outliers), the C − 1
between-class directions the next C(C − 1) "mid-level" eigenvalues, within-class spread the
bulk. Papyan (2019, 2020) finds the same hierarchy in the whole network's G: C top outliers
(C − 1 for cross-entropy) separated from the C(C − 1) mid-level and the bulk, so the gap is
searched among the top C² + C eigenvalues, not only near C.

Why only at the trained point. R is weighted by the residuals f − y, which are O(1) at
initialization, so "G ≈ H" is a statement about a well-fit point; at init the experiment
only records ‖H − G‖₂ (no claim). The bulk claim is a rank statement (rank G ≤ nC), so it
is made only where P ≫ nC.
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

_C = 10
_PAPYAN = ("Papyan 2019, 'Measurements of three-level hierarchical structure in the outliers "
           "in the spectrum of deepnet Hessians'; Papyan 2020, 'Traces of class/cross-class "
           "structure pervade deep learning spectra'")


def _subspace_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared cosine of the principal angles between span(a) and span(b) (columns)."""
    qa, _ = torch.linalg.qr(a)
    qb, _ = torch.linalg.qr(b)
    return float((torch.linalg.svdvals(qa.T @ qb) ** 2).mean())


def _sym_norm(a: torch.Tensor) -> float:
    """Spectral norm of a symmetric matrix by ARPACK (largest |eigenvalue|), not a full SVD."""
    from scipy.sparse.linalg import eigsh

    a = a.numpy()
    return float(abs(eigsh(0.5 * (a + a.T), k=1, which="LM", tol=1e-10,
                           v0=np.ones(a.shape[0]))[0][0]))


def _last_layer_block_error(model: nn.Sequential, x, h: torch.Tensor) -> float:
    """max |H_WW − I_C ⊗ Σ̃/C| / max |H_WW| for the last layer's (weight, bias) block.

    Parameters are flattened as (weight row-major, then bias), so for output c the weight
    entries are c·p … c·p + p − 1 and the bias entry C·p + c.
    """
    body = model[:-1]
    feats = body(x).detach()
    n, p = feats.shape
    ht = torch.cat([feats, torch.ones(n, 1)], dim=1)
    sig = ht.T @ ht / n
    expected = torch.kron(torch.eye(_C), sig) / _C          # order (c, [w_c1..w_cp, b_c])
    perm = [c * p + j for c in range(_C) for j in range(p)]
    order = []
    for c in range(_C):
        order += perm[c * p:(c + 1) * p] + [_C * p + c]
    # the last-layer block of H, from the full matrix (its last C·p + C rows/columns)
    k = _C * p + _C
    block = h[-k:, -k:][order][:, order]
    return float((block - expected).abs().max() / expected.abs().max())


@experiment("hessian_spectrum",
            "Trained 10-class MLP (P ≫ nC): C Hessian outliers among the top C² + C, from the "
            "Gauss–Newton part, bulk near 0 by rank; Lanczos/SLQ against the exact Hessian")
def hessian_spectrum(ctx: Context) -> str:
    if ctx.quick:
        cfg = {"n_train": 30, "width": 32, "steps": 2000, "lr": 0.01, "n_probes": 8,
               "n_steps": 60, "bulk_fraction_of_max": 0.01}
    else:
        cfg = {"n_train": 60, "width": 64, "steps": 3000, "lr": 0.01, "n_probes": 16,
               "n_steps": 100, "bulk_fraction_of_max": 0.01}
    ctx.config.update(cfg)
    c = _C
    k_search = c * c + c
    x, labels = digits_subset(cfg["n_train"], ctx.seed_for("data"), norm="sphere")
    n = x.shape[0]
    y = torch.nn.functional.one_hot(labels, c).to(x.dtype)
    torch.manual_seed(ctx.seed_for("model") % (2 ** 31))
    w = cfg["width"]
    model = nn.Sequential(nn.Linear(64, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                          nn.Linear(w, c)).double()

    # at init: Lanczos top of H and G's top, only recorded (R = O(1) there)
    loss_fn, params = module_loss(model, x, y, "mse")
    p = sum(t.numel() for t in params.values())
    init_top = hessian_top_eigenvalues(loss_fn, params, k=c + 2, tol=0)
    init_g = gauss_newton(model, x, "mse", k=c + 2).eigenvalues
    init_rel = float(((init_g[:c] - init_top[:c]).abs() / init_top[:c].abs()).max())
    ctx.table("top_eigenvalues_init", {"rank": list(range(1, c + 3)), "hessian": init_top,
                                       "gauss_newton": init_g})

    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    for _ in ctx.progress(range(cfg["steps"]), "train"):
        opt.zero_grad()
        loss = 0.5 * ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = model(x)
        train_loss = float(0.5 * ((out - y) ** 2).mean())
        train_acc = float((out.argmax(1) == labels).double().mean())
    ctx.config.update({"n_params": p, "n_outputs_total": n * c, "train_loss": train_loss,
                       "train_accuracy": train_acc})

    loss_fn, params = module_loss(model, x, y, "mse")
    h = hessian_matrix(loss_fn, params)
    ev, vecs = torch.linalg.eigh(h)
    ev, vecs = ev.flip(0), vecs.flip(1)
    top = hessian_top_eigenvalues(loss_fn, params, k=c + 2, tol=0)
    gn = gauss_newton(model, x, "mse")
    # G = Jᵀ J/(nC) for this loss: its eigenpairs from the SVD of the (nC × P) Jacobian, far
    # cheaper than a second P × P eigendecomposition
    _, sv, g_vt = torch.linalg.svd(gn.jacobian, full_matrices=False)
    g_ev = torch.cat([sv ** 2 / (n * c), torch.zeros(max(p - sv.numel(), 0))])
    g_vecs = g_vt[:c].T
    sd = hessian_spectral_density(loss_fn, params, n_probes=cfg["n_probes"],
                                  n_steps=cfg["n_steps"], seed=ctx.seed_for("slq") % (2 ** 31))
    ctx.table("top_eigenvalues_trained", {"rank": list(range(1, k_search + 1)),
                                          "hessian": ev[:k_search],
                                          "gauss_newton": g_ev[:k_search]})
    ctx.table("density_trained", {"grid": sd.grid, "density": sd.density})

    lanczos_rel = float(((top - ev[:c + 2]).abs() / ev[:c + 2].abs()).max())
    ctx.claim("Lanczos top-12 eigenvalues vs exact eigvalsh (max relative error)", 0.0,
              lanczos_rel, 1e-8, note=f"P = {p}; both exact in float64: round-off")
    block_err = _last_layer_block_error(model, x, h)
    ctx.claim("last-layer block of H vs I_C ⊗ Σ̃/C (max relative entry error)", 0.0,
              block_err, 1e-10,
              note="the MSE loss is quadratic in the last layer, so its Hessian block is "
                   "exactly (1/(nC)) Σ_i I_C ⊗ h̃_i h̃_iᵀ: eigenvalues in groups of C, one "
                   f"group per eigen-direction of the feature second moment ({_PAPYAN}); "
                   "round-off")
    top_k = ev[:k_search + 1].clamp_min(1e-300)
    ratios = (top_k[:-1] / top_k[1:]).numpy()
    n_out = int(np.argmax(ratios)) + 1
    ctx.claim(f"number of outliers: largest eigenvalue-ratio gap among the top C² + C = "
              f"{k_search}", float(c), float(n_out), 0.0,
              note=f"gap λ_{n_out}/λ_{n_out + 1} = {ratios[n_out - 1]:.3g}; λ_C/λ_(C+1) = "
                   f"{ratios[c - 1]:.3g}, λ_C²/λ_(C²+1) = {ratios[c * c - 1]:.3g} (the mid-level "
                   f"edge). {_PAPYAN}: C outliers for MSE (C − 1 for cross-entropy) at a "
                   f"well-trained point of a net with P ≫ nC. Train loss {train_loss:.3g}, "
                   f"accuracy {train_acc:.3f}")
    g_rel = float(((g_ev[:c] - ev[:c]).abs() / ev[:c]).max())
    r_norm = _sym_norm(h - gn.jacobian.T @ gn.jacobian / (n * c))
    ctx.claim("top-C eigenvalues of G vs of H at the trained point (max relative difference)",
              0.0, g_rel, 0.05,
              note=f"‖H − G‖₂ = ‖R‖₂ = {r_norm:.3g} vs λ_C(H) = {float(ev[c - 1]):.3g}: by Weyl "
                   "the eigenvalues move by at most ‖R‖₂, which is weighted by the residuals "
                   f"(train loss {train_loss:.2g}); 5% = 'the outliers are G's' ({_PAPYAN}). At "
                   f"init (residuals O(1)) the same difference is {init_rel:.3g}, recorded only")
    overlap = _subspace_overlap(vecs[:, :c], g_vecs[:, :c])
    ctx.claim("overlap of the top-C eigenspaces of H and G (mean cos² of principal angles)",
              "≥ 0.9", overlap, "one-sided", holds=bool(overlap >= 0.9),
              note="the outlier directions themselves are G's (Davis & Kahan 1970, 'The "
                   "rotation of eigenvectors by a perturbation. III': close when ‖R‖₂ is "
                   "small against the eigengap λ_C − λ_(C+1))")
    thr = cfg["bulk_fraction_of_max"] * float(ev[0])
    frac_exact = float((ev.abs() <= thr).double().mean())
    bound = 1.0 - n * c / p
    ctx.claim(f"fraction of eigenvalues with |λ| ≤ {cfg['bulk_fraction_of_max']:g}·λ_max "
              f"(P/nC = {p / (n * c):.1f})", f"≥ 1 − nC/P = {bound:.4f}", frac_exact,
              "one-sided", holds=bool(frac_exact >= bound),
              note=f"rank G ≤ nC = {n * c}, so by Weyl at most nC eigenvalues of H = G + R "
                   f"exceed ‖R‖₂ = {r_norm:.3g} (threshold {thr:.3g}): the bulk at 0 is a "
                   "consequence of P ≫ nC at a well-fit point (Sagun et al. 2017, 'Empirical "
                   "analysis of the Hessian of over-parametrized neural networks')")
    th = torch.nan_to_num(sd.nodes, nan=0.0)
    for kpow in (1, 2):        # Gauss quadrature is exact for these: unbiased Hutchinson terms
        per_probe = (th ** kpow * sd.weights).sum(1)
        exact = float((ev ** kpow).mean())
        se = float(per_probe.std() / np.sqrt(per_probe.numel()))
        ctx.claim(f"SLQ moment (1/P) tr H^{kpow} vs exact", exact, float(per_probe.mean()),
                  4 * se,
                  note=f"{cfg['n_probes']} Rademacher probes, {cfg['n_steps']} Lanczos steps: "
                       "the quadrature is exact for polynomials, so the estimate is "
                       "Hutchinson's (unbiased; Ubaru, Chen & Saad 2017, 'Fast estimation of "
                       "tr(f(A)) via stochastic Lanczos quadrature'); tolerance 4 standard "
                       f"errors ({se:.2g})")

    fig, (a1, a2) = ctx.new_figure(ncols=2)
    ranks = np.arange(1, k_search + 1)
    a1.semilogy(np.arange(1, c + 3), init_top.clamp_min(1e-12), "s", mfc="none", color="0.6",
                label="H at init (Lanczos)")
    a1.semilogy(ranks, ev[:k_search].clamp_min(1e-12), "o", ms=3, label="H trained (exact)")
    a1.semilogy(ranks, g_ev[:k_search].clamp_min(1e-12), "x", ms=3, label="G (Gauss–Newton)")
    a1.semilogy(np.arange(1, c + 3), top, ".", color="k", label="Lanczos")
    a1.axvline(c + 0.5, color="0.5", ls=":", label=f"C = {c}")
    a1.axvline(c * c + 0.5, color="0.5", ls="--", label=f"C² = {c * c}")
    a1.set_xlabel("rank")
    a1.set_ylabel("eigenvalue")
    a1.set_title("top C² + C of the spectrum")
    a1.legend(fontsize=7)
    a1.grid(True, which="both", alpha=0.3)
    a2.semilogy(sd.grid, sd.density.clamp_min(1e-8), "-", label="SLQ density")
    hist, edges = np.histogram(ev.numpy(), bins=80, density=True)
    a2.semilogy(0.5 * (edges[1:] + edges[:-1]), np.maximum(hist, 1e-8), "k.", ms=3,
                label="exact eigenvalue histogram")
    a2.set_xlabel("eigenvalue")
    a2.set_ylabel("density")
    a2.set_title(f"spectral density (P = {p}, nC = {n * c})")
    a2.legend(fontsize=7)
    a2.grid(True, alpha=0.3)
    ctx.savefig(fig, "spectrum")

    return (f"P = {p}, nC = {n * c}; trained to loss {train_loss:.3g} (accuracy "
            f"{train_acc:.3f}): largest gap among the top {k_search} after rank {n_out} "
            f"(×{ratios[n_out - 1]:.3g}); top-{c} of G within {g_rel:.2g} of H (at init "
            f"{init_rel:.2g}); {frac_exact:.3f} of eigenvalues within "
            f"{cfg['bulk_fraction_of_max']:g}·λ_max of 0 (rank bound {bound:.3f}).")
