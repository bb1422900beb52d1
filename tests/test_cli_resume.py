"""`ntkit kernel X.npy --out K.zarr`, killed with SIGKILL mid-run, then `--resume`: the
result is byte-identical to an uninterrupted computation."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from kernel_compare import assert_kernels_close

zarr = pytest.importorskip("zarr")

from ntkit.cli import main  # noqa: E402
from ntkit.engine import storage  # noqa: E402

N, TILE, DEPTH = 400, 20, 3  # 20 row blocks: 210 tiles, each written and marked


def cli(*args):
    return [sys.executable, "-m", "ntkit.cli", "kernel", *args]


def test_sigkill_then_resume_is_byte_identical(tmp_path):
    X = np.random.default_rng(0).standard_normal((N, 6))
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "K.zarr"
    args = ["X.npy", "--out", "K.zarr", "--depth", str(DEPTH), "--tile", str(TILE)]
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get(
        "PYTHONPATH", "")}
    proc = subprocess.Popen(cli(*args), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    markers = out / ".ntkit" / "tiles"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if markers.is_dir() and len(os.listdir(markers)) >= 15:
                break
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done, total = storage.kernel_progress(zarr.open_array(str(out)))
    assert total == 20 * 21 // 2 and 15 <= done < total, (done, total)

    # Resume in this process (the same command; saves a second interpreter start).
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = CliRunner().invoke(main, ["kernel", *args, "--resume"])
    finally:
        os.chdir(cwd)
    assert r.exit_code == 0, r.output
    assert f"resuming: {done} of {total} tiles done" in r.output
    assert f"({total} of {total} tiles complete)" in r.output
    got = zarr.open_array(str(out))[:]

    # The uninterrupted run: the same network and tiles, in this process.
    from ntkit.sklearn import make_network

    ref = storage.create_kernel_array(str(tmp_path / "ref.zarr"), N, tile=TILE)
    make_network(DEPTH, "relu", 1.5, 0.05).kernel(X, get="ntk", out=ref)
    assert got.tobytes() == ref[:].tobytes()


def test_cli_zarr_errors_are_one_line(tmp_path):
    X = np.random.default_rng(1).standard_normal((30, 3))
    np.save(tmp_path / "X.npy", X)
    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=tmp_path):
        np.save("X.npy", X)
        r = runner.invoke(main, ["kernel", "X.npy", "--out", "K.zarr", "--tile", "8"])
        assert r.exit_code == 0, r.output
        assert "wrote K.zarr (10 of 10 tiles complete)" in r.output
        assert_kernels_close(zarr.open_array("K.zarr")[:], main_kernel(X), identical="diagonal")
        r = runner.invoke(main, ["kernel", "X.npy", "--out", "K.zarr"])
        assert r.exit_code == 2 and "exists; pass --resume" in r.output
        r = runner.invoke(main, ["kernel", "X.npy", "--out", "K.zarr", "--resume",
                                 "--depth", "2"])
        assert r.exit_code == 2 and "cannot resume" in r.output and "layer" in r.output
        r = runner.invoke(main, ["kernel", "X.npy", "--out", "K.zarr", "--resume",
                                 "--tile", "5"])
        assert r.exit_code == 2 and "differs from the tiles" in r.output
        r = runner.invoke(main, ["kernel", "X.npy", "--out", "K.npy", "--resume"])
        assert r.exit_code == 2 and "--resume needs a .zarr" in r.output
        r = runner.invoke(main, ["kernel", "X.npy", "--out", "K.h5"])
        assert r.exit_code == 2 and ".npy or .zarr" in r.output
        np.save("Y.npy", X[:20])
        r = runner.invoke(main, ["kernel", "Y.npy", "--out", "K.zarr", "--resume"])
        assert r.exit_code == 2 and "INPUT has 20 rows" in r.output
        bad = X.copy()
        bad[17, 1] = np.inf
        np.save("B.npy", bad)
        r = runner.invoke(main, ["kernel", "B.npy", "--out", "B.zarr", "--tile", "8"])
        assert r.exit_code == 2 and "row 17" in r.output
        # --upper: the tiles on and above the diagonal only (4 of 4 row blocks: 10 tiles,
        # 6 chunks fewer than the full array); read back symmetric; resumed alike only.
        r = runner.invoke(main, ["kernel", "X.npy", "--out", "U.zarr", "--tile", "8",
                                 "--upper"])
        assert r.exit_code == 0 and "(10 of 10 tiles complete)" in r.output, r.output
        u = zarr.open_array("U.zarr")
        assert storage.is_upper(u)
        np.testing.assert_array_equal(storage.read_block(u, slice(0, 30), slice(0, 30)),
                                      zarr.open_array("K.zarr")[:])
        r = runner.invoke(main, ["kernel", "X.npy", "--out", "U.zarr", "--resume"])
        assert r.exit_code == 2 and "written with --upper" in r.output
        r = runner.invoke(main, ["kernel", "X.npy", "--out", "U.npy", "--upper"])
        assert r.exit_code == 2 and "--upper needs a .zarr" in r.output


def main_kernel(X):
    from ntkit.sklearn import make_network

    return make_network(1, "relu", 1.5, 0.05).kernel(X, get="ntk").numpy()
