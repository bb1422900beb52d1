"""ntkit.curvature against brute force: torch.autograd.functional.hessian + eigvalsh."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ntkit import curvature as cv


def _tanh_net(seed: int = 0, d: int = 5, h: int = 7, k: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, k)).double()


@pytest.fixture(scope="module")
def problem():
    net = _tanh_net()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(11, 5, generator=g, dtype=torch.float64)
    y = torch.randn(11, 3, generator=g, dtype=torch.float64)
    loss_fn, params = cv.module_loss(net, x, y, "mse")
    flat0 = cv.flatten(params)

    def flat_loss(v):
        return loss_fn(cv.unflatten(v, params))

    h = torch.autograd.functional.hessian(flat_loss, flat0)
    h = 0.5 * (h + h.T)
    return net, x, y, loss_fn, params, h


def _rel(a, b):
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def test_hvp_matches_dense_hessian(problem):
    _, _, _, loss_fn, params, h = problem
    g = torch.Generator().manual_seed(2)
    v = torch.randn(h.shape[0], generator=g, dtype=torch.float64)
    assert _rel(cv.hvp(loss_fn, params, v), h @ v) < 1e-8
    vd = cv.unflatten(v, params)
    out = cv.hvp(loss_fn, params, vd)
    assert isinstance(out, dict) and set(out) == set(params)
    assert _rel(cv.flatten(out), h @ v) < 1e-8
    assert _rel(cv.hvp(loss_fn, params, v.numpy()), h @ v) < 1e-8     # numpy accepted
    assert _rel(cv.hessian_matrix(loss_fn, params), h) < 1e-8


def test_top_eigenvalues_and_vectors(problem):
    _, _, _, loss_fn, params, h = problem
    exact = torch.linalg.eigvalsh(h).flip(0)
    vals, vecs = cv.hessian_top_eigenvalues(loss_fn, params, k=4, tol=0,
                                            return_eigenvectors=True)
    assert torch.all(vals[:-1] >= vals[1:])
    assert float(((vals - exact[:4]).abs() / exact[:4].abs()).max()) < 1e-8
    assert vecs.shape == (h.shape[0], 4)
    # H q = λ q for the returned vectors
    assert _rel(h @ vecs, vecs * vals) < 1e-8
    # works with a module standing for params (same loss)
    v1 = cv.hessian_top_eigenvalues(loss_fn, problem[0], k=1, tol=0)
    assert abs(float(v1[0]) - float(exact[0])) < 1e-8 * abs(float(exact[0]))


def test_spectral_density_quadrature_is_exact(problem):
    _, _, _, loss_fn, params, h = problem
    p = h.shape[0]
    g = torch.Generator().manual_seed(3)
    probes = torch.randn(3, p, generator=g, dtype=torch.float64)
    sd = cv.hessian_spectral_density(loss_fn, params, n_steps=p, probes=probes)
    # Gauss quadrature of the Lanczos tridiagonal: Σ τ_j θ_j^k = vᵀ H^k v / ‖v‖² (k < 2·steps)
    for i, v in enumerate(probes):
        u = v / v.norm()
        th = torch.nan_to_num(sd.nodes[i], nan=0.0)
        for kpow in (1, 2, 3, 5):
            exact = u @ torch.linalg.matrix_power(h, kpow) @ u
            assert abs(float((sd.weights[i] * th ** kpow).sum() - exact)) <= \
                1e-8 * float(torch.linalg.matrix_norm(h, 2) ** kpow)
    assert torch.allclose(sd.weights.sum(1), torch.ones(3, dtype=torch.float64), atol=1e-12)
    # the density integrates to ≈ 1 (trapezoid on a grid spanning ±5σ)
    mass = torch.trapezoid(sd.density, sd.grid)
    assert abs(float(mass) - 1.0) < 1e-3
    # the Ritz values of a full-length Lanczos run are the exact eigenvalues
    ev = torch.linalg.eigvalsh(h)
    th = sd.nodes[0][torch.isfinite(sd.nodes[0])]
    assert float(th.max() - ev.max()) == pytest.approx(0.0, abs=1e-8 * float(ev.abs().max()))


def test_spectral_density_rademacher_trace_estimate(problem):
    _, _, _, loss_fn, params, h = problem
    sd = cv.hessian_spectral_density(loss_fn, params, n_probes=24, n_steps=6, seed=5)
    per_probe = (sd.weights * torch.nan_to_num(sd.nodes, nan=0.0)).sum(1)
    est, se = float(per_probe.mean()), float(per_probe.std() / np.sqrt(24))
    truth = float(torch.trace(h)) / h.shape[0]
    assert abs(est - truth) < 4 * se + 1e-12          # Hutchinson estimate within 4 s.e.
    assert float(sd.moment(1)) == pytest.approx(est)


def test_gauss_newton_equals_hessian_at_zero_residual():
    net = _tanh_net(seed=4)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = net(x)                                      # zero residual: H = G exactly
    loss_fn, params = cv.module_loss(net, x, y, "mse")
    flat0 = cv.flatten(params)
    h = torch.autograd.functional.hessian(lambda v: loss_fn(cv.unflatten(v, params)), flat0)
    gn = cv.gauss_newton(net, x, "mse", form_matrix=True)
    assert _rel(gn.matrix, h) < 1e-8
    exact = torch.linalg.eigvalsh(h).flip(0)[:gn.eigenvalues.numel()]
    top = exact[0]
    assert float((gn.eigenvalues - exact).abs().max()) < 1e-8 * float(top)
    v = torch.randn(flat0.numel(), generator=g, dtype=torch.float64)
    assert _rel(gn.matvec(v), h @ v) < 1e-8


def test_gauss_newton_cross_entropy_linear_model():
    # a model linear in θ: the cross-entropy Hessian is exactly G
    torch.manual_seed(7)
    net = nn.Linear(4, 3).double()
    g = torch.Generator().manual_seed(8)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (9,), generator=g)
    loss_fn, params = cv.module_loss(net, x, labels, "cross_entropy")
    flat0 = cv.flatten(params)
    h = torch.autograd.functional.hessian(lambda v: loss_fn(cv.unflatten(v, params)), flat0)
    gn = cv.gauss_newton(net, x, "cross_entropy", form_matrix=True, k=5)
    assert _rel(gn.matrix, h) < 1e-8
    exact = torch.linalg.eigvalsh(h).flip(0)[:5]
    assert float((gn.eigenvalues - exact).abs().max()) < 1e-8 * float(exact[0])
    # a callable loss gives the same G through an autodiff output Hessian
    gn2 = cv.gauss_newton(net, x, lambda o: torch.nn.functional.cross_entropy(o, labels),
                          form_matrix=True)
    assert _rel(gn2.matrix, h) < 1e-8
    # functional form
    def fmodel(p, xx):
        return xx @ p["weight"].T + p["bias"]
    gn3 = cv.gauss_newton(fmodel, x, "cross_entropy", params=params, k=5)
    assert float((gn3.eigenvalues - exact).abs().max()) < 1e-8 * float(exact[0])


def test_bad_inputs(problem):
    _, _, _, loss_fn, params, h = problem
    p = h.shape[0]
    with pytest.raises(ValueError, match="length"):
        cv.hvp(loss_fn, params, torch.zeros(p + 1))
    with pytest.raises(ValueError, match="NaN"):
        cv.hvp(loss_fn, params, torch.full((p,), float("nan")))
    with pytest.raises(TypeError, match="dtype"):
        cv.hvp(loss_fn, {"w": torch.zeros(3, dtype=torch.long)}, torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        cv.hvp(loss_fn, {"w": torch.tensor([float("nan")])}, torch.zeros(1))
    with pytest.raises(TypeError, match="callable"):
        cv.hvp(3, params, torch.zeros(p))
    with pytest.raises(ValueError, match="scalar"):
        cv.hvp(lambda q: 2 * q["w"], {"w": torch.ones(3, dtype=torch.float64)}, torch.zeros(3))
    with pytest.raises(ValueError, match="k must be"):
        cv.hessian_top_eigenvalues(loss_fn, params, k=0)
    with pytest.raises(ValueError, match="n_steps"):
        cv.hessian_spectral_density(loss_fn, params, n_steps=0)
    with pytest.raises(ValueError, match="probes"):
        cv.hessian_spectral_density(loss_fn, params, probes=torch.ones(2, p + 1))
    with pytest.raises(ValueError, match="unknown loss"):
        cv.gauss_newton(problem[0], problem[1], "hinge")
    with pytest.raises(ValueError, match="NaN"):
        cv.gauss_newton(problem[0], torch.full((2, 5), float("nan")))
    with pytest.raises(ValueError, match="unknown loss"):
        cv.module_loss(problem[0], problem[1], problem[2], "hinge")
