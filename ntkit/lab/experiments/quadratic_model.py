"""quadratic_model: wide networks against their linear, quadratic and cubic Taylor models
(notes 003, lecture 11/2 "Quadratic Models"; Dyer & Gur-Ari 2020; Huang & Yau 2020;
Roberts, Yaida & Hanin 2022, chapters 11 and ∞).

A one-hidden-layer tanh net in NTK parameterization, f(x) = Σ_i v_i tanh(u_iᵀx/√d)/√m with
u_i, v_i ~ N(0, 1), is trained by full-batch GD on MSE (a digits subset, target ±1 for
"digit < 5"), and so are its Taylor models of degree 1 (`ntkit.linearize`), 2 and 3
(`ntkit.taylor_expand`) around the same θ0: same data, same lr (fixed, not scaled with m:
in NTK parameterization the NTK is O(1)), same steps. We measure, against width m,

    err_k(m) = max over recorded t of the RMS over train and test points of |f_net − f_k|,

and the NTK change ‖Θ_T − Θ_0‖_F/‖Θ_0‖_F (train points) of the net and of the Taylor models.

What theory predicts (power counting per neuron, as in Dyer & Gur-Ari's diagrams):
Δu_i, Δv_i = O(1/√m) and Δu_i ∝ v_i. The k-th Taylor term is a sum over m neurons of
terms of size m^{-1/2}·m^{-k/2}; it is *coherent* (nonzero mean) when its power of v_i is
even and random-signed otherwise (then the sum is √m times one term).
- k = 2 (½ΔθᵀHΔθ): v³ and v¹ terms, random signs: O(1/m). k = 3: v⁴ and v² terms,
  coherent: O(1/m) as well. k = 4: odd powers again: O(m^{-3/2}) at most.
- Hence the linear model deviates by O(1/m) (the seed's bound, notes 001:
  |f − f_lin| ≤ β/(2√m)·‖θ−θ0‖², is a worst-case O(1/√m) upper bound using ‖H‖_op; the
  actual error is smaller by the random signs), and so does the *quadratic* one: it has
  the dNTK but not the third-derivative ("ddNTK") terms, which enter at the same order
  1/n (Roberts–Yaida ch. 11 and ∞: the O(1/n) dynamics need the dNTK *and* the ddNTKs).
  It is better than the linear model by a constant factor, not by a power of m. The cubic
  model keeps both and should be better by a power.
- The NTK changes by O(1/m) (Dyer & Gur-Ari 2020). The quadratic model's NTK change
  (J + HΔθ)(J + HΔθ)ᵀ − JJᵀ misses the third-derivative part, also O(1/m), so its
  relative error does not vanish with width; the cubic model's does.

ReLU arm (same data, lr, steps, widths and initial weights; seed lecture 11/2 writes this
very quadratic model for a one-hidden-layer ReLU net, after Zhu et al. 2022). relu'' = 0
off the kinks, so per neuron the quadratic model is v·1[p0>0]·p with p = u·x/√d: it is
the net with its activation pattern frozen at θ0, exact except on (neuron, example)
pairs whose pre-activation changed sign. The cubic model equals the quadratic one there
(all third derivatives vanish a.e.), so it is skipped. Predictions, written before
measuring (power counting as above, not from a seed):
- flipped fraction ∝ m^-1/2 (Δp = O(1/√m), density of p at 0 is O(1));
- each flipped neuron is off by O(|v||Δp|/√m) = O(1/m); up- and down-flips carry
  opposite signs and cancel in mean, so ~√m of them sum to a random-signed O(m^-3/4):
  the quadratic model's error falls like m^-3/4, i.e. SLOWER than the linear model's
  bilinear O(1/m) term, which the linear model also has on top of the same kink part.
  "An order of width better" is therefore not expected; better by a factor in this range,
  with err_quad/err_lin growing like m^1/4 until the kink term dominates both;
- ΔΘ of the net: a smooth O(1/m) part (the quadratic model has it) plus flips of
  1[p>0] inside Θ, random-signed O(m^-3/4), which the quadratic model misses: its
  relative error in ΔΘ should not fall with width.
Measured afterwards (full mode, seed 0, m = 64…2048): flip fraction m^-0.52, the
quadratic model's error m^-0.64 (static m^-0.67), the linear model's m^-0.74 rather than
m^-1 (the flips dominate it too), err_quad/err_lin 0.68…1.04, ΔΘ relative error 0.65 →
0.85. Up- and down-flips cancel only partly (the ratio below falls like m^-0.09, not
m^-0.25): between the random-signed m^-3/4 and a coherent m^-1/2.

Issue 10 asked for "the quadratic model tracks the network an order of width better than
the linear one, and captures the NTK change": both are recorded as claims with what was
measured. The Taylor models themselves are checked on a tiny net against brute-force
Hessians first.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev

from ntkit.lab.framework import Context, digits_subset, loglog_fit
from ntkit.lab.registry import experiment
from ntkit.linearize import linearize, taylor_expand

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


class _TwoLayer(nn.Module):
    """f(x) = v·σ(U x/√d)/√m, NTK parameterization, no biases; (n, d) → (n,).

    σ is ``activation``: "tanh" or "relu". The same generator state gives the same (U, v)
    for either activation, so the two arms of the experiment start from identical weights.
    """

    def __init__(self, d: int, m: int, g: torch.Generator, activation: str = "tanh"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.activation = activation
        self.U = nn.Parameter(torch.randn(m, d, generator=g, dtype=torch.float64))
        self.v = nn.Parameter(torch.randn(m, generator=g, dtype=torch.float64))

    def preactivations(self, x: torch.Tensor) -> torch.Tensor:
        """(n, m) pre-activations u_i·x/√d."""
        return x @ self.U.T / math.sqrt(x.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _ACTIVATIONS[self.activation](self.preactivations(x))
        return h @ self.v / math.sqrt(self.v.shape[0])


def _jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(n, P) Jacobian of the scalar outputs in the trainable parameters (reverse mode)."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    return torch.cat([jac[k].reshape(x.shape[0], -1) for k in params], dim=1)


def _ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    j = _jacobian(model, x)
    return j @ j.T


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_all: torch.Tensor,
           eta: float, steps: int, every: int) -> torch.Tensor:
    """Full-batch GD on 0.5·mean((f(x) − y)²); outputs on x_all every ``every`` steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    outs = []
    for t in range(steps + 1):
        if t % every == 0:
            with torch.no_grad():
                outs.append(model(x_all).detach().clone())
        if t == steps:
            break
        loss = 0.5 * ((model(x) - y) ** 2).mean()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= eta * g
    return torch.stack(outs)


