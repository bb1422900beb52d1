"""linearization: how far trained two-layer nets are from their linearization (Lee et al.
2019, "Wide neural networks of any depth evolve as linear models under gradient descent";
Telgarsky 2021, "Deep learning theory lecture notes", §4).

The model (Telgarsky 2021, §4):

    f(x; W) = (1/√m) Σ_j a_j σ(w_jᵀx),   a_j = ±1 fixed, W0 with i.i.d. N(0, 1) entries,

inputs with ‖x‖ ≤ 1 (here ‖x‖ = 1: centered sklearn digits scaled to the unit sphere), and
only W trained, by full-batch gradient descent on 0.5·mean((f − y)²) (parity labels) for
a fixed number of steps. The linearization f_lin(x; W) = f(x; W0) + ⟨∇_W f(x; W0), W − W0⟩
is `ntkit.linearize.linearize` of the network at W0, evaluated at the trained W_T.

Claims:

- ‖W_T − W_0‖_F stays O(1) in the width m (fitted slope ≈ 0): with step sizes set by the
  O(1) NTK, the function moves by O(1) while each of the m rows moves by O(1/√m).
- β-smooth σ (tanh, β = sup|σ''| = 4/(3√3)): for every W and ‖x‖ ≤ 1,
  |f(x; W) − f_lin(x; W)| ≤ β‖W − W0‖²_F / (2√m)  (a deterministic inequality, so the
  measured sup must be below it at every width), and with ‖W − W0‖ = O(1) it decays at
  least like m^(−1/2).
- ReLU: with probability ≥ 1 − δ over W0, for each fixed x,
  sup_{‖W−W0‖≤B} |f − f_lin| ≤ (2B^(4/3) + B·log(1/δ)^(1/4)) / m^(1/6). We apply it to
  the N train+test points with a union bound (δ = 0.05/N per point) and B = ‖W_T − W0‖.

Both bounds turn out to hold but to be loose: the measured error decays faster than the
bounds' rates (≈ m^(−1) for tanh: the second-order terms a_j σ''(w0_jᵀx)(Δw_jᵀx)² have
random signs and cancel; ≈ m^(−1/2..−3/4) for ReLU: only the O(√m) units whose sign
flips contribute) and sits orders of magnitude below them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ntkit import layers as nl
from ntkit.lab.framework import Context, digits_subset, loglog_fit
from ntkit.lab.registry import experiment
from ntkit.linearize import linearize

#: activation -> (spec, β = sup|σ''| or None for the non-smooth ReLU)
ACTIVATIONS = {
    "tanh": (nl.Tanh, 4.0 / (3.0 * math.sqrt(3.0))),
    "erf": (nl.Erf, 2.0 * math.sqrt(2.0) * math.exp(-0.5) / math.sqrt(math.pi)),
    "relu": (nl.ReLU, None),
}
DELTA = 0.05   # total failure probability allowed to the ReLU bound (union over points)


class TwoLayerNet(nn.Module):
    """f(x; W) = a·σ(W x)/√m with a = ±1 fixed (a buffer) and W ~ N(0, 1) trainable."""

    def __init__(self, d: int, m: int, act: nl.Activation, generator: torch.Generator):
        super().__init__()
        self.m = m
        self.act = act
        self.weight = nn.Parameter(torch.randn(m, d, generator=generator, dtype=torch.float64))
        signs = torch.randint(0, 2, (m,), generator=generator).to(torch.float64) * 2 - 1
        self.register_buffer("a", signs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act.fn(x @ self.weight.T) @ self.a / math.sqrt(self.m)


def limit_ntk(act: nl.Activation, x: torch.Tensor) -> torch.Tensor:
    """Infinite-width NTK of the W-only model: (x·x′)·E[σ′(u)σ′(v)], from ntkit's dual."""
    g = x @ x.T
    v = torch.diagonal(g)
    _, tdot = act.dual(v[:, None], g, v[None, :], True)
    return g * tdot


def relu_bound(b: float, m: int, delta: float) -> float:
    """Telgarsky's (2021) Lemma 4.1 bound (2B^(4/3) + B log(1/δ)^(1/4)) / m^(1/6)."""
    return (2.0 * b ** (4.0 / 3.0) + b * math.log(1.0 / delta) ** 0.25) / m ** (1.0 / 6.0)


