"""ntkit.solvers: the matrix-free KernelOperator and preconditioned CG.

Truth: dense kernels from ``net.kernel`` and dense Cholesky / ``torch.linalg.solve``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kernel_compare import assert_kernels_close

from ntkit.sklearn import make_network
from ntkit.solvers import (
    KernelOperator,
    NotPositiveDefiniteError,
    NystromPreconditioner,
    cholesky_jitter,
    pcg,
)

NET = make_network(3, "relu")


def _data(n: int, d: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


@pytest.fixture(scope="module")
def problem():
    x = _data(300)
    k = NET.kernel(x, get="ntk")
    return x, k


def test_operator_matvec_equals_dense(problem, tmp_path):
    x, k = problem
    delta = 0.3
    v = torch.randn(300, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = k @ v + delta * v
    # tile 128 leaves a ragged last tile (300 = 2·128 + 44) and exercises the mirrored
    # off-diagonal tiles.
    op = KernelOperator(NET, x, shift=delta, tile=128)
    got = op.matvec(v)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))
    assert op.matvec(v[:, 0]).shape == (300,)
    assert op.n_matvecs == 2
    assert torch.equal(op.diagonal(), torch.diagonal(k))
    # Inputs streamed from a float32 memmap: rows converted per tile.
    xm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float64,
                                   shape=tuple(x.shape))
    xm[:] = x.numpy()
    xm.flush()
    got_mm = KernelOperator(NET, np.load(tmp_path / "x.npy", mmap_mode="r"), shift=delta,
                            tile=128).matvec(v)
    assert torch.allclose(got_mm, want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))
    # A cached kernel on disk, read in row panels.
    km = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64,
                                   shape=(300, 300))
    km[:] = k.numpy()
    km.flush()
    op_c = KernelOperator(kernel=np.load(tmp_path / "k.npy", mmap_mode="r"), shift=delta,
                          memory_budget=300 * 8 * 4 * 50)  # 50-row panels
    assert len(op_c.row_blocks(300)) == 6
    assert torch.allclose(op_c.matvec(v), want, rtol=1e-13, atol=1e-13 * float(
        want.abs().max()))
    assert torch.equal(op_c.diagonal(), torch.diagonal(k))


def test_pcg_equals_cholesky_multi_rhs(problem):
    x, k = problem
    # Ridge 0.05 · mean diag keeps κ small, so a residual of tol = 1e-14 bounds the
    # solution error by κ · tol.
    delta = 0.05 * float(torch.diagonal(k).mean())
    a = k + delta * torch.eye(300, dtype=torch.float64)
    ev = torch.linalg.eigvalsh(a)
    kappa = float(ev[-1] / ev[0])
    tol = 1e-14
    assert kappa * tol < 1e-10
    b = torch.randn(300, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    want = cholesky_jitter(a).solve(b)
    # Iterations read the kernel from memory (the computed operator's products are
    # checked against it in test_operator_matvec_equals_dense); a few run on the
    # computed operator below.
    op = KernelOperator(kernel=k, shift=delta)
    res = pcg(op.matvec, b, tol=tol)
    assert res.converged
    err = float(torch.linalg.norm(res.x - want) / torch.linalg.norm(want))
    assert err < 1e-10
    assert len(res.residual_history) == res.iterations + 1
    assert res.residual_history[-1].shape == (4,)
    assert float(res.residual.max()) <= tol
    # Warm start at the answer: converged before the first iteration.
    op_c = KernelOperator(NET, x, shift=delta)
    warm = pcg(op_c.matvec, b, x0=res.x, tol=1e-8)
    assert warm.iterations == 0 and warm.converged
    # Preconditioned with M = n centers: P = K + δ I exactly, so 1-2 iterations.
    pre = NystromPreconditioner(op_c, 300)
    res_p = pcg(op_c.matvec, b, precond=pre, tol=1e-12)
    assert res_p.iterations <= 2
    assert float(torch.linalg.norm(res_p.x - want) / torch.linalg.norm(want)) < 1e-10


def test_preconditioner_cuts_iterations_on_ill_conditioned_kernel():
    x = _data(400, d=4, seed=3)
    k = NET.kernel(x, get="ntk")
    delta = 1e-6 * float(torch.diagonal(k).mean())  # κ ≈ 1e8 · (λ_max / mean diag)
    op = KernelOperator(kernel=k, shift=delta)
    b = torch.randn(400, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    plain = pcg(op.matvec, b, tol=1e-8, max_iter=400)
    pre = pcg(op.matvec, b, tol=1e-8, max_iter=400,
              precond=NystromPreconditioner(op, 200, seed=0))
    assert pre.converged
    # Measured: plain CG 281 iterations, Nyström(200) 106. The ReLU NTK's spectrum decays
    # only polynomially, so K − K̂ keeps eigenvalues far above δ and the gain is a
    # factor ~2.6, not the Falkon regime (M large enough that ‖K − K̂‖ ≲ δ).
    assert pre.iterations < plain.iterations / 2
    a = k + delta * torch.eye(400, dtype=torch.float64)
    resid = torch.linalg.norm(b - a @ pre.x) / torch.linalg.norm(b)
    assert float(resid) < 1e-7


def test_callback_validation_and_progress(problem):
    x, k = problem
    delta = 0.01 * float(torch.diagonal(k).mean())
    a = k + delta * torch.eye(300, dtype=torch.float64)
    b = torch.randn(300, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    want = torch.linalg.solve(a, b)
    seen = []

    def cb(it, res, val):
        seen.append((it, res, val))
        return it == 5  # stop early

    out = pcg(a.__matmul__, b, tol=1e-14, callback=cb, progress=True,
              validation=lambda s: float(torch.linalg.norm(s - want)))
    assert out.iterations == 5 and not out.converged
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5]
    assert seen[-1][1].shape == (1,)
    assert out.validation_history == [s[2] for s in seen]
    # CG minimizes the A-norm of the error, so the Euclidean error shrinks overall.
    assert out.validation_history[-1] < out.validation_history[0]


def test_zero_rhs_column_and_indefinite_preconditioner():
    a = torch.diag(torch.linspace(1.0, 10.0, 20, dtype=torch.float64))
    b = torch.zeros(20, 2, dtype=torch.float64)
    b[:, 1] = 1.0
    res = pcg(a.__matmul__, b, tol=1e-12)
    assert res.converged and torch.equal(res.x[:, 0], torch.zeros(20, dtype=torch.float64))
    with pytest.raises(NotPositiveDefiniteError, match="preconditioner"):
        pcg(a.__matmul__, b[:, 1], precond=lambda r: -r)
    with pytest.raises(NotPositiveDefiniteError, match="curvature"):
        pcg(lambda v: -v, b[:, 1])


def test_bad_inputs_raise(problem):
    x, k = problem
    a = k + torch.eye(300, dtype=torch.float64)
    b = torch.ones(300, dtype=torch.float64)
    with pytest.raises(ValueError, match="non-finite"):
        pcg(a.__matmul__, torch.full((300,), float("nan")))
    with pytest.raises(ValueError, match="x0"):
        pcg(a.__matmul__, b, x0=torch.zeros(299))
    with pytest.raises(ValueError, match="tol"):
        pcg(a.__matmul__, b, tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        pcg(a.__matmul__, b, max_iter=0)
    with pytest.raises(ValueError, match="b must have shape"):
        pcg(a.__matmul__, torch.ones(3, 3, 3))
    with pytest.raises(ValueError, match="same shape"):
        pcg(lambda v: v[:10], b)
    with pytest.raises(TypeError, match="matvec"):
        pcg("A", b)
    with pytest.raises(TypeError, match="expected a torch tensor"):
        pcg(a.__matmul__, "b")
    with pytest.raises(ValueError, match="get"):
        KernelOperator(NET, x, get="cov1")
    with pytest.raises(ValueError, match="needs a layer spec"):
        KernelOperator(NET)
    with pytest.raises(ValueError, match="square"):
        KernelOperator(kernel=np.zeros((3, 4)))
    with pytest.raises(TypeError, match="floating"):
        KernelOperator(kernel=np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="shift"):
        KernelOperator(NET, x, shift=-1.0)
    with pytest.raises(ValueError, match="tile"):
        KernelOperator(NET, x, tile=0)
    with pytest.raises(ValueError, match="rows"):
        KernelOperator(NET, x, kernel=k[:10, :10])
    with pytest.raises(ValueError, match="client"):
        KernelOperator(kernel=k, client=object())
    op = KernelOperator(NET, x)
    with pytest.raises(ValueError, match=r"v must have shape \(300"):
        op.matvec(torch.ones(5))
    with pytest.raises(TypeError, match="v must be"):
        op.matvec(np.ones(300))


def test_client_delegates_matvec_to_dask_matvec(problem, monkeypatch):
    # The real ntkit.engine.distributed.dask_matvec (branch `disk`) is tested there with a
    # LocalCluster; here a stand-in with its signature checks the delegation and shift.
    import sys
    import types

    x, k = problem
    calls = []

    def dask_matvec(client, net, xs, v, *, get, tile, dtype):
        calls.append((client, get, tile, dtype, tuple(v.shape)))
        return net.kernel(xs, get=get, dtype=dtype) @ v

    fake = types.ModuleType("ntkit.engine.distributed")
    fake.dask_matvec = dask_matvec
    monkeypatch.setitem(sys.modules, "ntkit.engine.distributed", fake)
    client = object()
    op = KernelOperator(NET, x, shift=0.5, client=client, tile=100)
    v = torch.ones(300, dtype=torch.float64)
    got = op.matvec(v)
    assert torch.allclose(got, k @ v + 0.5 * v, rtol=1e-12)
    assert calls == [(client, "ntk", 100, torch.float64, (300, 1))]


def test_operator_reads_an_upper_tile_zarr_kernel(problem, tmp_path):
    storage = pytest.importorskip("ntkit.engine.storage")
    pytest.importorskip("zarr")
    x, k = problem
    a = storage.create_kernel_array(str(tmp_path / "u.zarr"), 300, tile=64, upper=True)
    NET.kernel(x, get="ntk", out=a)
    ref = NET.kernel(x, get="ntk", tile=64)   # the same tiles, in RAM
    v = torch.randn(300, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    want = ref @ v + 0.2 * v
    # Raw chunks are read as files (forwards, then backwards on the next product); a
    # compressed array goes through zarr, in bands of whole rows or two-chunk pieces.
    z = storage.create_kernel_array(str(tmp_path / "z.zarr"), 300, tile=64, upper=True,
                                    compressors="auto")
    NET.kernel(x, get="ntk", out=z)
    assert storage.chunk_files(a) is not None and storage.chunk_files(z) is None
    for arr, budget in ((a, None), (a, 64 * 64 * 8 * 4 * 2), (z, None),
                        (z, 64 * 8 * 4 * 128)):
        op = KernelOperator(kernel=arr, shift=0.2, memory_budget=budget)
        for _ in range(2):
            assert torch.allclose(op.matvec(v), want, rtol=1e-13,
                                  atol=1e-13 * float(want.abs().max())), budget
    op = KernelOperator(kernel=a, shift=0.2)
    assert torch.equal(op.diagonal(), torch.diagonal(ref))
    idx = torch.tensor([0, 5, 64, 130, 131, 299])
    # Without net, blocks and columns are read and mirrored: bitwise the stored values.
    assert torch.equal(op.principal(idx), ref[idx][:, idx])
    assert torch.equal(op.columns(idx, slice(100, 250)), ref[100:250][:, idx])
    assert torch.equal(op.block(slice(200, 300), slice(0, 70)), ref[200:300, :70])
    # With net, centers' columns are computed (equal to rounding), and PCG on the cached
    # operator solves the same system as on the computed one.
    op_n = KernelOperator(NET, x, kernel=a, shift=0.2)
    d = torch.diagonal(ref)
    assert_kernels_close(op_n.columns(idx, slice(0, 300)), ref[:, idx], var1=d, var2=d[idx],
                         identical=[(int(i), j) for j, i in enumerate(idx)],
                         name="computed centers' columns K(x, x[idx])")
    pre = NystromPreconditioner(op_n, 40, seed=0)
    res = pcg(op_n.matvec, v, precond=pre, tol=1e-10, max_iter=300)
    a_full = ref + 0.2 * torch.eye(300, dtype=torch.float64)
    exact = torch.linalg.solve(a_full, v)
    assert res.converged
    # Residual 1e-10 bounds the error by cond(A) · 1e-10 (plus rounding).
    cond = float(torch.linalg.cond(a_full))
    assert float((res.x - exact).norm() / exact.norm()) < 2 * cond * 1e-10
