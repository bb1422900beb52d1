"""gradient_descent_mse: limits, shapes, regularization and numerics."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import assert_close

import ntkit.predict as P
from ntkit.solvers import NumericalWarning


def _direct(k, ktd, y, f0, ft0, lr, t):
    """Closed form by a direct eigendecomposition (numpy), independent of ntkit."""
    k, ktd, y, f0, ft0 = (np.asarray(a, dtype=np.float64) for a in (k, ktd, y, f0, ft0))
    lam, v = np.linalg.eigh(k)
    s = lr * t / y.size
    r0 = f0 - y
    fx = y + v @ np.diag(np.exp(-lam * s)) @ v.T @ r0
    ft = ft0 - ktd @ v @ np.diag(-np.expm1(-lam * s) / lam) @ v.T @ r0
    return fx, ft


def test_matches_direct_eigendecomposition(small_problem):
    p = small_problem
    fn = P.gradient_descent_mse(p["kdd"].ntk, p["y"], learning_rate=0.3)
    for t in (0.1, 2.0, 37.0):
        tr, te = fn(t, p["f0"], p["ft0"], p["ktd"].ntk)
        dtr, dte = _direct(p["kdd"].ntk, p["ktd"].ntk, p["y"], p["f0"], p["ft0"], 0.3, t)
        assert_close(tr, dtr, 1e-12)
        assert_close(te, dte, 1e-12)


def test_t0_gives_initial_outputs(small_problem):
    p = small_problem
    fn = P.gradient_descent_mse(p["kdd"].ntk, p["y"])
    tr, te = fn(0.0, p["f0"], p["ft0"], p["ktd"].ntk)
    assert torch.equal(tr, p["f0"]) and torch.equal(te, p["ft0"])


def test_infinite_time_is_kernel_regression(small_problem):
    p = small_problem
    k, ktd = p["kdd"].ntk, p["ktd"].ntk
    fn = P.gradient_descent_mse(k, p["y"], learning_rate=2.0)
    tr, te = fn(None, p["f0"], p["ft0"], ktd)
    expected = p["ft0"] + ktd @ torch.linalg.solve(k, p["y"] - p["f0"])
    assert_close(tr, p["y"], 0)
    assert_close(te, expected, 1e-12)
    # From zero initial outputs, it is the NTK-GP posterior mean of gp_inference.
    _, te0 = fn(None, 0.0, 0.0, ktd)
    assert_close(te0, P.gp_inference(k, p["y"])("ntk", ktd), 1e-12)
    # t = inf through the eigendecomposition gives the same limit.
    tr_inf, te_inf = fn(float("inf"), p["f0"], p["ft0"], ktd)
    assert_close(te_inf, expected, 1e-10)
    assert_close(tr_inf, p["y"], 1e-10)


def test_large_t_converges_to_infinity(small_problem):
    p = small_problem
    k, ktd = p["kdd"].ntk, p["ktd"].ntk
    fn = P.gradient_descent_mse(k, p["y"])
    lam_min = float(torch.linalg.eigvalsh(k)[0])
    t_big = 60 * p["y"].numel() / lam_min  # e^{-60}: converged to round-off
    _, te_big = fn(t_big, p["f0"], p["ft0"], ktd)
    _, te_inf = fn(None, p["f0"], p["ft0"], ktd)
    assert_close(te_big, te_inf, 1e-10)
    # And the distance to the limit decays monotonically.
    _, te_t = fn(torch.logspace(-1, 4, 12), p["f0"], p["ft0"], ktd)
    gaps = (te_t - te_inf).flatten(1).norm(dim=1)
    assert bool((gaps[1:] <= gaps[:-1] + 1e-12).all())


def test_flow_equation_by_finite_difference(small_problem):
    # d f/dt = -lr K (f - y) / y.size, checked by a central difference in t.
    p = small_problem
    lr = 0.7
    fn = P.gradient_descent_mse(p["kdd"].ntk, p["y"], learning_rate=lr)
    t, h = 3.0, 1e-4
    times = torch.tensor([t - h, t, t + h], dtype=torch.float64)
    tr, te = fn(times, p["f0"], p["ft0"], p["ktd"].ntk)
    rate = -lr * (tr[1] - p["y"]) / p["y"].numel()
    assert_close((tr[2] - tr[0]) / (2 * h), p["kdd"].ntk @ rate, 1e-7)
    assert_close((te[2] - te[0]) / (2 * h), p["ktd"].ntk @ rate, 1e-7)


def test_time_and_output_shapes(small_problem):
    p = small_problem
    fn = P.gradient_descent_mse(p["kdd"].ntk, p["y"])
    t = torch.rand(3, 4) * 10
    tr, te = fn(t, p["f0"], p["ft0"], p["ktd"].ntk)
    assert tr.shape == (3, 4, 10, 2) and te.shape == (3, 4, 6, 2)
    assert_close(te[1, 2], fn(t[1, 2], p["f0"], p["ft0"], p["ktd"].ntk)[1], 1e-13)
    assert tr.dtype == torch.float64
    # No test predictions without k_test_train; train skipped with fx_train_0=None.
    tr, te = fn(1.0)
    assert te is None and tr.shape == (10, 2)
    tr, te = fn(1.0, None, None, p["ktd"].ntk)
    assert tr is None and te.shape == (6, 2)
    # 1-D targets, numpy inputs.
    fn1 = P.gradient_descent_mse(p["kdd"].ntk.numpy(), p["y"][:, 0].numpy())
    tr1, te1 = fn1([1.0, 2.0], 0.0, 0.0, p["ktd"].ntk.numpy())
    assert tr1.shape == (2, 10) and te1.shape == (2, 6)
    assert isinstance(tr1, torch.Tensor)


def test_diag_reg_is_relative_to_mean_diagonal(small_problem):
    p = small_problem
    k = p["kdd"].ntk
    mean_diag = float(torch.diagonal(k).mean())
    rel = P.gradient_descent_mse(k, p["y"], diag_reg=0.1)
    ab = P.gradient_descent_mse(k, p["y"], diag_reg=0.1 * mean_diag,
                                diag_reg_absolute_scale=True)
    eye = torch.eye(10, dtype=torch.float64)
    manual = P.gradient_descent_mse(k + 0.1 * mean_diag * eye, p["y"])
    for t in (2.0, None):
        a = rel(t, p["f0"], p["ft0"], p["ktd"].ntk)[1]
        assert_close(a, ab(t, p["f0"], p["ft0"], p["ktd"].ntk)[1], 1e-12)
        assert_close(a, manual(t, p["f0"], p["ft0"], p["ktd"].ntk)[1], 1e-12)


def test_singular_kernel_gives_finite_outputs(small_problem):
    # Duplicate training inputs make K exactly singular.
    p = small_problem
    x = torch.cat([p["x"], p["x"][:3]])
    y = torch.cat([p["y"], p["y"][:3]])
    from conftest import ReluNetStub
    net = ReluNetStub()
    k, ktd = net.kernel(x).ntk, net.kernel(p["xt"], x).ntk
    fn = P.gradient_descent_mse(k, y)
    tr, te = fn(torch.tensor([0.0, 1.0, 1e6, float("inf")]), 0.0, 0.0, ktd)
    assert torch.isfinite(tr).all() and torch.isfinite(te).all()
    with pytest.warns(NumericalWarning, match="jitter"):
        tr, te = fn(None, 0.0, 0.0, ktd)
    assert torch.isfinite(te).all()
    assert fn.cholesky.jitter > 0
    # The duplicated rows carry no new information: same limit as the deduplicated problem.
    ref = P.gradient_descent_mse(p["kdd"].ntk, p["y"])(None, 0.0, 0.0, p["ktd"].ntk)[1]
    assert_close(te, ref, 1e-6)
    assert_close(fn(float("inf"), 0.0, 0.0, ktd)[1], ref, 1e-6)


def test_factorizations_are_cached(small_problem):
    p = small_problem
    fn = P.gradient_descent_mse(p["kdd"].ntk, p["y"])
    fn(1.0)
    eig = fn.eigh
    fn(2.0, k_test_train=p["ktd"].ntk)
    assert fn.eigh is eig
    fn(None, k_test_train=p["ktd"].ntk)
    chol = fn.cholesky
    fn(None, k_test_train=p["ktd"].ntk)
    assert fn.cholesky is chol and chol.jitter == 0.0


def test_no_warning_on_well_conditioned(small_problem):
    p = small_problem
    fn = P.gradient_descent_mse(p["kdd"].ntk, p["y"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(None, p["f0"], p["ft0"], p["ktd"].ntk)
        fn([0.0, 1.0], p["f0"], p["ft0"], p["ktd"].ntk)


def test_float32_on_request(small_problem):
    # float32 is honoured end to end; on this well-conditioned kernel (κ ≈ 6e2) it agrees
    # with float64 to ~1e-6 relative.
    p = small_problem
    f32 = P.gradient_descent_mse(p["kdd"].ntk, p["y"], dtype=torch.float32)
    f64 = P.gradient_descent_mse(p["kdd"].ntk, p["y"])
    for t in (3.0, None):
        a = f32(t, p["f0"], p["ft0"], p["ktd"].ntk)[1]
        b = f64(t, p["f0"], p["ft0"], p["ktd"].ntk)[1]
        assert a.dtype == torch.float32
        assert float((a.double() - b).abs().max()) < 1e-4 * float(b.abs().max())
