"""t_matmul: aᵀ b in the layout BLAS runs fast, equal to a.T @ b to rounding."""

import pytest
import torch

from ntkit.solvers.products import t_matmul


@pytest.mark.parametrize("shape", [(300, 7), (40, 40), (5, 60)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_t_matmul_is_a_transpose_times_b(shape, dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(*shape, generator=g, dtype=torch.float64)
    b = torch.randn(shape[0], 3, generator=g, dtype=torch.float64)
    want = a.T @ b
    got = t_matmul(a.to(dtype), b.to(dtype))
    assert got.shape == (shape[1], 3) and got.dtype == dtype
    # Sums of shape[0] products: rounding grows like n · eps · max|a||b|.
    eps = torch.finfo(dtype).eps
    tol = 4 * shape[0] * eps * float(a.abs().max() * b.abs().max())
    assert float((got.double() - want).abs().max()) <= tol
