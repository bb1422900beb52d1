"""Memory budgets: the tile rule, and peak memory measured in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from kernel_compare import assert_kernels_close

from ntkit import layers as nl
from ntkit.engine.evaluate import (
    CPU_TILE_BYTES,
    DEFAULT_TILE,
    LIVE_ARRAYS,
    auto_tile,
    pair_entries,
)
from ntkit.engine.memory import ENGINE_OVERHEAD, check_memory_budget, default_memory_budget

MiB = 2**20


def test_tile_rule():
    x_fc = torch.zeros(10_000, 64, dtype=torch.float64)
    # CPU, fully connected: capped where larger tiles stop helping (cache).
    assert auto_tile(x_fc, False, torch.float64, 2**34, 10_000, 10_000) == DEFAULT_TILE
    # A small budget shrinks it: t² entries × 8 bytes × LIVE_ARRAYS ≤ budget.
    t = auto_tile(x_fc, False, torch.float64, MiB, 10_000, 10_000)
    assert t < DEFAULT_TILE
    assert (t + 2) * t * 8 * LIVE_ARRAYS <= MiB < (t + 3) * (t + 1) * 8 * LIVE_ARRAYS
    # Full spatial storage: E = |S|² entries per pair. (On the meta device: the budget
    # rule alone, as on a GPU; a CPU also caps the tile near its caches, below.)
    x_img = torch.zeros(100, 3, 16, 16, dtype=torch.float64, device="meta")
    assert pair_entries(x_img, True) == 256**2 and pair_entries(x_img, False) == 256
    t = auto_tile(x_img, True, torch.float64, 512 * MiB, 100, 100)
    per_pair = 256**2 * 8 * LIVE_ARRAYS
    assert (t * t + 2 * t) * per_pair <= 512 * MiB
    assert auto_tile(x_img, True, torch.float64, 1, 100, 100) == 1   # never below one pair
    assert auto_tile(x_img, True, torch.float32, 512 * MiB, 100, 100) > t  # half the bytes
    # CPU: cache-sized spatial tiles, never below 2 examples a side (the budget permitting).
    x_cpu = torch.zeros(100, 3, 16, 16, dtype=torch.float64)
    t_cpu = auto_tile(x_cpu, False, torch.float64, 2**34, 100, 100)
    assert t_cpu * t_cpu * 256 * 8 * LIVE_ARRAYS <= CPU_TILE_BYTES
    assert (t_cpu + 1) ** 2 * 256 * 8 * LIVE_ARRAYS > CPU_TILE_BYTES
    assert auto_tile(x_cpu, True, torch.float64, 2**34, 100, 100) == 2
    assert auto_tile(x_cpu, True, torch.float64, 1, 100, 100) == 1
    # Tiles that replay a CovTrace map no covariances of their own: one pair is the floor.
    # (32×32 images: one full pair's working set alone exceeds CPU_TILE_BYTES.)
    x_big = torch.zeros(100, 3, 32, 32, dtype=torch.float64)
    assert auto_tile(x_big, True, torch.float64, 2**34, 100, 100) == 2
    assert auto_tile(x_big, True, torch.float64, 2**34, 100, 100, traced=True) == 1


def test_budget_validation_and_defaults():
    assert default_memory_budget("cpu") >= 16 * MiB
    assert check_memory_budget(None) == default_memory_budget("cpu")
    assert check_memory_budget(123456) == 123456
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="memory_budget"):
            check_memory_budget(bad)
    with pytest.raises(TypeError, match="memory_budget"):
        check_memory_budget("1GB")
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="memory_budget"):
        nl.serial(nl.Conv(3, (3, 3)), nl.GlobalAvgPool()).kernel(x, memory_budget=-1)


def test_results_do_not_depend_on_the_budget():
    x = torch.randn(9, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    net = nl.serial(nl.Conv(4, (3, 3), padding="SAME"), nl.ReLU(), nl.AvgPool((2, 2)),
                    nl.GlobalAvgPool(), nl.Dense(1))
    ref = net.kernel(x, get="ntk", memory_budget=2**30)
    small = net.kernel(x, get="ntk", memory_budget=1)   # one example pair per tile
    assert_kernels_close(small, ref, identical="diagonal", name="budget 1 vs 1 GiB")


_PEAK = textwrap.dedent("""
    import json, sys, torch
    from ntkit import layers as nl

    def hwm():
        # VmHWM: this process's own peak RSS. (ru_maxrss would also count the parent's
        # peak: Linux carries it over fork + exec.)
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))

    torch.manual_seed(0)
    budget, tile = int(sys.argv[1]), int(sys.argv[2]) or None
    x = torch.randn(16, 3, 10, 10, dtype=torch.float64)
    net = nl.serial(nl.Conv(8, (3, 3), padding="SAME"), nl.ReLU(), nl.AvgPool((2, 2)),
                    nl.Conv(8, (3, 3)), nl.ReLU(), nl.GlobalAvgPool(), nl.Dense(1))
    net.kernel(x[:2], get="ntk")                      # warm up allocator and libraries
    before = hwm()
    net.kernel(x, get=("nngp", "ntk"), memory_budget=budget, tile=tile)
    after = hwm()
    print(json.dumps({"growth": after - before}))
""")


def _peak_growth(budget: int, tile: int = 0) -> int:
    res = subprocess.run([sys.executable, "-c", _PEAK, str(budget), str(tile)],
                         capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["growth"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_stays_under_the_budget():
    # 16 images of 10×10: one pair's full covariance is 100² float64 = 80 kB, so a single
    # 16×16 tile holds ~160 MB of such arrays. With a 24 MiB budget the tiles shrink and
    # the peak (measured as max RSS growth of a fresh process) stays under what the engine
    # guarantees (ntkit.engine.memory): the budget, plus the outputs (two 16×16 float64
    # kernels) and the recorded variances (16 examples × Σ_layers |S| ≤ 16 × 500
    # float64), plus ENGINE_OVERHEAD.
    extras = 2 * 16 * 16 * 8 + 16 * 500 * 8
    budget = 24 * MiB
    small = _peak_growth(budget)
    bound = budget + extras + ENGINE_OVERHEAD
    assert small <= bound, f"peak grew by {small / MiB:.1f} MiB > {bound / MiB:.1f} MiB"
    big = _peak_growth(2**34, tile=16)                  # the whole batch as one tile
    assert big > 4 * small, (big / MiB, small / MiB)   # the tiling is what kept it small


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_engine_overhead_is_what_a_minimal_budget_costs():
    # A one-byte budget: tiles of one example pair, whose working set (a few 80 kB
    # arrays) is far below the constant; what remains is the engine's own overhead.
    growth = _peak_growth(1)
    assert growth <= ENGINE_OVERHEAD, f"{growth / MiB:.1f} MiB > {ENGINE_OVERHEAD / MiB} MiB"
