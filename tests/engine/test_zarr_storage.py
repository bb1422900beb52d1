"""Kernels in zarr arrays: tiles = chunks, completion markers, resume, fingerprints, and
inputs read per tile from memmaps / zarr arrays."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ntkit import layers as nl

zarr = pytest.importorskip("zarr")
storage = pytest.importorskip("ntkit.engine.storage")


def relu_net(depth=3, w=1.4):
    layers = []
    for _ in range(depth):
        layers += [nl.Dense(64, w, 0.1), nl.ReLU()]
    return nl.serial(*layers, nl.Dense(1, w, 0.1))


@pytest.fixture
def x():
    return torch.randn(53, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def arr(tmp_path, name, n1, n2=None, tile=8, **kw):
    return storage.create_kernel_array(str(tmp_path / name), n1, n2, tile=tile, **kw)


def test_zarr_out_is_bitwise_the_in_ram_kernel_with_the_same_tiles(tmp_path, x):
    net = relu_net()
    ref = net.kernel(x, get=("nngp", "ntk", "cov1"), tile=8)
    out = {"nngp": arr(tmp_path, "a.zarr", 53), "ntk": arr(tmp_path, "b.zarr", 53),
           "cov1": zarr.create_array(store=str(tmp_path / "c.zarr"), shape=(53,), chunks=(8,),
                                     dtype="f8")}
    res = net.kernel(x, get=("nngp", "ntk", "cov1"), out=out)
    assert res.ntk is out["ntk"]
    for name in ("nngp", "ntk", "cov1"):
        assert np.array_equal(out[name][:], getattr(ref, name).numpy()), name
    assert storage.kernel_progress(out["ntk"]) == (28, 28)  # 7 row blocks: 7·8/2 tiles

    # Rectangular: all 7 × 3 tiles, no symmetry.
    y = x[:20] * 0.5
    a = arr(tmp_path, "r.zarr", 53, 20)
    net.kernel(x, y, get="ntk", out=a)
    assert np.array_equal(a[:], net.kernel(x, y, get="ntk", tile=8).numpy())
    assert storage.kernel_progress(a) == (21, 21)


def test_resume_computes_only_unmarked_tiles_and_is_bit_identical(tmp_path, x,
                                                                  killed_after_marks):
    net = relu_net()
    ref = net.kernel(x, get="ntk", tile=8).numpy()
    a = arr(tmp_path, "k.zarr", 53)

    # Interrupt the run after 10 tiles are marked (an exception between two tiles, as a
    # kill would; the SIGKILL case is tests/test_cli_resume.py).
    with killed_after_marks(10):
        net.kernel(x, get="ntk", out=a, tile=None)  # threads=1: tiles in order
    done, total = storage.kernel_progress(a)
    assert (done, total) == (10, 28)

    # Poison one marked tile: a resume that recomputed it would repair it.
    i, j = sorted(storage.TileLedger(a).done())[3]
    a[i * 8:(i + 1) * 8, j * 8:(j + 1) * 8] = -7.0
    net.kernel(x, get="ntk", out=a, resume=True)
    got = a[:]
    assert storage.kernel_progress(a) == (28, 28)
    assert np.all(got[i * 8:(i + 1) * 8, j * 8:(j + 1) * 8] == -7.0)  # not recomputed
    got[i * 8:(i + 1) * 8, j * 8:(j + 1) * 8] = ref[i * 8:(i + 1) * 8, j * 8:(j + 1) * 8]
    assert np.array_equal(got, ref)

    # Without resume the whole array is recomputed (and the poison goes).
    net.kernel(x, get="ntk", out=a)
    assert np.array_equal(a[:], ref)


def test_resume_refuses_an_array_of_other_arguments(tmp_path, x):
    net = relu_net()
    a = arr(tmp_path, "k.zarr", 53)
    net.kernel(x, get="ntk", out=a)
    cases = {
        "layer": lambda: relu_net(w=1.5).kernel(x, get="ntk", out=a, resume=True),
        "x1_digest": lambda: net.kernel(x + 1e-9, get="ntk", out=a, resume=True),
        "field": lambda: net.kernel(x, get="nngp", out=a, resume=True),
        "dtype": lambda: net.kernel(x, get="ntk", out=a, resume=True, dtype=torch.float32),
    }
    for field, call in cases.items():
        with pytest.raises(ValueError, match=f"cannot resume.*{field}"):
            call()
    b = arr(tmp_path, "k2.zarr", 53, tile=16)  # same shape, other tiles
    net.kernel(x, get="ntk", out=b)
    b.update_attributes({storage.ATTR: {**b.attrs[storage.ATTR], "tile": 8}})
    with pytest.raises(ValueError, match="cannot resume.*tile"):
        net.kernel(x, get="ntk", out=b, resume=True)
    # A fresh array resumes from nothing: everything is computed.
    c = arr(tmp_path, "k3.zarr", 53)
    net.kernel(x, get="ntk", out=c, resume=True)
    assert np.array_equal(c[:], a[:])


def test_bad_zarr_arguments_are_rejected(tmp_path, x):
    net = relu_net(1)
    a = arr(tmp_path, "k.zarr", 53)
    with pytest.raises(ValueError, match="resume=True needs every requested kernel"):
        net.kernel(x, get="ntk", resume=True)
    with pytest.raises(ValueError, match="resume=True needs every requested kernel"):
        net.kernel(x, get=("nngp", "ntk"), out={"ntk": a}, resume=True)
    with pytest.raises(ValueError, match="resume must be True or False"):
        net.kernel(x, get="ntk", out=a, resume="yes")
    with pytest.raises(ValueError, match="differs from the zarr output's chunks"):
        net.kernel(x, get="ntk", out=a, tile=16)
    rect = zarr.create_array(store=str(tmp_path / "rect.zarr"), shape=(53, 53),
                             chunks=(8, 16), dtype="f8")
    with pytest.raises(ValueError, match="square chunks"):
        net.kernel(x, get="ntk", out=rect)
    with pytest.raises(ValueError, match="shape"):
        net.kernel(x[:50], get="ntk", out=a)
    ints = zarr.create_array(store=str(tmp_path / "i.zarr"), shape=(53, 53), chunks=(8, 8),
                             dtype="i8")
    with pytest.raises(TypeError, match="floating"):
        net.kernel(x, get="ntk", out=ints)
    with pytest.raises(ValueError, match="tile must be a positive int"):
        storage.create_kernel_array(str(tmp_path / "z.zarr"), 10, tile=0)


class RecordingRows:
    """An on-disk-like array (shape, dtype, slicing) that records every read."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __getitem__(self, idx):
        self.reads.append(idx)
        return self.data[idx]


