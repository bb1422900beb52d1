"""The Dask backend: kernels on a LocalCluster equal the single-process ones, and
dask_matvec equals K @ v, without forming K on the workers' side."""

import numpy as np
import pytest
import torch
from kernel_compare import assert_kernels_close

from ntkit import layers as nl

distributed = pytest.importorskip("distributed")

from ntkit.engine.distributed import dask_matvec  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def relu_net(depth=3):
    layers = []
    for _ in range(depth):
        layers += [nl.Dense(64, 1.4, 0.1), nl.ReLU()]
    return nl.serial(*layers, nl.Dense(1, 1.4, 0.1))


@pytest.fixture(scope="module")
def x():
    return torch.randn(70, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_workers_run_this_ntkit(client):
    import ntkit

    files = client.run(lambda: __import__("ntkit").__file__)
    assert set(files.values()) == {ntkit.__file__}


def test_kernel_on_the_cluster_equals_the_single_process_one(client, x):
    net = relu_net()
    ref = net.kernel(x, get=None, tile=16)
    k = net.kernel(x, get=None, tile=16, client=client)
    for name in ("nngp", "ntk", "cov1"):
        # Same tiles, same per-tile function, aligned operands: equal bitwise (the
        # contract is 1e-12 relative).
        assert torch.equal(getattr(k, name), getattr(ref, name)), name
    y = x[:23] * 0.7
    ref2 = net.kernel(x, y, get=("nngp", "ntk"), tile=16)
    k2 = net.kernel(x, y, get=("nngp", "ntk"), tile=16, client=client)
    assert torch.equal(k2.ntk, ref2.ntk) and torch.equal(k2.nngp, ref2.nngp)


def test_spatial_kernel_on_the_cluster_equals_the_traced_single_process_one(client):
    # In one process the tiles replay each example's covariance chain (CovTrace); a Dask
    # task maps its own. Same formulas on the same numbers: equal to rounding.
    net = nl.serial(nl.Conv(3, (3, 3), padding="SAME", w_std=1.4), nl.ReLU(),
                    nl.AvgPool((2, 2), strides=(2, 2)), nl.Conv(3, (3, 3), w_std=1.4),
                    nl.ReLU(), nl.GlobalAvgPool(), nl.Dense(1))
    x = torch.randn(7, 2, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = net.kernel(x, get=("nngp", "ntk"), tile=2)
    k = net.kernel(x, get=("nngp", "ntk"), tile=2, client=client)
    assert_kernels_close(k.ntk, ref.ntk, identical="diagonal", name="Dask ntk")
    assert_kernels_close(k.nngp, ref.nngp, identical="diagonal", name="Dask nngp")


def test_cluster_writes_resumable_zarr_from_a_memmap(client, x, tmp_path):
    zarr = pytest.importorskip("zarr")
    from zarr.core.sync import sync  # StorePath.delete_sync is zarr >= 3.1.6 only

    from ntkit.engine import storage

    net = relu_net()
    np.save(tmp_path / "x.npy", x.numpy())
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")  # travels to workers by reference
    a = storage.create_kernel_array(str(tmp_path / "k.zarr"), 70, tile=16)
    net.kernel(mm, get="ntk", out=a, client=client)
    ref = net.kernel(x, get="ntk", tile=16).numpy()
    assert np.array_equal(a[:], ref)
    # Forget three tiles and spoil their chunks: the resume recomputes just those.
    ledger = storage.TileLedger(a)
    lost = sorted(ledger.done())[::4][:3]
    for i, j in lost:
        sync(ledger._key(i, j).delete())
        a[i * 16:(i + 1) * 16, j * 16:(j + 1) * 16] = np.nan
    assert storage.kernel_progress(a) == (12, 15)
    net.kernel(mm, get="ntk", out=a, client=client, resume=True)
    assert np.array_equal(zarr.open_array(str(tmp_path / "k.zarr"))[:], ref)


def test_dask_matvec_equals_the_kernel_times_v(client, x):
    net = relu_net()
    K = net.kernel(x, get="ntk")
    v = torch.randn(70, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for vv in (v, v[:, 0]):
        got = dask_matvec(client, net, x, vv, tile=16)
        want = K @ vv
        assert got.shape == want.shape and got.dtype == torch.float64
        assert (got - want).norm() <= 1e-12 * want.norm()
    nngp = net.kernel(x, get="nngp")
    got = dask_matvec(client, net, x.numpy(), v.numpy(), get="nngp")  # numpy in, auto tile
    assert (got - nngp @ v).norm() <= 1e-12 * (nngp @ v).norm()


def test_dask_matvec_rejects_bad_input(client, x):
    net = relu_net(1)
    v = torch.ones(70, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"v must have shape \(70,\)"):
        dask_matvec(client, net, x, torch.ones(69))
    with pytest.raises(ValueError, match="NaN"):
        dask_matvec(client, net, x, v * float("nan"))
    with pytest.raises(TypeError, match="floating"):
        dask_matvec(client, net, x, torch.ones(70, dtype=torch.int64))
    with pytest.raises(ValueError, match="get must be"):
        dask_matvec(client, net, x, v, get="cov1")
    with pytest.raises(ValueError, match="tile must be"):
        dask_matvec(client, net, x, v, tile=0)
    with pytest.raises(TypeError, match="distributed.Client"):
        dask_matvec("tcp://nowhere:8786", net, x, v)
    with pytest.raises(TypeError, match="distributed.Client"):
        net.kernel(x, get="ntk", client=object())


def _spy_tiles(monkeypatch):
    """Record which fields each tile from the cluster says a worker already stored."""
    import ntkit.engine.distributed as dist

    seen = []
    real = dist.run_tiles

    def spy(*args, **kwargs):
        for i, j, tile in real(*args, **kwargs):
            seen.append(tile.written)
            yield i, j, tile

    monkeypatch.setattr(dist, "run_tiles", spy)
    return seen


def test_same_machine_workers_write_into_shared_memory(client, x, monkeypatch):
    import glob
    import os

    import ntkit.engine.distributed as dist

    probe = dist.shared_result((2, 2), torch.float64)
    if probe is None:
        pytest.skip(f"no shared-memory file system at {dist.SHM_DIR}")
    dist.release_shared(probe[1])
    seen = _spy_tiles(monkeypatch)
    net = relu_net()
    ref = net.kernel(x, get=None, tile=16)
    k = net.kernel(x, get=None, tile=16, client=client)
    assert seen and all(set(w) == {"nngp", "ntk"} for w in seen)  # nothing sent back
    for name in ("nngp", "ntk", "cov1"):
        assert torch.equal(getattr(k, name), getattr(ref, name)), name
    # Spatial kernels with a per-pair shape: the workers mirror with swap_examples.
    conv = nl.serial(nl.Conv(2, (3,), padding="SAME"), nl.ReLU(), nl.Conv(2, (3,)))
    xs = torch.randn(9, 2, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert_kernels_close(conv.kernel(xs, get="ntk", tile=4, client=client),
                         conv.kernel(xs, get="ntk", tile=4), identical="diagonal")
    # Every result file is unlinked when the call returns; the result stays valid.
    assert not glob.glob(os.path.join(dist.SHM_DIR, dist._SHM_PREFIX + f"{os.getpid()}-*"))
    assert float(k.ntk.sum()) == float(ref.ntk.sum())
    # A worker that overflows says so, as one process does.
    huge = nl.serial(nl.Dense(8, 1.0, 0.0), nl.Exp(), nl.Dense(1))
    with pytest.raises(FloatingPointError, match="overflowed"):
        huge.kernel(x * 1e3, get="ntk", tile=16, client=client)


def test_workers_that_cannot_see_the_file_send_their_tiles(client, x, monkeypatch, tmp_path):
    import ntkit.engine.distributed as dist

    made = []

    def elsewhere(shape, dtype):  # a result file the workers are told is somewhere else
        made.append(tmp_path / f"r{len(made)}")
        mm = np.memmap(made[-1], dtype=np.float64, mode="w+", shape=shape)
        return torch.from_numpy(mm), str(tmp_path / "not-here")

    monkeypatch.setattr(dist, "shared_result", elsewhere)
    seen = _spy_tiles(monkeypatch)
    net = relu_net()
    k = net.kernel(x, get=("nngp", "ntk"), tile=16, client=client)
    assert seen and all(w == () for w in seen)
    ref = net.kernel(x, get=("nngp", "ntk"), tile=16)
    assert torch.equal(k.ntk, ref.ntk) and torch.equal(k.nngp, ref.nngp)


def test_result_files_of_dead_drivers_are_removed(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    import ntkit.engine.distributed as dist

    monkeypatch.setattr(dist, "SHM_DIR", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f"{dist._SHM_PREFIX}{dead}-abc"
    mine = tmp_path / f"{dist._SHM_PREFIX}{os.getpid()}-def"
    other = tmp_path / "unrelated"
    for f in (stale, mine, other):
        f.write_bytes(b"x")
    t, path = dist.shared_result((3, 4), torch.float64)
    assert t.shape == (3, 4) and not t.any() and os.path.exists(path)
    assert not stale.exists() and mine.exists() and other.exists()
    dist.release_shared(path)
    assert not os.path.exists(path) and t.shape == (3, 4)
