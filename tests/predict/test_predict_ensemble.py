"""gradient_descent_mse_ensemble: limits, PSD covariances, caching, precomputed kernels."""

from __future__ import annotations

import torch
from conftest import ReluNetStub, assert_close

import ntkit.predict as P

TIMES = torch.tensor([0.3, 3.0, 30.0, 300.0], dtype=torch.float64)


def _min_eig_ok(cov: torch.Tensor, rtol: float = 1e-12) -> bool:
    """PSD up to round-off: λ_min >= -rtol · ‖cov‖ for each time."""
    for c in cov.reshape(-1, *cov.shape[-2:]):
        lam = torch.linalg.eigvalsh(c)
        if float(lam[0]) < -rtol * max(float(lam.abs().max()), 1e-300):
            return False
    return True


def test_covariances_are_psd(small_problem):
    p = small_problem
    ens = P.gradient_descent_mse_ensemble(ReluNetStub(), p["x"], p["y"], learning_rate=0.5)
    for x_test in (p["xt"], None):
        for t in (TIMES, None):
            out = ens(t, x_test, ("nngp", "ntk"), compute_cov=True)
            for g in ("nngp", "ntk"):
                cov = getattr(out, g).covariance
                assert torch.isfinite(cov).all()
                assert torch.equal(cov, cov.transpose(-1, -2))
                assert _min_eig_ok(cov), (g, x_test is None, t is None)


def test_time_zero_is_the_prior(small_problem):
    p = small_problem
    ens = P.gradient_descent_mse_ensemble(ReluNetStub(), p["x"], p["y"])
    out = ens(0.0, p["xt"], compute_cov=True)
    for g in ("nngp", "ntk"):
        assert_close(getattr(out, g).mean, torch.zeros(6, 2), 0)
        assert_close(getattr(out, g).covariance, p["ktt"].nngp, 1e-13)


def test_large_t_converges_to_t_none(small_problem):
    p = small_problem
    ens = P.gradient_descent_mse_ensemble(ReluNetStub(), p["x"], p["y"], learning_rate=1.0)
    lam_min = min(float(torch.linalg.eigvalsh(k)[0]) for k in p["kdd"])
    t_big = 60 * p["y"].numel() / lam_min
    big = ens(t_big, p["xt"], compute_cov=True)
    inf = ens(None, p["xt"], compute_cov=True)
    for g in ("nngp", "ntk"):
        assert_close(getattr(big, g).mean, getattr(inf, g).mean, 1e-9, g)
        assert_close(getattr(big, g).covariance, getattr(inf, g).covariance, 1e-9, g)
    # t = None on the training set: mean y, no variance.
    mean, cov = ens(None, None, "ntk", compute_cov=True)
    assert_close(mean, p["y"], 0) and bool((cov == 0).all())


def test_matches_linear_map_of_gp_initialization(small_problem):
    # Trained outputs are f_test(t) = B [f0_train; f0_test] + mean, linear in the initial
    # outputs, which are jointly N(0, K_nngp). So cov = B Σ Bᵀ; we get B column by column
    # from gradient_descent_mse (zero targets, unit initial outputs).
    p = small_problem
    n, m, lr = 10, 6, 0.8
    k, ktd = p["kdd"].ntk, p["ktd"].ntk
    sigma = torch.cat([torch.cat([p["kdd"].nngp, p["ktd"].nngp.T], 1),
                       torch.cat([p["ktd"].nngp, p["ktt"].nngp], 1)])
    gd = P.gradient_descent_mse(k, torch.zeros_like(p["y"]), learning_rate=lr)
    ens = P.gradient_descent_mse_ensemble(ReluNetStub(), p["x"], p["y"], learning_rate=lr)
    mean, cov = ens(TIMES, p["xt"], "ntk", compute_cov=True)
    cols = []
    for j in range(n + m):
        f0 = torch.zeros(n, 2, dtype=torch.float64)
        ft0 = torch.zeros(m, 2, dtype=torch.float64)
        (f0 if j < n else ft0)[j % n if j < n else j - n, 0] = 1.0
        cols.append(gd(TIMES, f0, ft0, ktd)[1][..., 0])  # (T, m)
    b = torch.stack(cols, -1)  # (T, m, n + m)
    assert_close(cov, b @ sigma @ b.transpose(1, 2), 1e-11, "covariance")
    mean_gd = P.gradient_descent_mse(k, p["y"], learning_rate=lr)(TIMES, 0.0, 0.0, ktd)[1]
    assert_close(mean, mean_gd, 1e-12, "mean")