def test_memmap_and_zarr_inputs_are_read_per_tile_and_give_the_same_kernel(tmp_path, x):
    net = relu_net()
    ref = net.kernel(x, get="ntk", tile=8)
    np.save(tmp_path / "x.npy", x.numpy())
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert torch.equal(net.kernel(mm, get="ntk", tile=8), ref)
    assert torch.equal(net.kernel(mm, mm, get="ntk", tile=8), ref)  # same file: symmetric
    zx = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=x.shape, chunks=(8, 4),
                           dtype="f8")
    zx[:] = x.numpy()
    assert torch.equal(net.kernel(zx, get="ntk", tile=8), ref)
    y = x[:11] - 0.3
    assert torch.equal(net.kernel(zx, y, get="ntk", tile=8),
                       net.kernel(x, y, get="ntk", tile=8))

    rec = RecordingRows(x.numpy())
    net.kernel(rec, get="ntk", tile=8)
    sizes = [len(range(*r.indices(53))) for r in rec.reads]
    assert rec.reads and max(sizes) <= 8  # never the whole input at once

    # float32 on disk, computed in float64 as asked: converted per tile.
    np.save(tmp_path / "x32.npy", x.numpy().astype(np.float32))
    mm32 = np.load(tmp_path / "x32.npy", mmap_mode="r")
    assert torch.equal(net.kernel(mm32, get="ntk", tile=8),
                       net.kernel(x.float().double(), get="ntk", tile=8))


