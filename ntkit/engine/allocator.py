"""Keep freed memory for reuse while a kernel is computed on the CPU (glibc only).

Why: a spatial tile's arrays are tens of MiB each (a 2×2 tile of 32×32 images on full
storage is 2·2·1024² float64 entries = 32 MiB), and every layer allocates a few of them.
glibc's malloc serves allocations above its mmap threshold (dynamic, at most 32 MiB) with
a fresh ``mmap`` and returns them with ``munmap`` when freed, so each array is new zeroed
pages, page-faulted in 4 KiB at a time. Measured on Myrtle-5, float64, 4 CIFAR-sized
images, one thread: 430-525 thousand minor faults and 1.4-1.9 s of system time per call
against 2.0-2.3 s of user time; with freed memory kept, 8-53 thousand faults and
0.03-0.16 s of system time (same user time). float32 arrays sit under the threshold,
which is why float32 was far less affected.

What: `retain_freed_memory()` raises glibc's mmap and trim thresholds for the duration
of the computation, so freed arrays go back to the heap and the next tile reuses their
pages, and on exit hands the free memory back to the OS with ``malloc_trim(0)`` and sets
the thresholds to the values glibc's own dynamic rule converges to after large frees
(32 MiB mmap threshold, 64 MiB trim threshold). The peak memory of the computation is
about unchanged: only memory that was already free is kept (its reuse may fragment the
heap a little), and only until the end; the final ``malloc_trim`` costs 0.1-0.3 s.

Elsewhere (macOS, Windows, musl) this is a no-op: their allocators differ, and nothing
is assumed about them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_KEEP = 2**31 - 1           # mallopt takes an int
_MMAP_AFTER = 32 * 2**20    # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
_TRIM_AFTER = 64 * 2**20    # 2 × that, as glibc's dynamic rule sets it

_lock = threading.Lock()
_depth = 0
_libc = None


def _glibc():
    """The C library if it is glibc with mallopt/malloc_trim, else None (cached)."""
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                libc.gnu_get_libc_version.restype = ctypes.c_char_p
                libc.gnu_get_libc_version()  # absent on musl: AttributeError
                libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
                libc.malloc_trim.argtypes = (ctypes.c_size_t,)
                _libc = libc
            except (OSError, AttributeError):
                pass
    return _libc or None


def set_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    """Set glibc's mmap and trim thresholds for the whole process (bytes, ≤ 2³¹ − 1).

    For processes that only compute tiles (e.g. Dask workers, `ntkit.engine.distributed`).
    Returns False, doing nothing, where the C library is not glibc.
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    return True


@contextlib.contextmanager
def retain_freed_memory(enabled: bool = True) -> Iterator[None]:
    """Within the block, freed large arrays stay in the heap for reuse (see module doc).

    Re-entrant and thread-safe: the thresholds are set by the outermost block and
    restored when the last concurrent block exits.
    """
    global _depth
    libc = _glibc() if enabled else None
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, _KEEP)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP)
            # Worker threads started now share the main heap, whose thresholds these
            # are; a thread's own arena lives in 64 MiB heaps that are unmapped as soon
            # as they empty, which would bring the page faults back.
            libc.mallopt(_M_ARENA_MAX, 1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_AFTER)
                libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_AFTER)
                libc.mallopt(_M_ARENA_MAX, 0)  # 0: glibc's default (8 per core)
                libc.malloc_trim(0)