def _verify_taylor(ctx: Context) -> dict:
    """The Taylor models on a tiny net against brute force (autograd Hessian).

    - the degree-2 model of a function that *is* quadratic in θ (a two-layer linear net,
      f = v·Ux/√(md), bilinear) equals it at any θ;
    - for the tanh net: f_lin(θ0) = f(θ0), ∇f_lin(θ0) = ∇f(θ0), and
      f_quad(θ0 + δ) − f_lin(θ0 + δ) = ½ δᵀ ∇²f(θ0) δ with ∇²f from
      ``torch.autograd.functional.hessian``.
    """
    g = ctx.rng("taylor-check")
    d, m = 3, 4
    x = torch.randn(2, d, generator=g, dtype=torch.float64)

    class _Bilinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.U = nn.Parameter(torch.randn(m, d, generator=g, dtype=torch.float64))
            self.v = nn.Parameter(torch.randn(m, generator=g, dtype=torch.float64))

        def forward(self, z):
            return (z @ self.U.T) @ self.v / math.sqrt(m * d)

    bil = _Bilinear()
    quad = taylor_expand(bil, 2)
    with torch.no_grad():
        for p in quad.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64))   # far from θ0
        shifted = dict(zip(["U", "v"], [p.detach() for p in quad.theta().values()],
                           strict=True))
        exact = functional_call(bil, shifted, (x,))
        quad_err = float((quad(x) - exact).abs().max() / exact.abs().max())

    net = _TwoLayer(d, m, g)
    lin, quad = linearize(net), taylor_expand(net, 2)
    theta0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    grad_err = float((_jacobian(lin, x) - _jacobian(net, x)).abs().max())
    val_err = float((lin(x) - net(x)).detach().abs().max())
    delta = 0.3 * torch.randn(theta0.shape, generator=g, dtype=torch.float64)

    def f_flat(th: torch.Tensor, i: int) -> torch.Tensor:
        return functional_call(net, {"U": th[:m * d].reshape(m, d), "v": th[m * d:]},
                               (x[i:i + 1],))[0]

    half_dhd = torch.stack([0.5 * delta @ torch.autograd.functional.hessian(
        lambda th, i=i: f_flat(th, i), theta0) @ delta for i in range(x.shape[0])])
    with torch.no_grad():
        for mod in (lin, quad):
            mod.params["U"].add_(delta[:m * d].reshape(m, d))
            mod.params["v"].add_(delta[m * d:])
        second = quad(x) - lin(x)
    hess_err = float((second - half_dhd).abs().max() / half_dhd.abs().max())
    return {"quadratic_of_bilinear_rel_err": quad_err, "lin_value_err": val_err,
            "lin_gradient_err": grad_err, "quad_minus_lin_vs_hessian_rel_err": hess_err}


