"""Linear regions of ReLU nets (Hanin & Rolnick 2019, "Complexity of linear regions in deep
networks" and "Deep ReLU networks have surprisingly few activation patterns"; Zaslavsky
1975, "Facing up to arrangements: face-count formulas for partitions of space by hyperplanes").

1. **At initialization.** He-initialized ReLU nets (ntkit ``Dense(n, w_std=√2, b_std=0.1)`` +
   ``ReLU``) with a fixed total number of neurons N split over depths 1 … 8. Regions along
   random segments are counted exactly (`ntkit.geometry.count_linear_regions`). Hanin–Rolnick:
   the expected number per unit length is ≈ C·N, flat in depth, not exponential. A mean-field
   estimate of C: a neuron z switches where z = 0; with z ~ N(0, q_l) and ∂z/∂t ~ N(0, 2/n₀)
   (path counting, for a unit direction) treated as independent, the switch density is
   √(2/n₀)/(π√q_l), q_l = 2‖x‖²/n₀ + l·b_std² (He weights keep 2‖x‖²/n₀, each bias adds b²).
2. **During training** on sklearn digits, the same count along segments between test images.
3. **2-D slices**: activation regions on a plane through three data-like points (figures).
4. **Zaslavsky**: a single layer of n ReLUs on ℝ² has exactly Σ_{i≤2} C(n, i) regions in
   general position; counted as distinct activation patterns on points spread over the plane
   (far out and around every crossing of two neurons' zero lines).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from ntkit import layers as nl
from ntkit.geometry import (
    activation_patterns,
    count_linear_regions,
    linear_regions_2d,
    zaslavsky_bound,
)
from ntkit.lab.framework import Context, digits_subset
from ntkit.lab.registry import experiment

F64 = torch.float64
B_STD = 0.1


def he_net(d: int, widths: list[int], seed: int):
    """A He-initialized ReLU net built from ntkit layer specs, scalar output."""
    specs = []
    for w in widths:
        specs += [nl.Dense(w, w_std=math.sqrt(2), b_std=B_STD), nl.ReLU()]
    specs.append(nl.Dense(1, w_std=1.0, b_std=B_STD))
    return nl.serial(*specs).build(d, seed=seed)


def mean_field_density(widths: list[int], points: torch.Tensor) -> float:
    """Predicted switches per unit length, averaged over ``points`` on the segment (module doc)."""
    n0 = points.shape[1]
    x2 = (points**2).sum(1)
    total = torch.zeros_like(x2)
    for layer, n in enumerate(widths, start=1):
        q = 2 * x2 / n0 + layer * B_STD**2
        total = total + n * math.sqrt(2 / n0) / (math.pi * torch.sqrt(q))
    return float(total.mean())


def _segment_density(model, gen, n0: int, n_seg: int, length: float) -> tuple[float, float]:
    counts = []
    for _ in range(n_seg):
        a = torch.randn(n0, generator=gen, dtype=F64)
        a = a / a.norm() * math.sqrt(n0)
        u = torch.randn(n0, generator=gen, dtype=F64)
        u = u / u.norm()
        r = count_linear_regions(model, a, a + length * u)
        counts.append((r.count - 1) / length)
    return float(np.mean(counts)), float(np.std(counts, ddof=1) / math.sqrt(len(counts)))


@experiment("linear_regions",
            "Hanin–Rolnick: regions per unit length ≈ C·#neurons, flat in depth at init and "
            "during training; 2-D slices; one layer meets Zaslavsky's count")
def run(ctx: Context) -> str:
    n0, total = 8, 48
    depths = [1, 2, 3, 4, 6, 8]
    n_nets, n_seg, length = (4, 6, 4.0) if ctx.quick else (20, 20, 4.0)
    ctx.config.update(n0=n0, total_neurons=total, depths=depths, nets=n_nets,
                      segments_per_net=n_seg, segment_length=length, b_std=B_STD)
    rows = []
    for depth in ctx.progress(depths, "depths"):
        widths = [total // depth] * depth
        dens, preds = [], []
        for s in range(n_nets):
            model = he_net(n0, widths, ctx.seed_for(f"init-{depth}-{s}"))
            gen = ctx.rng(f"seg-{depth}-{s}")
            d, _ = _segment_density(model, gen, n0, n_seg, length)
            dens.append(d)
            g2 = ctx.rng(f"seg-{depth}-{s}")            # same segments, for the prediction
            pts = []
            for _ in range(n_seg):
                a = torch.randn(n0, generator=g2, dtype=F64)
                a = a / a.norm() * math.sqrt(n0)
                u = torch.randn(n0, generator=g2, dtype=F64)
                pts.append(a + torch.linspace(0, length, 64, dtype=F64)[:, None] * (u / u.norm()))
            preds.append(mean_field_density(widths, torch.cat(pts)))
        dens = np.array(dens)
        rows.append({"depth": depth, "width": widths[0], "neurons": sum(widths),
                     "switches_per_unit_length": dens.mean(),
                     "se": dens.std(ddof=1) / math.sqrt(dens.size),
                     "per_neuron": dens.mean() / sum(widths),
                     "mean_field_prediction": float(np.mean(preds))})
    ctx.table("regions_at_init", rows)
    per = np.array([r["switches_per_unit_length"] for r in rows])
    ratio = float(per.max() / per.min())
    ctx.claim(f"regions per unit length, max/min over depths {depths[0]}–{depths[-1]} "
              f"(N = {total} neurons)", "≤ 2 (flat)", ratio, "≤ 2", holds=ratio <= 2,
              note="Hanin–Rolnick: E[#regions per length] ≈ C·N independent of depth; an "
                   f"exponential law (~2^depth) would give ≥ {2 ** (depths[-1] - 1)}; factor 2 "
                   "allows the drift of C with depth (q_l grows with the biases) and the "
                   f"sampling error (≈ {np.mean([r['se'] for r in rows]) / per.mean():.0%})")
    for r in rows:
        ctx.claim(f"depth {r['depth']}: switches per unit length vs mean-field C·N",
                  r["mean_field_prediction"], r["switches_per_unit_length"],
                  0.25 * r["mean_field_prediction"] + 2.576 * r["se"],
                  note="prediction Σ_l n_l √(2/n0)/(π√q_l) (module doc: Kac–Rice with z and "
                       "∂z/∂t independent Gaussians, an approximation); tolerance 25% for that "
                       "approximation + 99% CI over nets")

    # 2. During training on digits.
    steps = [0, 100, 300] if ctx.quick else [0, 300, 1000, 3000]
    depth_t, width_t = 3, 16
    x, y = digits_subset(400, ctx.seed_for("digits"), norm="sphere")
    xtr, ytr, xte = x[:300], y[:300], x[300:]
    model = nl.serial(*[m for _ in range(depth_t) for m in
                        (nl.Dense(width_t, w_std=math.sqrt(2), b_std=B_STD), nl.ReLU())],
                      nl.Dense(10, w_std=1.0, b_std=B_STD)).build(64, seed=ctx.seed_for("tr"))
    target = torch.nn.functional.one_hot(ytr, 10).to(F64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    pairs = ctx.np_rng("pairs").choice(xte.shape[0], size=(12, 2), replace=False)
    train_rows, done = [], 0
    for stop in steps:
        for _ in range(stop - done):
            opt.zero_grad()
            loss = 0.5 * ((model(xtr) - target) ** 2).mean()
            loss.backward()
            opt.step()
        done = stop
        dens = []
        for i, j in pairs:
            r = count_linear_regions(model, xte[i], xte[j])
            dens.append((r.count - 1) / r.length)
        with torch.no_grad():
            acc = float((model(xtr).argmax(1) == ytr).double().mean())
        train_rows.append({"step": stop, "switches_per_unit_length": float(np.mean(dens)),
                           "train_accuracy": acc})
    ctx.table("regions_during_training", train_rows)
    gain = train_rows[-1]["switches_per_unit_length"] / train_rows[0]["switches_per_unit_length"]
    ctx.claim("training on digits: density at the end / at init", "≤ 3 (stays ≈ C·N)", gain,
              "≤ 3", holds=gain <= 3,
              note=f"Hanin–Rolnick observe the count stays of order #neurons during training; "
                   f"{depth_t}×{width_t} net, Adam, train accuracy "
                   f"{train_rows[-1]['train_accuracy']:.2f}, segments between 12 pairs of "
                   "held-out digits")

    # 3. 2-D slices.
    fig, axes = ctx.new_figure(3, 1, (4.0, 4.0))
    o, a, b = x[0], x[1] - x[0], x[2] - x[0]
    slice_counts = {}
    for ax, depth in zip(axes, [1, 3, 8], strict=True):
        widths = [total // depth] * depth
        m = he_net(64, widths, ctx.seed_for(f"slice-{depth}"))
        reg = linear_regions_2d(m, o, a, b, extent=1.5, resolution=160 if ctx.quick else 400)
        slice_counts[depth] = reg.count
        perm = torch.randperm(reg.count, generator=ctx.rng(f"cmap-{depth}"))
        ax.imshow(perm[reg.labels].numpy(), origin="lower", cmap="tab20",
                  extent=(-1.5, 1.5, -1.5, 1.5), interpolation="nearest")
        ax.set_title(f"depth {depth} × width {widths[0]}: {reg.count} regions")
    ctx.savefig(fig, "slices_2d")
    ctx.table("slices_2d", {"depth": list(slice_counts), "regions": list(slice_counts.values())})

    # 4. Zaslavsky.
    z_rows = []
    for n in [2, 3, 5, 8, 12]:
        m = he_net(2, [n], ctx.seed_for(f"zas-{n}"))
        w, c = m.layers[0].weight * m.layers[0].w_scale, m.layers[0].bias * m.layers[0].b_scale
        w, c = w.detach(), c.detach()
        pts = [torch.randn(20000, 2, generator=ctx.rng(f"z-{n}"), dtype=F64) * 3]
        ang = torch.linspace(0, 2 * math.pi, 4000, dtype=F64)
        rad = 1e3 * (1 + float(c.abs().max()))
        pts.append(rad * torch.stack([ang.cos(), ang.sin()], 1))
        jit = torch.randn(50, 2, generator=ctx.rng(f"zj-{n}"), dtype=F64)
        for i, j in itertools.combinations(range(n), 2):
            sol = torch.linalg.solve(w[[i, j]], -c[[i, j]])
            scale = 1e-6 * (1 + float(sol.norm()))
            pts.append(sol + scale * jit)
        pat = activation_patterns(m, torch.cat(pts))
        count = int(torch.unique(pat, dim=0).shape[0])
        z_rows.append({"neurons": n, "regions_found": count, "zaslavsky": zaslavsky_bound(n, 2)})
        ctx.claim(f"one layer, {n} ReLUs on ℝ²: regions = Zaslavsky Σ_(i≤2) C(n,i)",
                  zaslavsky_bound(n, 2), count, 0,
                  note="distinct activation patterns over far points, a box, and around every "
                       "crossing of two zero lines (each cell touches a crossing or infinity); "
                       "random weights are in general position with probability 1")
    ctx.table("zaslavsky", z_rows)

    fig, (ax1, ax2) = ctx.new_figure(2, 1, (5.0, 3.8))
    ax1.errorbar(depths, per, yerr=[2.576 * r["se"] for r in rows], fmt="o-",
                 label="measured (exact counts)")
    ax1.plot(depths, [r["mean_field_prediction"] for r in rows], "k--", label="mean field C·N")
    ax1.plot(depths, per[0] * 2.0 ** (np.array(depths) - 1), ":", color="gray",
             label="exponential ~2^depth")
    ax1.set_yscale("log")
    ax1.set_xlabel(f"depth (N = {total} neurons in total)")
    ax1.set_ylabel("region boundaries per unit length")
    ax1.legend(fontsize=8)
    ax2.plot([r["step"] for r in train_rows], [r["switches_per_unit_length"] for r in train_rows],
             "o-")
    ax2.set_xlabel("Adam step (digits)")
    ax2.set_ylabel("boundaries per unit length")
    ax2.set_title(f"during training, {depth_t}×{width_t} net")
    ctx.savefig(fig, "regions_vs_depth_and_training")
    return (f"N = {total}: boundaries per unit length by depth "
            + ", ".join(f"{r['depth']}: {r['switches_per_unit_length']:.2f}" for r in rows)
            + f" (max/min {ratio:.2f}); training: ×{gain:.2f}; Zaslavsky counts "
            + ", ".join(f"{r['neurons']}: {r['regions_found']}/{r['zaslavsky']}" for r in z_rows))
