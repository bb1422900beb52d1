"""ntkit.solvers.nystrom: Falkon-form preconditioner and plain Nyström solve.

Truth: the same formulas written densely (K, K_nM, K_MM in memory, torch.linalg.solve),
and the exact ridge solve for M = n.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntkit.sklearn import make_network
from ntkit.solvers import (
    KernelOperator,
    NystromPreconditioner,
    nystrom_solve,
    sample_centers,
    solve_ridge,
)
from ntkit.solvers.kernel_ridge import resolve_solver

NET = make_network(2, "erf")


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 5, generator=g, dtype=torch.float64)
    y = torch.randn(240, 2, generator=g, dtype=torch.float64)
    k = NET.kernel(x, get="nngp")
    return x, y, k


def _delta(k, rel):
    return rel * float(torch.diagonal(k).mean())


def test_plain_nystrom_with_all_centers_is_exact(problem):
    x, y, k = problem
    delta = _delta(k, 1e-2)
    op = KernelOperator(NET, x, get="nngp", shift=delta)
    sol = nystrom_solve(op, y, 240)
    exact = torch.linalg.solve(k + delta * torch.eye(240, dtype=torch.float64), y)
    assert torch.equal(sol.centers, torch.arange(240))
    # (K² + δK) β = K y has the condition number of K(K + δI): the error budget is
    # κ(K) κ(K + δI) · 1e-16, about 1e-9 here; measured 3e-12.
    err = float(torch.linalg.norm(sol.coef - exact) / torch.linalg.norm(exact))
    assert err < 1e-8


def test_plain_nystrom_matches_dense_formula(problem, tmp_path):
    x, y, k = problem
    delta = _delta(k, 1e-3)
    idx = sample_centers(240, 40, seed=7)
    knm, kmm = k[:, idx], k[idx][:, idx]
    beta = torch.linalg.solve(knm.T @ knm + delta * kmm, knm.T @ y)
    # Computed tiles, with row panels small enough for several streamed passes.
    op = KernelOperator(NET, x, get="nngp", shift=delta, memory_budget=40 * 8 * 4 * 64)
    assert len(op.row_blocks(40)) == 4
    sol = nystrom_solve(op, y, 40, seed=7)
    assert torch.equal(sol.centers, idx)
    err = float(torch.linalg.norm(sol.coef - beta) / torch.linalg.norm(beta))
    assert err < 1e-8
    # The same from a cached kernel on disk.
    km = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64,
                                   shape=(240, 240))
    km[:] = k.numpy()
    km.flush()
    op_c = KernelOperator(kernel=np.load(tmp_path / "k.npy", mmap_mode="r"), shift=delta)
    sol_c = nystrom_solve(op_c, y, 40, seed=7)
    assert float(torch.linalg.norm(sol_c.coef - beta) / torch.linalg.norm(beta)) < 1e-8


@pytest.mark.parametrize("store", [True, False])
def test_preconditioner_applies_woodbury_inverse(problem, store):
    x, y, k = problem
    delta = _delta(k, 1e-3)
    op = KernelOperator(kernel=k, shift=delta, memory_budget=240 * 8 * 4 * 100)
    pre = NystromPreconditioner(op, 60, seed=1, store=store)
    assert (pre.k_nm is not None) == store
    idx = pre.centers
    knm = k[:, idx]
    khat = knm @ torch.linalg.solve(k[idx][:, idx], knm.T)
    want = torch.linalg.solve(khat + delta * torch.eye(240, dtype=torch.float64), y)
    got = pre(y)
    assert float(torch.linalg.norm(got - want) / torch.linalg.norm(want)) < 1e-8
    # P ≽ δ I and P ≼ K + δ I: the preconditioned spectrum lies in [1, ‖K‖/δ + 1].
    ev = torch.linalg.eigvals(pre(k + delta * torch.eye(240, dtype=torch.float64))).real
    assert float(ev.min()) > 1 - 1e-6


def test_falkon_gram_is_exact_with_all_centers(problem):
    x, y, k = problem
    delta = _delta(k, 1e-3)
    op = KernelOperator(kernel=k, shift=delta)
    pre = NystromPreconditioner(op, 240, gram="falkon")
    want = torch.linalg.solve(k + delta * torch.eye(240, dtype=torch.float64), y)
    got = pre(y)
    # With M = n, (n/M) K_MM² = K_Mn K_nM exactly: P = K + δ I.
    assert float(torch.linalg.norm(got - want) / torch.linalg.norm(want)) < 1e-7


def test_solve_ridge_dispatch_and_auto(problem):
    x, y, k = problem
    delta = _delta(k, 1e-2)
    exact = torch.linalg.solve(k + delta * torch.eye(240, dtype=torch.float64), y)
    computed = KernelOperator(NET, x, get="nngp", shift=delta)
    cached = KernelOperator(kernel=k, shift=delta)  # many products: read, not recomputed
    k_before = k.clone()
    for op, solver, kw in [(computed, "cholesky", {}), (cached, "cholesky", {}),
                           (cached, "pcg", {"n_centers": 50}), (cached, "pcg", {}),
                           (computed, "nystrom", {"n_centers": 240})]:
        sol = solve_ridge(op, y, solver, tol=1e-12, **kw)
        assert sol.solver == solver
        err = float(torch.linalg.norm(sol.coef - exact) / torch.linalg.norm(exact))
        assert err < 1e-8, (solver, kw, err)
    assert torch.equal(k, k_before)  # the caller's cached kernel is never modified
    assert resolve_solver("auto", 1000, 2 * 1000**2 * 8) == "cholesky"
    assert resolve_solver("auto", 1000, 2 * 1000**2 * 8 - 1) == "pcg"


def test_bad_inputs_raise(problem):
    x, y, k = problem
    op = KernelOperator(kernel=k, shift=1.0)
    with pytest.raises(ValueError, match="n_centers"):
        sample_centers(240, 0)
    with pytest.raises(ValueError, match="exceeds"):
        sample_centers(240, 241)
    with pytest.raises(ValueError, match="positive ridge"):
        NystromPreconditioner(KernelOperator(kernel=k), 10)
    with pytest.raises(ValueError, match="gram"):
        NystromPreconditioner(op, 10, gram="exactly")
    with pytest.raises(TypeError, match="KernelOperator"):
        nystrom_solve(k, y, 10)
    with pytest.raises(ValueError, match="y must be"):
        nystrom_solve(op, y[:5], 10)
    with pytest.raises(ValueError, match="NaN"):
        nystrom_solve(op, torch.full((240,), float("nan"), dtype=torch.float64), 10)
    with pytest.raises(ValueError, match="needs n_centers"):
        solve_ridge(op, y, "nystrom")
    with pytest.raises(ValueError, match="unknown solver"):
        solve_ridge(op, y, "lu")
    a = sample_centers(240, 30, seed=3)
    assert torch.equal(a, sample_centers(240, 30, seed=3))
    assert len(set(a.tolist())) == 30 and torch.equal(a, a.sort().values)
