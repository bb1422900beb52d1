"""Markers durable against a power loss: with a durable zarr output (the default), every
chunk file a tile wrote, and its directory, is fsync'ed before that tile's marker exists,
and the marker and its directory are fsync'ed after; ``durable=False`` and
``ntkit kernel --no-fsync`` skip every fsync. An fsync that fails fails the call, leaves
that tile unmarked, and the array resumes to the same bytes.

The fsyncs are observed by wrapping ``os.fsync``: each call records the path of its file
descriptor and which markers existed at that moment, so the order is checked against
the files the run left on disk (not against ntkit's own list of chunks).
"""

from __future__ import annotations

import errno
import os
import threading

import numpy as np
import pytest
import torch

from ntkit import layers as nl

zarr = pytest.importorskip("zarr")
from ntkit.engine import storage  # noqa: E402

N, N2, TILE = 23, 13, 8


def net():
    return nl.serial(nl.Dense(16, 1.3, 0.1), nl.ReLU(), nl.Dense(1, 1.3, 0.1))


@pytest.fixture
def fsyncs(monkeypatch):
    """A list that collects (path, markers present) for each os.fsync call."""
    events: list[tuple[str, frozenset]] = []
    lock = threading.Lock()
    real = os.fsync

    def recording(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        marks = set()
        for root, _, files in os.walk(os.path.dirname(path.split(".zarr")[0]) or "."):
            if root.endswith(os.path.join(".ntkit", "tiles")):
                marks |= {os.path.join(root, f) for f in files}
        with lock:
            events.append((path, frozenset(marks)))
        real(fd)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to name the fsync'ed files")
    monkeypatch.setattr(os, "fsync", recording)
    return events


def x(n, seed=0):
    return torch.randn(n, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def chunk_tiles(path: str, field: str, sym: bool):
    """{chunk file -> the tile (i, j) that writes it} for the chunk files under ``path``
    (zarr v3 default keys c/<i>[/<j>]), as the writer's contract says: nngp/ntk chunk
    (a, b) by tile (a, b), or (b, a) below the diagonal of a symmetric kernel; cov1 row
    block a by the tile (a, a) (symmetric) or (a, 0); cov2 column block b by (0, b)."""
    out = {}
    for root, _, files in os.walk(os.path.join(path, "c")):
        for f in files:
            full = os.path.join(root, f)
            idx = [int(p) for p in os.path.relpath(full, os.path.join(path, "c")).split(os.sep)]
            if field in ("nngp", "ntk"):
                a, b = idx[:2]
                out[full] = (min(a, b), max(a, b)) if sym else (a, b)
            elif field == "cov1":
                out[full] = (idx[0], idx[0] if sym else 0)
            else:
                out[full] = (0, idx[0])
    assert out, f"no chunk files under {path}"
    return out


def check_order(events, path: str, field: str, sym: bool) -> None:
    path = os.path.realpath(path)
    tiles_dir = os.path.join(path, ".ntkit", "tiles")
    for chunk, (i, j) in chunk_tiles(path, field, sym).items():
        marker = os.path.join(tiles_dir, f"{i}.{j}")
        assert os.path.exists(marker), marker
        at = [k for k, (p, marks) in enumerate(events) if p == chunk and marker not in marks]
        assert at, f"{chunk} was not fsync'ed before the marker of tile {(i, j)} existed"
        d = os.path.dirname(chunk)
        assert any(p == d and marker not in marks for p, marks in events[at[0] + 1:]), \
            f"the directory of {chunk} was not fsync'ed before marker {(i, j)} existed"
        at_m = [k for k, (p, marks) in enumerate(events) if p == marker]
        assert at_m, f"marker {marker} was never fsync'ed"
        assert any(p == tiles_dir for p, _ in events[at_m[0] + 1:]), \
            f"the marker directory was not fsync'ed after {marker}"


@pytest.mark.parametrize("case", ["symmetric", "upper", "cross"])
def test_chunks_are_fsynced_before_their_marker(tmp_path, fsyncs, case):
    sym = case != "cross"
    x1, x2 = x(N), (None if sym else x(N2, 1))
    names = ("nngp", "ntk", "cov1") if sym else ("ntk", "cov2")
    shapes = {"nngp": (N, N), "ntk": (N, N if sym else N2), "cov1": (N,), "cov2": (N2,)}
    out = {}
    for name in names:
        if name in ("nngp", "ntk"):
            out[name] = storage.create_kernel_array(
                str(tmp_path / f"{name}.zarr"), N, N if sym else N2, tile=TILE,
                upper=case == "upper" and name == "ntk")
        else:
            out[name] = zarr.create_array(store=str(tmp_path / f"{name}.zarr"),
                                          shape=shapes[name], chunks=(TILE,), dtype="f8")
    ref = net().kernel(x1, x2, get=names, tile=TILE)
    net().kernel(x1, x2, get=names, out=out)
    for name in names:
        got = storage.read_block(out[name], slice(None), slice(None)) if name != "cov1" \
            and name != "cov2" else out[name][:]
        assert np.array_equal(got, getattr(ref, name).numpy()), name
        check_order(fsyncs, str(tmp_path / f"{name}.zarr"), name,
                    sym and not (case == "upper" and name == "ntk"))
    # The fingerprint (zarr.json) is fsync'ed too, before any marker.
    meta = os.path.realpath(tmp_path / "ntk.zarr" / "zarr.json")
    assert any(p == meta and not marks for p, marks in fsyncs)


def test_durable_false_skips_every_fsync(tmp_path, fsyncs):
    a = storage.create_kernel_array(str(tmp_path / "k.zarr"), N, tile=TILE, durable=False)
    assert not storage.is_durable(a)
    assert storage.is_durable(storage.create_kernel_array(str(tmp_path / "d.zarr"), N,
                                                          tile=TILE))
    del fsyncs[:]
    net().kernel(x(N), get="ntk", out=a)
    assert storage.kernel_progress(a) == (6, 6)
    assert fsyncs == []
    with pytest.raises(ValueError, match="durable must be True or False"):
        storage.create_kernel_array(str(tmp_path / "e.zarr"), N, tile=TILE, durable=1)


def test_in_memory_store_has_nothing_to_fsync(fsyncs):
    a = zarr.create_array(store=zarr.storage.MemoryStore(), shape=(N, N), chunks=(TILE, TILE),
                          dtype="f8")
    net().kernel(x(N), get="ntk", out=a)
    assert storage.kernel_progress(a) == (6, 6) and fsyncs == []


def test_failed_fsync_fails_the_call_and_leaves_the_tile_unmarked(tmp_path, monkeypatch):
    path = tmp_path / "k.zarr"
    a = storage.create_kernel_array(str(path), N, tile=TILE)
    real, failing = os.fsync, os.path.realpath(path / "c" / "1" / "2")

    def eio(fd):
        if os.readlink(f"/proc/self/fd/{fd}") == failing:
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(OSError) as err:
        net().kernel(x(N), get="ntk", out=a)
    assert err.value.errno == errno.EIO
    monkeypatch.undo()
    assert (1, 2) not in storage.TileLedger(a).done()
    net().kernel(x(N), get="ntk", out=a, resume=True)
    assert np.array_equal(a[:], net().kernel(x(N), get="ntk", tile=TILE).numpy())


@pytest.mark.parametrize("flag", [[], ["--no-fsync"]], ids=["default", "no-fsync"])
def test_cli_fsyncs_unless_told_not_to(tmp_path, fsyncs, flag, monkeypatch):
    from click.testing import CliRunner

    from ntkit.cli import main

    np.save(tmp_path / "X.npy", x(30).numpy())
    monkeypatch.chdir(tmp_path)
    for out in ("K.zarr", "K.npy"):
        del fsyncs[:]
        r = CliRunner().invoke(main, ["kernel", "X.npy", "--out", out, "--tile", "16",
                                      "--depth", "1", *flag])
        assert r.exit_code == 0, r.output
        if flag:
            assert fsyncs == [], out
            continue
        target = os.path.realpath(tmp_path / out)
        if out == "K.zarr":
            check_order(fsyncs, target, "ntk", True)
        else:  # the temporary file's bytes, then the directory that renamed it
            paths = [p for p, _ in fsyncs]
            parts = [k for k, p in enumerate(paths) if ".K.npy." in p]
            assert parts and paths[-1] == os.path.realpath(tmp_path)
