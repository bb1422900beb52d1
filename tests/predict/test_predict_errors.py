"""Bad input fails early with ValueError / TypeError naming the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ReluNetStub

import ntkit.predict as P


@pytest.fixture
def kyk(small_problem):
    p = small_problem
    return p["kdd"].ntk.clone(), p["y"].clone(), p["ktd"].ntk.clone()


def test_bad_train_kernels(kyk):
    k, y, _ = kyk
    bad = k.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite.*1 NaN"):
        P.gradient_descent_mse(bad, y)
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        P.gp_inference(bad, y)
    with pytest.raises(ValueError, match="square"):
        P.gradient_descent_mse(k[:, :9], y)
    with pytest.raises(ValueError, match="2-D"):
        P.gradient_descent_mse(k[None], y)
    asym = k.clone()
    asym[0, 1] += 1e-3
    with pytest.raises(ValueError, match="not symmetric"):
        P.gradient_descent_mse(asym, y)
    with pytest.raises(ValueError, match="not symmetric"):
        P.max_learning_rate(asym)
    with pytest.raises(TypeError, match="k_train_train"):
        P.gradient_descent_mse("kernel", y)
    with pytest.raises(TypeError, match="k_train_train"):
        P.gp_inference(object(), y)
    # Round-off asymmetry is tolerated (and symmetrized).
    tiny = k.clone()
    tiny[0, 1] += 1e-14
    P.gradient_descent_mse(tiny, y)


def test_bad_targets_and_shapes(kyk):
    k, y, ktd = kyk
    with pytest.raises(ValueError, match="y_train has 9 rows"):
        P.gradient_descent_mse(k, y[:9])
    with pytest.raises(ValueError, match=r"\(n,\) or \(n, k\)"):
        P.gradient_descent_mse(k, y[:, :, None])
    with pytest.raises(ValueError, match="y_train contains non-finite"):
        P.gradient_descent_mse(k, y * float("nan"))
    fn = P.gradient_descent_mse(k, y)
    with pytest.raises(ValueError, match=r"k_test_train must have shape \(m, 10\)"):
        fn(1.0, 0.0, 0.0, ktd[:, :9])
    with pytest.raises(ValueError, match="fx_train_0.*does not broadcast"):
        fn(1.0, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="fx_test_0 was given without k_test_train"):
        fn(1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="nothing to predict"):
        fn(1.0, None)
    gp = P.gp_inference({"nngp": k}, y)
    with pytest.raises(ValueError, match=r"k_test_test.nngp must have shape \(6, 6\)"):
        gp("nngp", ktd, {"nngp": torch.eye(5, dtype=torch.float64)})


def test_bad_times(kyk):
    k, y, ktd = kyk
    for fn in (P.gradient_descent_mse(k, y),
               P.gradient_descent_mse_ensemble(None, None, y, k_train_train={"ntk": k}),
               P.gradient_descent("mse", k, y)):
        with pytest.raises(ValueError, match="t must be >= 0"):
            fn(-1.0)
        with pytest.raises(ValueError, match="t contains NaN"):
            fn(np.array([1.0, np.nan]))
        with pytest.raises(TypeError, match="^t: "):
            fn("soon")


def test_bad_hyperparameters(kyk):
    k, y, _ = kyk
    with pytest.raises(ValueError, match="learning_rate"):
        P.gradient_descent_mse(k, y, learning_rate=0.0)
    with pytest.raises(ValueError, match="learning_rate"):
        P.gradient_descent("mse", k, y, learning_rate=-1.0)
    with pytest.raises(ValueError, match="diag_reg"):
        P.gradient_descent_mse(k, y, diag_reg=-1e-3)
    with pytest.raises(ValueError, match="diag_reg"):
        P.gp_inference(k, y, diag_reg=float("nan"))
    with pytest.raises(ValueError, match="momentum"):
        P.gradient_descent("mse", k, y, momentum=1.5)
    with pytest.raises(ValueError, match="momentum"):
        P.max_learning_rate(k, momentum=-0.1)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        P.gradient_descent("hinge", k, y)
    with pytest.raises(TypeError, match="loss must be"):
        P.gradient_descent(3, k, y)
    with pytest.raises(ValueError, match="cross_entropy needs y_train of shape"):
        P.gradient_descent("cross_entropy", k, y[:, 0])
    with pytest.raises(ValueError, match="y_train_size"):
        P.max_learning_rate(k, y_train_size=0)
    with pytest.raises(TypeError, match="scalar"):
        P.gradient_descent(lambda f, yy: (f - yy) ** 2, k, y)(1.0)


def test_bad_get_and_missing_kernels(small_problem):
    p = small_problem
    gp = P.gp_inference({"ntk": p["kdd"].ntk}, p["y"])
    with pytest.raises(ValueError, match="unknown get='ntkk'"):
        gp("ntkk", p["ktd"])
    with pytest.raises(TypeError, match="get must be"):
        gp(3, p["ktd"])
    with pytest.raises(ValueError, match="get is empty"):
        gp((), p["ktd"])
    with pytest.raises(ValueError, match="no 'nngp' kernel.*'ntk' posterior covariance"):
        gp("ntk", p["ktd"], p["ktt"])
    with pytest.raises(ValueError, match="neither"):
        P.gp_inference({}, p["y"])
    ens = P.gradient_descent_mse_ensemble(ReluNetStub(), p["x"], p["y"])
    with pytest.raises(ValueError, match="unknown get='ntkgp'"):
        ens(1.0, p["xt"], "ntkgp")
    with pytest.raises(TypeError, match="compute_cov must be a bool"):
        ens(1.0, p["xt"], "ntk", compute_cov="yes")
    with pytest.raises(TypeError, match="bare matrix"):
        ens(1.0, get="ntk", k_test_train=p["ktd"].ntk)
    no_net = P.gradient_descent_mse_ensemble(None, None, p["y"],
                                             k_train_train={"ntk": p["kdd"].ntk})
    with pytest.raises(ValueError, match=r"\('nngp',\) are needed.*no net"):
        no_net(1.0, get="ntk", compute_cov=True, k_test_train=p["ktd"],
               k_test_test=p["ktt"])
    with pytest.raises(ValueError, match="pass x_test or the precomputed"):
        no_net(1.0, get="ntk", compute_cov=True, k_test_train={"ntk": p["ktd"].ntk})
    with pytest.raises(ValueError, match="pass a net"):
        P.gradient_descent_mse_ensemble(None, None, p["y"])
    with pytest.raises(TypeError, match="net must have a .kernel"):
        P.gradient_descent_mse_ensemble(42, p["x"], p["y"])
    with pytest.raises(ValueError, match="x_train has 10 rows but y_train has 9"):
        P.gradient_descent_mse_ensemble(ReluNetStub(), p["x"], p["y"][:9])
