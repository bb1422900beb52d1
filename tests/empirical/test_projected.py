"""Projected empirical NTK: the features are J·R for the documented R, the kernel estimate
is unbiased, its error matches the closed-form variance and falls like k^(−1/2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

import ntkit
from ntkit.empirical import PROJECTIONS, projected_gradients, projection_matrix
from ntkit.empirical import projected as projected_mod

F64 = torch.float64


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 20), nn.Tanh(), nn.Linear(20, 3)).to(F64)


def _inputs(n: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=F64)


def _dense_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(n, k_out, P) by torch.func, parameters in named_parameters order (brute force)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    jac = vmap(jacrev(lambda xi, p: functional_call(model, p, (xi[None],))[0], argnums=1),
               in_dims=(0, None))(x, params)
    n, k = x.shape[0], jac[next(iter(params))].shape[1]
    return torch.cat([jac[name].reshape(n, k, -1) for name in params], dim=-1)


@pytest.fixture(scope="module")
def setup():
    m, x = _model(), _inputs()
    j = _dense_jacobian(m, x)
    g = j.reshape(-1, j.shape[-1]) @ j.reshape(-1, j.shape[-1]).T   # (n·k_out)², untraced
    return m, x, j, g


# ------------------------------------------------------------------ exact plumbing
@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("chunk", [1, 3, None])
def test_features_are_jacobian_times_R(setup, projection, chunk):
    m, x, j, _ = setup
    phi = projected_gradients(m, x, 40, seed=5, projection=projection, chunk_size=chunk)
    r = projection_matrix(m, 40, seed=5, projection=projection)
    assert phi.shape == (7, 3, 40) and phi.dtype == F64
    assert r.shape == (j.shape[-1], 40)
    torch.testing.assert_close(phi, j @ r, rtol=1e-12, atol=1e-12)


def test_conv_net_float32():
    # conv + eval-mode BatchNorm (as in the ResNet-18 benchmark), float32 throughout
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.Flatten(), nn.Linear(4 * 5 * 5, 3)).eval()
    x = torch.randn(5, 2, 5, 5)
    j = _dense_jacobian(m, x).detach()
    for projection in PROJECTIONS:
        phi = projected_gradients(m, x, 24, seed=1, projection=projection, chunk_size=2)
        assert phi.dtype == torch.float32
        r = projection_matrix(m, 24, seed=1, projection=projection)
        ref = j.double() @ r.double()
        torch.testing.assert_close(phi.double(), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_R_drawn_in_many_blocks(setup, monkeypatch):
    # Force several blocks per parameter (rows per block = 64 // 40 = 1): still J·R, and
    # R's entries have the right law (mean 0, variance 1/k).
    m, x, j, _ = setup
    monkeypatch.setattr(projected_mod, "ROW_BLOCK_ENTRIES", 64)
    phi = projected_gradients(m, x, 40, seed=2, projection="gaussian")
    r = projection_matrix(m, 40, seed=2, projection="gaussian")
    torch.testing.assert_close(phi, j @ r, rtol=1e-12, atol=1e-12)
    n = r.numel()
    assert abs(float(r.mean())) < 5 / math.sqrt(40 * n)
    assert abs(float(r.var()) * 40 - 1) < 5 * math.sqrt(2 / n)
    assert torch.unique(r[:, 0]).numel() > 100   # blocks differ: not one row repeated


def test_kernel_wiring_traced_untraced_and_cross(setup):
    m, x, _, _ = setup
    x2 = _inputs(4, seed=9)
    phi1 = projected_gradients(m, x, 30, seed=3)
    phi2 = projected_gradients(m, x2, 30, seed=3)
    full = torch.einsum("iuk,jvk->ijuv", phi1, phi2)
    got = ntkit.empirical_ntk(m, x, x2, projection_dim=30, seed=3, trace_outputs=False)
    torch.testing.assert_close(got, full, rtol=1e-12, atol=1e-12)
    traced = ntkit.empirical_ntk(m, x, x2, projection_dim=30, seed=3)
    torch.testing.assert_close(traced, full.diagonal(dim1=2, dim2=3).mean(-1),
                               rtol=1e-12, atol=1e-12)
    # x1 and x2 see the same R: the cross kernel is a block of the joint one
    joint = ntkit.empirical_ntk(m, torch.cat([x, x2]), projection_dim=30, seed=3, batch_size=2)
    torch.testing.assert_close(joint[:7, 7:], traced, rtol=1e-12, atol=1e-12)
    sym = ntkit.empirical_ntk(m, x, projection_dim=30, seed=3)
    assert torch.equal(sym, sym.T)
    sym_full = ntkit.empirical_ntk(m, x, projection_dim=30, seed=3, trace_outputs=False)
    assert torch.equal(sym_full, sym_full.permute(1, 0, 3, 2))


def test_seed_determinism(setup):
    m, x, _, _ = setup
    a = ntkit.empirical_ntk(m, x, projection_dim=16, seed=11)
    assert torch.equal(a, ntkit.empirical_ntk(m, x, projection_dim=16, seed=11))
    # other chunking (a budget of one example's Jacobians): same R, equal up to rounding
    b = ntkit.empirical_ntk(m, x, projection_dim=16, seed=11, memory_budget=10_000)
    torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    c = ntkit.empirical_ntk(m, x, projection_dim=16, seed=12)
    assert not torch.allclose(a, c)


# ------------------------------------------------------------------ statistics
def _var_entries(g: torch.Tensor, projection: str, j2: torch.Tensor) -> torch.Tensor:
    """k·Var of each entry of Ĝ = (J R)(J R)ᵀ (module docstring of ntkit.empirical.projected):
    ‖a‖²‖b‖² + (a·b)², minus 2 Σ_p a_p² b_p² for ±1 entries."""
    d = g.diagonal()
    v = d[:, None] * d[None, :] + g**2
    if projection != "gaussian":
        v = v - 2 * (j2 @ j2.T)
    return v


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_unbiased_in_mean(setup, projection):
    m, x, j, g = setup
    jf = j.reshape(-1, j.shape[-1])
    n_seeds, k = 200, 16
    draws = torch.stack([
        ntkit.empirical_ntk(m, x, projection_dim=k, seed=s, projection=projection,
                            trace_outputs=False).permute(0, 2, 1, 3).reshape(g.shape)
        for s in range(n_seeds)])
    rng = np.random.default_rng(0)
    u = torch.tensor(rng.standard_normal(g.shape[0]), dtype=F64)
    v = torch.tensor(rng.standard_normal(g.shape[0]), dtype=F64)
    # Linear functionals of Ĝ: each is a mean of i.i.d. draws, so its z-score uses the
    # draws' own standard error; |z| < 4 fails by chance with probability 6e-5 each.
    for name, f in [("trace", lambda a: a.diagonal(dim1=-2, dim2=-1).sum(-1)),
                    ("sum", lambda a: a.sum((-2, -1))),
                    ("bilinear", lambda a: (a @ v) @ u)]:
        vals = f(draws)
        se = float(vals.std()) / math.sqrt(n_seeds)
        z = (float(vals.mean()) - float(f(g))) / se
        assert abs(z) < 4, (name, z)
    # Entrywise: the mean of the draws is within its closed-form standard error.
    err2 = float(((draws.mean(0) - g) ** 2).sum())
    expected = float(_var_entries(g, projection, jf**2).sum()) / (k * n_seeds)
    assert 0.3 < err2 / expected < 3, err2 / expected


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_error_falls_like_k_to_minus_half(setup, projection):
    m, x, j, g = setup
    jf = j.reshape(-1, j.shape[-1])
    c = float(_var_entries(g, projection, jf**2).sum())   # E‖Ĝ − G‖²_F = c / k exactly
    ks, n_seeds = [8, 32, 128, 512], 48
    log_mse, se_log = [], []
    for k in ks:
        e = np.array([
            float(((ntkit.empirical_ntk(m, x, projection_dim=k, seed=1000 * k + s,
                                        projection=projection, trace_outputs=False)
                    .permute(0, 2, 1, 3).reshape(g.shape) - g) ** 2).sum())
            for s in range(n_seeds)])
        mse, se = e.mean(), e.std(ddof=1) / math.sqrt(n_seeds)
        # the closed form E‖Ĝ − G‖² = c/k, within 4 standard errors of the mean of draws
        # (the squared error's relative s.d. is ≈ 0.2–0.4 here, skewed: 48 draws keep the
        # sample standard error itself within ~15%)
        assert abs(mse - c / k) < 4 * se, (k, mse, c / k, se)
        log_mse.append(math.log(mse))
        se_log.append(se / mse)
    lk = np.log(ks)
    slope = 0.5 * np.polyfit(lk, log_mse, 1)[0]   # of the Frobenius error, not its square
    # slope SE from the per-point SEs of log MSE (independent seeds per k)
    se_slope = 0.5 * math.sqrt(float(np.sum((lk - lk.mean()) ** 2 * np.square(se_log))))
    se_slope /= float(np.sum((lk - lk.mean()) ** 2))
    assert abs(slope + 0.5) < max(4 * se_slope, 0.02), (slope, se_slope)
    assert se_slope < 0.1   # the test has power: a k^-1 or k^0 law would fail it
    rel = math.sqrt(math.exp(log_mse[-1])) / float(g.norm())
    assert rel < 0.2   # at k = 512 the relative Frobenius error is already small


# ------------------------------------------------------------------ bad input
def test_bad_input(setup):
    m, x, _, _ = setup
    with pytest.raises(ValueError, match="projection dimension"):
        projected_gradients(m, x, 0)
    with pytest.raises(ValueError, match="projection dimension"):
        projected_gradients(m, x, 2.5)
    with pytest.raises(TypeError, match="seed"):
        projected_gradients(m, x, 4, seed="a")
    with pytest.raises(ValueError, match="unknown projection"):
        projected_gradients(m, x, 4, projection="sparse")
    with pytest.raises(ValueError, match="chunk_size"):
        projected_gradients(m, x, 4, chunk_size=0)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        projected_gradients(m, bad, 4)
    with pytest.raises(ValueError, match="projection_dim"):
        ntkit.empirical_ntk(m, x, projection_dim=4, method="jacobian")
    with pytest.raises(ValueError, match="only apply with projection_dim"):
        ntkit.empirical_ntk(m, x, seed=3)
    with pytest.raises(ValueError, match="feature shape"):
        ntkit.empirical_ntk(m, x, torch.zeros(3, 4, dtype=F64), projection_dim=4)
    mixing = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, track_running_stats=False)).to(F64)
    with pytest.raises(ValueError, match="depends on the other examples"):
        projected_gradients(mixing, x, 4)
