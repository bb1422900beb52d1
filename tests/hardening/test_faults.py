"""Faults that lose nothing: `ntkit kernel --out K.zarr` killed by SIGKILL, SIGTERM or
SIGINT (Ctrl-C) at a random tile always resumes to the bitwise result of an
uninterrupted run, and a full disk (ENOSPC, simulated) gives a clear error and an array
that resumes to the same bytes.

Default: one SIGTERM kill; the slow profile kills with each signal and repeats 21 times.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from ntkit.engine import storage  # noqa: E402
from ntkit.sklearn import make_network  # noqa: E402

N, TILE, DEPTH = 240, 20, 3  # 12 row blocks: 78 tiles
TOTAL = 12 * 13 // 2
SIGNALS = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    X = np.random.default_rng(0).standard_normal((N, 6))
    np.save(d / "X.npy", X)
    ref = storage.create_kernel_array(str(d / "ref.zarr"), N, tile=TILE)
    make_network(DEPTH, "relu", 1.5, 0.05).kernel(X, get="ntk", out=ref)
    return d, X, ref[:].tobytes()


def _args(out):
    return ["X.npy", "--out", out, "--depth", str(DEPTH), "--tile", str(TILE)]


def kill_and_resume(data, sig, at: int, name: str) -> tuple[int, bool]:
    """Start the CLI, send ``sig`` once ``at`` tiles are marked, resume; compare bytes.
    Returns (tiles done when killed, whether the signal arrived before the end)."""
    d, _, ref = data
    out = d / f"{name}.zarr"
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep
           + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ntkit.cli", "kernel", *_args(out.name)],
                            cwd=d, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    markers = out / ".ntkit" / "tiles"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if markers.is_dir() and len(os.listdir(markers)) >= at:
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.send_signal(sig)
        proc.wait()
    interrupted = proc.returncode != 0
    done, total = storage.kernel_progress(zarr.open_array(str(out)))
    assert total == TOTAL and done <= total
    from click.testing import CliRunner

    from ntkit.cli import main

    cwd = os.getcwd()
    os.chdir(d)
    try:
        r = CliRunner().invoke(main, ["kernel", *_args(out.name), "--resume"])
    finally:
        os.chdir(cwd)
    assert r.exit_code == 0, r.output
    assert f"({total} of {total} tiles complete)" in r.output
    assert zarr.open_array(str(out))[:].tobytes() == ref, (sig, at, "result differs")
    return done, interrupted


# One signal by default (each kill costs an interpreter start, ~10-20 s on a loaded
# 2-core machine; tests/test_cli_resume.py kills with SIGKILL already); all three, and
# the repeats, under the slow marker.
@pytest.mark.parametrize("sig", [pytest.param(s, marks=() if s == signal.SIGTERM else
                                              pytest.mark.slow) for s in SIGNALS],
                         ids=lambda s: s.name)
def test_killed_run_resumes_bitwise(data, sig):
    at = int(np.random.default_rng(int(sig)).integers(1, TOTAL - 10))
    kill_and_resume(data, sig, at, f"k{int(sig)}")


@pytest.mark.slow
def test_killed_runs_resume_bitwise_repeated(data):
    rng = np.random.default_rng(26)
    interrupted = 0
    for i in range(21):
        sig = SIGNALS[i % 3]
        at = int(rng.integers(0, TOTAL - 5))
        _, hit = kill_and_resume(data, sig, at, f"r{i}")
        interrupted += hit
    assert interrupted >= 15  # most runs were really cut short


def test_full_disk_gives_clear_error_then_resumes(data, monkeypatch):
    d, X, ref = data
    out = storage.create_kernel_array(str(d / "enospc.zarr"), N, tile=TILE)
    net = make_network(DEPTH, "relu", 1.5, 0.05)
    real = type(out).__setitem__
    calls = {"n": 0}

    def full_disk(self, key, value):
        calls["n"] += 1
        if calls["n"] > 7:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, key, value)

    monkeypatch.setattr(type(out), "__setitem__", full_disk)
    with pytest.raises(OSError) as err:
        net.kernel(X, get="ntk", out=out)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    done, total = storage.kernel_progress(zarr.open_array(str(d / "enospc.zarr")))
    assert 0 < done < total  # the tiles written before the disk filled are kept
    again = zarr.open_array(str(d / "enospc.zarr"))
    net.kernel(X, get="ntk", out=again, resume=True)
    assert zarr.open_array(str(d / "enospc.zarr"))[:].tobytes() == ref
