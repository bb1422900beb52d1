"""lazy_training: the α-scaling of Chizat, Oyallon & Bach 2019, "On lazy training in
differentiable programming".

For a network f(θ; x) at initialization θ0 define the rescaled model and risk

    h_α(θ) = α·(f(θ) − f(θ0)),     R_α(θ) = R(h_α(θ)) / α²,   R(h) = 0.5·mean((h − y)²),

and train θ by gradient descent with small steps (a discretized gradient flow,
θ' = −∇R_α(θ)). Its linearization uses f_lin(θ) = f(θ0) + J0(θ − θ0), J0 the Jacobian at
θ0, trained the same way. In function space dh/dt = −Θ_θ(h − y)/n whatever α is (α only
sets how far θ must move to change h), so a step size fixed by the NTK at θ0 serves all α.
Chizat, Oyallon & Bach (2019) show, over a finite horizon [0, T]:

    sup_t ‖θ_α(t) − θ0‖            = O(1/α)     (1)
    sup_t ‖θ_α(t) − θ_lin(t)‖      = O(1/α²)    (2)
    sup_t ‖h_α(t) − h_lin(t)‖      = O(1/α)     (the function-space version)

We fit the three log-log slopes over the large-α end (−1, −2, −1), and contrast with small
α, where the tangent kernel and the hidden representation change by O(1) during training
(feature learning) instead of O(1/α).

The linearized trajectory is iterated exactly with the explicit Jacobian J0 (n × P, from
``torch.func.jacrev``); J0J0ᵀ is checked against `ntkit.empirical.empirical_ntk`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.func import functional_call, jacrev

from ntkit import layers as nl
from ntkit.empirical import empirical_ntk
from ntkit.lab.framework import Context, digits_subset, loglog_fit
from ntkit.lab.registry import experiment


def _spec(width: int):
    return nl.serial(nl.Dense(width, w_std=1.5, b_std=0.1), nl.Tanh(),
                     nl.Dense(1, w_std=1.0, b_std=0.1))


def _flat(params: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([params[k].reshape(-1) for k in names])


def _jacobian(model, params: dict[str, torch.Tensor], names: list[str],
              x: torch.Tensor) -> torch.Tensor:
    def f(p):
        return functional_call(model, p, (x,)).reshape(-1)

    jac = jacrev(f)({k: v.detach() for k, v in params.items()})
    return torch.cat([jac[k].reshape(x.shape[0], -1) for k in names], dim=1)


@torch.no_grad()
def _features(model, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Hidden representation φ(W1 x + b1) (everything but the readout layer)."""
    h = x
    for i, layer in enumerate(model.layers[:-1]):
        local = {k.split(".", 2)[2]: v for k, v in params.items()
                 if k.startswith(f"layers.{i}.")}
        h = functional_call(layer, local, (h,)) if local else layer(h)
    return h


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def _train_alpha(model, theta0: dict[str, torch.Tensor], names: list[str], j0: torch.Tensor,
                 j0_te: torch.Tensor, k0: torch.Tensor, x_tr: torch.Tensor, y_tr: torch.Tensor,
                 x_te: torch.Tensor, y_te: torch.Tensor, alpha: float, lr: float, steps: int,
                 n_record: int) -> dict:
    """GD on R_α and on its linearization from θ0; sup-distances and final changes."""
    n = x_tr.shape[0]

    def f(p, x):
        return functional_call(model, p, (x,)).reshape(-1)

    f0_tr, f0_te = f(theta0, x_tr).detach(), f(theta0, x_te).detach()
    flat0 = _flat(theta0, names)
    params = {k: v.clone().requires_grad_(True) for k, v in theta0.items()}
    d_lin = torch.zeros_like(flat0)          # θ_lin − θ0
    sup_d = sup_gap = sup_h = 0.0
    record_at = set(np.linspace(0, steps, n_record).round().astype(int).tolist())
    traj = []
    for t in range(steps + 1):
        h = alpha * (f(params, x_tr) - f0_tr)
        with torch.no_grad():
            d = _flat(params, names) - flat0
            h_lin = alpha * (j0 @ d_lin)
            dist, gap = float(torch.linalg.norm(d)), float(torch.linalg.norm(d - d_lin))
            hgap = float(torch.linalg.norm(h - h_lin)) / math.sqrt(n)
            sup_d, sup_gap, sup_h = max(sup_d, dist), max(sup_gap, gap), max(sup_h, hgap)
            if t in record_at:
                traj.append({"alpha": alpha, "step": t, "time": t * lr, "param_dist": dist,
                             "dist_to_linearized": gap, "train_loss": float(
                                 0.5 * ((h - y_tr) ** 2).mean())})
        if t == steps:
            break
        loss = 0.5 * ((h - y_tr) ** 2).mean() / alpha ** 2
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            for p, g in zip(params.values(), grads, strict=True):
                p -= lr * g
            # the same step on the linearized risk: ∇ = J0ᵀ(h_lin − y)/(n α)
            d_lin -= lr * (j0.T @ (h_lin - y_tr)) / (n * alpha)
    with torch.no_grad():
        train_loss = float(0.5 * ((alpha * (f(params, x_tr) - f0_tr) - y_tr) ** 2).mean())
        test_loss = float(0.5 * ((alpha * (f(params, x_te) - f0_te) - y_te) ** 2).mean())
        lin_test = float(0.5 * ((alpha * (j0_te @ d_lin) - y_te) ** 2).mean())
    j_t = _jacobian(model, params, names, x_tr)
    feats0, feats_t = _features(model, theta0, x_tr), _features(model, params, x_tr)
    return {
        "alpha": alpha, "sup_param_dist": sup_d, "sup_dist_to_linearized": sup_gap,
        "sup_function_gap_rms": sup_h, "ntk_rel_change": _rel(j_t @ j_t.T, k0),
        "feature_gram_rel_change": _rel(feats_t @ feats_t.T, feats0 @ feats0.T),
        "alpha_x_sup_param_dist": alpha * sup_d, "train_loss": train_loss,
        "test_loss": test_loss, "linearized_test_loss": lin_test, "trajectory": traj,
    }


