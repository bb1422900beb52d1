"""`gradient_descent`'s loss normalization: "mean" over all entries by default (as in
neural-tangents), "per_example" (sum over classes, mean over examples) on request."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close

import ntkit.predict as P

TIMES = torch.tensor([0.0, 0.5, 2.0, 6.0], dtype=torch.float64)


def test_default_cross_entropy_is_neural_tangents_mean(nt):
    # neural-tangents' example loss, -mean(log_softmax(fx) * y), run by neural-tangents
    # itself (the fixture): the string "cross_entropy" now reproduces it with no option.
    fn = P.gradient_descent("cross_entropy", nt["ntk_dd"], nt["y_onehot"], float(nt["lr"]))
    assert fn.normalization == "mean"
    tr, te = fn(nt["ode_times"], nt["fx_train_0"], nt["fx_test_0"], nt["ntk_td"])
    # neural-tangents integrates at rtol = atol = 1.4e-8 (see test_predict_vs_nt).
    assert_close(tr, nt["ode_ce_train"], 1e-6, "cross-entropy train")
    assert_close(te, nt["ode_ce_test"], 1e-6, "cross-entropy test")


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_per_example_is_mean_at_k_times_the_learning_rate(small_problem, loss):
    p = small_problem
    y = F.one_hot(p["y"].argmax(1), 2).to(torch.float64)  # k = 2 outputs
    k, ktd = p["kdd"].ntk, p["ktd"].ntk
    a = P.gradient_descent(loss, k, y, learning_rate=0.7, normalization="per_example")
    b = P.gradient_descent(loss, k, y, learning_rate=0.7 * y.shape[1])
    ta, tea = a(TIMES, p["f0"], p["ft0"], ktd)
    tb, teb = b(TIMES, p["f0"], p["ft0"], ktd)
    assert_close(ta, tb, 1e-9) and assert_close(tea, teb, 1e-9)


def test_per_example_matches_torch_cross_entropy(small_problem):
    p = small_problem
    y = F.one_hot(p["y"].argmax(1), 2).to(torch.float64)
    k, ktd = p["kdd"].ntk, p["ktd"].ntk
    a = P.gradient_descent("cross_entropy", k, y, normalization="per_example")
    b = P.gradient_descent(lambda f, yy: F.cross_entropy(f, yy), k, y)
    ta, tea = a(TIMES[:2], p["f0"], p["ft0"], ktd)
    tb, teb = b(TIMES[:2], p["f0"], p["ft0"], ktd)
    assert_close(ta, tb, 1e-9) and assert_close(tea, teb, 1e-9)


def test_normalization_errors(small_problem):
    k, y = small_problem["kdd"].ntk, small_problem["y"]
    with pytest.raises(ValueError, match="unknown normalization 'sum'; expected 'mean'"):
        P.gradient_descent("cross_entropy", k, y, normalization="sum")
    with pytest.raises(ValueError, match="a callable loss normalizes itself"):
        P.gradient_descent(lambda f, yy: F.cross_entropy(f, yy), k, y,
                           normalization="mean")
