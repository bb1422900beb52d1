"""NTK positivity and the convergence of wide networks (Du, Zhai, Poczos &
Singh 2019, "Gradient descent provably optimizes over-parameterized neural networks";
Jacot, Gabriel & Hongler 2018, "Neural tangent kernel: convergence and generalization in
neural networks").

Three measurements.

1. **Positivity for non-polynomial activations.** For a non-polynomial σ and distinct,
   pairwise non-parallel unit-norm inputs, the features σ(w·x_α) are linearly independent
   in L²(N(0, I)) (a Hermite-expansion argument), so the infinite-width NTK Gram
   matrix is positive definite: λ_min > 0. Checked on the analytic NTK (`net.kernel`) of
   bias-free nets with one and two hidden layers, against the round-off floor of a
   symmetric eigensolver, c·n·ε·λ_max.

2. **Rank deficiency for polynomial activations.** For a bias-free one-hidden-layer net
   f(x) = n^{-1/2} Σ_j a_j σ(w_j·x) with σ a polynomial of degree p, every NTK feature is a
   polynomial in x of degree ≤ p: ∂f/∂a_j = σ(w_j·x) and ∂f/∂w_j = a_j σ'(w_j·x) x. On the
   unit sphere the polynomials of degree ≤ p form the space hom_p ⊕ hom_{p−1} (x ↦ ‖x‖² = 1
   folds lower degrees of equal parity into higher ones), of dimension

       dim hom_p + dim hom_{p−1} = C(p+d−1, p) + C(p+d−2, p−1).

   For σ = x^p both feature families are homogeneous of degree p (x_i (w·x)^{p−1} too),
   so the bound drops to dim hom_p = C(p+d−1, p). Two hidden layers of x^p make a
   homogeneous map of degree p², hence rank ≤ C(p²+d−1, p²). The kernel attains these
   bounds: it is Σ_j c_j (x·y)^j over the degrees j the features reach, with c_j > 0, and
   each (x·y)^j contains every spherical harmonic of degree j, j−2, … with positive weight.
   So λ_min = 0 exactly once n exceeds the bound; the experiment shows the spectrum vs n.

3. **Loss decay and a kernel that stays put (Du et al.).** For the loss
   L = (1/2N) ‖f − y‖² (N = number of targets, ntkit's 0.5·mean convention) and gradient
   flow in units of the step size η, the residual r = f − y obeys dr/dt = −(η/N) K_t r,
   so dL/dt = −(η/N²) rᵀ K_t r ≤ −(2η λ_min/N) L and

       L(t) ≤ L(0) exp(−2 η λ₀ t / N)   whenever K_t ⪰ λ₀ I along the path.

   (For discrete GD with a fixed kernel and η λ_max/N ≤ 1 the same bound holds, since
   ‖I − ηK/N‖ ≤ 1 − ηλ_min/N ≤ exp(−ηλ_min/N).) At late times the slowest mode dominates,
   so log L decays at the rate −2 log(1 − η λ_min/N) per step. The theorem needs K_t to
   stay near K_0: we measure ‖K_t − K_0‖/‖K_0‖ across widths (Du et al.'s argument bounds
   it by O(n^{-1/2}); perturbation theory of wide nets (Dyer & Gur-Ari 2019) predicts
   O(1/n), which is what is measured). Trained: bias-free one-hidden-layer erf nets
   (σ_w = 3) on random unit inputs with ±1 targets (see `_du_training` for why not ReLU).
"""

from __future__ import annotations

import math
from math import comb

import numpy as np
import torch
from torch import Tensor

from ntkit import layers as nl
from ntkit.empirical import empirical_ntk
from ntkit.lab.framework import Context, loglog_fit
from ntkit.lab.registry import experiment

F64 = torch.float64
EPS = float(torch.finfo(F64).eps)
#: eigenvalues below RANK_RTOL·λ_max count as zero in the numerical rank (far above the
#: round-off floor ~n·ε, far below the smallest nonzero eigenvalue of the kernels here).
RANK_RTOL = 1e-9


def unit_sphere(n: int, d: int, gen: torch.Generator) -> Tensor:
    """n points uniform on the unit sphere in R^d (distinct and non-parallel a.s.)."""
    x = torch.randn(n, d, generator=gen, dtype=F64)
    return x / x.norm(dim=1, keepdim=True)


def _net(act: nl.Activation, depth: int, width: int = 1, w_std: float = 1.0) -> nl.Layer:
    # Bias-free, as in Du et al. (and so that polynomial features stay homogeneous).
    layers: list[nl.Layer] = []
    for _ in range(depth):
        layers += [nl.Dense(width, w_std, 0.0), act]
    return nl.serial(*layers, nl.Dense(1, 1.0, 0.0))