def _train(ctx: Context, act_name: str, m: int, s: int, x_tr: torch.Tensor, y_tr: torch.Tensor,
           x_all: torch.Tensor, lr: float, steps: int) -> dict:
    ctor, beta = ACTIVATIONS[act_name]
    act = ctor()
    net = TwoLayerNet(x_tr.shape[1], m, act, ctx.rng(f"lin/{act_name}/{m}/{s}"))
    lin = linearize(net)   # snapshot of f and its Jacobian at W0
    w0 = net.weight.detach().clone()
    opt = torch.optim.SGD([net.weight], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * ((net(x_tr) - y_tr) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for p_lin, p in zip(lin.parameters(), net.parameters(), strict=True):
            p_lin.copy_(p)
        gap = (net(x_all) - lin(x_all)).abs()
        final_loss = float(0.5 * ((net(x_tr) - y_tr) ** 2).mean())
        b = float(torch.linalg.norm(net.weight - w0))
    sup = float(gap.max())
    n_pts = x_all.shape[0]
    bound = (beta * b * b / (2.0 * math.sqrt(m)) if beta is not None
             else relu_bound(b, m, DELTA / n_pts))
    return {"activation": act_name, "width": m, "seed": s, "weight_change_fro": b,
            "sup_lin_error": sup, "mean_lin_error": float(gap.mean()), "bound": bound,
            "bound_over_measured": bound / sup if sup > 0 else float("inf"),
            "final_train_loss": final_loss}


@experiment("linearization",
            "Trained 2-layer nets stay near their linearization: ‖W−W0‖ = O(1), and the "
            "gap |f − f_lin| vs Telgarsky's bounds (smooth: β‖W−W0‖²/(2√m); ReLU: m^(-1/6))")
def linearization(ctx: Context) -> str:
    """Train the two-layer model of Telgarsky (2021, §4) at several widths; compare f, f_lin."""
    if ctx.quick:
        cfg = {"n_train": 60, "n_test": 60, "widths": [2 ** k for k in range(6, 11)],
               "seeds": 2, "steps": 150, "activations": ["tanh", "relu"]}
    else:
        cfg = {"n_train": 100, "n_test": 100, "widths": [2 ** k for k in range(6, 14)],
               "seeds": 3, "steps": 400, "activations": ["tanh", "relu"]}
    x, labels = digits_subset(cfg["n_train"] + cfg["n_test"], ctx.seed_for("data"), norm="unit")
    y = torch.where(labels % 2 == 0, 1.0, -1.0).to(x.dtype)
    x_tr, y_tr = x[:cfg["n_train"]], y[:cfg["n_train"]]
    cfg["delta"] = DELTA
    ctx.config.update(cfg)

    rows, per_act = [], {}
    for act_name in cfg["activations"]:
        ctor, beta = ACTIVATIONS[act_name]
        k = limit_ntk(ctor(), x_tr)
        # half the largest stable step of the limiting linear dynamics df/dt = −Θ(f−y)/n
        lr = float(x_tr.shape[0] / torch.linalg.eigvalsh(k)[-1])
        cur = []
        for m in ctx.progress(cfg["widths"], f"train ({act_name})"):
            for s in range(cfg["seeds"]):
                r = _train(ctx, act_name, m, s, x_tr, y_tr, x, lr, cfg["steps"])
                r["lr"] = lr
                cur.append(r)
        rows += cur
        per_act[act_name] = (beta, lr, cur)
    ctx.table("runs", rows)

    ms = np.asarray(cfg["widths"], dtype=np.float64)
    fig, (ax_b, ax_e) = ctx.new_figure(ncols=2)
    summary = []
    for i, (act_name, (beta, _lr, cur)) in enumerate(per_act.items()):
        c = f"C{i}"

        def mean_by_width(key: str, cur=cur) -> np.ndarray:
            return np.asarray([np.mean([r[key] for r in cur if r["width"] == m]) for m in ms])

        b_mean, e_mean, bound_mean = (mean_by_width("weight_change_fro"),
                                      mean_by_width("sup_lin_error"), mean_by_width("bound"))
        fit_b, fit_e = loglog_fit(ms, b_mean), loglog_fit(ms, e_mean)
        worst = max(r["sup_lin_error"] / r["bound"] for r in cur)
        loosest = float(np.median([r["bound_over_measured"] for r in cur
                                   if r["width"] == ms[-1]]))

        ctx.claim(f"‖W_T − W_0‖_F slope in m ({act_name})", 0.0, fit_b.slope, 0.1,
                  note=f"mean over seeds of ‖W_T − W_0‖_F ≈ {b_mean.mean():.3g}, O(1) in m; "
                       f"fit s.e. {fit_b.slope_se:.3f}; ±0.1 for finite-width drift of B")
        if beta is not None:
            ctx.claim(f"{act_name}: sup|f − f_lin| ≤ β‖W−W0‖²/(2√m) at every width and seed",
                      "ratio ≤ 1", worst, "deterministic bound",
                      holds=bool(worst <= 1.0),
                      note=f"measured = max over runs of sup-gap / bound (β = {beta:.4f}); at "
                           f"m = {int(ms[-1])} the bound is {loosest:.3g}× the measured gap")
            rate_pred, rate_name = -0.5, "−1/2"
        else:
            ctx.claim(f"{act_name}: sup|f − f_lin| ≤ (2B^(4/3) + B log(N/δ)^(1/4))/m^(1/6)",
                      "ratio ≤ 1", worst, f"holds w.p. ≥ {1 - DELTA:.2f}",
                      holds=bool(worst <= 1.0),
                      note=f"B = ‖W_T − W_0‖_F, union bound over N points; at "
                           f"m = {int(ms[-1])} the bound is {loosest:.3g}× the measured gap")
            rate_pred, rate_name = -1.0 / 6.0, "−1/6"
        faster = fit_e.slope < rate_pred - 0.15
        ctx.claim(f"{act_name}: sup-gap decays at least at the bound's rate m^({rate_name})",
                  f"≤ {rate_pred + 0.15:+.3f}", fit_e.slope, "one-sided, +0.15",
                  holds=bool(fit_e.slope <= rate_pred + 0.15),
                  note=(f"fitted {fit_e.label()}: decays faster than the bound's "
                        f"m^({rate_name}), so the bound holds but is loose" if faster else
                        f"fitted {fit_e.label()}"))
        summary.append(f"{act_name}: ‖W−W0‖ slope {fit_b.slope:+.3f}, gap slope "
                       f"{fit_e.slope:+.2f} (bound rate {rate_name}), bound/gap at "
                       f"m={int(ms[-1])} ≈ {loosest:.3g}")

        ax_b.loglog(ms, b_mean, "o-", color=c, label=f"{act_name}: {fit_b.label()}")
        ax_e.loglog(ms, e_mean, "o", color=c, label=f"{act_name} measured: {fit_e.label()}")
        ax_e.loglog(ms, fit_e(ms), "-", color=c, alpha=0.6)
        ax_e.loglog(ms, bound_mean, "--", color=c,
                    label=f"{act_name} bound (rate m^({rate_name}))")
    for ax in (ax_b, ax_e):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width m")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    # a decade either side, so that "flat in m" reads as flat and not as zoomed-in noise
    lo, hi = ax_b.get_ylim()
    ax_b.set_ylim(lo / 10, hi * 10)
    ax_b.set_ylabel("‖W_T − W_0‖_F (mean over seeds)")
    ax_b.set_title("distance travelled by the weights")
    ax_e.set_ylabel("sup over train+test of |f(x; W_T) − f_lin(x; W_T)|")
    ax_e.set_title("linearization gap vs Telgarsky's bounds")
    ctx.savefig(fig, "linearization_vs_width")
    bounds = [c for c in ctx.claims if "ratio ≤ 1" == c.predicted]
    verdict = ("every bound holds numerically" if all(c.holds for c in bounds)
               else "a bound FAILS numerically: " + ", ".join(c.name for c in bounds
                                                           if not c.holds))
    return "; ".join(summary) + f". {verdict[0].upper() + verdict[1:]}."
