"""neural_collapse: NC1–NC4 over the terminal phase of training (notes 003, lecture 10/5;
Papyan, Han & Donoho 2020, "Prevalence of neural collapse").

An MLP is trained on all 10 digit classes with cross-entropy, full-batch SGD with momentum
and weight decay, far past zero training error. Every few steps the last-layer features and
the classifier are measured with `ntkit.metrics.neural_collapse`. The terminal phase of
training (TPT) starts at the first step with 100% training accuracy.

Predictions (Papyan et al. 2020), over the TPT:
- NC1: within-class variability tr(Σ_W Σ_B⁺)/C falls by orders of magnitude;
- NC2: centered class means become equinorm and equiangular at cos = −1/(C − 1);
- NC3: classifier rows align with the centered class means (self-duality);
- NC4: the network's decisions become nearest-class-center decisions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ntkit.lab.framework import Context, digits_subset
from ntkit.lab.registry import experiment
from ntkit.metrics import neural_collapse as nc_metrics


@experiment("neural_collapse",
            "Train a digits MLP far past zero error: NC1 falls by orders of magnitude, class "
            "means → simplex ETF, classifier → means, decisions → nearest class center")
def neural_collapse(ctx: Context) -> str:
    if ctx.quick:
        cfg = {"n_train": 200, "width": 64, "steps": 2000, "every": 100, "lr": 0.05,
               "momentum": 0.9, "weight_decay": 5e-4}
    else:
        cfg = {"n_train": 500, "width": 128, "steps": 8000, "every": 200, "lr": 0.05,
               "momentum": 0.9, "weight_decay": 5e-4}
    ctx.config.update(cfg)
    c = 10
    x, labels = digits_subset(cfg["n_train"], ctx.seed_for("data"), norm="unit")
    x = 3.0 * x
    torch.manual_seed(ctx.seed_for("model") % (2 ** 31))
    w = cfg["width"]
    body = nn.Sequential(nn.Linear(64, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                         nn.Linear(w, w), nn.ReLU()).double()
    head = nn.Linear(w, c).double()
    params = list(body.parameters()) + list(head.parameters())
    # Papyan et al.'s recipe in small: SGD with momentum and weight decay, full batch
    opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])
    rows = []
    for t in range(cfg["steps"] + 1):
        feats = body(x)
        out = head(feats)
        if t % cfg["every"] == 0:
            m = nc_metrics(feats.detach(), labels, classifier=head)
            acc = float((out.argmax(1) == labels).double().mean())
            rows.append({"step": t, "train_accuracy": acc,
                         "loss": float(nn.functional.cross_entropy(out.detach(), labels)), **m})
        if t == cfg["steps"]:
            break
        opt.zero_grad()
        nn.functional.cross_entropy(out, labels).backward()
        opt.step()
    ctx.table("metrics", rows)
    col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    zero_err = np.nonzero(col["train_accuracy"] >= 1.0)[0]
    tpt = int(zero_err[0]) if zero_err.size else None
    if tpt is None:
        ctx.claim("training reaches zero error (start of the terminal phase)", "yes", 0.0,
                  "n/a", holds=False, note="no terminal phase in the time given")
        return "The network never reached 100% training accuracy; no terminal phase."
    t0 = int(col["step"][tpt])
    start, end = rows[tpt], rows[-1]
    ctx.config["tpt_start_step"] = t0

    drop = end["nc1"] / start["nc1"]
    ctx.claim("NC1 ratio end / start of the terminal phase", "≤ 1e-2", drop, "one-sided",
              holds=bool(drop <= 1e-2),
              note=f"NC1 {start['nc1']:.3g} at step {t0} (zero error) → {end['nc1']:.3g} at "
                   f"step {end['step']}; from init {rows[0]['nc1']:.3g}. 'Orders of "
                   "magnitude' (Papyan et al. Fig. 6) read as at least two")
    etf = -1.0 / (c - 1)
    ctx.claim("NC2: mean |cos(μ_c − μ_G, μ_c' − μ_G) + 1/(C−1)| at the end", 0.0,
              end["nc2_maxangle"], 0.05,
              note=f"predicted cosine {etf:.4f} (simplex ETF); {start['nc2_maxangle']:.3g} at "
                   "the start of the TPT. 0.05 = half the gap between −1/(C−1) and orthogonal "
                   "means (0.11), i.e. clearly nearer the simplex than any other arrangement")
    ctx.claim("NC2: equinorm (std/mean of ‖μ_c − μ_G‖) at the end", 0.0, end["nc2_equinorm"],
              0.1, note=f"{start['nc2_equinorm']:.3g} at the start of the TPT; Papyan et al. "
                        "report coefficients of variation falling to ~0.1 and below")
    ctx.claim("NC3: ‖W/‖W‖ − M/‖M‖‖²_F at the end", 0.0, end["nc3"], 0.1,
              note=f"{start['nc3']:.3g} at the start of the TPT (its maximum is 4); 0.1 ≈ "
                   "rows within ~18° of the means on average")
    ctx.claim("NC4: fraction of network vs nearest-class-center mismatches at the end", 0.0,
              end["nc4"], 1.0 / cfg["n_train"] + 1e-12,
              note=f"{start['nc4']:.3g} at the start of the TPT; at most one example of "
                   f"{cfg['n_train']} may disagree")
    falling = {k: bool(end[k] < start[k]) for k in ("nc1", "nc2_maxangle", "nc2_equinorm",
                                                     "nc3")}
    ctx.claim("all of NC1, NC2, NC3 decrease during the terminal phase (count)", 4.0,
              float(sum(falling.values())), 0.0,
              note="end vs first zero-error measurement: " + ", ".join(
                  f"{k} {'↓' if v else '↑'}" for k, v in falling.items()))

    fig, (a1, a2) = ctx.new_figure(ncols=2)
    st = col["step"]
    for k, lab in (("nc1", "NC1 tr(Σ_W Σ_B⁺)/C"), ("nc2_maxangle", "NC2 |cos + 1/(C−1)|"),
                   ("nc2_equinorm", "NC2 equinorm (CV)"), ("nc3", "NC3 ‖W − M‖²")):
        a1.semilogy(st, np.maximum(col[k], 1e-12), "-", label=lab)
    a2.plot(st, col["nc4"], "-", label="NC4 mismatch vs NCC")
    a2.plot(st, 1 - col["train_accuracy"], "--", label="training error")
    for ax in (a1, a2):
        ax.axvline(t0, color="0.5", ls=":", label="zero training error")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    a1.set_title("neural collapse over training")
    a2.set_title("NC4 and training error")
    ctx.savefig(fig, "collapse")

    return (f"Zero training error at step {t0}; over the terminal phase NC1 {start['nc1']:.3g} → "
            f"{end['nc1']:.3g}, |cos + 1/(C−1)| {start['nc2_maxangle']:.3g} → "
            f"{end['nc2_maxangle']:.3g}, NC3 {start['nc3']:.3g} → {end['nc3']:.3g}, NC4 "
            f"{start['nc4']:.3g} → {end['nc4']:.3g}.")
