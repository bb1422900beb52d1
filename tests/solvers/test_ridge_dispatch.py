"""One dispatch for t = ∞ ridge solves: names checked by lookup, one algorithm per name,
shared by ntkit.predict and ntkit.sklearn; the hyperparameter fit returns a result that
the estimators copy from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntkit import predict
from ntkit.hyperparameters import MarginalLikelihoodFit, fit_marginal_likelihood
from ntkit.sklearn import NTKRegressor, make_network
from ntkit.solvers import ridge_solver
from ntkit.solvers.kernel_ridge import check_solver

RNG = np.random.default_rng(0)
X = RNG.standard_normal((30, 4))
Y = np.sin(X[:, 0])
XT = RNG.standard_normal((9, 4))


def test_unknown_names_are_refused_by_lookup_with_the_choices():
    with pytest.raises(ValueError, match="unknown solver 'qr'; expected one of 'auto', "
                                         "'cholesky', 'pcg', 'nystrom'"):
        check_solver("qr")
    # predict refuses before it looks at the kernel (a string kernel would be a TypeError).
    for make in (lambda: predict.gp_inference("not a kernel", Y, solver="nystrom"),
                 lambda: predict.gradient_descent_mse("not a kernel", Y, solver="lu")):
        with pytest.raises(ValueError, match="expected one of 'auto', 'cholesky', 'pcg'$"):
            make()


@pytest.mark.parametrize("solver", ["cholesky", "pcg", "auto"])
def test_ridge_solver_matches_a_dense_solve(solver):
    k = make_network(1).kernel(torch.tensor(X), get="ntk")
    tol = 1e-12
    rs = ridge_solver(k, 1e-2, solver, tol=tol, max_iter=1000)
    delta = 1e-2 * float(k.diagonal().mean())
    a = k + delta * torch.eye(30, dtype=k.dtype)
    ref = torch.linalg.solve(a, torch.tensor(Y))
    # PCG's relative error is at most κ times its relative residual tol.
    rtol = 1e-12 if solver != "pcg" else 10 * tol * float(torch.linalg.cond(a))
    assert rs.delta == pytest.approx(delta, rel=1e-15)
    assert rs.solver == ("pcg" if solver == "pcg" else "cholesky")
    torch.testing.assert_close(rs(torch.tensor(Y)), ref, rtol=rtol, atol=0)


def test_estimator_cholesky_fit_goes_through_solve_ridge():
    est = NTKRegressor(solver="cholesky", diag_reg=1e-3).fit(X, Y)
    sol = est.solution_
    assert sol.solver == "cholesky" and sol.factor is not None and est.predictor_ is None
    # The same numbers as predict.gp_inference's NTK-GP posterior on the same kernels.
    net = est.spec_
    xt, x = torch.tensor(XT), torch.tensor(X)
    k = net.kernel(x, get="ntk")
    gp = predict.gp_inference(k, torch.tensor(Y), 1e-3)
    post = gp("ntkgp", net.kernel(xt, x, get="ntk"), net.kernel(xt, get="ntk"))
    mean, std = est.predict(XT, return_std=True)
    np.testing.assert_allclose(mean, post.mean.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(std, post.covariance.diagonal().clamp_min(0).sqrt().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_hyperparameter_fit_is_a_result_the_estimator_copies():
    import ntkit.hyperparameters as hp

    assert not hasattr(hp, "fit_estimator")
    est = NTKRegressor(optimize_hyperparameters=True).fit(X[:20], Y[:20])
    fit = est.hyperparameter_fit_
    assert isinstance(fit, MarginalLikelihoodFit) and fit.kind == "ntk"
    ref = fit_marginal_likelihood(make_network(1), torch.tensor(X[:20]),
                                  torch.tensor(Y[:20]), kind="ntk")
    assert (est.w_std_, est.b_std_, est.noise_) == (ref.w_std[0], ref.b_std[0], ref.noise)
    assert est.diag_reg_ == ref.relative_noise(torch.tensor(X[:20]))
    k = ref.net.kernel(torch.tensor(X[:20]), get="ntk")
    assert est.diag_reg_ == pytest.approx(ref.noise / float(k.diagonal().mean()), rel=1e-14)