def _relu_runs(ctx: Context, cfg: dict, x: torch.Tensor, y: torch.Tensor,
               x_all: torch.Tensor) -> list[dict]:
    """The ReLU arm: per (width, seed), the net and its linear and quadratic models trained
    alike, plus the frozen-pattern identity and the sign-flip statistics at the end."""
    n, rows = x.shape[0], []
    for m in ctx.progress(cfg["relu_widths"], "relu widths"):
        for s in range(cfg["relu_seeds"]):
            net = _TwoLayer(x.shape[1], m, ctx.rng(f"init-{m}-{s}"), activation="relu")
            models = {k: taylor_expand(net, k) for k in (1, 2)}    # copies θ0 now
            probe = taylor_expand(net, 2)          # re-pointed at θ_T of the net below
            ntk0 = _ntk(models[1], x)
            with torch.no_grad():
                p0 = net.preactivations(x_all)
            f_net = _train(net, x, y, x_all, cfg["eta"], cfg["steps"], cfg["every"])
            row = {"width": m, "seed": s,
                   "final_train_loss": float(0.5 * ((f_net[-1, :n] - y) ** 2).mean())}
            d_net = _ntk(net, x) - ntk0
            row["ntk_change_net"] = float(d_net.norm() / ntk0.norm())
            with torch.no_grad():
                p_t, v_t = net.preactivations(x_all), net.v.detach()
                flipped = (p_t > 0) != (p0 > 0)
                row["flip_fraction"] = float(flipped.double().mean())
                # the quadratic model at θ_T is the net with its ReLU pattern frozen at θ0:
                # Σ v_T (relu(p_T) − 1[p0>0]·p_T)/√m is nonzero only on flipped pairs
                kink = (torch.relu(p_t) - (p0 > 0).double() * p_t) @ v_t / math.sqrt(m)
                for name, prm in net.named_parameters():
                    probe.params[name].copy_(prm)
                static = net(x_all) - probe(x_all)
                row["static_err_2"] = float(static.pow(2).mean().sqrt())
                row["frozen_pattern_identity_err"] = float(
                    (static - kink).abs().max() / net(x_all).abs().max())
                # do up-flips (off → on) and down-flips cancel? random-signed sum: the
                # ratio below falls like m^-1/4; a coherent imbalance: it stays O(1)
                contrib = (torch.relu(p_t) - (p0 > 0).double() * p_t) * v_t / math.sqrt(m)
                up = (contrib * (p0 <= 0).double()).sum(1)
                down = (contrib * (p0 > 0).double()).sum(1)
                row["kink_cancel_ratio"] = float((up + down).pow(2).mean().sqrt()
                                                 / (up.abs() + down.abs()).pow(2).mean().sqrt())
            for k, mod in models.items():
                f_k = _train(mod, x, y, x_all, cfg["eta"], cfg["steps"], cfg["every"])
                row[f"err_{k}"] = float((f_net - f_k).pow(2).mean(dim=1).sqrt().max())
                if k == 2:
                    d_k = _ntk(mod, x) - ntk0
                    row["ntk_change_2"] = float(d_k.norm() / ntk0.norm())
                    row["ntk_change_rel_err_2"] = float((d_net - d_k).norm() / d_net.norm())
            rows.append(row)
    return rows


