"""scikit-learn estimators: API conformance, closed forms, and accuracy on digits."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.dummy import DummyClassifier
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from ntkit.layers.activations import Erf, ReLU
from ntkit.layers.branching import serial
from ntkit.layers.dense import Dense
from ntkit.sklearn import (
    NNGPClassifier,
    NNGPRegressor,
    NTKClassifier,
    NTKRegressor,
    make_network,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small kernels run fastest single-threaded (thread sync dominates on 2 busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The NNGP classes differ from the NTK ones only in the kernel they request, so the
# default run checks one regressor and one classifier; the rest run with -m slow.
@parametrize_with_checks([NTKRegressor(), NTKClassifier()])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks([NNGPRegressor(), NNGPClassifier(),
                          NTKRegressor(t=50.0, activation="gelu", depth=2),
                          NNGPClassifier(t=10.0, activation="erf", depth=2)])
def test_sklearn_compatible_variants(estimator, check):
    check(estimator)


def _data(n=40, m=15, d=5, k=None, seed=0):
    rng = np.random.default_rng(seed)
    x, xt = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    w = rng.standard_normal((d,) if k is None else (d, k))
    return x, np.sin(x @ w), xt


def _solve(k_dd, y, reg):
    """Ridge solve K⁻¹y with δ = reg · mean(diag K), in numpy (independent of ntkit)."""
    a = k_dd + reg * np.mean(np.diag(k_dd)) * np.eye(len(k_dd))
    return np.linalg.solve(a, y)


@pytest.mark.parametrize("k", [None, 3])
def test_ntk_regressor_is_kernel_regression(k):
    x, y, xt = _data(k=k)
    net = make_network(2, "relu", 1.5, 0.05)
    kern = net.kernel(x, get="ntk").numpy()
    k_td = net.kernel(xt, x, get="ntk").numpy()
    expected = k_td @ _solve(kern, y, 1e-3)
    est = NTKRegressor(depth=2, diag_reg=1e-3).fit(x, y)
    np.testing.assert_allclose(est.predict(xt), expected, rtol=1e-9, atol=1e-10)
    assert est.predict(xt).shape == (len(xt),) + y.shape[1:]


def test_regressor_std_is_gp_posterior():
    x, y, xt = _data()
    for cls, name in ((NNGPRegressor, "nngp"), (NTKRegressor, "ntk")):
        net = make_network(1, "erf", 1.3, 0.2)
        est = cls(net=net, diag_reg=1e-2).fit(x, y)
        k_dd = net.kernel(x, get=name).numpy()
        k_td = net.kernel(xt, x, get=name).numpy()
        k_tt = net.kernel(xt, get=name).numpy()
        reg = k_dd + 1e-2 * np.mean(np.diag(k_dd)) * np.eye(len(x))
        cov = k_tt - k_td @ np.linalg.solve(reg, k_td.T)
        mean, std = est.predict(xt, return_std=True)
        np.testing.assert_allclose(mean, k_td @ np.linalg.solve(reg, y), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(std, np.sqrt(np.clip(np.diag(cov), 0, None)),
                                   rtol=1e-7, atol=1e-8)
        mean2, cov2 = est.predict(xt, return_cov=True)
        np.testing.assert_allclose(cov2, cov, rtol=1e-7, atol=1e-9)
        # On the training inputs the latent std is small (it is 0 without diag_reg).
        _, std_train = est.predict(x, return_std=True)
        assert std_train.max() < std.max()


def test_finite_time_matches_gradient_flow():
    """Finite t: mean = K_td K⁻¹ (I − exp(−η t K / N)) y, by eigendecomposition in numpy."""
    x, y, xt = _data()
    t, lr = 30.0, 0.5
    est = NNGPRegressor(depth=1, t=t, learning_rate=lr, diag_reg=0.0).fit(x, y)
    net = make_network(1)
    k_dd = net.kernel(x, get="nngp").numpy()
    k_td = net.kernel(xt, x, get="nngp").numpy()
    lam, v = np.linalg.eigh(k_dd)
    s = lr * t / y.size
    expected = k_td @ v @ (-np.expm1(-lam * s) / lam * (v.T @ y))
    np.testing.assert_allclose(est.predict(xt), expected, rtol=1e-8, atol=1e-10)
    # t -> inf recovers kernel regression.
    far = NNGPRegressor(depth=1, t=1e12, diag_reg=1e-3).fit(x, y).predict(xt)
    inf = NNGPRegressor(depth=1, t=None, diag_reg=1e-3).fit(x, y).predict(xt)
    np.testing.assert_allclose(far, inf, rtol=1e-6, atol=1e-8)


def test_net_overrides_architecture():
    x, y, xt = _data()
    net = serial(Dense(64, 1.2, 0.1), Erf(), Dense(64, 1.2, 0.1), ReLU(), Dense(1, 1.2, 0.1))
    est = NTKRegressor(net=net, depth=7, activation="tanh").fit(x, y)
    k_dd = net.kernel(x, get="ntk").numpy()
    k_td = net.kernel(xt, x, get="ntk").numpy()
    np.testing.assert_allclose(est.predict(xt), k_td @ _solve(k_dd, y, 1e-4), rtol=1e-8,
                               atol=1e-10)


def test_classifier_targets_and_binary_decision():
    x, y, xt = _data()
    labels = np.where(y > 0, "pos", "neg")
    clf = NTKClassifier(diag_reg=1e-3).fit(x, labels)
    assert list(clf.classes_) == ["neg", "pos"]
    # The two centred one-hot outputs are ±(f) of each other, so the decision is f1 - f0.
    reg = NTKRegressor(diag_reg=1e-3).fit(x, np.eye(2)[(y > 0).astype(int)] - 0.5)
    f = reg.predict(xt)
    np.testing.assert_allclose(clf.decision_function(xt), f[:, 1] - f[:, 0], atol=1e-10)
    assert np.all(clf.predict(xt) == np.where(f[:, 1] > f[:, 0], "pos", "neg"))


def test_bad_hyperparameters_raise():
    x, y, _ = _data()
    for kw in ({"activation": "nope"}, {"depth": -1}, {"t": -1.0}, {"diag_reg": -1.0},
               {"learning_rate": 0.0}, {"w_std": float("nan")}, {"net": "not a spec"}):
        with pytest.raises(ValueError):
            NTKRegressor(**kw).fit(x, y)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, train_size=400, test_size=400, random_state=0, stratify=y)


@pytest.mark.parametrize("cls", [NTKClassifier, NNGPClassifier])
def test_digits_accuracy(digits, cls):
    x_tr, x_te, y_tr, y_te = digits
    model = make_pipeline(StandardScaler(), cls(depth=2)).fit(x_tr, y_tr)
    acc = model.score(x_te, y_te)
    chance = DummyClassifier().fit(x_tr, y_tr).score(x_te, y_te)  # ~0.1
    assert acc > 0.9 > chance + 0.5, (acc, chance)


def test_grid_search_and_pickle(digits):
    x_tr, x_te, y_tr, y_te = digits
    pipe = make_pipeline(StandardScaler(), NTKClassifier())
    grid = GridSearchCV(pipe, {"ntkclassifier__depth": [1, 3],
                               "ntkclassifier__diag_reg": [1e-4, 1e-1]}, cv=3)
    grid.fit(x_tr[:200], y_tr[:200])
    assert grid.best_score_ > 0.85
    assert set(grid.best_params_) == {"ntkclassifier__depth", "ntkclassifier__diag_reg"}
    restored = pickle.loads(pickle.dumps(grid.best_estimator_))
    np.testing.assert_array_equal(restored.predict(x_te), grid.predict(x_te))


def test_float32_and_int_inputs_give_float64():
    x, y, xt = _data()
    est = NNGPRegressor().fit(x.astype(np.float32), y)
    assert est.predict(xt).dtype == np.float64
    assert est.kernel_train_.dtype == torch.float64
    with pytest.raises(ValueError):
        est.predict(np.full((2, x.shape[1]), np.nan))
