"""Shared fixtures of the engine tests."""

import contextlib

import pytest


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