def _relu_claims(ctx: Context, cfg: dict, rows: list[dict]) -> str:
    """Tables, claims and figure of the ReLU arm; returns its summary sentence."""
    widths_l = cfg["relu_widths"]
    widths = np.array(widths_l, dtype=np.float64)
    keys = ["err_1", "err_2", "static_err_2", "flip_fraction", "kink_cancel_ratio",
            "ntk_change_net", "ntk_change_2", "ntk_change_rel_err_2"]
    mean = {k: np.array([np.mean([r[k] for r in rows if r["width"] == m]) for m in widths_l])
            for k in keys}
    fits = {k: loglog_fit(widths, mean[k]) for k in keys}
    ctx.table("relu_by_width", {"width": widths, **mean})
    ctx.table("relu_slopes", {"quantity": keys, "slope": [fits[k].slope for k in keys],
                              "slope_se": [fits[k].slope_se for k in keys]})
    span = f"m = {widths_l[0]}…{widths_l[-1]}, {cfg['relu_seeds']} seed(s) each"

    ident = max(r["frozen_pattern_identity_err"] for r in rows)
    ctx.claim("ReLU: quadratic model = net with its activation pattern frozen at θ0 "
              "(max rel. error of the identity at θ_T)", 0.0, ident, 1e-10,
              note="relu'' = 0 off the kinks, so per neuron f_quad = v·1[p0>0]·p exactly "
                   "(lecture 11/2: 'no ∂²_u second derivatives because ReLU'); the net minus "
                   "its quadratic model at the net's own θ_T must equal Σ v_T(relu(p_T) − "
                   "1[p0>0]p_T)/√m over sign-flipped pairs. Exact identity, float64 round-off")
    ctx.claim("ReLU: fraction of (neuron, example) pairs whose sign flips ∝ m^slope", -0.5,
              fits["flip_fraction"].slope, 0.15,
              note=f"{fits['flip_fraction'].label()} ({span}). Prediction: Δp_i = O(1/√m) "
                   "and the density of p at 0 is O(1), so P(flip) ≈ 2ρ(0)E|Δp| ∝ m^-1/2. "
                   "±0.15: a count of ≥ 10² flips per width plus the curvature of E|Δp| "
                   "at the smallest widths")
    ctx.claim("ReLU: quadratic model's static error |f_net − f_quad| at θ_T ∝ m^slope", -0.75,
              fits["static_err_2"].slope, 0.25,
              note=f"{fits['static_err_2'].label()}. Prediction (our power counting, no seed "
                   "states it): ~√m flipped neurons per example, each off by O(|v||Δp|/√m) = "
                   "O(1/m); up- and down-flips have opposite signs and cancel in mean, so the "
                   "sum is random-signed: m^1/4·m^-1 = m^-3/4. ±0.25 as for the tanh slopes. "
                   "Check of that assumption, |Σup + Σdown|/(|Σup| + |Σdown|) by width: "
                   f"{np.round(mean['kink_cancel_ratio'], 3).tolist()} "
                   f"({fits['kink_cancel_ratio'].label()}; random signs predict −0.25, no "
                   "cancellation 0). If it stays O(1) the flips add coherently, "
                   "m·m^-1/2·m^-1 = m^-1/2 (a posteriori: a neuron active at a training "
                   "point gets that point's gradient, one inactive there does not, so the "
                   "p → 0⁺ and p → 0⁻ sides move differently)")
    ctx.claim("ReLU: linear model error ∝ m^slope", -1.0, fits["err_1"].slope, 0.25,
              note=f"{fits['err_1'].label()} ({span}). Prediction: the bilinear term "
                   "Σ Δv_i 1[p>0] Δp_i/√m has Δp_i ∝ v_i, random signs: O(1/m) as for tanh; "
                   "the linear model also misses the kink part, O(m^-3/4), which only "
                   "dominates at larger widths if its constant is comparable. ±0.25 as above")
    ctx.claim("ReLU: quadratic model error (trajectories) ∝ m^slope", -0.75,
              fits["err_2"].slope, 0.25,
              note=f"{fits['err_2'].label()}. Prediction: all of it comes from sign flips "
                   "(static part m^-3/4 above, and the NTK differs on flipped pairs by the "
                   "same random-signed O(m^-3/4), which GD integrates). So it falls SLOWER "
                   "than 1/m, not faster. ±0.25 as above")
    ratio = mean["err_2"] / mean["err_1"]
    ctx.claim("ReLU: quadratic model beats the linear one at every width "
              "(max err_quad/err_lin)", "< 1", float(ratio.max()), "one-sided",
              holds=bool(ratio.max() < 1),
              note=f"ratios by width {np.round(ratio, 3).tolist()}. Expected in this width "
                   "range (Zhu et al. 2022 use exactly this quadratic model for ReLU nets): "
                   "the flipped fraction is small, but by the slopes above the ratio should "
                   "grow with m like m^1/4")
    gap = fits["err_2"].slope - fits["err_1"].slope
    ctx.claim("issue 10, ReLU: quadratic model tracks the net an order of width better "
              "(slope_quad − slope_lin)", "≤ −0.5", gap, "one-sided", holds=bool(gap <= -0.5),
              note="the observation to test: exact except at flips, so 'faster'. Our "
                   "prediction: NOT an order better; m^-3/4 against m^-1 gives about +0.25 "
                   "(quadratic falls slower), i.e. better by a factor, not by a power")
    rel2 = mean["ntk_change_rel_err_2"]
    ctx.claim("issue 10, ReLU: quadratic model captures the NTK change (relative error of "
              "ΔΘ, widest net)", "≤ 0.1", float(rel2[-1]), "one-sided",
              holds=bool(rel2[-1] <= 0.1),
              note=f"by width {np.round(rel2, 3).tolist()} ({fits['ntk_change_rel_err_2'].label()}"
                   f"); net ΔΘ slope {fits['ntk_change_net'].label()}. 0.1 as in the tanh "
                   "arm. Prediction: the smooth part of ΔΘ is O(1/m) and the quadratic model "
                   "has it; flips of 1[p>0] in Θ = Σ(relu relu' + v² 1 1' x·x'/d)/m add a "
                   "random-signed O(m^-3/4) it misses, so the relative error should not fall "
                   "with m (≈ m^+1/4); whether it is ≤ 0.1 here depends on constants. The "
                   f"quadratic model's own ΔΘ: {fits['ntk_change_2'].label()} (its smooth "
                   "O(1/m) part); the rest of the net's ΔΘ is the flips'")

    fig, (a1, a2) = ctx.new_figure(ncols=2)
    for i, (key, lab) in enumerate([("err_1", "linear"), ("err_2", "quadratic"),
                                    ("static_err_2", "quadratic, static at θ_T")]):
        a1.loglog(widths, mean[key], "o", color=f"C{i}", label=f"{lab}: {fits[key].label()}")
        a1.loglog(widths, fits[key](widths), "-", color=f"C{i}", lw=0.8)
    a1.set_xlabel("width m")
    a1.set_ylabel("RMS |f_net − f_model|")
    a1.set_title("ReLU net vs its Taylor models")
    a2.loglog(widths, mean["flip_fraction"], "o-",
              label=f"flipped pairs: {fits['flip_fraction'].label()}")
    a2.loglog(widths, mean["ntk_change_net"], "s-", label="net: ‖ΔΘ‖/‖Θ0‖")
    a2.loglog(widths, rel2, "^-", label="quadratic: ‖ΔΘ_net − ΔΘ_quad‖/‖ΔΘ_net‖")
    a2.set_xlabel("width m")
    a2.set_title("ReLU: sign flips and NTK change")
    for ax in (a1, a2):
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    ctx.savefig(fig, "relu_taylor_models")
    return (f" ReLU ({span}; cubic model skipped: it equals the quadratic one off the kinks): "
            f"slopes linear {fits['err_1'].slope:+.2f}, quadratic {fits['err_2'].slope:+.2f}, "
            f"flip fraction {fits['flip_fraction'].slope:+.2f}; err_quad/err_lin = "
            f"{ratio.min():.2f}…{ratio.max():.2f}; quadratic model misses {rel2[-1]:.0%} of "
            f"the NTK change at m = {widths_l[-1]}.")


