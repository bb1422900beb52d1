"""ntkit.gpytorch.InfiniteWidthKernel in an ExactGP (skipped without gpytorch).

Truth: one draw of n = 300 points from the NNGP prior of a known (w_std, b_std) with known
noise, fitted by gpytorch's exact marginal likelihood with L-BFGS; the tolerance is the
Laplace posterior width (see tests/test_hyperparameters.py), and the fitted values must
agree with ntkit's pure-torch fit of the same likelihood.
"""

from __future__ import annotations

import math

import pytest
import torch

gpytorch = pytest.importorskip("gpytorch")

from ntkit import layers as nl  # noqa: E402
from ntkit.gpytorch import InfiniteWidthKernel  # noqa: E402
from ntkit.hyperparameters import fit_marginal_likelihood, gp_negative_log_likelihood  # noqa: E402

D = torch.float64
W_TRUE, B_TRUE, NOISE_TRUE = 1.6, 0.5, 1e-2


def _net(w, b):
    return nl.serial(nl.Dense(8, w_std=w, b_std=b), nl.ReLU(), nl.Dense(1, w_std=w, b_std=b))


class GP(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, covar):
        super().__init__(x, y, likelihood)
        self.mean = gpytorch.means.ZeroMean()
        self.covar = covar

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean(x), self.covar(x))


@pytest.fixture(scope="module")
def fitted():
    g = torch.Generator().manual_seed(3)
    n = 300
    x = torch.randn(n, 3, generator=g, dtype=D)
    k = _net(W_TRUE, B_TRUE).kernel(x, get="nngp")
    y = torch.linalg.cholesky(k + NOISE_TRUE * torch.eye(n, dtype=D)) @ torch.randn(
        n, generator=g, dtype=D)
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    model = GP(x, y, lik, InfiniteWidthKernel(_net(1.0, 0.1))).double()
    model.train()
    lik.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=60,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        return loss

    with gpytorch.settings.fast_computations(False, False, False), \
            gpytorch.settings.max_cholesky_size(10_000):
        opt.step(closure)
    return x, y, model, lik


def test_recovers_hyperparameters_within_posterior_width(fitted):
    x, y, model, lik = fitted
    w, b, s2 = (model.covar.w_std.item(), model.covar.b_std.item(), lik.noise.item())

    def nll(p):
        wp, bp, sp = p.exp()
        return gp_negative_log_likelihood(_net(wp, bp).kernel(x, get="nngp"), y, sp)

    p = torch.tensor([math.log(w), math.log(b), math.log(s2)], dtype=D)
    se = torch.linalg.inv(torch.autograd.functional.hessian(nll, p)).diagonal().sqrt()
    assert (se < 0.25).all(), se  # measured: 0.05 (w), 0.15 (b), 0.13 (σ²)
    err = (p - torch.tensor([W_TRUE, B_TRUE, NOISE_TRUE], dtype=D).log()).abs()
    assert (err < 4 * se).all(), (p.exp(), se)
    # gpytorch's likelihood and ntkit's are the same function: same optimum. gpytorch's
    # noise constraint (GreaterThan(1e-4)) and mean-over-n scaling only move it within
    # the optimizer's tolerance.
    ref = fit_marginal_likelihood(_net(1.0, 0.1), x, y)
    assert w == pytest.approx(ref.w_std[0], rel=1e-3)
    assert b == pytest.approx(ref.b_std[0], rel=1e-3)


def test_predictions_are_the_ntkit_posterior(fitted):
    x, y, model, lik = fitted
    model.eval()
    lik.eval()
    xt = x[:4] + 0.1
    with torch.no_grad():
        mean = model(xt).mean
        net = _net(model.covar.w_std.item(), model.covar.b_std.item())
        k = net.kernel(x, get="nngp")
        kt = net.kernel(xt, x, get="nngp")
        ref = kt @ torch.linalg.solve(k + lik.noise.item() * torch.eye(len(x), dtype=D), y)
    torch.testing.assert_close(mean, ref, rtol=1e-6, atol=1e-6)
    model.train()
    lik.train()


def test_per_layer_and_ntk_kernels():
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(4), dtype=D)
    net = nl.serial(nl.Dense(4, w_std=1.2, b_std=0.3), nl.Erf(), nl.Dense(1, w_std=0.8))
    kern = InfiniteWidthKernel(net, kind="ntk", per_layer=True).double()
    assert kern.w_std.shape == (2,)
    torch.testing.assert_close(kern.w_std, torch.tensor([1.2, 0.8], dtype=D))
    torch.testing.assert_close(kern.b_std, torch.tensor([0.3, 0.0], dtype=D).clamp_min(0.01))
    with torch.no_grad():
        k = kern(x).to_dense()
    ref = nl.serial(nl.Dense(4, w_std=1.2, b_std=0.3), nl.Erf(),
                    nl.Dense(1, w_std=0.8, b_std=0.01)).kernel(x, get="ntk")
    torch.testing.assert_close(k, ref, rtol=1e-6, atol=1e-8)
    # Gradients reach each layer's parameter.
    kern(x).to_dense().sum().backward()
    assert (kern.raw_w_std.grad != 0).all() and (kern.raw_b_std.grad != 0).all()
    kern.w_std = torch.tensor([2.0, 1.5])
    torch.testing.assert_close(kern.w_std, torch.tensor([2.0, 1.5], dtype=D))
    torch.testing.assert_close(kern(x, diag=True), torch.diagonal(kern(x).to_dense()))


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        InfiniteWidthKernel(_net(1, 0.1), kind="rbf")
    with pytest.raises(ValueError, match="no Dense or Conv"):
        InfiniteWidthKernel(nl.ReLU())
    kern = InfiniteWidthKernel(_net(1.0, 0.1))
    with pytest.raises(ValueError, match="entries"):
        kern.w_std = torch.ones(3)
