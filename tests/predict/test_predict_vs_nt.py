"""ntkit.predict against neural-tangents 0.6.5 (fixtures/nt_predict.npz), to ~1e-10."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import torch
from conftest import ReluNetStub, assert_close

import ntkit.predict as P


def test_stub_kernel_matches_nt(nt):
    """The stub's kernels against neural-tangents, with tolerances set by conditioning.

    Off the diagonal (correlations ≤ 0.98 here) the arc-cosine map is well conditioned and
    the two agree to round-off: 1e-13 relative. On the diagonal (correlation exactly 1) the
    stub's angle is exactly 0, while NT computes arccos of a rounded ratio: a relative
    rounding u of the ratio gives θ ≈ √(2u), ≤ √(8ε) ≈ 4.2e-8 for u ≤ 4ε. The NTK term
    w²·k1·(π − θ)/(2π) then moves by w²·|k1|·θ/(2π), while the NNGP moves only by O(θ²).
    That bound, not a platform's rounding, is the diagonal's tolerance.
    """
    net = ReluNetStub(float(nt["w_std"]), float(nt["b_std"]))
    k = net.kernel(nt["x_train"], None)
    kt = net.kernel(nt["x_test"], nt["x_train"])
    off = ~np.eye(len(nt["x_train"]), dtype=bool)
    assert_close(k.nngp.numpy()[off], nt["nngp_dd"][off], 1e-13, "nngp_dd off-diagonal")
    assert_close(k.ntk.numpy()[off], nt["ntk_dd"][off], 1e-13, "ntk_dd off-diagonal")
    assert_close(kt.nngp, nt["nngp_td"], 1e-13, "nngp_td")
    assert_close(kt.ntk, nt["ntk_td"], 1e-13, "ntk_td")

    # Diagonal: the stub equals the closed form at θ = 0 (an independent formula) ...
    w2, b2 = float(nt["w_std"]) ** 2, float(nt["b_std"]) ** 2
    x = torch.as_tensor(nt["x_train"])
    v = (x * x).sum(1) / x.shape[1] * w2 + b2  # first layer's variance = k1 on the diagonal
    nngp_exact = w2 * v / 2 + b2
    ntk_exact = nngp_exact + w2 * v / 2
    assert_close(k.nngp.diagonal(), nngp_exact, 1e-14, "nngp diagonal vs closed form")
    assert_close(k.ntk.diagonal(), ntk_exact, 1e-14, "ntk diagonal vs closed form")
    # ... and NT's diagonal is within its angle's conditioning of it.
    eps = np.finfo(np.float64).eps
    theta_max = np.sqrt(8 * eps)
    ntk_tol = w2 * v.numpy() * theta_max / (2 * np.pi) + 1e-13 * ntk_exact.numpy()
    ntk_err = np.abs(np.diag(nt["ntk_dd"]) - ntk_exact.numpy())
    assert (ntk_err <= ntk_tol).all(), f"NT ntk diagonal off by {ntk_err} > {ntk_tol}"
    nngp_tol = w2 * v.numpy() * theta_max**2 + 1e-13 * nngp_exact.numpy()
    nngp_err = np.abs(np.diag(nt["nngp_dd"]) - nngp_exact.numpy())
    assert (nngp_err <= nngp_tol).all(), f"NT nngp diagonal off by {nngp_err} > {nngp_tol}"


class FixtureNet:
    """A net whose ``kernel`` serves neural-tangents' own fixture kernels.

    It lets the ensemble's net path (which kernels it asks for, with which inputs) be
    compared with NT's predictions without depending on how either library rounds the
    arc-cosine angle at correlation 1.
    """

    def __init__(self, nt):
        self.nt = nt

    def _block(self, x):
        for tag, ref in (("d", "x_train"), ("t", "x_test")):
            if x.shape == self.nt[ref].shape and np.array_equal(np.asarray(x), self.nt[ref]):
                return tag
        raise AssertionError("FixtureNet got inputs that are not the fixture's")

    def kernel(self, x1, x2=None, get=("nngp", "ntk")):
        a = self._block(x1)
        b = a if x2 is None else self._block(x2)
        names = (get,) if isinstance(get, str) else tuple(get)
        vals = {g: torch.as_tensor(self.nt[f"{g}_{a}{b}"]) for g in names}
        if isinstance(get, str):
            return vals[get]
        return namedtuple("Kernels", names)(*(vals[g] for g in names))


def test_gradient_descent_mse_matches_nt(nt):
    for tag, reg in (("mse", 0.0), ("mse_reg", 1e-2)):
        fn = P.gradient_descent_mse(nt["ntk_dd"], nt["y_train"], float(nt["lr"]), diag_reg=reg)
        tr, te = fn(nt["times"], nt["fx_train_0"], nt["fx_test_0"], nt["ntk_td"])
        assert_close(tr, nt[f"{tag}_train"], 1e-10, tag)
        assert_close(te, nt[f"{tag}_test"], 1e-10, tag)
        tr, te = fn(None, nt["fx_train_0"], nt["fx_test_0"], nt["ntk_td"])
        assert_close(tr, nt[f"{tag}_train_inf"], 1e-10, tag)
        assert_close(te, nt[f"{tag}_test_inf"], 1e-10, tag)
    fn = P.gradient_descent_mse(nt["ntk_dd"], nt["y_train"], float(nt["lr"]), diag_reg=0.05,
                                diag_reg_absolute_scale=True)
    _, te = fn(nt["times"], nt["fx_train_0"], nt["fx_test_0"], nt["ntk_td"])
    assert_close(te, nt["mse_abs_test"], 1e-10, "absolute diag_reg")


def test_gp_inference_matches_nt(nt):
    kdd = {"nngp": nt["nngp_dd"], "ntk": nt["ntk_dd"]}
    ktd = {"nngp": nt["nngp_td"], "ntk": nt["ntk_td"]}
    ktt = {"nngp": nt["nngp_tt"], "ntk": nt["ntk_tt"]}
    gp = P.gp_inference(kdd, nt["y_train"], diag_reg=1e-4)
    out = gp(("nngp", "ntk", "ntkgp"), ktd, ktt)
    for g in ("nngp", "ntk", "ntkgp"):
        assert_close(getattr(out, g).mean, nt[f"gp_{g}_mean"], 1e-10, g)
        assert_close(getattr(out, g).covariance, nt[f"gp_{g}_cov"], 1e-10, g)


def test_ensemble_matches_nt(nt):
    ens = P.gradient_descent_mse_ensemble(FixtureNet(nt), nt["x_train"], nt["y_train"],
                                          float(nt["lr"]), diag_reg=1e-3)
    for tag, t in (("t", nt["ens_times"]), ("inf", None)):
        out = ens(t, nt["x_test"], ("nngp", "ntk"), compute_cov=True)
        for g in ("nngp", "ntk"):
            assert_close(getattr(out, g).mean, nt[f"ens_{tag}_{g}_mean"], 1e-10, f"{tag} {g}")
            assert_close(getattr(out, g).covariance, nt[f"ens_{tag}_{g}_cov"], 1e-10,
                         f"{tag} {g} cov")
    out = ens(nt["ens_times"], None, ("nngp", "ntk"), compute_cov=True)
    for g in ("nngp", "ntk"):
        assert_close(getattr(out, g).mean, nt[f"ens_train_{g}_mean"], 1e-10, f"train {g}")
        assert_close(getattr(out, g).covariance, nt[f"ens_train_{g}_cov"], 1e-10,
                     f"train {g} cov")


def test_ensemble_net_path_equals_precomputed_kernels(nt):
    """Kernels from a net (here the analytic stub) give what the same kernels passed in do."""
    net = ReluNetStub(float(nt["w_std"]), float(nt["b_std"]))
    args = (nt["y_train"], float(nt["lr"]))
    from_net = P.gradient_descent_mse_ensemble(net, nt["x_train"], *args, diag_reg=1e-3)
    kdd = net.kernel(nt["x_train"], None)
    ktd = net.kernel(nt["x_test"], nt["x_train"])
    ktt = net.kernel(nt["x_test"], None)
    given = P.gradient_descent_mse_ensemble(
        None, None, *args, diag_reg=1e-3, k_train_train={"nngp": kdd.nngp, "ntk": kdd.ntk})
    for t in (nt["ens_times"], None):
        a = from_net(t, nt["x_test"], "ntk", compute_cov=True)
        b = given(t, get="ntk", compute_cov=True,
                  k_test_train={"nngp": ktd.nngp, "ntk": ktd.ntk},
                  k_test_test={"nngp": ktt.nngp})
        assert_close(a.mean, b.mean, 1e-12, "mean")
        assert_close(a.covariance, b.covariance, 1e-12, "covariance")


def test_ensemble_from_precomputed_kernels_matches_nt(nt):
    ens = P.gradient_descent_mse_ensemble(
        None, None, nt["y_train"], float(nt["lr"]), diag_reg=1e-3,
        k_train_train={"nngp": nt["nngp_dd"], "ntk": nt["ntk_dd"]})
    mean, cov = ens(nt["ens_times"], get="ntk", compute_cov=True,
                    k_test_train={"nngp": nt["nngp_td"], "ntk": nt["ntk_td"]},
                    k_test_test={"nngp": nt["nngp_tt"]})
    assert_close(mean, nt["ens_t_ntk_mean"], 1e-10)
    assert_close(cov, nt["ens_t_ntk_cov"], 1e-10)


def test_max_learning_rate_matches_nt(nt):
    assert abs(P.max_learning_rate(nt["ntk_dd"]) - float(nt["max_lr"])) <= 1e-12 * nt["max_lr"]
    lr = P.max_learning_rate(nt["ntk_dd"], y_train_size=nt["y_train"].size, momentum=0.9)
    assert abs(lr - float(nt["max_lr_size_mom"])) <= 1e-12 * lr


def test_ode_matches_nt(nt):
    # neural-tangents integrates with jax's odeint at rtol = atol = 1.4e-8, so its numbers
    # carry ~1e-8 relative error; ours are at 1e-10. Compare at 1e-6.
    def ce_nt(fx, y):  # the normalization of NT's docstring example (mean over all entries)
        return -torch.mean(torch.log_softmax(fx, -1) * y)

    fn = P.gradient_descent(ce_nt, nt["ntk_dd"], nt["y_onehot"], float(nt["lr"]))
    tr, te = fn(nt["ode_times"], nt["fx_train_0"], nt["fx_test_0"], nt["ntk_td"])
    assert_close(tr, nt["ode_ce_train"], 1e-6, "cross-entropy train")
    assert_close(te, nt["ode_ce_test"], 1e-6, "cross-entropy test")
    fn = P.gradient_descent("mse", nt["ntk_dd"], nt["y_train"], float(nt["lr"]), momentum=0.9)
    tr, te = fn(nt["ode_times"], nt["fx_train_0"], nt["fx_test_0"], nt["ntk_td"])
    assert_close(tr, nt["ode_mom_train"], 1e-6, "momentum train")
    assert_close(te, nt["ode_mom_test"], 1e-6, "momentum test")
    assert np.isfinite(tr.numpy()).all()