def _eig_floor(n: int, lam_max: float) -> float:
    """Round-off floor of a symmetric eigensolver's eigenvalues: 10·n·ε·λ_max."""
    return 10.0 * n * EPS * lam_max


def polynomial_rank_bound(degree: int, d: int, homogeneous: bool) -> int:
    """dim of polynomials on S^{d−1} reached by the features (module docstring, part 2)."""
    hom_p = comb(degree + d - 1, degree)
    if homogeneous:
        return hom_p
    return hom_p + (comb(degree + d - 2, degree - 1) if degree >= 1 else 0)


@experiment("ntk_positivity",
            "λ_min of the NTK Gram: > 0 for non-polynomial activations, exact rank "
            "C(p+d−1,p)(+C(p+d−2,p−1)) for degree-p polynomials; Du et al.'s loss decay "
            "exp(−2ηλ_min t/N) with a kernel that stays near K_0")
def run(ctx: Context) -> str:
    """Positivity, polynomial rank bounds and the Du et al. convergence measurement."""
    return _run(ctx)


def _run(ctx: Context) -> str:
    # Rank bounds in d = 4 keep the feature-space dimensions small (10, 20, 30, 35). The
    # positivity sweep uses d = 6: analytic activations (Sin, Erf, ...) have spectra that
    # decay so fast in low dimension that, at n = 128 in R^4, λ_min of Sin falls below the
    # float64 round-off floor and positivity could no longer be decided numerically.
    d, d_pos = 4, 6
    ns = [8, 16, 24, 32, 48] if ctx.quick else [8, 16, 32, 48, 64, 96, 128]
    ctx.config.update(d_rank=d, d_positivity=d_pos, n_values=ns, rank_rtol=RANK_RTOL)
    n_max = max(ns)
    x_all = unit_sphere(n_max, d, ctx.rng("sphere"))
    x_pos = unit_sphere(n_max, d_pos, ctx.rng("sphere-positivity"))

    # ---- 1. non-polynomial activations: λ_min > 0 ------------------------------------
    nonpoly = [("ReLU", nl.ReLU(), math.sqrt(2.0)), ("Erf", nl.Erf(), 1.0),
               ("Tanh", nl.Tanh(), 1.0), ("GELU", nl.GELU(), 1.0), ("Sin", nl.Sin(), 1.0)]
    pos_rows = []
    spectra: dict[str, np.ndarray] = {}
    for name, act, w in ctx.progress(nonpoly, "non-polynomial"):
        for depth in (1, 2):
            for n in ns:
                k = _net(act, depth, w_std=w).kernel(x_pos[:n], get="ntk")
                ev = torch.linalg.eigvalsh(k)
                lam_min, lam_max = float(ev[0]), float(ev[-1])
                pos_rows.append({"activation": name, "depth": depth, "n": n,
                                 "lambda_min": lam_min, "lambda_max": lam_max,
                                 "floor": _eig_floor(n, lam_max),
                                 "rank": int((ev > RANK_RTOL * lam_max).sum())})
                if n == n_max and depth == 1:
                    spectra[name] = (ev / ev[-1]).flip(0).numpy()
    ctx.table("nonpolynomial_lambda_min", pos_rows)
    for name, _, _ in nonpoly:
        for depth in (1, 2):
            r = next(r for r in pos_rows if r["activation"] == name and r["depth"] == depth
                     and r["n"] == n_max)
            ctx.claim(f"{name}, {depth} hidden layer(s): λ_min of analytic NTK, n = {n_max}",
                      f"> {r['floor']:.2e} (eigensolver floor 10·n·ε·λ_max)", r["lambda_min"],
                      "λ_min > floor", holds=r["lambda_min"] > r["floor"],
                      note=f"{n_max} random unit inputs in R^{d_pos}; "
                           f"λ_max = {r['lambda_max']:.3g}. A theorem (non-polynomial σ, "
                           "distinct non-parallel inputs); "
                           "smooth σ have fast-decaying spectra, so λ_min/λ_max is small.")

    # ---- 2. polynomial activations: rank = dimension of the feature space ------------
    polys = [("x^2", nl.Monomial(2), 1, 2, True), ("x^3", nl.Monomial(3), 1, 3, True),
             ("0.3 + x + x²/2 + x³/6", nl.Polynomial([0.3, 1.0, 0.5, 1.0 / 6.0]), 1, 3, False),
             ("x^2, two layers", nl.Monomial(2), 2, 4, True)]
    n_ranks = sorted(set(ns) | {4, 12, 20, 28, 40})
    n_ranks = [n for n in n_ranks if n <= n_max]
    poly_rows = []
    for name, act, depth, degree, hom in ctx.progress(polys, "polynomial"):
        bound = polynomial_rank_bound(degree, d, hom)
        for n in n_ranks:
            k = _net(act, depth).kernel(x_all[:n], get="ntk")
            ev = torch.linalg.eigvalsh(k)
            rank = int((ev > RANK_RTOL * ev[-1]).sum())
            row = {"activation": name, "depth": depth, "n": n, "bound": bound,
                   "predicted_rank": min(n, bound), "rank": rank,
                   "lambda_min_rel": float(ev[0] / ev[-1])}
            if n > bound:
                # Gap between the last nonzero and the first zero eigenvalue: shows the
                # numerical rank is not an artefact of the threshold.
                desc = ev.flip(0)
                row["last_nonzero_rel"] = float(desc[bound - 1] / desc[0])
                row["first_zero_rel"] = float(desc[bound] / desc[0])
            poly_rows.append(row)
            if n == n_max:
                spectra[name] = (ev / ev[-1]).flip(0).abs().numpy()
    ctx.table("polynomial_rank", poly_rows)
    for name, _, _, degree, hom in polys:
        r = next(r for r in poly_rows if r["activation"] == name and r["n"] == n_max)
        ctx.claim(f"{name}: NTK rank at n = {n_max} (d = {d})", r["predicted_rank"], r["rank"],
                  0, note=f"bound {'C(p+d−1,p)' if hom else 'C(p+d−1,p)+C(p+d−2,p−1)'} with "
                          f"p = {degree}, d = {d}: {r['bound']}. Last nonzero eigenvalue "
                          f"{r.get('last_nonzero_rel', float('nan')):.2e}·λ_max, first zero "
                          f"{r.get('first_zero_rel', float('nan')):.2e}·λ_max.")
    mismatches = sum(r["rank"] != r["predicted_rank"] for r in poly_rows)
    ctx.claim("polynomial NTK ranks = min(n, bound) at every n", 0, mismatches, 0,
              note=f"{len(poly_rows)} (activation, n) pairs")

    # ---- 3. Du et al.: loss decay and kernel motion -----------------------------------
    du = _du_training(ctx)

    # ---- figures ------------------------------------------------------------------------
    fig, (ax1, ax2, ax3) = ctx.new_figure(3, 1, (5.4, 4.0))
    for name, s in spectra.items():
        ax1.semilogy(np.arange(1, len(s) + 1), np.maximum(s, 1e-18), ".-", ms=3, label=name)
    for _, _, _, degree, hom in polys:
        ax1.axvline(polynomial_rank_bound(degree, d, hom), color="gray", lw=0.6, ls=":")
    ax1.set_xlabel("eigenvalue index (descending)")
    ax1.set_ylabel("λ_i / λ_max (analytic NTK)")
    ax1.set_title(f"NTK spectra, n = {n_max} in R^{d} (dotted: rank bounds)", fontsize=10)
    ax1.legend(fontsize=7)
    for name, *_ in polys:
        rr = [r for r in poly_rows if r["activation"] == name]
        ax2.plot([r["n"] for r in rr], [r["rank"] for r in rr], "o-", ms=4, label=name)
    ax2.plot(n_ranks, n_ranks, "k:", label="rank = n (ReLU, Erf, ...)")
    ax2.set_xlabel("number of inputs n")
    ax2.set_ylabel("numerical rank of NTK Gram")
    ax2.set_title("polynomial σ: rank = dim of feature space", fontsize=10)
    ax2.legend(fontsize=7)
    for name, *_ in nonpoly:
        rr = [r for r in pos_rows if r["activation"] == name and r["depth"] == 1]
        ax3.semilogy([r["n"] for r in rr], [r["lambda_min"] / r["lambda_max"] for r in rr],
                     "o-", ms=4, label=name)
    rr = [r for r in pos_rows if r["activation"] == "ReLU" and r["depth"] == 1]
    ax3.semilogy([r["n"] for r in rr], [r["floor"] / r["lambda_max"] for r in rr], "k:",
                 label="round-off floor 10·n·ε")
    ax3.set_xlabel("number of inputs n")
    ax3.set_ylabel("λ_min / λ_max (1 hidden layer)")
    ax3.set_title(f"non-polynomial σ (R^{d_pos}): λ_min > 0 at every n", fontsize=10)
    ax3.legend(fontsize=7)
    ctx.savefig(fig, "spectra_and_rank")

    fig, (ax1, ax2) = ctx.new_figure(2, 1, (5.2, 4.0))
    for i, rec in enumerate(du["records"]):
        t = np.arange(len(rec["loss"]))
        ax1.semilogy(t, rec["loss"], color=f"C{i}", label=f"n = {rec['width']}")
        ax1.semilogy(t, rec["loss"][0] * np.exp(-2 * rec["lr"] * rec["lambda_path"] * t
                                                / du["N"]),
                     color=f"C{i}", ls=":", lw=1)
    ax1.set_xlabel("GD step t")
    ax1.set_ylabel("train loss 0.5·mean((f − y)²)")
    ax1.set_title("loss (solid) vs bound L(0)·exp(−2ηλ_min t/N) (dotted)")
    ax1.legend(fontsize=8)
    widths = [r["width"] for r in du["records"]]
    dk = [r["kernel_change"] for r in du["records"]]
    ax2.loglog(widths, dk, "o-", label="max_t ‖K_t − K_0‖_op / ‖K_0‖_op")
    ax2.loglog(widths, du["fit"](widths), "k:", label=f"fit: {du['fit'].label()}")
    ax2.set_xticks(widths, [str(w) for w in widths])
    ax2.minorticks_off()
    ax2.set_xlabel("hidden width n")
    ax2.set_ylabel("relative kernel change during training")
    ax2.set_title("the NTK stays near its initial value")
    ax2.legend(fontsize=8)
    ctx.savefig(fig, "du_convergence")

    relu_min = next(r["lambda_min"] for r in pos_rows
                    if r["activation"] == "ReLU" and r["depth"] == 1 and r["n"] == n_max)
    return (f"Analytic NTK on {n_max} unit inputs in R^{d_pos}: λ_min > 0 for all non-polynomial "
            f"activations (ReLU: {relu_min:.3g}); polynomial activations saturate at their "
            f"feature-space dimension ({mismatches} rank mismatches). Du et al.: the loss "
            f"stays under L(0)exp(−2ηλ_min t/N); the kernel moves by "
            f"{dk[-1]:.2g} (relative) at width {widths[-1]}, slope {du['fit'].slope:.2f} in "
            f"width.")


