"""The two meanings of an NTK "std": the NTK-GP posterior (``uncertainty="gp"``, the
default of ``predict(return_std=True)``) and the spread of an ensemble of randomly
initialized wide networks (``uncertainty="ensemble"``, as
``gradient_descent_mse_ensemble(..., compute_cov=True)``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntkit import predict
from ntkit.sklearn import NNGPRegressor, NTKRegressor, make_network

RNG = np.random.default_rng(3)
X = RNG.standard_normal((25, 3))
Y = np.cos(X[:, 0]) + 0.1 * RNG.standard_normal(25)
XT = RNG.standard_normal((7, 3))
NET = make_network(1)


@pytest.mark.parametrize("t", [None, 30.0])
def test_ntk_std_has_two_named_meanings(t):
    est = NTKRegressor(t=t, diag_reg=1e-3, solver="cholesky").fit(X, Y)
    m_gp, s_gp = est.predict(XT, return_std=True)
    m_ens, s_ens = est.predict(XT, return_std=True, uncertainty="ensemble")
    ens = predict.gradient_descent_mse_ensemble(NET, torch.tensor(X), torch.tensor(Y),
                                                diag_reg=1e-3)
    ref = ens(t, torch.tensor(XT), "ntk", compute_cov=True)
    np.testing.assert_allclose(m_ens, ref.mean.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s_ens, ref.covariance.diagonal().clamp_min(0).sqrt().numpy(),
                               rtol=1e-9, atol=1e-12)
    # Both share the ensemble mean; the spreads are different quantities.
    np.testing.assert_allclose(m_gp, m_ens, rtol=1e-10, atol=1e-12)
    assert np.abs(s_gp - s_ens).max() > 0.1 * s_gp.max()
    _, cov = est.predict(XT, return_cov=True, uncertainty="ensemble")
    np.testing.assert_allclose(np.sqrt(np.maximum(np.diagonal(cov), 0)), s_ens, rtol=1e-12)


def test_default_gp_std_is_the_ntkgp_posterior():
    est = NTKRegressor(diag_reg=1e-3, solver="cholesky").fit(X, Y)
    x, xt = torch.tensor(X), torch.tensor(XT)
    gp = predict.gp_inference(NET.kernel(x, get="ntk"), torch.tensor(Y), 1e-3)
    post = gp("ntkgp", NET.kernel(xt, x, get="ntk"), NET.kernel(xt, get="ntk"))
    _, std = est.predict(XT, return_std=True)
    np.testing.assert_allclose(std, post.covariance.diagonal().clamp_min(0).sqrt().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_nngp_meanings_coincide():
    est = NNGPRegressor(t=5.0, diag_reg=1e-3).fit(X, Y)
    a = est.predict(XT, return_std=True)
    b = est.predict(XT, return_std=True, uncertainty="ensemble")
    np.testing.assert_array_equal(a[1], b[1])


def test_unknown_uncertainty():
    est = NTKRegressor().fit(X, Y)
    with pytest.raises(ValueError, match="unknown uncertainty 'bayes'; expected 'gp'"):
        est.predict(XT, return_std=True, uncertainty="bayes")
