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
        real_mark = storage.TileLedger.mark
        calls = []

        def mark_then_die(self, i, j):
            if len(calls) == n:
                raise KeyboardInterrupt
            calls.append((i, j))
            real_mark(self, i, j)

        monkeypatch.setattr(storage.TileLedger, "mark", mark_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(storage.TileLedger, "mark", real_mark)

    return killed
