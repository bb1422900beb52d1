"""Marginal-likelihood fitting of w_std/b_std (ntkit.hyperparameters) and the sklearn hook.

Truth: data drawn from the NNGP prior of a known (w_std, b_std) plus known noise. The
tolerance is the posterior width: the Laplace standard errors from the Hessian of the
negative log-likelihood in (log w, log b, log σ²) at the fit (torch.autograd.functional
.hessian, i.e. exact second derivatives of the same kernel), so the truth must lie within
4 standard errors (a 6e-5 two-sided chance to fail for a correct fit), and the errors must
be small enough (< 25% relative) for the check to mean something.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkit import layers as nl
from ntkit.hyperparameters import (
    HyperparameterBinding,
    affine_layers,
    fit_marginal_likelihood,
    gp_negative_log_likelihood,
)
from ntkit.sklearn import NNGPRegressor, make_network

D = torch.float64
W_TRUE, B_TRUE, NOISE_TRUE = 1.6, 0.5, 1e-2


def _net(w, b):
    return nl.serial(nl.Dense(8, w_std=w, b_std=b), nl.ReLU(), nl.Dense(1, w_std=w, b_std=b))


@pytest.fixture(scope="module")
def prior_data():
    g = torch.Generator().manual_seed(0)
    n, draws = 150, 4
    x = torch.randn(n, 3, generator=g, dtype=D)
    k = _net(W_TRUE, B_TRUE).kernel(x, get="nngp")
    chol = torch.linalg.cholesky(k + NOISE_TRUE * torch.eye(n, dtype=D))
    y = chol @ torch.randn(n, draws, generator=g, dtype=D)
    return x, y


def laplace_se(x, y, fit) -> np.ndarray:
    """Standard errors of (log w, log b, log σ²) from the Hessian of the NLL at the fit."""
    def nll(p):
        w, b, s2 = p.exp()
        return gp_negative_log_likelihood(_net(w, b).kernel(x, get="nngp"), y, s2)

    p = torch.tensor([math.log(fit.w_std[0]), math.log(fit.b_std[0]), math.log(fit.noise)],
                     dtype=D)
    h = torch.autograd.functional.hessian(nll, p)
    return torch.linalg.inv(h).diagonal().sqrt().numpy()


def test_recovers_prior_hyperparameters_within_posterior_width(prior_data):
    x, y = prior_data
    fit = fit_marginal_likelihood(_net(1.0, 0.1), x, y)
    se = laplace_se(x, y, fit)
    assert np.all(se < 0.25), se  # measured: 0.03 (w), 0.10 (b), 0.10 (σ²)
    est = np.log([fit.w_std[0], fit.b_std[0], fit.noise])
    true = np.log([W_TRUE, B_TRUE, NOISE_TRUE])
    assert np.all(np.abs(est - true) < 4 * se), (est, true, se)
    # The optimizer found a minimum: the gradient of the NLL vanishes there.
    assert fit.history[-1] <= fit.history[0]
    assert fit.nll == pytest.approx(min(fit.history), abs=1e-6)


def test_gp_nll_matches_the_gaussian_density():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 5, generator=g, dtype=D)
    k = a @ a.T
    y = torch.randn(5, 2, generator=g, dtype=D)
    dist = torch.distributions.MultivariateNormal(torch.zeros(5, dtype=D),
                                                  k + 0.3 * torch.eye(5, dtype=D))
    ref = -(dist.log_prob(y[:, 0]) + dist.log_prob(y[:, 1]))
    torch.testing.assert_close(gp_negative_log_likelihood(k, y, 0.3), ref)


def test_binding_ties_and_per_layer():
    net = nl.serial(nl.Dense(4, w_std=1.2, b_std=0.0), nl.ReLU(), nl.Dense(4, w_std=2.0),
                    nl.ReLU(), nl.Dense(1, w_std=0.7, b_std=None))
    tied = HyperparameterBinding(net)
    assert tied.w_init == [1.2] and tied.b_init == [0.01]  # 0 raised to the floor
    per = HyperparameterBinding(net, per_layer=True)
    assert per.w_init == [1.2, 2.0, 0.7] and per.b_init == [0.01, 0.01, None]
    assert len(affine_layers(net)) == 3
    # The original network is not modified by apply().
    tied.apply([torch.tensor(3.0)], [torch.tensor(0.2)])
    assert affine_layers(net)[0].w_std == 1.2


def test_per_layer_fit_runs_and_improves_likelihood(prior_data):
    x, y = prior_data
    fit = fit_marginal_likelihood(_net(1.0, 0.1), x[:40], y[:40], per_layer=True, max_iter=8)
    assert len(fit.w_std) == 2 and len(fit.b_std) == 2
    assert fit.history[-1] < fit.history[0]


def test_bad_arguments():
    x = torch.zeros(4, 2, dtype=D) + 1
    y = torch.ones(4, dtype=D)
    with pytest.raises(ValueError, match="kind"):
        fit_marginal_likelihood(_net(1, 0.1), x, y, kind="rbf")
    with pytest.raises(ValueError, match="rows"):
        fit_marginal_likelihood(_net(1, 0.1), x, y[:3])
    with pytest.raises(ValueError, match="noise"):
        fit_marginal_likelihood(_net(1, 0.1), x, y, noise=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        fit_marginal_likelihood(_net(1, 0.1), x * float("nan"), y)
    with pytest.raises(ValueError, match="no Dense or Conv"):
        fit_marginal_likelihood(nl.ReLU(), x, y)
    with pytest.raises(ValueError, match="square"):
        gp_negative_log_likelihood(torch.ones(2, 3, dtype=D), y, 1.0)


def test_sklearn_nngp_regressor_optimizes_hyperparameters():
    g = torch.Generator().manual_seed(2)
    n = 80
    x = torch.randn(n, 4, generator=g, dtype=D)
    k = make_network(1, "relu", 1.8, 0.4).kernel(x, get="nngp")
    y = torch.linalg.cholesky(k + NOISE_TRUE * torch.eye(n, dtype=D)) @ torch.randn(
        n, 3, generator=g, dtype=D)
    est = NNGPRegressor(w_std=1.0, b_std=0.1, optimize_hyperparameters=True)
    est.fit(x.numpy(), y.numpy())
    # Same likelihood as fit_marginal_likelihood on the estimator's network.
    ref = fit_marginal_likelihood(make_network(1, "relu", 1.0, 0.1), x, y)
    assert est.w_std_ == pytest.approx(ref.w_std[0], rel=1e-6)
    assert est.b_std_ == pytest.approx(ref.b_std[0], rel=1e-6)
    assert est.noise_ == pytest.approx(ref.noise, rel=1e-6)
    assert abs(math.log(est.w_std_ / 1.8)) < 0.15 and abs(math.log(est.b_std_ / 0.4)) < 0.3
    kd = est.spec_.kernel(x, get="nngp")
    assert est.diag_reg_ == pytest.approx(est.noise_ / float(kd.diagonal().mean()))
    # Predictions use the fitted kernel and noise: the GP posterior mean.
    mean = est.predict(x[:5].numpy())
    post = kd[:5] @ torch.linalg.solve(kd + est.noise_ * torch.eye(n, dtype=D), y)
    np.testing.assert_allclose(mean, post.numpy(), rtol=1e-8, atol=1e-10)
    assert est.get_params()["optimize_hyperparameters"] is True
    with pytest.raises(ValueError, match="optimize_hyperparameters"):
        NNGPRegressor(optimize_hyperparameters="yes").fit(x.numpy(), y.numpy())
