"""ntkit.predict at t = ∞ with solver="pcg": equal to the Cholesky predictions.

Truth: the default Cholesky path (tested against neural-tangents in tests/predict).
"""

from __future__ import annotations

import pytest
import torch

from ntkit.predict import gp_inference, gradient_descent_mse
from ntkit.sklearn import make_network


@pytest.fixture(scope="module")
def kernels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 5, generator=g, dtype=torch.float64)
    xt = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.randn(120, 2, generator=g, dtype=torch.float64)
    net = make_network(2, "relu")
    return net.kernel(x), net.kernel(xt, x), net.kernel(xt), y


def _rel(a, b):
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def test_gp_inference_pcg_equals_cholesky(kernels):
    k, k_td, k_tt, y = kernels
    # Ridge 0.1 · mean diag: κ(K + δI) < 1e3 for both kernels (checked), so a relative
    # residual of 1e-12 bounds the solve's error by 1e-9.
    for kk in (k.nngp, k.ntk):
        ev = torch.linalg.eigvalsh(kk + 0.1 * float(kk.diagonal().mean()) * torch.eye(120))
        assert float(ev[-1] / ev[0]) < 1e3
    ref = gp_inference(k, y, diag_reg=0.1)(("nngp", "ntk", "ntkgp"), k_td, k_tt)
    for kw in ({}, {"n_centers": 40}):
        got = gp_inference(k, y, diag_reg=0.1, solver="pcg", tol=1e-12, **kw)(
            ("nngp", "ntk", "ntkgp"), k_td, k_tt)
        for g in ("nngp", "ntk", "ntkgp"):
            assert _rel(getattr(got, g).mean, getattr(ref, g).mean) < 1e-8
            assert _rel(getattr(got, g).covariance, getattr(ref, g).covariance) < 1e-8


def test_mse_pcg_equals_cholesky(kernels):
    k, k_td, _, y = kernels
    for absolute in (False, True):
        reg = 0.1 if not absolute else 0.1 * float(k.ntk.diagonal().mean())
        ref = gradient_descent_mse(k.ntk, y, diag_reg=reg, diag_reg_absolute_scale=absolute)
        got = gradient_descent_mse(k.ntk, y, diag_reg=reg, diag_reg_absolute_scale=absolute,
                                   solver="pcg", tol=1e-12)
        _, f_ref = ref(None, 0.0, None, k_td.ntk)
        _, f_got = got(None, 0.0, None, k_td.ntk)
        assert _rel(f_got, f_ref) < 1e-8
        # Finite t uses the eigendecomposition whatever the solver.
        assert torch.equal(got(5.0, 0.0, None, k_td.ntk)[1], ref(5.0, 0.0, None, k_td.ntk)[1])


def test_bad_solver_raises(kernels):
    k, _, _, y = kernels
    with pytest.raises(ValueError, match="unknown solver"):
        gp_inference(k, y, solver="nystrom")
    with pytest.raises(ValueError, match="unknown solver"):
        gradient_descent_mse(k.ntk, y, solver="qr")
    with pytest.warns(RuntimeWarning, match="did not reach"):
        gp_inference(k, y, diag_reg=1e-6, solver="pcg", max_iter=2)("nngp", k.nngp[:5])
