"""
Fitting kernel hyperparameters
==============================

Fit a ReLU network's (w_std, b_std) and the noise by GP marginal likelihood, with
`ntkit.hyperparameters.fit_marginal_likelihood` (pure torch) and with GPyTorch's
``ExactGP`` around `ntkit.gpytorch.InfiniteWidthKernel`.

Data: one draw of n = 300 points from the NNGP prior of serial(Dense(w=1.6, b=0.5), ReLU,
Dense(w=1.6, b=0.5)) plus noise of variance 0.01; both fits start at (1.0, 0.1).
"""

import time

import torch

from ntkit import layers as nl
from ntkit.hyperparameters import fit_marginal_likelihood

torch.set_num_threads(1)


def net(w, b):
    return nl.serial(nl.Dense(512, w_std=w, b_std=b), nl.ReLU(), nl.Dense(1, w_std=w, b_std=b))


g = torch.Generator().manual_seed(3)
n = 300
x = torch.randn(n, 3, generator=g, dtype=torch.float64)
k = net(1.6, 0.5).kernel(x, get="nngp")
y = torch.linalg.cholesky(k + 0.01 * torch.eye(n, dtype=torch.float64)) @ torch.randn(
    n, generator=g, dtype=torch.float64)

t0 = time.perf_counter()
fit = fit_marginal_likelihood(net(1.0, 0.1), x, y)
print(f"ntkit.hyperparameters: w_std={fit.w_std[0]:.3f} b_std={fit.b_std[0]:.3f} "
      f"noise={fit.noise:.4f}  ({time.perf_counter() - t0:.2f} s)")

try:
    import gpytorch
except ImportError:
    raise SystemExit("gpytorch not installed: skipping the GPyTorch half") from None

from ntkit.gpytorch import InfiniteWidthKernel  # noqa: E402


class GP(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood):
        super().__init__(x, y, likelihood)
        self.mean = gpytorch.means.ZeroMean()
        self.covar = InfiniteWidthKernel(net(1.0, 0.1), kind="nngp")

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean(x), self.covar(x))


lik = gpytorch.likelihoods.GaussianLikelihood().double()
model = GP(x, y, lik).double()
model.train()
lik.train()
mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
opt = torch.optim.LBFGS(model.parameters(), max_iter=60, line_search_fn="strong_wolfe")


def closure():
    opt.zero_grad()
    loss = -mll(model(x), y)
    loss.backward()
    return loss


t0 = time.perf_counter()
with gpytorch.settings.max_cholesky_size(10_000):
    opt.step(closure)
print(f"gpytorch ExactGP:      w_std={model.covar.w_std.item():.3f} "
      f"b_std={model.covar.b_std.item():.3f} noise={lik.noise.item():.4f}  "
      f"({time.perf_counter() - t0:.2f} s)")

# %%
# Both fits recover the generating values within their uncertainty (300 points).
import matplotlib.pyplot as plt  # noqa: E402

names = ["w_std", "b_std", "noise × 100"]
true = [1.6, 0.5, 1.0]
ours = [float(fit.w_std[0]), float(fit.b_std[0]), 100 * float(fit.noise)]
gp = [model.covar.w_std.item(), model.covar.b_std.item(), 100 * lik.noise.item()]
start = [1.0, 0.1, float("nan")]
xs = range(len(names))
fig, ax = plt.subplots(figsize=(6, 3.8))
ax.bar([i - 0.3 for i in xs], true, 0.2, label="generating", color="0.3")
ax.bar([i - 0.1 for i in xs], start, 0.2, label="start", color="0.75")
ax.bar([i + 0.1 for i in xs], ours, 0.2, label="ntkit.hyperparameters")
ax.bar([i + 0.3 for i in xs], gp, 0.2, label="GPyTorch ExactGP")
ax.set_xticks(list(xs), names)
ax.legend(fontsize=8)
ax.set_title("Marginal-likelihood fit of a ReLU NNGP")
plt.show()
