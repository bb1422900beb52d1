"""ntkit.solvers: clamped eigendecomposition, Cholesky with jitter, validation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from ntkit.solvers import (
    NotPositiveDefiniteError,
    NumericalWarning,
    add_diagonal_regularizer,
    check_kernel,
    cholesky_jitter,
    eigh_psd,
)


def _psd(n: int, rank: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, rank or n, generator=g, dtype=torch.float64)
    return a @ a.T / a.shape[1]


def test_eigh_reconstructs_and_clamps():
    k = _psd(20)
    e = eigh_psd(k)
    v, lam = e.eigenvectors, e.eigenvalues
    assert torch.allclose(v @ torch.diag(lam) @ v.T, k, atol=1e-13)
    assert e.condition_number == pytest.approx(e.max_eigenvalue / e.min_eigenvalue)
    # Rank-deficient: round-off eigenvalues of either sign are clamped silently.
    low = _psd(20, rank=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = eigh_psd(low)
    assert float(e.eigenvalues.min()) >= 0.0
    assert e.min_eigenvalue < 1e-12 and math.isinf(e.condition_number) or \
        e.condition_number > 1e12


def test_eigh_warns_on_indefinite():
    k = _psd(10) - 0.05 * torch.eye(10, dtype=torch.float64) * 20
    with pytest.warns(NumericalWarning, match="not positive semidefinite.*smallest eigenvalue"):
        e = eigh_psd(k, "my_kernel")
    assert float(e.eigenvalues.min()) == 0.0 and e.min_eigenvalue < 0


def test_eigh_apply_matches_matrix_function():
    k = _psd(8)
    e = eigh_psd(k)
    rhs = torch.randn(8, 3, dtype=torch.float64)
    out = e.apply(torch.stack([e.eigenvalues, torch.ones(8, dtype=torch.float64)]), rhs)
    assert torch.allclose(out[0], k @ rhs, atol=1e-13)
    assert torch.allclose(out[1], rhs, atol=1e-13)


def test_cholesky_no_jitter_when_pd():
    k = _psd(15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = cholesky_jitter(k)
    assert f.jitter == 0.0
    b = torch.randn(15, 2, dtype=torch.float64)
    assert torch.allclose(k @ f.solve(b), b, atol=1e-10)
    # LAPACK's 1-norm estimate is within a small factor of the true condition number.
    true = float(torch.linalg.cond(k, p=1))
    assert true / 10 <= f.condition_number <= true * 10


def test_cholesky_jitter_on_singular_reports_amount():
    k = _psd(12, rank=4)
    with pytest.warns(NumericalWarning, match=r"adding jitter .* to the diagonal") as rec:
        f = cholesky_jitter(k, "k_train_train")
    assert "k_train_train" in str(rec[0].message)
    mean_diag = float(torch.diagonal(k).mean())
    assert 0 < f.jitter <= 1e-6 * mean_diag * (1 + 1e-9)
    assert torch.isfinite(f.L).all()
    jittered = k + f.jitter * torch.eye(12, dtype=torch.float64)
    assert torch.allclose(f.L @ f.L.T, jittered, atol=1e-12)


def test_cholesky_error_on_indefinite_names_condition():
    k = torch.diag(torch.tensor([2.0, 1.0, -0.1], dtype=torch.float64))
    with pytest.raises(NotPositiveDefiniteError, match=r"\[-0\.1, 2\].*condition number"):
        cholesky_jitter(k, "k")
    with pytest.raises(ValueError, match="mean diagonal"):  # also a ValueError
        cholesky_jitter(-torch.eye(3, dtype=torch.float64))


def test_cholesky_warns_ill_conditioned():
    lam = torch.logspace(0, -14, 8, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(0)))
    k = q @ torch.diag(lam) @ q.T
    with pytest.warns(NumericalWarning, match="condition number"):
        cholesky_jitter(k)


def test_check_kernel_and_regularizer():
    k = np.array([[2.0, 1.0], [1.0, 2.0]])
    t = check_kernel(k, "k")
    assert t.dtype == torch.float64 and isinstance(t, torch.Tensor)
    assert check_kernel(k.astype(np.float32), "k", dtype=torch.float32).dtype == torch.float32
    with pytest.raises(TypeError, match="complex"):
        check_kernel(torch.eye(2, dtype=torch.complex128), "k")
    with pytest.raises(ValueError, match="empty"):
        check_kernel(np.zeros((0, 0)), "k")
    r = add_diagonal_regularizer(t, 0.5)
    assert torch.allclose(torch.diagonal(r), torch.tensor([3.0, 3.0], dtype=torch.float64))
    r = add_diagonal_regularizer(t, 0.5, absolute_scale=True)
    assert torch.allclose(torch.diagonal(r), torch.tensor([2.5, 2.5], dtype=torch.float64))
