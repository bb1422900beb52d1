"""
Finite networks against the NTK prediction
==========================================

Train real networks of growing width by gradient descent and compare their test outputs
with the infinite-width NTK prediction of the same training run
(`ntkit.predict.gradient_descent_mse_ensemble`, the mean over initializations). The gap
shrinks as the width grows; ``ntkit demo`` does the same on digits and writes an HTML
report.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch

from ntkit import layers as nl
from ntkit import predict

torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
x_train = torch.rand(16, 1, generator=g, dtype=torch.float64) * 4 - 2
y_train = torch.sin(2 * x_train)
x_test = torch.linspace(-2.5, 2.5, 80, dtype=torch.float64)[:, None]


def spec(width):
    return nl.serial(nl.Dense(width, w_std=1.5, b_std=0.5), nl.ReLU(),
                     nl.Dense(1, w_std=1.5, b_std=0.5))


lr, steps = 0.5, 400
ens = predict.gradient_descent_mse_ensemble(spec(1), x_train, y_train, learning_rate=lr)
ntk_mean, ntk_cov = ens(t=steps, x_test=x_test, get="ntk", compute_cov=True)
ntk_std = ntk_cov.diagonal().clamp_min(0).sqrt()


def train(width, seed):
    model = spec(width).build(in_features=1, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((model(x_train) - y_train) ** 2).mean()).backward()
        opt.step()
    return model(x_test).detach()


# %%
# Ten networks per width; the ensemble mean approaches the NTK mean, and its spread the
# NTK ensemble's standard deviation.
widths = [32, 128, 512, 2048]
gaps = []
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for i, w in enumerate(widths):
    outs = torch.stack([train(w, seed) for seed in range(10)])
    gap = float((outs.mean(0) - ntk_mean).norm() / ntk_mean.norm())
    gaps.append(gap)
    print(f"width {w:5d}: relative distance of the ensemble mean to the NTK mean {gap:.3f}")
    if w in (32, 2048):
        for o in outs[:5]:
            axes[0].plot(x_test, o, color=f"C{i}", lw=0.8, alpha=0.6)
        axes[0].plot([], [], color=f"C{i}", label=f"width {w} (5 nets)")
axes[0].plot(x_test, ntk_mean, "k", lw=2, label="NTK mean")
axes[0].fill_between(x_test[:, 0], ntk_mean[:, 0] - 2 * ntk_std, ntk_mean[:, 0] + 2 * ntk_std,
                     color="k", alpha=0.1, label="NTK ± 2 std")
axes[0].plot(x_train, y_train, "o", color="C3")
axes[0].set_xlabel("x")
axes[0].legend(fontsize=8)
axes[0].set_title(f"after {steps} steps")
axes[1].loglog(widths, gaps, "o-")
axes[1].loglog(widths, gaps[0] * (np.array(widths) / widths[0]) ** -0.5, "--",
               color="0.5", label="width$^{-1/2}$")
axes[1].set_xlabel("width")
axes[1].set_ylabel("‖ensemble mean − NTK mean‖ / ‖NTK mean‖")
axes[1].legend()
plt.tight_layout()
plt.show()
