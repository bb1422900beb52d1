"""gp_inference against direct formulas."""

from __future__ import annotations

import torch
from conftest import assert_close

import ntkit.predict as P
from ntkit.kernel import Kernel


def test_posteriors_match_direct_formulas(small_problem):
    p = small_problem
    kdd, ktd, ktt, y = p["kdd"], p["ktd"], p["ktt"], p["y"]
    gp = P.gp_inference(kdd, y)
    out = gp(("nngp", "ntk", "ntkgp"), ktd, ktt)
    solve = torch.linalg.solve
    # NNGP: Bayesian posterior.
    assert_close(out.nngp.mean, ktd.nngp @ solve(kdd.nngp, y), 1e-12)
    assert_close(out.nngp.covariance,
                 ktt.nngp - ktd.nngp @ solve(kdd.nngp, ktd.nngp.T), 1e-12)
    # NTK: infinite ensemble trained to convergence.
    a = solve(kdd.ntk, ktd.ntk.T)
    cross = ktd.ntk @ solve(kdd.ntk, ktd.nngp.T)
    assert_close(out.ntk.mean, ktd.ntk @ solve(kdd.ntk, y), 1e-12)
    assert_close(out.ntk.covariance, ktt.nngp - cross - cross.T + a.T @ kdd.nngp @ a, 1e-11)
    # NTK-GP: GP with the NTK as prior.
    assert_close(out.ntkgp.mean, out.ntk.mean, 1e-14)
    assert_close(out.ntkgp.covariance, ktt.ntk - ktd.ntk @ solve(kdd.ntk, ktd.ntk.T), 1e-12)
    for g in out:
        lam = torch.linalg.eigvalsh(g.covariance)
        assert float(lam[0]) >= -1e-12 * float(lam.abs().max())


def test_diag_reg_and_train_set(small_problem):
    p = small_problem
    k = p["kdd"].nngp
    gp = P.gp_inference(k, p["y"], diag_reg=0.1)
    delta = 0.1 * float(torch.diagonal(k).mean())
    kreg = k + delta * torch.eye(10, dtype=torch.float64)
    assert_close(gp("nngp", p["ktd"].nngp), p["ktd"].nngp @ torch.linalg.solve(kreg, p["y"]),
                 1e-12)
    # Train set: N(y, 0) (unregularized, as in neural-tangents).
    mean, cov = gp("nngp", None, True)
    assert torch.equal(mean, p["y"]) and bool((cov == 0).all())
    # Regularized train-set predictions: pass k_test_train = k_train_train.
    reg = gp("nngp", k)
    assert float((reg - p["y"]).abs().max()) > 1e-3


def test_bare_matrix_is_factored_once(small_problem):
    p = small_problem
    gp = P.gp_inference(p["kdd"].ntk, p["y"])
    out = gp(("ntk", "ntkgp"), p["ktd"].ntk, p["ktt"].ntk)
    assert gp.cholesky("ntk") is gp.cholesky("nngp")
    assert_close(out.ntk.mean, out.ntkgp.mean, 0)


def test_accepts_kernel_dataclass_and_numpy(small_problem):
    p = small_problem
    kd = Kernel(nngp=p["kdd"].nngp.numpy(), ntk=p["kdd"].ntk.numpy(), cov1=None, cov2=None,
                channels=1)
    gp = P.gp_inference(kd, p["y"].numpy())
    ref = P.gp_inference(p["kdd"], p["y"])
    assert_close(gp("ntk", p["ktd"]), ref("ntk", p["ktd"]), 0)
