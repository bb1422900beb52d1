"""scikit-learn estimators: API conformance, closed forms, and accuracy on digits."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.dummy import DummyClassifier
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from ntkit import models
from ntkit.layers import Conv, Flatten, GlobalAvgPool
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


# ---- convolutional nets on flat rows: input_shape ----------------------------------------
def _small_cnn():
    """A 2-D CNN that only flattens (diagonal kernels only: cheap on 8×8 images)."""
    return serial(Conv(16, (3, 3), padding="SAME", w_std=2**0.5), ReLU(),
                  Conv(16, (3, 3), padding="SAME", w_std=2**0.5), ReLU(), Flatten(),
                  Dense(10, w_std=1.0))


def test_cnn_classifier_on_flat_digits_is_kernel_regression(digits):
    x_tr, x_te, y_tr, y_te = digits
    x_tr, y_tr, x_te, y_te = x_tr[:200], y_tr[:200], x_te[:200], y_te[:200]
    net = _small_cnn()
    model = make_pipeline(StandardScaler(), NTKClassifier(net=net, input_shape=(1, 8, 8),
                                                          diag_reg=1e-3)).fit(x_tr, y_tr)
    acc = model.score(x_te, y_te)
    chance = DummyClassifier().fit(x_tr, y_tr).score(x_te, y_te)
    assert acc > 0.85 > chance + 0.5, (acc, chance)
    # Independent route: reshape by hand, compute the kernels, solve in numpy.
    sc = model[0]
    a = sc.transform(x_tr).reshape(-1, 1, 8, 8)
    b = sc.transform(x_te).reshape(-1, 1, 8, 8)
    k_dd, k_td = net.kernel(a, get="ntk").numpy(), net.kernel(b, a, get="ntk").numpy()
    targets = np.eye(10)[y_tr] - 0.1
    f = k_td @ _solve(k_dd, targets, 1e-3)
    np.testing.assert_array_equal(model.predict(x_te), np.argmax(f, axis=1))
    np.testing.assert_allclose(model[1].decision_function(sc.transform(x_te)), f, rtol=1e-8,
                               atol=1e-10)


def test_myrtle_in_pipeline_and_grid_search(digits):
    x_tr, x_te, y_tr, y_te = digits
    # Myrtle-5 needs full position covariances (2-3 ms per kernel entry here): tiny subset.
    clf = NTKClassifier(net=models.myrtle(5), input_shape=(1, 8, 8))
    model = make_pipeline(StandardScaler(), clf).fit(x_tr[:40], y_tr[:40])
    acc = model.score(x_te[:30], y_te[:30])
    assert acc > 0.5, acc   # chance is 0.1; 40 examples, 4 per class
    grid = GridSearchCV(make_pipeline(StandardScaler(),
                                      NTKClassifier(net=_small_cnn(), input_shape=(1, 8, 8))),
                        {"ntkclassifier__diag_reg": [1e-4, 1e-1]}, cv=2)
    grid.fit(x_tr[:100], y_tr[:100])
    assert grid.best_score_ > 0.7
    assert grid.best_estimator_[1].input_shape == (1, 8, 8)
    restored = pickle.loads(pickle.dumps(grid.best_estimator_))
    np.testing.assert_array_equal(restored.predict(x_te[:20]), grid.predict(x_te[:20]))


def test_input_shape_on_sequences_matches_shaped_kernel():
    rng = np.random.default_rng(1)
    x, xt, y = rng.standard_normal((30, 12)), rng.standard_normal((7, 12)), rng.standard_normal(30)
    net = serial(Conv(8, (3,), padding="CIRCULAR"), ReLU(), GlobalAvgPool(), Dense(1))
    est = NNGPRegressor(net=net, input_shape=(2, 6), diag_reg=1e-3).fit(x, y)
    a, b = x.reshape(30, 2, 6), xt.reshape(7, 2, 6)
    k_dd, k_td = net.kernel(a, get="nngp").numpy(), net.kernel(b, a, get="nngp").numpy()
    np.testing.assert_allclose(est.predict(xt), k_td @ _solve(k_dd, y, 1e-3), rtol=1e-9,
                               atol=1e-11)
    assert est.input_shape_ == (2, 6)


def test_input_shape_errors():
    x, y, _ = _data(d=12)
    net = serial(Conv(4, (3,)), ReLU(), Flatten(), Dense(1))
    with pytest.raises(ValueError, match=r"input_shape \(1, 8\) has 8 entries .* 12 features"):
        NTKRegressor(net=net, input_shape=(1, 8)).fit(x, y)
    for bad in ((1, 0, 12), (1, -12), (1.0, 12), "1,12", (), (True, 12)):
        with pytest.raises(ValueError, match="input_shape"):
            NTKRegressor(net=net, input_shape=bad).fit(x, y)
    with pytest.raises(ValueError, match="input_shape"):
        NTKRegressor(input_shape=(1, 12)).fit(x, y)   # the default FC net takes flat rows
    # A shape of the right size but the wrong rank for the net: the kernel's own error.
    with pytest.raises(ValueError):
        NTKRegressor(net=net, input_shape=(1, 3, 4)).fit(x, y)
    est = NTKRegressor(net=net, input_shape=(2, 6)).fit(x, y)
    with pytest.raises(ValueError):
        est.predict(np.zeros((3, 10)))   # wrong number of features at predict


def test_input_shape_get_set_params_round_trip():
    net = models.myrtle(5)
    est = NTKClassifier(net=net, input_shape=(1, 8, 8), diag_reg=1e-3)
    params = est.get_params()
    assert params["input_shape"] == (1, 8, 8) and params["net"] is net
    twin = clone(est)
    assert twin.get_params()["input_shape"] == (1, 8, 8)
    assert twin.get_params()["diag_reg"] == 1e-3
    est.set_params(input_shape=(1, 64))
    assert est.input_shape == (1, 64) and est.get_params()["input_shape"] == (1, 64)
    assert NTKRegressor().get_params()["input_shape"] is None
