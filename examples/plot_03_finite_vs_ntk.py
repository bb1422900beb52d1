"""
Finite networks against the NTK prediction
==========================================

Train real networks of growing width by gradient descent and compare each with the
infinite-width prediction for the *same initialization*: the analytic NTK (the width
limit of the network's own tangent kernel) run from the network's initial outputs,
`ntkit.predict.gradient_descent_mse` with ``fx_train_0``/``fx_test_0``. The distance shrinks
as the width grows, here more slowly than the width^(−1/2) of the theory (Lee et al.
2019) over this range (two seeds per width, 200 steps). ``ntkit demo`` does the same on
digits and writes an HTML report.
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


lr, steps = 0.5, 200
k_train = spec(1).kernel(x_train, get="ntk")           # the width does not enter the kernel
k_test = spec(1).kernel(x_test, x_train, get="ntk")
mse = predict.gradient_descent_mse(k_train, y_train, learning_rate=lr)


def run(width, seed):
    """(trained network's test outputs, the NTK prediction from the same init)."""
    model = spec(width).build(in_features=1, seed=seed)
    with torch.no_grad():
        f0_train, f0_test = model(x_train), model(x_test)
    _, f_ntk = mse(steps, fx_train_0=f0_train, fx_test_0=f0_test, k_test_train=k_test)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((model(x_train) - y_train) ** 2).mean()).backward()
        opt.step()
    return model(x_test).detach(), f_ntk


# %%
widths = [32, 128, 512, 2048]
dist = []
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for i, w in enumerate(widths):
    runs = [run(w, seed) for seed in range(2)]
    dist.append(np.mean([float((f - p).norm() / p.norm()) for f, p in runs]))
    print(f"width {w:5d}: relative distance to the NTK prediction {dist[-1]:.4f}")
    if w in (32, 2048):
        f, p = runs[0]
        axes[0].plot(x_test, f, color=f"C{i}", lw=2, alpha=0.6, label=f"width {w}, trained")
        axes[0].plot(x_test, p, "k--", lw=1)
axes[0].plot([], [], "k--", lw=1, label="NTK prediction, same init")
axes[0].plot(x_train, y_train, "o", color="C3", label="training data")
axes[0].set_xlabel("x")
axes[0].legend(fontsize=8)
axes[0].set_title(f"after {steps} steps, learning rate {lr}")
axes[1].loglog(widths, dist, "o-", label="measured (mean of 2 seeds)")
axes[1].loglog(widths, dist[0] * (np.array(widths) / widths[0]) ** -0.5, "--",
               color="0.5", label="width$^{-1/2}$")
axes[1].set_xlabel("width")
axes[1].set_ylabel("‖f_net − f_NTK‖ / ‖f_NTK‖ on test points")
axes[1].legend()
plt.tight_layout()
plt.show()
