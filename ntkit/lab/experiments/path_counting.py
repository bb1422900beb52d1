"""Path counting in random ReLU nets (Hanin 2018, "Which neural net architectures give rise to
exploding and vanishing gradients?"; Hanin & Nica 2020, "Finite depth and width corrections
to the neural tangent kernel"): E[(∂z/∂x)²] = 2/n₀ and the
NTK's diagonal mean, whatever the widths.

He-initialized, bias-free ReLU nets (W^(l) = √(2/n_{l−1})·Ŵ, Ŵ ~ N(0, 1); in ntkit
``Dense(n, w_std=√2, b_std=None)``) with several width profiles, including very uneven ones
and bottlenecks of width 2 where whole layers are often dead. Many independent nets are drawn
at once as batched weight tensors (each net is an ordinary ReLU MLP; the test checks the
batched forward/backward against autograd through an ntkit-built module with the same
weights).

1. Monte Carlo E[(∂z/∂x_p)²] (scalar output, averaged over input coordinates within a net)
   against 2/n₀, with a 99% confidence interval over nets.
2. NTK diagonal, convention: Θ(x, x) = Σ_l ‖∂z/∂Ŵ^(l)‖² over all weight matrices, scalar
   output, no biases (the NTK parameterization's parameters Ŵ). Path counting gives
   E[Θ(x, x)] = 2·L·‖x‖²/n₀, L = number of weight matrices (each contributes 2‖x‖²/n₀).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ntkit.lab.framework import Context
from ntkit.lab.registry import experiment
from ntkit.theory.path_counting import relu_gradient_moments

F64 = torch.float64
Z99 = 2.576

#: name → widths [n0, hidden..., 1]
PROFILES = {
    "uniform 10→[20]×4→1": [10, 20, 20, 20, 20, 1],
    "uneven 10→5→100→3→50→1": [10, 5, 100, 3, 50, 1],
    "bottleneck 10→2→2→2→1": [10, 2, 2, 2, 1],
    "wide-narrow 40→100→4→100→1": [40, 100, 4, 100, 1],
}


def he_weights(widths: Sequence[int], n_nets: int, gen: torch.Generator) -> list[Tensor]:
    """Weights of ``n_nets`` independent He-initialized nets: list of (n_nets, n_l, n_{l−1})."""
    return [torch.randn(n_nets, b, a, generator=gen, dtype=F64) * math.sqrt(2.0 / a)
            for a, b in zip(widths[:-1], widths[1:], strict=True)]


def forward_backward(ws: list[Tensor], x: Tensor) -> dict[str, Tensor]:
    """Batched forward pass and backprop of the (scalar) output of bias-free ReLU nets.

    Args:
      ws: weights from `he_weights` (last layer with 1 output).
      x: (n_nets, n_0) inputs (one per net).

    Returns: ``grad_x`` (n_nets, n_0) = ∂z/∂x; ``ntk`` (n_nets,) = Σ_l ‖∂z/∂Ŵ^(l)‖², where
      ∂z/∂Ŵ^(l) = √(2/n_{l−1})·δ^(l) h^(l−1)ᵀ; ``out`` (n_nets,).
    """
    hs, masks = [x.unsqueeze(-1)], []
    h = hs[0]
    for w in ws[:-1]:
        z = w @ h
        m = (z > 0).to(F64)
        masks.append(m)
        h = z * m
        hs.append(h)
    out = (ws[-1] @ h).reshape(-1)
    delta = torch.ones_like(out).reshape(-1, 1, 1)
    ntk = torch.zeros_like(out)
    for layer in range(len(ws) - 1, -1, -1):
        fan_in = ws[layer].shape[2]
        ntk = ntk + (2.0 / fan_in) * (delta**2).sum((1, 2)) * (hs[layer] ** 2).sum((1, 2))
        g = ws[layer].transpose(1, 2) @ delta
        delta = g * masks[layer - 1] if layer > 0 else g
    return {"grad_x": delta.squeeze(-1), "ntk": ntk, "out": out}


def _ci(v: np.ndarray) -> tuple[float, float]:
    return float(v.mean()), Z99 * float(v.std(ddof=1)) / math.sqrt(v.size)


@experiment("path_counting",
            "path counting in He ReLU nets: E[(∂z/∂x)²] = 2/n0 for any widths (Monte Carlo "
            "with CI, uneven profiles) and E[Θ(x,x)] = 2L‖x‖²/n0")
def run(ctx: Context) -> str:
    n_nets = 8000 if ctx.quick else 100000
    chunk = 10000
    ctx.config.update(n_nets=n_nets, profiles=PROFILES, confidence=0.99)
    rows, out = [], {}
    for name, widths in ctx.progress(PROFILES.items(), "profiles"):
        gen = ctx.rng(f"pc-{name}")
        g2, th = [], []
        for s in range(0, n_nets, chunk):
            m = min(chunk, n_nets - s)
            ws = he_weights(widths, m, gen)
            x = torch.randn(m, widths[0], generator=gen, dtype=F64)
            r = forward_backward(ws, x)
            g2.append((r["grad_x"] ** 2).mean(1).numpy())
            th.append((r["ntk"] / (x**2).sum(1)).numpy())   # Θ/‖x‖²
        g2, th = np.concatenate(g2), np.concatenate(th)
        pred = relu_gradient_moments(widths)
        mg, hg = _ci(g2)
        mt, ht = _ci(th)
        out[name] = (mg, hg, pred["second_moment"], mt, ht, pred["ntk_diagonal"])
        rows.append({"profile": name, "widths": str(widths), "E_grad2_mc": mg, "ci99_grad2": hg,
                     "E_grad2_pred": pred["second_moment"], "E_ntk_over_x2_mc": mt,
                     "ci99_ntk": ht, "E_ntk_over_x2_pred": pred["ntk_diagonal"],
                     "fraction_zero_gradient": float((g2 == 0).mean()),
                     "p_dead_exact": pred["p_dead"]})
        ctx.claim(f"E[(∂z/∂x_p)²], {name}", pred["second_moment"], mg, hg,
                  note=f"prediction 2/n0 (path counting, Hanin 2018); tolerance = 99% CI "
                       f"half-width over {n_nets} nets (per-net mean over the n0 coordinates); "
                       f"{rows[-1]['fraction_zero_gradient']:.3f} of nets have a dead layer "
                       "(zero gradient), which the exact statement includes")
        ctx.claim(f"E[Θ(x,x)]/‖x‖², {name}", pred["ntk_diagonal"], mt, ht,
                  note="prediction 2L/n0, L = weight matrices (Θ = Σ_l ‖∂z/∂Ŵ^(l)‖², NTK "
                       "parameterization, no biases; Hanin & Nica 2020); tolerance = 99% CI")
    ctx.table("path_counting", rows)
    fig, (ax1, ax2) = ctx.new_figure(2, 1, (5.2, 3.8))
    names = list(out)
    pos = np.arange(len(names))
    for ax, k, lab in ((ax1, 0, "E[(∂z/∂x)²]·n0/2"), (ax2, 3, "E[Θ(x,x)]·n0/(2L‖x‖²)")):
        vals = np.array([out[n][k] / out[n][k + 2] for n in names])
        errs = np.array([out[n][k + 1] / out[n][k + 2] for n in names])
        ax.errorbar(pos, vals, yerr=errs, fmt="o", capsize=4, label="Monte Carlo, 99% CI")
        ax.axhline(1.0, color="k", ls=":", label="path counting")
        ax.set_xticks(pos, [n.split(" ")[0] for n in names])
        ax.set_ylabel(f"{lab} (ratio to prediction)")
        ax.legend(fontsize=8)
    ax1.set_title("gradient second moment")
    ax2.set_title("NTK diagonal mean")
    ctx.savefig(fig, "path_counting")
    return ("MC/predicted: " + "; ".join(
        f"{n.split(' ')[0]}: grad² {v[0] / v[2]:.3f}±{v[1] / v[2]:.3f}, "
        f"Θ {v[3] / v[5]:.3f}±{v[4] / v[5]:.3f}" for n, v in out.items()))
