"""Random-features ridge regression: sklearn conventions, convergence to kernel ridge."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV

from ntkit.features import KINDS, RandomFeaturesRegressor, kernel_ridge


def _problem(n=80, t=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    xt = rng.normal(size=(t, d))
    f = lambda z: np.sin(z.sum(1)) + 0.3 * z[:, 0] ** 2  # noqa: E731
    return x, f(x) + 0.1 * rng.normal(size=n), xt


def test_kernel_ridge_matches_sklearn():
    x, y, xt = _problem()
    for gamma, alpha in ((0.5, 0.1), (2.0, 1e-3)):
        ours = kernel_ridge(x, y, xt, "fourier_gaussian", alpha, gamma)
        ref = KernelRidge(alpha=alpha, kernel="rbf", gamma=gamma).fit(x, y).predict(xt)
        np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-10)
        ours = kernel_ridge(x, y, xt, "fourier_laplacian", alpha, gamma)
        ref = KernelRidge(alpha=alpha, kernel="laplacian", gamma=gamma).fit(x, y).predict(xt)
        np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-10)
    # multi-output and ridgeless interpolation
    y2 = np.stack([y, -2 * y], 1)
    p2 = kernel_ridge(x, y2, xt, "relu", 0.5)
    np.testing.assert_allclose(p2[:, 1], -2 * p2[:, 0], rtol=1e-12)
    fit0 = kernel_ridge(x, y, x, "fourier_gaussian", 0.0, 0.5)
    np.testing.assert_allclose(fit0, y, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_rf_ridge_approaches_kernel_ridge(kind):
    """RMS(RF prediction − KRR prediction) falls like m^(−1/2): 64× the features, ≥ 4× closer."""
    x, y, xt = _problem()
    alpha, gamma = 0.5, 0.4
    exact = kernel_ridge(x, y, xt, kind, alpha, gamma)
    ms = (2**5, 2**8, 2**11) if kind == "ntk" else (2**6, 2**9, 2**12)
    errs = []
    for m in ms:
        e = [np.sqrt(np.mean((RandomFeaturesRegressor(kind, m, alpha, gamma, random_state=s)
                              .fit(x, y).predict(xt) - exact) ** 2)) for s in range(4)]
        errs.append(np.mean(e))
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < errs[0] / 4, errs
    slope = np.polyfit(np.log(ms), np.log(errs), 1)[0]
    assert -0.75 < slope < -0.35, (slope, errs)


def test_primal_and_dual_paths_agree():
    x, y, xt = _problem(n=30)
    # 64 features > 30 rows: dual; 16 ≤ 30: primal. Same map (seed) in both directions:
    # compare the dual solve with an explicit primal solve on the same features.
    est = RandomFeaturesRegressor("fourier_cauchy", 64, 0.3, 1.0, random_state=3).fit(x, y)
    assert est.coef_ is None and est.dual_coef_.shape == (30,)
    phi = est.features_(x).numpy()
    theta = np.linalg.solve(phi.T @ phi + 0.3 * np.eye(64), phi.T @ y)
    np.testing.assert_allclose(est.predict(xt), est.features_(xt).numpy() @ theta, rtol=1e-9,
                               atol=1e-10)
    est = RandomFeaturesRegressor("relu", 16, 0.3, 1.0, random_state=3).fit(x, y)
    assert est.coef_.shape == (16,) and est.dual_coef_ is None
    # ridgeless primal = least squares
    est0 = RandomFeaturesRegressor("relu", 16, 0.0, random_state=3).fit(x, y)
    phi = est0.features_(x).numpy()
    np.testing.assert_allclose(est0.coef_, np.linalg.lstsq(phi, y, rcond=None)[0], rtol=1e-8)


def test_sklearn_api():
    x, y, xt = _problem()
    est = RandomFeaturesRegressor("step", 128, alpha=0.1, random_state=0)
    assert est.get_params() == {"kind": "step", "n_features": 128, "alpha": 0.1, "gamma": 1.0,
                                "random_state": 0}
    est.set_params(alpha=0.2)
    assert clone(est).alpha == 0.2
    a = est.fit(x, y).predict(xt)
    b = clone(est).fit(x, y).predict(xt)
    np.testing.assert_array_equal(a, b)  # int random_state: reproducible
    assert est.n_features_in_ == 3 and 0.0 < est.score(x, y) <= 1.0
    y2 = np.stack([y, y], 1)
    assert est.fit(x, y2).predict(xt).shape == (40, 2)
    gs = GridSearchCV(RandomFeaturesRegressor(n_features=64, random_state=0),
                      {"alpha": [0.01, 1.0], "kind": ["fourier_gaussian", "relu"]}, cv=3)
    gs.fit(x, y)
    assert gs.best_estimator_.predict(xt).shape == (40,)


def test_estimator_validation():
    x, y, _ = _problem()
    with pytest.raises(ValueError, match="unknown kind"):
        RandomFeaturesRegressor("rbf").fit(x, y)
    with pytest.raises(ValueError, match="alpha"):
        RandomFeaturesRegressor(alpha=-1.0).fit(x, y)
    with pytest.raises(ValueError, match="gamma"):
        RandomFeaturesRegressor(gamma=0.0).fit(x, y)
    with pytest.raises(ValueError):
        RandomFeaturesRegressor().fit(x, y[:-1])
    x_nan = x.copy()
    x_nan[0, 0] = np.nan
    with pytest.raises(ValueError):
        RandomFeaturesRegressor().fit(x_nan, y)
    est = RandomFeaturesRegressor(n_features=16).fit(x, y)
    with pytest.raises(ValueError):
        est.predict(x[:, :2])
    with pytest.raises(ValueError, match="y_train"):
        kernel_ridge(x, y[:-1], x)


def test_passes_sklearn_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator

    check_estimator(RandomFeaturesRegressor(random_state=0))