def test_bad_on_disk_inputs_are_rejected_clearly(tmp_path, x):
    net = relu_net(1)
    bad = x.numpy().copy()
    bad[41, 2] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="x1 contains NaN or inf.*row 41"):
        net.kernel(np.load(tmp_path / "bad.npy", mmap_mode="r"), get="ntk", tile=8)
    np.save(tmp_path / "int.npy", np.ones((5, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="floating dtype"):
        net.kernel(np.load(tmp_path / "int.npy", mmap_mode="r"), get="ntk")
    np.save(tmp_path / "one.npy", np.ones(5))
    with pytest.raises(ValueError, match="2-D"):
        net.kernel(np.load(tmp_path / "one.npy", mmap_mode="r"), get="ntk")
    np.save(tmp_path / "x3.npy", np.ones((5, 3)))
    with pytest.raises(ValueError, match="different feature dimensions"):
        net.kernel(x, np.load(tmp_path / "x3.npy", mmap_mode="r"), get="ntk")


def test_ntkit_imports_and_computes_without_zarr_or_dask():
    code = """
import sys
for m in ("zarr", "dask", "distributed"):
    sys.modules[m] = None  # makes 'import m' fail
import torch
from ntkit import layers as nl
net = nl.serial(nl.Dense(8), nl.ReLU(), nl.Dense(1))
k = net.kernel(torch.randn(5, 3, dtype=torch.float64), get="ntk")
assert k.shape == (5, 5)
from ntkit.engine import storage
for f in (storage.require_zarr, __import__("ntkit.engine.distributed",
                                           fromlist=["x"]).require_distributed):
    try:
        f()
    except ImportError as e:
        assert 'pip install -e ".[scale]"' in str(e), e
    else:
        raise AssertionError("no ImportError")
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_upper_tile_array_stores_half_and_reads_back_symmetric(tmp_path, x,
                                                              killed_after_marks):
    net = relu_net()
    ref = net.kernel(x, get="ntk", tile=8).numpy()
    a = arr(tmp_path, "u.zarr", 53, upper=True)
    assert storage.is_upper(a) and not storage.is_upper(arr(tmp_path, "f.zarr", 53))
    with killed_after_marks(9):
        net.kernel(x, get="ntk", out=a)
    net.kernel(x, get="ntk", out=a, resume=True)
    assert storage.kernel_progress(a) == (28, 28)
    # Only chunks (i, j >= i) exist: 28 of the 49 a full array has.
    chunks = [(int(i), int(j)) for i in os.listdir(tmp_path / "u.zarr" / "c")
              for j in os.listdir(tmp_path / "u.zarr" / "c" / i)]
    assert sorted(chunks) == [(i, j) for i in range(7) for j in range(i, 7)]
    # Stored tiles are bitwise the in-RAM ones; below them, the fill value.
    raw = a[:]
    tiles = np.arange(53) // 8
    above = tiles[:, None] <= tiles[None, :]
    assert np.array_equal(raw[above], ref[above]) and not raw[~above].any()
    # read_block mirrors what is below, for blocks on, above, below and across tiles.
    for r, c in [(slice(0, 53), slice(0, 53)), (slice(3, 30), slice(10, 50)),
                 (slice(40, 53), slice(0, 16)), (slice(0, 8), slice(8, 53)),
                 (slice(17, 17), slice(0, 5))]:
        assert np.array_equal(storage.read_block(a, r, c), ref[r, c]), (r, c)


def test_upper_tile_arrays_are_refused_where_they_do_not_apply(tmp_path, x):
    net = relu_net()
    with pytest.raises(ValueError, match="n2 = n1"):
        arr(tmp_path, "a.zarr", 53, 20, upper=True)
    with pytest.raises(ValueError, match="pair_shape"):
        arr(tmp_path, "b.zarr", 53, pair_shape=(3,), upper=True)
    with pytest.raises(ValueError, match="upper must be"):
        arr(tmp_path, "c.zarr", 53, upper="yes")
    a = arr(tmp_path, "e.zarr", 53, upper=True)
    with pytest.raises(TypeError, match="rows must be a slice"):
        storage.read_block(a, [0, 1], slice(0, 5))
    with pytest.raises(TypeError, match="cols must be a slice with step 1"):
        storage.read_block(a, slice(0, 5), slice(0, 10, 2))
    # A cross-kernel K(x, 2x) is not symmetric: its lower tiles are not mirrors.
    with pytest.raises(ValueError, match="without x2"):
        net.kernel(x, 2 * x, get="ntk", out=arr(tmp_path, "d.zarr", 53, upper=True))