@experiment("lazy_training",
            "Chizat–Bach α-scaling: ‖θ_α − θ0‖ = O(1/α), distance to the linearized "
            "trajectory O(1/α²); feature learning (kernel change) at small α")
def lazy_training(ctx: Context) -> str:
    """Train α(f(θ) − f(θ0)) with loss/α² over a log range of α."""
    if ctx.quick:
        cfg = {"width": 128, "n_train": 48, "n_test": 48, "alpha_exponents": list(range(-3, 6)),
               "steps": 300, "lr_fraction": 0.5, "fit_alpha_min": 2.0}
    else:
        cfg = {"width": 512, "n_train": 64, "n_test": 128, "alpha_exponents": list(range(-4, 8)),
               "steps": 600, "lr_fraction": 0.5, "fit_alpha_min": 2.0}
    alphas = [2.0 ** k for k in cfg["alpha_exponents"]]
    x, labels = digits_subset(cfg["n_train"] + cfg["n_test"], ctx.seed_for("data"))
    y = torch.where(labels % 2 == 0, 1.0, -1.0).to(x.dtype)
    x_tr, y_tr = x[:cfg["n_train"]], y[:cfg["n_train"]]
    x_te, y_te = x[cfg["n_train"]:], y[cfg["n_train"]:]
    n = x_tr.shape[0]

    model = _spec(cfg["width"]).build(x.shape[1], seed=ctx.seed_for("model"))
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    theta0 = {k: p.detach().clone() for k, p in model.named_parameters()}
    j0 = _jacobian(model, theta0, names, x_tr)
    j0_te = _jacobian(model, theta0, names, x_te)   # for the linearized model's test outputs
    k0 = j0 @ j0.T
    k_lib = empirical_ntk(model, x_tr).detach()
    # learning rate: a fraction of the largest stable step of df/dt = −Θ0(f − y)/n
    lr = cfg["lr_fraction"] * n / float(torch.linalg.eigvalsh(k0)[-1])
    cfg.update({"n_params": int(j0.shape[1]), "lr": lr, "horizon_T": lr * cfg["steps"]})
    ctx.config.update(cfg)

    ctx.claim("J0·J0ᵀ equals ntkit.empirical.empirical_ntk (consistency)", 0.0,
              _rel(k0, k_lib), 1e-10, note="the same kernel by two routes; float64 round-off")

    runs = []
    for a in ctx.progress(alphas, "α sweep"):
        runs.append(_train_alpha(model, theta0, names, j0, j0_te, k0, x_tr, y_tr, x_te, y_te, a, lr,
                                 cfg["steps"], n_record=41))
    traj = [row for r in runs for row in r.pop("trajectory")]
    ctx.table("alpha_sweep", runs)
    ctx.table("trajectories", traj)

    al = np.asarray(alphas)
    big = al >= cfg["fit_alpha_min"]
    col = {k: np.asarray([r[k] for r in runs]) for k in runs[0]}
    fits = {k: loglog_fit(al[big], col[k][big]) for k in
            ("sup_param_dist", "sup_dist_to_linearized", "sup_function_gap_rms",
             "ntk_rel_change", "feature_gram_rel_change")}
    rng = f"α ∈ [{al[big].min():g}, {al[big].max():g}]"
    ctx.claim("sup_t ‖θ_α(t) − θ0‖ slope in α (eq. 1: O(1/α))", -1.0,
              fits["sup_param_dist"].slope, 0.1,
              note=f"fit over {rng}, s.e. {fits['sup_param_dist'].slope_se:.2g}; the large-α "
                   "limit of α·‖θ_α − θ0‖ is the linearized path's, so the slope is −1 "
                   "up to O(1/α) corrections")
    ctx.claim("sup_t ‖θ_α(t) − θ_lin(t)‖ slope in α (eq. 2: O(1/α²))", -2.0,
              fits["sup_dist_to_linearized"].slope, 0.15,
              note=f"fit over {rng}, s.e. {fits['sup_dist_to_linearized'].slope_se:.2g}")
    ctx.claim("sup_t ‖h_α(t) − h_lin(t)‖ slope in α (function space: O(1/α))", -1.0,
              fits["sup_function_gap_rms"].slope, 0.15,
              note=f"RMS over training points; fit over {rng}, "
                   f"s.e. {fits['sup_function_gap_rms'].slope_se:.2g}")
    ax_big = col["alpha_x_sup_param_dist"][big]
    spread = float(ax_big.max() / ax_big.min())
    ctx.claim("α·sup_t ‖θ_α − θ0‖ bounded over large α (max/min)", "≤ 1.5", spread,
              "max/min over the fit range", holds=bool(spread <= 1.5),
              note="eq. (1) says α·‖θ_α − θ0‖ stays bounded as α → ∞; it converges to "
                   "α·‖θ_lin − θ0‖, which does not depend on α")
    ctx.claim("NTK change slope in α at large α (lazy: O(1/α))", -1.0,
              fits["ntk_rel_change"].slope, 0.15,
              note=f"‖Θ_T − Θ_0‖_F/‖Θ_0‖_F; fit over {rng}")
    small = float(col["ntk_rel_change"][0])
    ctx.claim(f"NTK changes by O(1) at small α = {al[0]:g} (feature learning)", "≥ 0.25",
              small, "qualitative", holds=bool(small >= 0.25),
              note=f"relative NTK change {small:.3g} at α = {al[0]:g} vs "
                   f"{col['ntk_rel_change'][-1]:.2g} at α = {al[-1]:g}; hidden-feature Gram "
                   f"change {col['feature_gram_rel_change'][0]:.3g} vs "
                   f"{col['feature_gram_rel_change'][-1]:.2g}")

    # --- figures
    fig, ax = ctx.new_figure(size=(6.0, 4.4))
    for key, c, lab in (("sup_param_dist", "C0", "sup‖θ_α − θ0‖"),
                        ("sup_dist_to_linearized", "C3", "sup‖θ_α − θ_lin‖"),
                        ("sup_function_gap_rms", "C2", "sup‖h_α − h_lin‖ (RMS)")):
        fit = fits[key]
        ax.loglog(al, col[key], "o", color=c, label=f"{lab}: {fit.label()}")
        ax.loglog(al[big], fit(al[big]), "-", color=c, alpha=0.6)
    ax.axvspan(al.min() / 1.2, cfg["fit_alpha_min"], color="0.9", zorder=0,
               label="outside fit range")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("scale α")
    ax.set_ylabel("distance (sup over t ∈ [0, T])")
    ax.set_title("lazy training: distances vs α (predicted slopes −1, −2, −1)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ctx.savefig(fig, "distances_vs_alpha")

    fig, (ax1, ax2) = ctx.new_figure(ncols=2)
    ax1.loglog(al, col["ntk_rel_change"], "o-",
               label=f"NTK: {fits['ntk_rel_change'].label()} (α ≥ {cfg['fit_alpha_min']:g})")
    ax1.loglog(al, col["feature_gram_rel_change"], "s-",
               label=f"hidden-feature Gram: {fits['feature_gram_rel_change'].label()}")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("scale α")
    ax1.set_ylabel("relative change after training (Frobenius)")
    ax1.set_title("feature learning at small α, lazy at large α")
    ax1.legend(fontsize=7)
    ax1.grid(True, which="both", alpha=0.3)
    ax2.semilogx(al, col["test_loss"], "o-", label="network h_α (test)")
    ax2.semilogx(al, col["linearized_test_loss"], "k--", label="linearized (test)")
    ax2.semilogx(al, col["train_loss"], "s:", label="network h_α (train)")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("scale α")
    ax2.set_ylabel("0.5·mean((h − y)²) at T")
    ax2.set_title(f"losses at T = {lr * cfg['steps']:.3g}")
    ax2.legend(fontsize=7)
    ax2.grid(True, which="both", alpha=0.3)
    ctx.savefig(fig, "feature_learning_vs_alpha")

    fig, ax = ctx.new_figure()
    shown = alphas[:: max(1, len(alphas) // 5)]
    for i, a in enumerate(shown):
        pts = [r for r in traj if r["alpha"] == a]
        ax.plot([r["time"] for r in pts], [a * r["param_dist"] for r in pts], "-",
                color=f"C{i}", label=f"α = {a:g}")
    ax.set_xlabel("training time t (steps × learning rate)")
    ax.set_ylabel("α·‖θ_α(t) − θ0‖")
    ax.set_title("rescaled parameter paths collapse as α grows")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    ctx.savefig(fig, "rescaled_paths")

    tl = col["test_loss"]
    return (f"Width {cfg['width']}, {cfg['n_params']} parameters, {n} digits, T = "
            f"{lr * cfg['steps']:.3g}. Fitted slopes ({rng}): ‖θ−θ0‖ "
            f"{fits['sup_param_dist'].slope:+.3f} (−1), ‖θ−θ_lin‖ "
            f"{fits['sup_dist_to_linearized'].slope:+.3f} (−2), ‖h−h_lin‖ "
            f"{fits['sup_function_gap_rms'].slope:+.3f} (−1). NTK change "
            f"{col['ntk_rel_change'][0]:.3g} at α={al[0]:g} vs {col['ntk_rel_change'][-1]:.2g} "
            f"at α={al[-1]:g}. Test loss {tl[0]:.3g} (α={al[0]:g}) vs {tl[-1]:.3g} "
            f"(α={al[-1]:g}): on this small task feature learning "
            + ("helps" if tl[0] < 0.95 * tl[-1] else
               "hurts" if tl[0] > 1.05 * tl[-1] else "barely changes test loss") + ".")