@experiment("quadratic_model",
            "Wide tanh and ReLU nets vs their linear/quadratic(/cubic) Taylor models under the "
            "same GD: error and NTK change against width (lecture 11/2; Dyer & Gur-Ari 2020)")
def quadratic_model(ctx: Context) -> str:
    if ctx.quick:
        cfg = {"widths": [64, 256, 1024], "seeds": 2, "n_train": 16, "n_test": 16,
               "eta": 2.0, "steps": 25, "every": 5, "cubic": False,
               "relu_widths": [64, 256, 1024], "relu_seeds": 1}
    else:
        cfg = {"widths": [64, 128, 256, 512, 1024, 2048], "seeds": 2, "n_train": 32,
               "n_test": 32, "eta": 2.0, "steps": 60, "every": 5, "cubic": True,
               "relu_widths": [64, 128, 256, 512, 1024, 2048], "relu_seeds": 2}
    cfg["activations"] = ["tanh", "relu"]      # the two arms; same data, lr, steps, inits
    ctx.config.update(cfg)
    checks = _verify_taylor(ctx)
    ctx.table("taylor_checks", {k: [v] for k, v in checks.items()})
    worst = max(checks.values())
    ctx.claim("Taylor models exact on a tiny net (max error of 4 identities)", 0.0, worst,
              1e-10, note="quadratic model of a bilinear net = the net; f_lin and ∇f_lin = "
                          "f and ∇f at θ0; f_quad − f_lin = ½δᵀ∇²f δ with ∇²f from "
                          "torch.autograd.functional.hessian. Identities: float64 round-off "
                          "(1e-10 leaves room for O(10) flops of cancellation)")

    n, nt = cfg["n_train"], cfg["n_test"]
    x_all, labels = digits_subset(n + nt, ctx.seed_for("data"), norm="sphere")
    y_all = torch.where(labels < 5, 1.0, -1.0).to(torch.float64)
    x, y = x_all[:n], y_all[:n]
    degrees = [1, 2, 3] if cfg["cubic"] else [1, 2]
    rows = []
    for m in ctx.progress(cfg["widths"], "widths"):
        for s in range(cfg["seeds"]):
            net = _TwoLayer(x.shape[1], m, ctx.rng(f"init-{m}-{s}"))
            models = {k: taylor_expand(net, k) for k in degrees}   # copies θ0 now
            ntk0 = _ntk(models[1], x)
            f_net = _train(net, x, y, x_all, cfg["eta"], cfg["steps"], cfg["every"])
            row = {"width": m, "seed": s,
                   "final_train_loss": float(0.5 * ((f_net[-1, :n] - y) ** 2).mean()),
                   "final_test_mse": float(((f_net[-1, n:] - y_all[n:]) ** 2).mean())}
            d_net = _ntk(net, x) - ntk0
            row["ntk_change_net"] = float(d_net.norm() / ntk0.norm())
            for k, mod in models.items():
                f_k = _train(mod, x, y, x_all, cfg["eta"], cfg["steps"], cfg["every"])
                diff = f_net - f_k
                row[f"err_{k}"] = float(diff.pow(2).mean(dim=1).sqrt().max())
                row[f"err_{k}_end_train"] = float(diff[-1, :n].pow(2).mean().sqrt())
                row[f"err_{k}_end_test"] = float(diff[-1, n:].pow(2).mean().sqrt())
                if k >= 2:
                    d_k = _ntk(mod, x) - ntk0
                    row[f"ntk_change_{k}"] = float(d_k.norm() / ntk0.norm())
                    row[f"ntk_change_rel_err_{k}"] = float((d_net - d_k).norm() / d_net.norm())
            rows.append(row)
    ctx.table("runs", rows)

    widths = np.array(cfg["widths"], dtype=np.float64)

    def mean_over_seeds(key: str) -> np.ndarray:
        return np.array([np.mean([r[key] for r in rows if r["width"] == m])
                         for m in cfg["widths"]])

    keys = ["err_1", "err_2", "ntk_change_net", "ntk_change_rel_err_2"]
    if cfg["cubic"]:
        keys += ["err_3", "ntk_change_rel_err_3"]
    mean = {k: mean_over_seeds(k) for k in keys}
    fits = {k: loglog_fit(widths, mean[k]) for k in keys}
    ctx.table("by_width", {"width": widths, **mean})
    ctx.table("slopes", {"quantity": keys, "slope": [fits[k].slope for k in keys],
                         "slope_se": [fits[k].slope_se for k in keys]})
    span = f"m = {cfg['widths'][0]}…{cfg['widths'][-1]}, {cfg['seeds']} seeds each"

    ctx.claim("linear model error ∝ m^slope", -1.0, fits["err_1"].slope, 0.25,
              note=f"{fits['err_1'].label()} ({span}). Prediction: O(1/m), Dyer & Gur-Ari 2020 "
                   "and Roberts–Yaida ch. 10-11 (the Hessian term is a sum of m random-signed "
                   "terms of size m^-3/2). The seed's bound β/(2√m)‖θ−θ0‖² (notes 001) is a "
                   "worst-case m^-1/2 upper bound, not the rate. ±0.25: finite-size "
                   "corrections and seed-to-seed spread of the random-signed part over a "
                   "1.5-2.5 decade fit")
    ctx.claim("quadratic model error ∝ m^slope (third-order terms are O(1/m) too)", -1.0,
              fits["err_2"].slope, 0.25,
              note=f"{fits['err_2'].label()}. Prediction: the cubic Taylor term has an even "
                   "power of v_i (Δu_i ∝ v_i), so it sums coherently to O(1/m); the quadratic "
                   "model lacks it (Roberts–Yaida: O(1/n) dynamics need the ddNTKs as well as "
                   "the dNTK). Same tolerance as above")
    ratio = mean["err_2"] / mean["err_1"]
    ctx.claim("quadratic model beats the linear one at every width (max err_quad/err_lin)",
              "< 1", float(ratio.max()), "one-sided", holds=bool(ratio.max() < 1),
              note=f"ratios by width {np.round(ratio, 3).tolist()}: it removes the dNTK part "
                   "of the deviation, a constant fraction")
    gap = fits["err_2"].slope - fits["err_1"].slope
    ctx.claim("issue 10: quadratic model tracks the net an order of width better "
              "(slope_quad − slope_lin)", "≤ −0.5", gap, "one-sided", holds=bool(gap <= -0.5),
              note="what issue 10 asked to show; by the power counting above it should NOT "
                   "hold for a generic smooth activation (both errors O(1/m)); an order better "
                   "needs the cubic model (next claim) or an activation with vanishing third "
                   "derivative")
    if cfg["cubic"]:
        gap3 = fits["err_3"].slope - fits["err_1"].slope
        ctx.claim("cubic model tracks the net a power of width better (slope_cubic − "
                  "slope_lin)", "≤ −0.5", gap3, "one-sided", holds=bool(gap3 <= -0.5),
                  note=f"{fits['err_3'].label()}. Power counting: the first missing (4th-order) "
                       "terms are random-signed, O(m^-3/2) or smaller; −0.5 is that one "
                       "extra power of 1/√m")
    ctx.claim("NTK change ‖Θ_T − Θ_0‖/‖Θ_0‖ ∝ m^slope", -1.0, fits["ntk_change_net"].slope,
              0.25, note=f"{fits['ntk_change_net'].label()}. Dyer & Gur-Ari 2020: dΘ/dt = O(1/n) "
                         "in NTK parameterization (the 1/√n spread of Θ_0 itself does not "
                         "move). The linear model's NTK is constant by construction")
    rel2 = mean["ntk_change_rel_err_2"]
    ctx.claim("issue 10: quadratic model captures the NTK change (relative error of ΔΘ, "
              "widest net)", "≤ 0.1", float(rel2[-1]), "one-sided", holds=bool(rel2[-1] <= 0.1),
              note=f"by width {np.round(rel2, 3).tolist()}, slope "
                   f"{fits['ntk_change_rel_err_2'].label()}. 0.1 = 'captures' meaning 90% of "
                   "ΔΘ. Prediction from the power counting: it misses the third-derivative "
                   "part of ΔΘ, of the same order 1/m, so the relative error tends to a "
                   "nonzero constant (it is the cubic model's that falls, next claim)")
    if cfg["cubic"]:
        rel3 = mean["ntk_change_rel_err_3"]
        ctx.claim("cubic model's NTK-change relative error falls with width (slope)", "< 0",
                  fits["ntk_change_rel_err_3"].slope, "one-sided",
                  holds=bool(fits["ntk_change_rel_err_3"].slope + 2 * fits[
                      "ntk_change_rel_err_3"].slope_se < 0),
                  note=f"by width {np.round(rel3, 3).tolist()} ("
                       f"{fits['ntk_change_rel_err_3'].label()}); holds when the slope is "
                       "negative by 2 standard errors. The missing 4th-order part of ΔΘ is "
                       "O(m^-3/2) against ΔΘ = O(1/m), so the relative error should fall "
                       "like m^-1/2")

    fig, (a1, a2) = ctx.new_figure(ncols=2)
    labels_k = {1: "linear", 2: "quadratic", 3: "cubic"}
    for i, k in enumerate(degrees):
        key = f"err_{k}"
        a1.loglog(widths, mean[key], "o", color=f"C{i}",
                  label=f"{labels_k[k]}: {fits[key].label()}")
        a1.loglog(widths, fits[key](widths), "-", color=f"C{i}", lw=0.8)
    a1.set_xlabel("width m")
    a1.set_ylabel("max_t RMS |f_net − f_model|")
    a1.set_title("network vs Taylor models, same GD")
    a2.loglog(widths, mean["ntk_change_net"], "o-", label="net: ‖ΔΘ‖/‖Θ0‖")
    a2.loglog(widths, rel2, "s-", label="quadratic: ‖ΔΘ_net − ΔΘ_quad‖/‖ΔΘ_net‖")
    if cfg["cubic"]:
        a2.loglog(widths, mean["ntk_change_rel_err_3"], "^-",
                  label="cubic: ‖ΔΘ_net − ΔΘ_cubic‖/‖ΔΘ_net‖")
    a2.set_xlabel("width m")
    a2.set_title("NTK change and how well the models capture it")
    for ax in (a1, a2):
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    ctx.savefig(fig, "taylor_models")

    s = (f"slopes over {span}: linear {fits['err_1'].slope:+.2f}, quadratic "
         f"{fits['err_2'].slope:+.2f}")
    if cfg["cubic"]:
        s += f", cubic {fits['err_3'].slope:+.2f}"
    s += (f"; err_quad/err_lin = {ratio.min():.2f}…{ratio.max():.2f}; NTK change slope "
          f"{fits['ntk_change_net'].slope:+.2f}, quadratic model misses "
          f"{rel2[-1]:.0%} of it at m = {cfg['widths'][-1]}")
    if cfg["cubic"]:
        s += f", cubic {mean['ntk_change_rel_err_3'][-1]:.0%}"
    relu_rows = _relu_runs(ctx, cfg, x, y, x_all)
    ctx.table("relu_runs", relu_rows)
    return "tanh: " + s + "." + _relu_claims(ctx, cfg, relu_rows)
