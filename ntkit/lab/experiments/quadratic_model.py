"""quadratic_model: wide networks against their linear, quadratic and cubic Taylor models
(Dyer & Gur-Ari 2020, "Asymptotics of wide networks from Feynman diagrams"; Huang & Yau
2020, "Dynamics of deep neural networks and neural tangent hierarchy"; Roberts, Yaida &
Hanin 2022, "The principles of deep learning theory", chapters 11 and ∞; Zhu, Liu, Radhakrishnan
& Belkin 2022, "Quadratic models for understanding neural network dynamics").

A one-hidden-layer tanh net in NTK parameterization, f(x) = Σ_i v_i tanh(u_iᵀx/√d)/√m with
u_i, v_i ~ N(0, 1), is trained by full-batch GD on MSE (a digits subset, target ±1 for
"digit < 5"), and so are its Taylor models of degree 1 (`ntkit.linearize`), 2 and 3
(`ntkit.taylor_expand`) around the same θ0: same data, same lr (fixed, not scaled with m:
in NTK parameterization the NTK is O(1)), same steps.

What theory predicts, and is claimed:
- **dΘ/dt at t = 0.** Θ's derivative along the GD velocity involves only first and second
  derivatives of f at θ0 (∂Θ_ij = ∇²f_i·∇f_j + ∇f_i·∇²f_j), which the quadratic model has
  exactly: its dΘ/dt at t = 0 equals the net's (the linear model's is 0). Exact identity.
- **Rates in width** (power counting per neuron, as in Dyer & Gur-Ari's diagrams):
  Δu_i, Δv_i = O(1/√m) and Δu_i ∝ v_i. The k-th Taylor term is a sum over m neurons of
  terms of size m^{-1/2}·m^{-k/2}; it is coherent (nonzero mean) when its power of v_i is
  even and random-signed otherwise (then the sum is √m times one term). k = 2: v³ and v¹
  terms, random signs: O(1/m). k = 3: v⁴ and v², coherent: O(1/m) too. k = 4: odd powers
  again: O(m^{-3/2}). So the linear *and* the quadratic model deviate by O(1/m) (the
  quadratic model has the dNTK but not the third-order "ddNTK" terms, which enter at the
  same order; Roberts, Yaida & Hanin ch. 11 and ∞), and the consistent O(1/m) truncation
  is the cubic model, whose error falls like m^{-3/2}. "The quadratic model is an order of
  width better than the linear one" comes from worst-case norm bounds, not from rates, and
  is not claimed. The NTK change ‖Θ_T − Θ_0‖/‖Θ_0‖ is O(1/m).
- **Catapult** (Zhu et al. 2022; Lewkowycz et al. 2020, "The large learning rate phase of
  deep learning: the catapult mechanism"): with λ₀ the top eigenvalue of Θ_0/n (the
  Hessian of this loss in function space) and η·λ₀ = 3 ∈ (2, 4), the linear model diverges
  (its top residual component is multiplied by 1 − ηλ₀ = −2 each step: the loss by 4),
  while the quadratic model, like the network, catapults: its loss spikes, its NTK falls
  until ηλ_max < 2, and it then converges.

ReLU arm (same data, lr, steps, widths and initial weights). relu'' = 0 off the kinks, so
per neuron the quadratic model is v·1[p0>0]·p with p = u·x/√d: the net with its
activation pattern frozen at θ0, exact except on (neuron, example) pairs whose
pre-activation changed sign (Zhu et al. 2022 use this quadratic model). The cubic model
equals the quadratic one there, so it is skipped. Predictions (power counting as above):
flipped fraction ∝ m^-1/2 (Δp = O(1/√m), density of p at 0 is O(1)); each flipped neuron
is off by O(|v||Δp|/√m) = O(1/m), and up- and down-flips cancel in mean, so ~√m of them
sum to a random-signed O(m^-3/4): the quadratic model's error falls like m^-3/4, slower
than the linear model's bilinear O(1/m) term. Measured in an earlier full run (seed 0,
m = 64…2048): flip fraction m^-0.52, the quadratic model's error m^-0.64 (static
m^-0.67), the linear model's m^-0.74 (the flips dominate it too); up- and down-flips
cancel only partly (between the random-signed m^-3/4 and a coherent m^-1/2).

The Taylor models themselves are checked on a tiny net against brute-force Hessians first.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp

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


def _ntk_of(model: nn.Module, params: dict, x: torch.Tensor) -> torch.Tensor:
    """(n, n) NTK of ``model`` at ``params`` (functional, so it can be differentiated)."""
    jac = jacrev(lambda q: functional_call(model, q, (x,)))(params)
    j = torch.cat([jac[k].reshape(x.shape[0], -1) for k in params], dim=1)
    return j @ j.T


def _ntk_rate_at_init(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dΘ/dt at t = 0 under gradient flow on 0.5·mean((f − y)²) (time in units of the lr):
    the directional derivative of θ ↦ Θ(θ) along −∇L(θ0), by forward-over-reverse AD."""
    p = {k: v.detach() for k, v in model.named_parameters()}

    def loss(q):
        return 0.5 * ((functional_call(model, q, (x,)) - y) ** 2).mean()

    vel = {k: -g for k, g in torch.func.grad(loss)(p).items()}
    return jvp(lambda q: _ntk_of(model, q, x), (p,), (vel,))[1]


