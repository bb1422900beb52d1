"""The tile scheduler: tile sizes, the order of tiles, threads, and covariance replay.

A kernel over (x1, x2) is computed in tiles of t1 × t2 examples, each running the whole
kernel map (`ntkit.engine.compiled.tile_function`). With x2 = x1 only the tiles on and
above the diagonal are computed (the writers mirror them). Tiles of any size work: the
last row/column of tiles is simply smaller.

Memory: a tile of t1 × t2 examples holds a few arrays of t1·t2·E entries, where E is
what each example pair stores at the widest layer (1 for fully-connected nets, |S| for
same-position spatial kernels, |S|² for full position-position ones, see
`ntkit.kernel`), plus the per-example covariances (t1 + t2)·E. The default tile is the
largest whose estimate stays under the memory budget (`ntkit.engine.memory`), split
between the worker threads; on a CPU it is also capped to stay near the caches
(`DEFAULT_TILE` rows for fully-connected nets, `CPU_TILE_BYTES` of working set for
spatial ones), since larger tiles there are slower, not faster.

Spatial nets map each example's own covariance chain once, not once per tile: a first
pass records every block's per-position variances after each layer (with x2 = x1 that
pass is the diagonal tiles themselves), and the other tiles replay them
(`ntkit.kernel.CovTrace`). On full position-position storage that halves the work at
large n (a tile used to map 2t own covariances for its t² pairs), and a single pair per
tile becomes the fastest CPU tile. Tiles holding identical example pairs
(`ntkit.engine.pairs`) map their own covariances, which those pairs need.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

import torch
from torch import Tensor

from ntkit.engine.inputs import aligned
from ntkit.engine.pairs import pairs_in_tile
from ntkit.engine.plan import tile_patterns
from ntkit.engine.threads import torch_threads
from ntkit.kernel import CovTrace

# Square tiles of this many rows keep a tile's few live (tile, tile) float64 arrays in
# L2 cache on common CPUs; measured in benchmarks/bench_kernel.py.
DEFAULT_TILE = 256
# On a CPU, tiles whose working set exceeds the caches run memory-bound, and one big tile
# uses threads inside each op (fork/join barriers) instead of whole tiles per thread:
# measured on 2 cores, float32, 200 images 3×32×32, 8 conv layers + Flatten, 0.10 ms per
# entry with 16-image tiles against 0.40 ms with one 200-image tile; Myrtle-5, float64,
# 12 images, idle machine: 97 / 110 / 139 ms per entry with tiles of 2 / 4 / 6 images.
CPU_TILE_BYTES = 16 * 2**20
# Live arrays of a tile's size at the widest layer (nngp, ntk, the dual's temporaries,
# a padded copy): the factor of the memory estimate. Measured peak/estimate ≤ 1 in
# tests/engine/test_memory_budget.py.
LIVE_ARRAYS = 8


def tile_slices(n: int, tile: int) -> list[slice]:
    """Consecutive slices of ``tile`` examples covering range(n) (the last may be short)."""
    return [slice(i, min(i + tile, n)) for i in range(0, n, tile)]


def pair_entries(x: Tensor, full: bool) -> int:
    """Entries one example pair stores at the input (the widest layer): 1, |S| or |S|²."""
    positions = math.prod(x.shape[2:]) if x.ndim > 2 else 1
    return positions**2 if full else positions


def auto_tile(x: Tensor, full: bool, dtype: torch.dtype, budget: int, n1: int,
              n2: int, traced: bool = False) -> int:
    """Largest square tile whose working set fits ``budget`` bytes (see module docstring).

    Working set ≈ LIVE_ARRAYS · itemsize · E · (t² + 2t) for E = `pair_entries`.
    ``traced``: the tiles replay a `CovTrace` instead of mapping their own covariances.
    """
    e = pair_entries(x, full) * torch.empty((), dtype=dtype).element_size() * LIVE_ARRAYS
    t = max(1, int(math.isqrt(max(budget // e, 1) + 1) - 1))
    if x.device.type == "cpu":
        # Cache-sized tiles (see CPU_TILE_BYTES). Untraced spatial tiles keep at least 2
        # examples a side: each also maps its examples' own covariances, 2t of them for
        # t² pairs, as costly as a pair each on full storage. Traced ones map none, and a
        # single pair is then fastest (Myrtle-5, float64, 8 images: 40 / 54 / 98 ms per
        # entry with tiles of 1 / 2 / 4, against 72 ms untraced with 2).
        floor = 1 if traced else 2
        cap = DEFAULT_TILE if x.ndim == 2 else max(floor, math.isqrt(CPU_TILE_BYTES // e))
        t = min(t, cap)
    return max(1, min(t, max(n1, n2)))


def workers(device: torch.device, n_tiles: int, compiled: bool) -> int:
    """Threads that run whole tiles: one per core on a CPU (eager), else 1."""
    if device.type != "cpu" or compiled or n_tiles < 2:
        return 1
    return max(1, min(torch.get_num_threads(), n_tiles))


def run_parallel(run_tile: Callable, tasks, n_workers: int, tick: Callable) -> None:
    """Tasks in parallel threads, each op single-threaded.

    A tile's ops are small (a (256, 256) block), so intra-op threading spends its time in
    fork/join barriers, and on a busy machine a barrier waits for a descheduled core
    (measured: 10-25× slower with 2 threads on a loaded 2-core box). Whole tiles per
    thread need no barrier; torch releases the GIL inside each op. Tiles write disjoint
    blocks of the output, so no locking is needed.
    """
    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="ntkit-tile")
    try:
        with torch_threads(1):
            futures = {pool.submit(run_tile, p): p for p in tasks}
            for f in as_completed(futures):
                if f.exception() is not None:
                    break
                tick(futures[f])
            for f in futures:
                if f.done() and f.exception() is not None:
                    raise f.exception()
    finally:
        # On error or Ctrl-C, drop queued tiles rather than finishing them.
        pool.shutdown(wait=True, cancel_futures=True)


class TileScheduler:
    """Runs the tiles ``pairs`` ((i, j) block indices into the row slices ``b1`` and
    column slices ``b2``) of one planned evaluation in this process, calling
    ``finish(i, j, k)`` with each finished tile's `Kernel`.

    ``fn``/``fn_diag``: the tile functions for off-diagonal and (x2 = x1) diagonal
    tiles. ``use_trace``: replay recorded covariance chains (see module docstring).
    ``pattern``: the call's graph patterns (`ntkit.engine.plan.Plan.pattern`), indexed
    with each tile's rows and columns.
    ``tick(n)``: progress callback, n output tiles finished.
    """

    def __init__(self, x1, x2, b1, b2, pairs, fn, fn_diag, *, same, use_trace: bool,
                 finish: Callable, tick: Callable, device: torch.device, compiled: bool,
                 pattern: tuple | None = None):
        self.x1, self.x2, self.b1, self.b2 = x1, x2, b1, b2
        self.sym = x2 is None
        self.pairs, self.fn, self.fn_diag = pairs, fn, fn_diag
        self.same, self.use_trace = same, use_trace
        self.pattern = pattern
        self.finish, self.tick = finish, tick
        self.device, self.compiled = device, compiled
        self.pending = set(pairs)
        self.recs1: dict[int, list[Tensor]] = {}
        self.recs2: dict[int, list[Tensor]] = {}

    def record(self, task) -> None:
        """First pass of a traced run: each block's own covariance chain, recorded. With
        x2 = x1 that is the diagonal tile itself (stored when pending); otherwise the
        block against one example (2t + 1 maps for t rows), or, for t <= 2, its own
        diagonal tile (t² + t maps; one example alone costs a single map)."""
        side, i = task
        xs, blocks, recs = ((self.x1, self.b1, self.recs1) if side == 1
                            else (self.x2, self.b2, self.recs2))
        xr = aligned(xs[blocks[i]])
        tr = CovTrace()
        # This block's own patterns: pattern1 for x1's blocks (and all on the symmetric
        # path), pattern2 for x2's.
        pat = None if self.pattern is None else (self.pattern[0 if side == 1 else 1],)
        if self.sym or xr.shape[0] <= 2:
            own = None if pat is None else tile_patterns(pat * 2, blocks[i], None, True)
            k = self.fn_diag(xr, trace=tr, pattern=own,
                             same=pairs_in_tile(self.same, blocks[i], blocks[i])
                             if self.sym else None)
            if self.sym and (i, i) in self.pending:
                self.finish(i, i, k)
        else:
            r = blocks[i]
            own = None if pat is None else tile_patterns(
                pat * 2, r, slice(r.start, r.start + 1), False)
            self.fn(xr, xr[:1], trace=tr, pattern=own)
        recs[i] = tr.steps

    def run_tile(self, pair) -> None:
        i, j = pair
        r, c = self.b1[i], self.b2[j]
        xr = aligned(self.x1[r])
        tile_same = pairs_in_tile(self.same, r, c)
        diag = self.sym and i == j
        pat = tile_patterns(self.pattern, r, None if diag else c, self.sym)
        if diag:
            k = self.fn_diag(xr, same=tile_same, pattern=pat)
        elif tile_same is not None:  # maps its own covariances (the pairs need them)
            k = self.fn(xr, aligned((self.x1 if self.sym else self.x2)[c]), same=tile_same,
                        pattern=pat)
        elif self.use_trace:
            tr = CovTrace(self.recs1[i], (self.recs1 if self.sym else self.recs2)[j])
            k = self.fn(xr, aligned((self.x1 if self.sym else self.x2)[c]), trace=tr,
                        pattern=pat)
            if tr.pos != len(tr.steps):
                raise RuntimeError("internal error: a tile replayed fewer covariance maps "
                                   "than its recording made")
        else:
            k = self.fn(xr, aligned((self.x1 if self.sym else self.x2)[c]), pattern=pat)
        self.finish(i, j, k)

    def phases(self) -> list[tuple[list, Callable, Callable]]:
        """(tasks, run, counts) per phase; counts(task): whether it finishes a tile."""
        pairs = self.pairs
        if not self.use_trace:
            return [(pairs, self.run_tile, lambda t: True)]
        if self.sym:
            blocks = sorted({i for p in pairs for i in p})
            return [([(1, i) for i in blocks], self.record,
                     lambda t: (t[1], t[1]) in self.pending),
                    ([p for p in pairs if p[0] != p[1]], self.run_tile, lambda t: True)]
        first = ([(1, i) for i in sorted({i for i, _ in pairs})]
                 + [(2, j) for j in sorted({j for _, j in pairs})])
        return [(first, self.record, lambda t: False), (pairs, self.run_tile, lambda t: True)]

    def run(self) -> None:
        for tasks, fn_task, counts in self.phases():
            def tick(task, counts=counts):
                if counts(task):
                    self.tick(1)

            n = workers(self.device, len(tasks), self.compiled)
            if n == 1:
                for task in tasks:
                    fn_task(task)
                    tick(task)
            else:
                run_parallel(fn_task, tasks, n, tick)
