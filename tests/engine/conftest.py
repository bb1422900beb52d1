"""Shared fixtures of the engine tests."""

import contextlib
import os

import pytest
import torch


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@pytest.fixture(autouse=True, scope="module")
def _engine_threads():
    """The suite runs single-threaded (tests/conftest.py); the engine's tests run with up
    to two threads so that its parallel tile workers (`ntkit.engine.schedule.workers`)
    and the fused duals' row split are exercised, as users' multi-core runs use them."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(os.environ.get("NTKIT_TEST_THREADS",
                                                    min(2, _cores())))))
    yield
    torch.set_num_threads(before)


@pytest.fixture
def killed_after_marks(monkeypatch):
    """``with killed_after_marks(n): net.kernel(..., out=zarr_array)``: the run stops with
    KeyboardInterrupt right after n tiles are marked complete, between two tiles, as a
    kill would (the SIGKILL case itself is tests/test_cli_resume.py); the block expects
    that interrupt, and marking works normally again after it."""
    storage = pytest.importorskip("ntkit.engine.storage")

    @contextlib.contextmanager
    def killed(n: int):
        # TileMarker.add is where the engine reports a tile whose chunks are written
        # (marked at once, or fsync'ed and marked by a background thread that the
        # interrupted call drains before it returns).
        real_add = storage.TileMarker.add
        calls = []

        def add_then_die(self, i, j):
            if len(calls) == n:
                raise KeyboardInterrupt
            calls.append((i, j))
            real_add(self, i, j)

        monkeypatch.setattr(storage.TileMarker, "add", add_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(storage.TileMarker, "add", real_add)

    return killed


@pytest.fixture
def one_thread():
    """One intra-op thread for a test that does not exercise the engine's parallel paths
    (compiled tiles run on one worker; finite-network Monte Carlo on tiny tensors), where
    a second thread only adds fork/join barriers that stall on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