def _gd_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float, steps: int,
               stop_above: float) -> list[float]:
    """Training losses of full-batch GD (stops once the loss exceeds ``stop_above``)."""
    params = [q for q in model.parameters() if q.requires_grad]
    losses = []
    for _ in range(steps + 1):
        loss = 0.5 * ((model(x) - y) ** 2).mean()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]) or losses[-1] > stop_above or len(losses) > steps:
            break
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for q, g in zip(params, grads, strict=True):
                q -= eta * g
    return losses


def _top_ntk_eig(model: nn.Module, x: torch.Tensor) -> float:
    """Top eigenvalue of Θ/n: the function-space Hessian of 0.5·mean((f − y)²)."""
    p = {k: v.detach() for k, v in model.named_parameters()}
    return float(torch.linalg.eigvalsh(_ntk_of(model, p, x) / x.shape[0]).max())


def _catapult(ctx: Context, cfg: dict, x: torch.Tensor, y: torch.Tensor) -> str:
    """Net, linear and quadratic model at η = 3/λ₀ (Zhu et al. 2022); claims; summary."""
    m = cfg["catapult_width"]
    net = _TwoLayer(x.shape[1], m, ctx.rng("catapult-init"))
    lin, quad = taylor_expand(net, 1), taylor_expand(net, 2)
    lam0 = _top_ntk_eig(net, x)
    eta = cfg["catapult_eta_lambda"] / lam0
    zhu = ("Zhu, Liu, Radhakrishnan & Belkin 2022, 'Quadratic models for understanding neural "
           "network dynamics'")
    runs = {}
    for name, mod in (("net", net), ("linear", lin), ("quadratic", quad)):
        losses = _gd_losses(mod, x, y, eta, cfg["catapult_steps"], stop_above=1e10)
        finite = math.isfinite(losses[-1]) and losses[-1] <= 1e10
        runs[name] = {"losses": losses,
                      "final_eta_lambda": eta * _top_ntk_eig(mod, x) if finite else math.nan}
    ctx.table("catapult", {"model": list(runs),
                           "steps_run": [len(r["losses"]) - 1 for r in runs.values()],
                           "initial_loss": [r["losses"][0] for r in runs.values()],
                           "max_loss": [max(r["losses"]) for r in runs.values()],
                           "final_loss": [r["losses"][-1] for r in runs.values()],
                           "final_eta_lambda": [r["final_eta_lambda"] for r in runs.values()]})
    ctx.config.update({"catapult_lambda0": lam0, "catapult_eta": eta})
    ll = runs["linear"]["losses"]
    growth = ll[-1] / ll[-2]
    k = cfg["catapult_eta_lambda"]
    ctx.claim(f"catapult, linear model at ηλ₀ = {k:g}: loss growth per step at divergence",
              (k - 1) ** 2, growth, 0.05 * (k - 1) ** 2,
              note=f"GD on the linear model multiplies the residual's top-eigenvector "
                   f"component by 1 − ηλ₀ = {1 - k:g} each step, so the loss grows ×(ηλ₀ − 1)² "
                   f"once that component dominates (after {len(ll) - 1} steps; stopped above "
                   "1e10); 5% for the other components still above 2/η")
    q = runs["quadratic"]
    spike = max(q["losses"]) / q["losses"][0]
    ok = bool(spike > 1.0 and q["final_eta_lambda"] < 2.0
              and q["losses"][-1] < 1e-3 * q["losses"][0])
    ctx.claim(f"catapult, quadratic model at ηλ₀ = {k:g}: final η·λ_max (after a loss spike, "
              "then convergence)", "< 2", q["final_eta_lambda"], "one-sided", holds=ok,
              note=f"loss {q['losses'][0]:.3g} → max {max(q['losses']):.3g} (×{spike:.3g}) → "
                   f"{q['losses'][-1]:.3g} after {cfg['catapult_steps']} steps. {zhu}: for "
                   "ηλ₀ ∈ (2, 4) the quadratic model catapults: the loss rises, the top NTK "
                   "eigenvalue falls below 2/η, then the loss converges (holds: spike > 1, "
                   "final ηλ < 2 and final loss < 1e-3 × initial)")
    r = runs["net"]
    spike_net = max(r["losses"]) / r["losses"][0]
    ok_net = bool(spike_net > 1.0 and r["final_eta_lambda"] < 2.0
                  and r["losses"][-1] < 1e-3 * r["losses"][0])
    ctx.claim(f"catapult, network at ηλ₀ = {k:g}: final η·λ_max (after a loss spike, then "
              "convergence)", "< 2", r["final_eta_lambda"], "one-sided", holds=ok_net,
              note=f"loss {r['losses'][0]:.3g} → max {max(r['losses']):.3g} (×{spike_net:.3g})"
                   f" → {r['losses'][-1]:.3g}; the same criterion as for the quadratic model, "
                   f"which {zhu} show tracks the network through the catapult (Lewkowycz et "
                   "al. 2020, 'The large learning rate phase of deep learning: the catapult "
                   "mechanism')")
    fig, ax = ctx.new_figure()
    for name, rr in runs.items():
        ax.semilogy(np.arange(len(rr["losses"])), rr["losses"], "-", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_ylim(top=1e4)
    ax.set_title(f"catapult at ηλ₀ = {k:g} (m = {m})")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ctx.savefig(fig, "catapult")
    return (f" Catapult at ηλ₀ = {k:g} (m = {m}): linear model diverges (×{growth:.3g} per "
            f"step), quadratic model spikes ×{spike:.3g} and ends at ηλ = "
            f"{q['final_eta_lambda']:.3g}, the net ×{spike_net:.3g} and ηλ = "
            f"{r['final_eta_lambda']:.3g}.")


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
                   "(Zhu et al. 2022's quadratic model of a ReLU net); the net minus "
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
              note=f"{fits['static_err_2'].label()}. Prediction: ~√m flipped neurons per "
                   "example, each off by O(|v||Δp|/√m) = O(1/m); up- and down-flips have "
                   "opposite signs and cancel in mean, so the "
                   "sum is random-signed: m^1/4·m^-1 = m^-3/4 (power counting as in Dyer & "
                   "Gur-Ari 2020). ±0.25 as for the tanh slopes. "
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
    rel2 = mean["ntk_change_rel_err_2"]
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
            "Wide tanh and ReLU nets vs their linear/quadratic/cubic Taylor models: dΘ/dt at "
            "t = 0, error rates in width, and the catapult at ηλ₀ = 3 (Dyer & Gur-Ari 2020; Zhu et "
            "al. 2022)")
