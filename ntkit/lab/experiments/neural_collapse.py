"""neural_collapse: NC1–NC4 in the terminal phase of training, MSE and cross-entropy arms
(Papyan, Han & Donoho 2020, "Prevalence of neural collapse during the terminal phase of deep
learning training"; Han, Papyan & Donoho 2021, "Neural collapse under MSE loss: proximity to
and dynamics on the central path").

The same 3-layer ReLU MLP (same initial weights) is trained twice on the 10 digit classes,
full batch, SGD with momentum and weight decay, far past zero training error:

- **MSE arm** (Han et al. 2021): loss ½·mean_i ‖f(x_i) − e_{y_i}‖² on one-hot targets. Along
  the "central path" the features are pulled to the class means at a rate set by the
  gradient of a loss that does *not* vanish exponentially, so the within-class variability
  NC1 keeps falling after zero error; weight decay fixes the scale so NC2/NC3 settle.
- **Cross-entropy arm** (Papyan et al. 2020): once every example is classified, the
  gradients are ∝ exp(−margin), so the geometry moves only at implicit-bias rates (Soudry
  et al. 2018, "The implicit bias of gradient descent on separable data"): NC1 is predicted
  to fall more slowly than in the MSE arm over the same steps.

NC1 is stated relative to its value at initialization and at the first zero-error step
(the start of the terminal phase), never as an absolute number: its absolute size depends
on the data, the width and the feature scale.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ntkit.lab.framework import Context, digits_subset
from ntkit.lab.registry import experiment
from ntkit.metrics import neural_collapse as nc_metrics

_C = 10
_PAPYAN = ("Papyan, Han & Donoho 2020, 'Prevalence of neural collapse during the terminal "
           "phase of deep learning training'")
_HAN = ("Han, Papyan & Donoho 2021, 'Neural collapse under MSE loss: proximity to and "
        "dynamics on the central path'")


def _train(x, labels, cfg, seed: int, loss: str) -> tuple[list[dict], int | None]:
    """Train one arm; metrics every ``every`` steps and at the first zero-error step."""
    torch.manual_seed(seed % (2 ** 31))
    w = cfg["width"]
    body = nn.Sequential(nn.Linear(64, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                         nn.Linear(w, w), nn.ReLU()).double()
    head = nn.Linear(w, _C).double()
    opt = torch.optim.SGD(list(body.parameters()) + list(head.parameters()), lr=cfg["lr"],
                          momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    onehot = nn.functional.one_hot(labels, _C).double()

    def objective(out):
        if loss == "mse":
            return 0.5 * ((out - onehot) ** 2).sum(1).mean()
        return nn.functional.cross_entropy(out, labels)

    rows, zero_step = [], None
    for t in range(cfg["steps"] + 1):
        feats = body(x)
        out = head(feats)
        acc = float((out.argmax(1) == labels).double().mean())
        first_zero = zero_step is None and acc >= 1.0
        if first_zero:
            zero_step = t
        if t % cfg["every"] == 0 or first_zero or t == cfg["steps"]:
            m = nc_metrics(feats.detach(), labels, classifier=head)
            rows.append({"arm": loss, "step": t, "train_accuracy": acc,
                         "loss": float(objective(out.detach())), **m})
        if t == cfg["steps"]:
            break
        opt.zero_grad()
        objective(out).backward()
        opt.step()
    return rows, zero_step


@experiment("neural_collapse",
            "Train a digits MLP far past zero error with MSE and with cross-entropy: NC1 "
            "relative to init and to the zero-error step, class means → simplex ETF, "
            "classifier → means, decisions → nearest class center")
def neural_collapse(ctx: Context) -> str:
    if ctx.quick:
        cfg = {"n_train": 200, "width": 64, "steps": 2500, "every": 100, "lr": 0.05,
               "momentum": 0.9, "weight_decay": 5e-3}
    else:
        cfg = {"n_train": 500, "width": 128, "steps": 8000, "every": 200, "lr": 0.05,
               "momentum": 0.9, "weight_decay": 5e-3}
    ctx.config.update(cfg)
    # inputs on the sphere ‖x‖² = d (entries O(1)), as in the other digit experiments
    x, labels = digits_subset(cfg["n_train"], ctx.seed_for("data"), norm="sphere")
    seed = ctx.seed_for("model")   # both arms start from the same weights
    arms = {}
    for loss in ("mse", "ce"):
        rows, zero = _train(x, labels, cfg, seed, loss)
        arms[loss] = (rows, zero)
        ctx.log(f"{loss}: zero training error at step {zero}")
    ctx.table("metrics", [r for loss in arms for r in arms[loss][0]])

    def at(loss, step):
        return next(r for r in arms[loss][0] if r["step"] == step)

    summary = []
    for loss, tag in (("mse", "MSE"), ("ce", "CE")):
        rows, zero = arms[loss]
        if zero is None:
            ctx.claim(f"[{tag}] training reaches zero error", "yes", 0.0, "n/a", holds=False,
                      note="no terminal phase in the steps given")
            summary.append(f"{tag}: never reached 100% training accuracy.")
            continue
        ctx.config[f"zero_error_step_{loss}"] = zero
    if any(arms[k][1] is None for k in arms):
        return " ".join(summary)

    ratios = {}
    for loss in ("mse", "ce"):
        rows, zero = arms[loss]
        init, start, end = rows[0], at(loss, zero), rows[-1]
        ratios[loss] = (end["nc1"] / init["nc1"], end["nc1"] / start["nc1"])
    mse_rows, mse_zero = arms["mse"]
    init, start, end = mse_rows[0], at("mse", mse_zero), mse_rows[-1]
    ctx.claim("[MSE] NC1 end / NC1 at initialization", "≤ 1e-2", ratios["mse"][0],
              "one-sided", holds=bool(ratios["mse"][0] <= 1e-2),
              note=f"NC1 {init['nc1']:.3g} at init → {start['nc1']:.3g} at zero error (step "
                   f"{mse_zero}) → {end['nc1']:.3g} at step {end['step']}. NC1 → 0 along the "
                   f"central path ({_HAN}); 'by orders of magnitude' (their Fig. 2, and "
                   f"{_PAPYAN}, Fig. 6) read as at least two")
    ctx.claim("[MSE] NC1 end / NC1 at the zero-error step", "≤ 1e-1", ratios["mse"][1],
              "one-sided", holds=bool(ratios["mse"][1] <= 1e-1),
              note="the terminal phase itself must collapse variability, by at least one "
                   f"order of magnitude: under MSE the loss gradient does not vanish at zero "
                   f"error, so features keep moving to their class means ({_HAN})")
    ctx.claim("[MSE] NC2: mean |cos(μ_c − μ_G, μ_c' − μ_G) + 1/(C−1)| at the end", 0.0,
              end["nc2_maxangle"], 0.05,
              note=f"simplex ETF cosine −1/(C−1) = {-1 / (_C - 1):.4f} ({_HAN}); "
                   f"{start['nc2_maxangle']:.3g} at zero error. 0.05 = half the gap between "
                   "−1/(C−1) and orthogonal means (0.11): clearly nearer the simplex than any "
                   "other arrangement")
    ctx.claim("[MSE] NC2: equinorm (std/mean of ‖μ_c − μ_G‖) at the end", 0.0,
              end["nc2_equinorm"], 0.1,
              note=f"{start['nc2_equinorm']:.3g} at zero error; {_PAPYAN} report coefficients "
                   "of variation falling to ~0.1 and below")
    ctx.claim("[MSE] NC3: ‖W/‖W‖ − M/‖M‖‖²_F at the end", 0.0, end["nc3"], 0.1,
              note=f"{start['nc3']:.3g} at zero error (its maximum is 4); with weight decay the "
                   f"MSE optimum has W ∝ Mᵀ ({_HAN}); 0.1 ≈ rows within ~18° of the means")
    ctx.claim("[MSE] NC4: network vs nearest-class-center mismatches at the end", 0.0,
              end["nc4"], 1.0 / cfg["n_train"] + 1e-12,
              note=f"{start['nc4']:.3g} at zero error; NC4 follows from NC1–NC3 ({_PAPYAN}); "
                   f"at most one example of {cfg['n_train']} may disagree")
    ctx.claim("[CE vs MSE] NC1 reduction over the terminal phase, CE / MSE (same steps)",
              "> 1", ratios["ce"][1] / ratios["mse"][1], "one-sided",
              holds=bool(ratios["ce"][1] > ratios["mse"][1]),
              note=f"CE: NC1 {at('ce', arms['ce'][1])['nc1']:.3g} at zero error (step "
                   f"{arms['ce'][1]}) → {arms['ce'][0][-1]['nc1']:.3g} (ratio "
                   f"{ratios['ce'][1]:.3g}); MSE ratio {ratios['mse'][1]:.3g}. After zero error "
                   "the cross-entropy gradient is ∝ exp(−margin) and the geometry moves at "
                   "implicit-bias (logarithmic) rates (Soudry et al. 2018, 'The implicit bias "
                   "of gradient descent on separable data'), so its terminal-phase collapse is "
                   "predicted slower than under MSE")
    summary.append(
        f"MSE: zero error at step {mse_zero}; NC1 {init['nc1']:.3g} (init) → "
        f"{start['nc1']:.3g} (zero error) → {end['nc1']:.3g}; NC2 |cos + 1/(C−1)| "
        f"{end['nc2_maxangle']:.3g}, NC3 {end['nc3']:.3g}, NC4 {end['nc4']:.3g} at the end. "
        f"Cross-entropy: zero error at step {arms['ce'][1]}; NC1 over the terminal phase × "
        f"{ratios['ce'][1]:.3g} (MSE × {ratios['mse'][1]:.3g}).")

    fig, axes = ctx.new_figure(ncols=2)
    for ax, loss, tag in ((axes[0], "mse", "MSE"), (axes[1], "ce", "cross-entropy")):
        rows, zero = arms[loss]
        st = np.array([r["step"] for r in rows])
        for k, lab in (("nc1", "NC1 tr(Σ_W Σ_B⁺)/C"), ("nc2_maxangle", "NC2 |cos + 1/(C−1)|"),
                       ("nc2_equinorm", "NC2 equinorm (CV)"), ("nc3", "NC3 ‖W − M‖²"),
                       ("nc4", "NC4 mismatch vs NCC")):
            ax.semilogy(st, np.maximum([r[k] for r in rows], 1e-6), "-", label=lab)
        ax.axvline(zero, color="0.5", ls=":", label="zero training error")
        ax.set_xlabel("step")
        ax.set_title(f"neural collapse, {tag}")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    ctx.savefig(fig, "collapse")
    return " ".join(summary)
