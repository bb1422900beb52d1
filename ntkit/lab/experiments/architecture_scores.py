"""Training-free architecture scores vs the accuracy reached after brief training.

A few dozen small fully connected networks on sklearn's digits (8×8, 10 classes) differ in
depth (1, 2, 4 hidden layers), width (16, 64, 128), activation (ReLU, Tanh, GELU) and
residual connections (h ← h + φ(W h + b) in the hidden blocks), all with one initialization
scale (W ~ N(0, 2/fan_in), biases 0): a varying init scale would change the effective step
size and confound "architecture" with "learning rate". At initialization each is scored by

- TE-NAS' condition number κ = λ_max/λ_min of the empirical NTK (Chen, Gong & Wang 2021;
  `ntkit.metrics.ntk_condition_number`, outputs summed as in their code, all parameters)
  on a batch of training images;
- NASWOT, log|det K_H| of the Hamming kernel of ReLU codes (Mellor et al. 2021;
  `ntkit.metrics.naswot_score`), for the ReLU networks only (it is not defined without
  ReLUs; half of the sampled architectures are ReLU nets), on a batch of 32: K_H has rank
  ≤ N_A + 1 (N_A ReLU units), so Mellor et al.'s batch of 128 would make it singular
  (score −inf) for every net here with fewer than 127 units; with 32 only the
  1-hidden-layer width-16 nets are, and their −inf ranks lowest (ties averaged);
- the NTK trace tr Θ / n (the mean per-example gradient norm², no claim attached);
- as a baseline, the parameter count: a score tells more than the size of the net only
  if it correlates better than this.

Then each network is trained by minibatch SGD with momentum (cross-entropy) with each of a
few learning rates and several seeds; the learning rate with the best mean validation
accuracy is kept, and the architecture's accuracy is its mean test accuracy over seeds at
that rate (validation and test are disjoint halves of the held-out images). Scores are
averaged over the seeds' initializations (log κ, NASWOT). Kendall's τ between each score
and the accuracy, with a bootstrap 95% CI over architectures, and the partial rank
correlation given log(#parameters) (the size baseline removed) are compared with the
published direction: TE-NAS report κ *negatively* correlated with accuracy, NASWOT a
*positive* correlation, both on NAS-Bench-201 CNN cells. Mok et al. (CVPR 2022,
"Demystifying the neural tangent kernel from a practical perspective: can it be trusted for
neural architecture search without training?") and Abdelfattah et al. (ICLR 2021,
"Zero-cost proxies for lightweight NAS") find the NTK condition number weakly or not
correlated with accuracy once such confounds are controlled, so a failing κ claim here is
a genuine negative result, not a defect of the set-up.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy.stats import kendalltau, rankdata
from torch import Tensor, nn

from ntkit.lab.framework import Context, digits_subset
from ntkit.lab.registry import experiment
from ntkit.metrics import naswot_score, ntk_condition_number, ntk_spectrum

DEPTHS = (1, 2, 4)
WIDTHS = (16, 64, 128)
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
SKIPS = (False, True)
LEARNING_RATES = (0.005, 0.02, 0.08)


class MLP(nn.Module):
    """Linear(d, w), φ, then depth−1 hidden blocks (φ(W h + b), plus h with skip), Linear(w, 10)."""

    def __init__(self, d: int, depth: int, width: int, act: str, skip: bool, scale: float,
                 seed: int):
        super().__init__()
        self.skip = skip
        self.inp = nn.Linear(d, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.out = nn.Linear(width, 10)
        self.act = ACTIVATIONS[act]()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for lin in [self.inp, *self.hidden, self.out]:
                std = scale * math.sqrt(2.0 / lin.in_features)
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * std)
                lin.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.inp(x))
        for lin in self.hidden:
            z = self.act(lin(h))
            h = h + z if self.skip else z
        return self.out(h)


def spearman(a, b) -> float:
    """Spearman's ρ (Pearson correlation of average ranks); NaN for constant input."""
    ra, rb = rankdata(a), rankdata(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def bootstrap_ci(a, b, rng: np.random.Generator, n_boot: int = 2000,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of Spearman's ρ, resampling architectures with replacement
    (all resamples ranked at once; resamples with a constant column are dropped)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    idx = rng.integers(0, a.size, (n_boot, a.size))
    ra, rb = rankdata(a[idx], axis=1), rankdata(b[idx], axis=1)   # average ranks of ties
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    ok = den > 0
    vals = (ra * rb).sum(1)[ok] / den[ok]
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def kendall(a, b) -> float:
    """Kendall's τ-b (ties handled); NaN for constant input."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if np.ptp(rankdata(a)) == 0 or np.ptp(rankdata(b)) == 0:
        return float("nan")
    return float(kendalltau(a, b).statistic)


def partial_spearman(a, b, z) -> float:
    """Rank partial correlation of a and b given z: (ρ_ab − ρ_az ρ_bz)/√((1 − ρ_az²)(1 − ρ_bz²))."""
    rab, raz, rbz = spearman(a, b), spearman(a, z), spearman(b, z)
    den = math.sqrt(max((1 - raz**2) * (1 - rbz**2), 0.0))
    return float("nan") if den == 0 else (rab - raz * rbz) / den


def bootstrap_stat(stat, arrays, rng: np.random.Generator, n_boot: int = 1000,
                   level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat(*arrays)``, resampling architectures (NaN dropped)."""
    arrays = [np.asarray(a, dtype=float) for a in arrays]
    n = arrays[0].size
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        v = stat(*(a[idx] for a in arrays))
        if math.isfinite(v):
            vals.append(v)
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _train(model: nn.Module, x: Tensor, y: Tensor, steps: int, lr: float, batch: int,
           g: torch.Generator) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        if not torch.isfinite(loss):
            break   # diverged: its accuracy is what its (non-finite) parameters give
        loss.backward()
        opt.step()
    return float(loss.detach())


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        out = model(x)
    if not bool(torch.isfinite(out).all()):
        return 0.0   # a diverged network predicts nothing
    return float((out.argmax(1) == y).double().mean())


@experiment("architecture_scores",
            "TE-NAS' NTK condition number and NASWOT vs accuracy of MLPs on digits (one init "
            "scale, best learning rate, several seeds): Kendall τ and partial correlations "
            "given log #params, bootstrap CIs")
def run(ctx: Context) -> str:
    torch.set_default_dtype(torch.float64)
    if ctx.quick:
        n_arch, n_train, n_held, steps, n_seeds, n_kappa, n_naswot = 12, 500, 500, 150, 2, 24, 32
    else:
        n_arch, n_train, n_held, steps, n_seeds, n_kappa, n_naswot = 40, 1000, 797, 1000, 3, 32, 32
    batch = 64
    grid = list(itertools.product(DEPTHS, WIDTHS, ACTIVATIONS, SKIPS))
    # residual blocks need a hidden block: drop (depth 1, skip) duplicates of (depth 1, no skip)
    grid = [a for a in grid if not (a[0] == 1 and a[3])]
    # Half ReLU nets (the only ones NASWOT scores), half Tanh/GELU, sampled without
    # replacement from the grid.
    rng = ctx.np_rng("architectures")
    archs = []
    for part, m in [([a for a in grid if a[2] == "relu"], n_arch // 2),
                    ([a for a in grid if a[2] != "relu"], n_arch - n_arch // 2)]:
        m = min(m, len(part))
        archs += [part[i] for i in sorted(rng.choice(len(part), size=m, replace=False))]
    n_arch = len(archs)
    ctx.config.update(n_architectures=n_arch, n_train=n_train, n_heldout=n_held, steps=steps,
                      learning_rates=list(LEARNING_RATES), n_seeds=n_seeds, init_scale=1.0,
                      momentum=0.9, batch=batch, n_kappa=n_kappa, n_naswot=n_naswot,
                      grid_size=len(grid))

    x, y = digits_subset(n_train + n_held, ctx.seed_for("data"), norm="sphere")
    half = n_train + n_held // 2
    x_tr, y_tr = x[:n_train], y[:n_train]
    x_va, y_va, x_te, y_te = x[n_train:half], y[n_train:half], x[half:], y[half:]
    x_k, x_n = x_tr[:n_kappa], x_tr[:n_naswot]

    rows = []
    for i, (depth, width, act, skip) in enumerate(ctx.progress(archs, "architectures")):
        lks, nass, traces, res = [], [], [], {}
        for s_ in range(n_seeds):
            init_seed = ctx.seed_for(f"init-{i}-{s_}")
            model = MLP(x.shape[1], depth, width, act, skip, 1.0, init_seed)
            ev = ntk_spectrum(model, x_k)   # TE-NAS: summed outputs
            kappa = ntk_condition_number(model, x_k)
            lks.append(math.log10(kappa) if math.isfinite(kappa) else float("inf"))
            nass.append(naswot_score(model, x_n) if act == "relu" else float("nan"))
            traces.append(float(ev.sum()) / n_kappa)
            for lr in LEARNING_RATES:
                m_ = MLP(x.shape[1], depth, width, act, skip, 1.0, init_seed)
                _train(m_, x_tr, y_tr, steps, lr, batch, ctx.rng(f"sgd-{i}-{s_}-{lr}"))
                res.setdefault(lr, []).append((_accuracy(m_, x_va, y_va),
                                               _accuracy(m_, x_te, y_te)))
        best = max(LEARNING_RATES, key=lambda lr: np.mean([v for v, _ in res[lr]]))
        rows.append({"depth": depth, "width": width, "activation": act, "skip": skip,
                     "params": sum(p.numel() for p in model.parameters()),
                     "log10_kappa": float(np.mean(lks)),
                     "naswot": float(np.mean(nass)) if act == "relu" else float("nan"),
                     "naswot_singular": bool(act == "relu" and np.mean(nass) == -math.inf),
                     "ntk_trace": float(np.mean(traces)), "best_lr": best,
                     "val_accuracy": float(np.mean([v for v, _ in res[best]])),
                     "test_accuracy": float(np.mean([t for _, t in res[best]])),
                     **{f"val_accuracy_lr_{lr:g}": float(np.mean([v for v, _ in res[lr]]))
                        for lr in LEARNING_RATES}})
    ctx.table("architectures", rows)

    acc = np.array([r["test_accuracy"] for r in rows])
    lk = np.array([r["log10_kappa"] for r in rows])
    tr = np.log10(np.array([r["ntk_trace"] for r in rows]))
    relu = np.array([r["activation"] == "relu" for r in rows])
    nas = np.array([r["naswot"] for r in rows])
    rng = ctx.np_rng("bootstrap")
    n_par = np.array([r["params"] for r in rows], dtype=float)
    lp = np.log10(n_par)
    stats = {}
    # The parameter count is a baseline: a score is informative beyond size only if it
    # does better than that, and the partial correlation removes it.
    for name, score, mask in [("kappa", lk, np.ones_like(relu)), ("naswot", nas, relu),
                              ("ntk_trace", tr, np.ones_like(relu)),
                              ("params", n_par, np.ones_like(relu)),
                              ("params_relu_nets", n_par, relu)]:
        ok = mask & ~np.isnan(score)   # ±inf (singular kernels) rank at the ends
        sc = np.where(np.isinf(score[ok]), np.sign(score[ok]) * 1e300, score[ok])
        tau = kendall(sc, acc[ok])
        lo, hi = bootstrap_stat(kendall, [sc, acc[ok]], rng)
        pc = partial_spearman(sc, acc[ok], lp[ok])
        plo, phi = bootstrap_stat(partial_spearman, [sc, acc[ok], lp[ok]], rng)
        stats[name] = {"tau": tau, "lo": lo, "hi": hi, "spearman": spearman(sc, acc[ok]),
                       "partial_given_log_params": pc, "partial_lo": plo, "partial_hi": phi,
                       "n": int(ok.sum())}
    ctx.table("correlations", [{"score": k, **v} for k, v in stats.items()])

    setup = (f"{n_arch} MLPs on digits, init scale 1, best of lr ∈ {list(LEARNING_RATES)} by "
             f"validation accuracy, {steps} SGD steps, {n_seeds} seeds; percentile bootstrap "
             "over architectures")
    s = stats["kappa"]
    ctx.claim("TE-NAS: Kendall τ(κ of the NTK at init, test accuracy) < 0", "< 0", s["tau"],
              "95% bootstrap CI below 0", holds=s["hi"] < 0,
              note=f"τ = {s['tau']:+.2f}, 95% CI [{s['lo']:+.2f}, {s['hi']:+.2f}] over "
                   f"{s['n']} architectures ({setup}). Chen, Gong & Wang 2021 (TE-NAS, 'Neural "
                   "architecture search on ImageNet in four GPU hours: a theoretically inspired "
                   "perspective') report a negative correlation on NAS-Bench-201 CNN cells; Mok "
                   "et al. 2022 and Abdelfattah et al. 2021 find it weak or absent")
    ctx.claim("TE-NAS: partial rank correlation of κ and test accuracy given log #params < 0",
              "< 0", s["partial_given_log_params"], "95% bootstrap CI below 0",
              holds=s["partial_hi"] < 0,
              note=f"{s['partial_given_log_params']:+.2f}, 95% CI [{s['partial_lo']:+.2f}, "
                   f"{s['partial_hi']:+.2f}]: what κ says beyond the network's size (ρ(κ, log "
                   f"#params) removed). Baseline ρ(#params, accuracy) = "
                   f"{stats['params']['spearman']:+.2f}")
    s = stats["naswot"]
    ctx.claim("NASWOT: Kendall τ(log|det K_H| at init, test accuracy) > 0 (ReLU nets)", "> 0",
              s["tau"], "95% bootstrap CI above 0", holds=s["lo"] > 0,
              note=f"τ = {s['tau']:+.2f}, 95% CI [{s['lo']:+.2f}, {s['hi']:+.2f}] over the "
                   f"{s['n']} ReLU architectures. Mellor et al. 2021 ('Neural architecture "
                   "search without training') report a positive correlation on NAS-Bench-101/201 "
                   "CNNs")
    ctx.claim("NASWOT: partial rank correlation with test accuracy given log #params > 0 "
              "(ReLU nets)", "> 0", s["partial_given_log_params"], "95% bootstrap CI above 0",
              holds=s["partial_lo"] > 0,
              note=f"{s['partial_given_log_params']:+.2f}, 95% CI [{s['partial_lo']:+.2f}, "
                   f"{s['partial_hi']:+.2f}]; NASWOT grows with the number of ReLU units, so "
                   "its raw correlation can be the size's (NaN: its ranks are the size's on "
                   "these nets, nothing is left once size is removed). Baseline ρ(#params, "
                   f"accuracy) on these nets = {stats['params_relu_nets']['spearman']:+.2f}")

    fig, axes = ctx.new_figure(3, 1, (4.2, 3.6))
    colors = {"relu": "C0", "tanh": "C1", "gelu": "C2"}
    for ax, (name, score, label) in zip(axes, [
            ("kappa", lk, "log10 κ (NTK condition number, TE-NAS)"),
            ("naswot", nas, "NASWOT log|det K_H| (ReLU nets)"),
            ("ntk_trace", tr, "log10 tr Θ / n")], strict=True):
        for act, c in colors.items():
            m = np.array([r["activation"] == act for r in rows]) & np.isfinite(score)
            # (singular scores, ±inf, are in the correlations but not drawn)
            if m.any():
                ax.scatter(score[m], acc[m], c=c, s=18, label=act)
        st = stats[name]
        ax.set_title(f"τ = {st['tau']:+.2f} [{st['lo']:+.2f}, {st['hi']:+.2f}]", fontsize=9)
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=7)
    ctx.savefig(fig, "scores_vs_accuracy")

    k, n_ = stats["kappa"], stats["naswot"]
    return (f"{setup} (accuracy {acc.min():.2f}–{acc.max():.2f}): Kendall τ(κ, acc) = "
            f"{k['tau']:+.2f} [{k['lo']:+.2f}, {k['hi']:+.2f}], partial given log #params "
            f"{k['partial_given_log_params']:+.2f}; τ(NASWOT, acc) = {n_['tau']:+.2f} "
            f"[{n_['lo']:+.2f}, {n_['hi']:+.2f}], partial {n_['partial_given_log_params']:+.2f} "
            f"({n_['n']} ReLU nets); τ(tr Θ, acc) = {stats['ntk_trace']['tau']:+.2f}; baseline "
            f"Spearman ρ(#params, acc) = {stats['params']['spearman']:+.2f}.")