def test_train_set_equals_test_on_train_inputs(small_problem):
    p = small_problem
    ens = P.gradient_descent_mse_ensemble(ReluNetStub(), p["x"], p["y"], learning_rate=0.5)
    a = ens(TIMES, None, compute_cov=True)
    b = ens(TIMES, p["x"], compute_cov=True)
    for g in ("nngp", "ntk"):
        assert_close(getattr(a, g).mean, getattr(b, g).mean, 1e-10, g)
        assert_close(getattr(a, g).covariance, getattr(b, g).covariance, 1e-10, g)


def test_kernels_computed_once_and_cached(small_problem):
    p = small_problem
    net = ReluNetStub()
    ens = P.gradient_descent_mse_ensemble(net, p["x"], p["y"])
    ens(1.0, p["xt"], "ntk")  # needs ntk only
    ens([1.0, 2.0], p["xt"], "ntk", compute_cov=True)  # adds nngp train/test-train/test-test
    ens(None, p["xt"], compute_cov=True)
    ens(5.0, p["xt"].clone(), compute_cov=True)  # same content: cached test kernels
    train_calls = [c for c in net.calls if c[1] is None and c[0] == 10]
    assert [c[2] for c in train_calls] == [("ntk",), ("nngp",)]
    assert len(net.calls) == 5, net.calls
    e1 = ens.eigh("ntk")
    ens(7.0, p["xt"], "ntk")
    assert ens.eigh("ntk") is e1


def test_precomputed_kernels_match_net(small_problem):
    p = small_problem
    net = ReluNetStub()
    by_net = P.gradient_descent_mse_ensemble(net, p["x"], p["y"], diag_reg=1e-3)
    given = P.gradient_descent_mse_ensemble(None, None, p["y"], diag_reg=1e-3,
                                            k_train_train=p["kdd"]._asdict())
    for t in (TIMES, None):
        a = by_net(t, p["xt"], compute_cov=True)
        b = given(t, get=("nngp", "ntk"), compute_cov=True, k_test_train=p["ktd"],
                  k_test_test={"nngp": p["ktt"].nngp})
        for g in ("nngp", "ntk"):
            assert_close(getattr(a, g).mean, getattr(b, g).mean, 1e-13)
            assert_close(getattr(a, g).covariance, getattr(b, g).covariance, 1e-13)
    # Partly precomputed: the net fills in what is missing.
    net2 = ReluNetStub()
    part = P.gradient_descent_mse_ensemble(net2, p["x"], p["y"], diag_reg=1e-3,
                                           k_train_train={"ntk": p["kdd"].ntk})
    mean = part(2.0, p["xt"], "ntk")
    assert_close(mean, by_net(2.0, p["xt"], "ntk"), 1e-13)
    assert all(c[1] is not None for c in net2.calls)  # no train-train call


def test_output_structure(small_problem):
    p = small_problem
    ens = P.gradient_descent_mse_ensemble(ReluNetStub(), p["x"], p["y"])
    mean = ens(1.0, p["xt"], "nngp")
    assert isinstance(mean, torch.Tensor) and mean.shape == (6, 2)
    out = ens(torch.ones(2, 3), p["xt"], ("ntk",), compute_cov=True)
    assert out._fields == ("ntk",)
    assert out.ntk.mean.shape == (2, 3, 6, 2) and out.ntk.covariance.shape == (2, 3, 6, 6)
    both = ens(None, p["xt"])
    assert both._fields == ("nngp", "ntk") and both.ntk.shape == (6, 2)
