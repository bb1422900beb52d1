"""ntkit.sklearn estimators with solver= "cholesky" | "pcg" | "nystrom" | "auto".

Truth: the Cholesky estimator (itself tested against neural-tangents in test_sklearn.py).
Data: sklearn's digits (real, offline).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ntkit.sklearn import NNGPClassifier, NNGPRegressor, NTKClassifier, NTKRegressor


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = X[:200] / 16.0
    y = y[:200]
    return X[:150], y[:150], X[150:], y[150:]


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("cls", [NTKRegressor, NNGPRegressor])
def test_regressor_solvers_agree(digits, cls):
    X, y, Xt, _ = digits
    target = np.stack([y, (y % 2) * 1.0], axis=1)  # two outputs
    # A ridge of 0.1 · mean diag keeps κ(K + δI) ≲ 10², so PCG needs few iterations
    # (each recomputes the kernel) and a residual of 1e-11 bounds the error by ~1e-9.
    kw = dict(depth=2, diag_reg=0.1)
    ref = cls(solver="cholesky", **kw).fit(X, target).predict(Xt)
    pcg = cls(solver="pcg", n_centers=50, tol=1e-11, **kw).fit(X, target)
    assert pcg.solver_ == "pcg" and pcg.kernel_train_ is None and pcg.n_iter_ >= 1
    assert _rel(pcg.predict(Xt), ref) < 1e-8
    nys = cls(solver="nystrom", n_centers=150, **kw).fit(X, target)
    assert _rel(nys.predict(Xt), ref) < 1e-8  # M = n: exact
    # Fewer centers: an approximation, close but not equal on this smooth problem.
    approx = cls(solver="nystrom", n_centers=60, **kw).fit(X, target).predict(Xt)
    assert 1e-6 < _rel(approx, ref) < 0.5


def test_auto_follows_memory_budget_and_batched_predict(digits):
    X, y, Xt, _ = digits
    need = 2 * 150 * 150 * 8
    big = NTKRegressor(solver="auto", memory_budget=need, diag_reg=0.1).fit(X, y)
    small = NTKRegressor(solver="auto", memory_budget=need - 1, diag_reg=0.1,
                         tol=1e-11).fit(X, y)
    assert big.solver_ == "cholesky" and small.solver_ == "pcg"
    assert _rel(small.predict(Xt), big.predict(Xt)) < 1e-8
    # A budget of 7 test rows × 150 columns splits prediction into 8 batches.
    tiny = NTKRegressor(solver="cholesky", memory_budget=150 * 32 * 7,
                        diag_reg=0.1).fit(X, y)
    assert np.allclose(tiny.predict(Xt), big.predict(Xt), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [NTKClassifier, NNGPClassifier])
def test_classifier_solvers_agree(digits, cls):
    X, y, Xt, yt = digits
    ref = cls(solver="cholesky", diag_reg=0.1).fit(X, y)
    it = cls(solver="nystrom", n_centers=150, diag_reg=0.1).fit(X, y)
    assert _rel(it.decision_function(Xt), ref.decision_function(Xt)) < 1e-8
    assert np.array_equal(it.predict(Xt), ref.predict(Xt))
    assert it.score(Xt, yt) > 0.8


def test_bad_solver_params_raise(digits):
    X, y, Xt, _ = digits
    with pytest.raises(ValueError, match="unknown solver"):
        NTKRegressor(solver="lu").fit(X, y)
    with pytest.raises(ValueError, match="n_centers"):
        NTKRegressor(solver="nystrom", n_centers=0).fit(X, y)
    with pytest.raises(ValueError, match="exceeds"):
        NTKRegressor(solver="nystrom", n_centers=151).fit(X, y)
    with pytest.raises(ValueError, match="max_iter"):
        NTKRegressor(solver="pcg", max_iter=0).fit(X, y)
    with pytest.raises(ValueError, match="tol"):
        NTKRegressor(solver="pcg", tol=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="memory_budget"):
        NTKRegressor(memory_budget=0).fit(X, y)
    with pytest.raises(ValueError, match="finite t"):
        NTKRegressor(solver="pcg", t=10.0).fit(X, y)
    with pytest.raises(ValueError, match="positive ridge"):
        NTKRegressor(solver="nystrom", n_centers=10, diag_reg=0.0).fit(X, y)
    fitted = NTKRegressor(solver="nystrom", n_centers=20).fit(X, y)
    with pytest.raises(ValueError, match="return_std"):
        fitted.predict(Xt, return_std=True)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        NTKRegressor(solver="pcg", max_iter=2, n_centers=10).fit(X, y)