def _du_training(ctx: Context) -> dict:
    """Full-batch GD on wide one-hidden-layer erf nets; loss decay vs λ_min, kernel motion.

    A smooth activation, as the convergence argument assumes (|σ|, |σ'|, |σ''|
    bounded). With ReLU we measured that the kernel's prediction of one step, −(η/N) K_t r,
    is off by a relative amount that falls only like (step size)^0.8 instead of linearly
    (pre-activations sitting near the kink flip during the step), and at the step sizes
    used here each step contracted the residual up to ~15% less than predicted at width
    2048 (less at larger widths), so the bound could fail at moderate widths.
    w_std = 3 puts the pre-activations in erf's nonlinear range, which keeps the NTK's
    condition number (and hence the number of steps) moderate.
    """
    if ctx.quick:
        n, d, widths = 12, 10, [128, 512, 2048]
    else:
        n, d, widths = 20, 10, [256, 1024, 4096, 16384]
    act, spec_w = nl.Erf(), 3.0
    ctx.config.update(du_n=n, du_d=d, du_widths=widths, du_activation="Erf",
                      du_w_std=spec_w)
    x = unit_sphere(n, d, ctx.rng("du-inputs"))
    y = torch.where(torch.randn(n, 1, generator=ctx.rng("du-targets"), dtype=F64) > 0, 1.0, -1.0)
    k_inf = _net(act, 1, w_std=spec_w).kernel(x, get="ntk")
    lam_inf = float(torch.linalg.eigvalsh(k_inf)[0])
    N = y.numel()
    records = []
    for width in ctx.progress(widths, "Du et al. widths"):
        model = _net(act, 1, width, spec_w).build(d, seed=ctx.seed_for(f"du-{width}"))
        k0 = empirical_ntk(model, x)
        ev0 = torch.linalg.eigvalsh(k0)
        lam0, lam_max = float(ev0[0]), float(ev0[-1])
        # η λ_max / N = 1/2: inside the region where the discrete-GD bound holds, and small
        # enough that the O(η²) curvature term of a step (absent from gradient flow, which
        # the theorem is about) stays negligible.
        lr = 0.5 * N / lam_max
        steps = int(math.ceil(6 * N / (lr * lam0)))
        every = max(steps // 24, 1)
        params = list(model.parameters())
        losses, lam_path, dk = [], [lam0], [0.0]
        half = steps // 2
        r_half = torch.zeros(0)
        kt = k0
        k0_op = float(ev0[-1])
        for t in range(steps + 1):
            out = model(x)
            loss = 0.5 * (out - y).pow(2).mean()
            losses.append(float(loss.detach()))
            if t == half:
                r_half = (out - y).detach().reshape(-1)
            if t == steps:
                break
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p.sub_(lr * g)
            if (t + 1) % every == 0 or t + 1 == steps:
                kt = empirical_ntk(model, x)
                lam_path.append(float(torch.linalg.eigvalsh(kt)[0]))
                dk.append(float(torch.linalg.matrix_norm(kt - k0, ord=2)) / k0_op)
        loss_arr = np.array(losses)
        ts = np.arange(len(loss_arr))
        lam_lo = min(lam_path)
        bound = loss_arr[0] * np.exp(-2 * lr * lam_lo * ts / N)
        # Late-time decay rate per step: fit log L over the second half. Predicted: the
        # linear model with the final kernel K_T, started from the measured residual at
        # mid-training, r(t) = (I − ηK_T/N)^(t − t½) r(t½), fitted over the same steps. Its
        # rate tends to −2 log(1 − ηλ_min/N) from above as the faster modes die out.
        rate = -float(np.polyfit(ts[half:], np.log(loss_arr[half:]), 1)[0])
        ev_t, u_t = torch.linalg.eigh(kt)
        coef = (u_t.T @ r_half).pow(2).numpy()
        fac = (1 - lr * ev_t.numpy() / N) ** 2
        l_lin = np.array([(coef * fac ** (t - half)).sum() / (2 * N) for t in ts[half:]])
        rate_lin = -float(np.polyfit(ts[half:], np.log(l_lin), 1)[0])
        records.append({"width": width, "lr": lr, "steps": steps, "lambda_min_K0": lam0,
                        "lambda_max_K0": lam_max, "lambda_path": lam_lo,
                        "lambda_min_ratio": lam_lo / lam0,
                        "bound_ratio_max": float(np.max(loss_arr / bound)),
                        "late_rate": rate,
                        "lambda_min_KT": lam_path[-1],
                        "predicted_rate": rate_lin,
                        "asymptotic_rate": -2 * math.log1p(-lr * lam_path[-1] / N),
                        "kernel_change": max(dk), "final_loss_ratio": loss_arr[-1] / loss_arr[0],
                        "loss": loss_arr})
    ctx.table("du_training", [{k: v for k, v in r.items() if k != "loss"} for r in records])
    wide = records[-1]
    fit = loglog_fit(widths, [r["kernel_change"] for r in records])
    ctx.claim(f"loss ≤ L(0)·exp(−2ηλ_min t/N) at every step (width {wide['width']})",
              "≤ 1", wide["bound_ratio_max"], "max_t L(t)/bound(t) ≤ 1",
              holds=wide["bound_ratio_max"] <= 1 + 1e-9,
              note="λ_min = min over checkpoints of λ_min(K_t) (Du et al.'s λ₀). "
                   "Ratios at all widths: "
                   + ", ".join(f"{r['bound_ratio_max']:.3g}" for r in records))
    ctx.claim("late-time decay rate of log L = the kernel model's (K_T, from r(T/2))",
              wide["predicted_rate"], wide["late_rate"], 0.1 * wide["predicted_rate"],
              note="per-step rates fitted over the second half of training; the prediction "
                   "tends to the slowest-mode rate −2 log(1 − ηλ_min/N) = "
                   f"{wide['asymptotic_rate']:.4g} from above. 10% covers the drift of the "
                   "kernel within the window. Measured/predicted/asymptotic at all widths: "
                   + ", ".join(f"{r['late_rate']:.3g}/{r['predicted_rate']:.3g}/"
                               f"{r['asymptotic_rate']:.3g}" for r in records))
    ctx.claim("λ_min(K_t) ≥ λ_min(K_0)/2 along training (Du et al.'s condition, widest)",
              "≥ 0.5", wide["lambda_min_ratio"], "≥ 0.5", holds=wide["lambda_min_ratio"] >= 0.5)
    ctx.claim("empirical λ_min(K_0) at the widest net ≈ analytic λ_min", lam_inf,
              wide["lambda_min_K0"], 0.1 * lam_inf,
              note="concentration of the finite-width NTK at initialization (10% tolerance)")
    ctx.claim("relative kernel change during training vs width: log-log slope", -1.0, fit.slope,
              0.25, note=f"{fit.label()}; Du et al.'s proof only needs O(n^-1/2); the first "
                         "correction of wide-net perturbation theory is O(1/n) (Dyer & "
                         "Gur-Ari 2019)")
    return {"records": records, "fit": fit, "N": N, "lambda_inf": lam_inf}