def quadratic_model(ctx: Context) -> str:
    if ctx.quick:
        cfg = {"widths": [64, 256, 1024], "seeds": 2, "n_train": 16, "n_test": 16,
               "eta": 2.0, "steps": 25, "every": 5, "cubic": True,
               "relu_widths": [64, 256, 1024], "relu_seeds": 1,
               "catapult_width": 128, "catapult_eta_lambda": 3.0, "catapult_steps": 150}
    else:
        cfg = {"widths": [64, 128, 256, 512, 1024, 2048], "seeds": 2, "n_train": 32,
               "n_test": 32, "eta": 2.0, "steps": 60, "every": 5, "cubic": True,
               "relu_widths": [64, 128, 256, 512, 1024, 2048], "relu_seeds": 2,
               "catapult_width": 1024, "catapult_eta_lambda": 3.0, "catapult_steps": 400}
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

    # dΘ/dt at t = 0: the quadratic model's equals the net's (both by forward-over-reverse AD)
    net0 = _TwoLayer(x.shape[1], cfg["widths"][0], ctx.rng("ntk-rate"))
    rate_net = _ntk_rate_at_init(net0, x, y)
    rate_quad = _ntk_rate_at_init(taylor_expand(net0, 2), x, y)
    rate_err = float((rate_quad - rate_net).norm() / rate_net.norm())
    ctx.claim("quadratic model's dΘ/dt at t = 0 vs the net's (relative Frobenius error)", 0.0,
              rate_err, 1e-10,
              note=f"m = {cfg['widths'][0]}; ‖dΘ/dt‖/‖Θ‖ = "
                   f"{float(rate_net.norm() / _ntk(net0, x).norm()):.3g}. dΘ_ij/dt = "
                   "(∇²f_i v)·∇f_j + ∇f_i·(∇²f_j v) needs only derivatives up to second order "
                   "at θ0, which the quadratic model has exactly (Dyer & Gur-Ari 2020; Huang & "
                   "Yau 2020); identity, float64 round-off")
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
                   "and Roberts, Yaida & Hanin 2022 ch. 10-11 (the Hessian term is a sum of m "
                   "random-signed terms of size m^-3/2). The norm bound β/(2√m)‖θ−θ0‖² (Liu, "
                   "Zhu & Belkin 2020, 'On the linearity of large non-linear models') is a "
                   "worst-case m^-1/2 upper bound, not the rate. ±0.25: finite-size "
                   "corrections and seed-to-seed spread of the random-signed part over a "
                   "1.5-2.5 decade fit")
    ratio = mean["err_2"] / mean["err_1"]
    ctx.claim("quadratic model error ∝ m^slope (third-order terms are O(1/m) too)", -1.0,
              fits["err_2"].slope, 0.25,
              note=f"{fits['err_2'].label()}. Prediction: the cubic Taylor term has an even "
                   "power of v_i (Δu_i ∝ v_i), so it sums coherently to O(1/m); the quadratic "
                   "model lacks it (Roberts, Yaida & Hanin: O(1/n) dynamics need the ddNTKs as "
                   "well as the dNTK). Same tolerance as above. Ratio err_quad/err_lin by width: "
                   f"{np.round(ratio, 3).tolist()} (a constant factor, not a power)")
    if cfg["cubic"]:
        ctx.claim("cubic model error ∝ m^slope (faster than 1/m)", -1.5, fits["err_3"].slope,
                  0.25,
                  note=f"{fits['err_3'].label()}. Power counting (Dyer & Gur-Ari 2020): the "
                       "first missing (4th-order) terms carry odd powers of v_i, random signs: "
                       "O(m^-3/2). Same tolerance as the other slopes; anything below −1 is "
                       "'faster than 1/m'")
    ctx.claim("NTK change ‖Θ_T − Θ_0‖/‖Θ_0‖ ∝ m^slope", -1.0, fits["ntk_change_net"].slope,
              0.25, note=f"{fits['ntk_change_net'].label()}. Dyer & Gur-Ari 2020: dΘ/dt = O(1/m) "
                         "in NTK parameterization (the 1/√n spread of Θ_0 itself does not "
                         "move). The linear model's NTK is constant by construction")
    rel2 = mean["ntk_change_rel_err_2"]
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
    return "tanh: " + s + "." + _catapult(ctx, cfg, x, y) + _relu_claims(ctx, cfg, relu_rows)
