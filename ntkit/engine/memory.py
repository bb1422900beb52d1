"""Memory budgets: how much a computation may hold at once, per device.

Every long computation in ntkit (analytic kernels, empirical NTKs, Monte Carlo) takes a
``memory_budget`` in bytes and tiles its work to stay under it. The default rule:

- CUDA: a quarter of the device's *free* memory (``torch.cuda.mem_get_info``) at call
  time, so other tensors of the session and the caching allocator keep room;
- CPU: a quarter of the *available* RAM (``MemAvailable`` in /proc/meminfo, or psutil
  where present), capped at 8 GiB: on a CPU, tiles beyond a few tens of MB buy no speed
  (they fall out of cache), while a large budget would only raise the peak.

A budget is a bound on the working set of the tiles, not on the output: an (n1, n2)
result is allocated (or written to ``out=``) in addition. What the engine guarantees for
an analytic kernel, as growth of the process's peak memory during the call:

    peak growth ≤ memory_budget + outputs + recorded variances + ENGINE_OVERHEAD,

where the recorded variances (spatial nets, `ntkit.kernel.CovTrace`) are used only when
they fit a quarter of the budget, and ``ENGINE_OVERHEAD`` covers what is not sized by
the budget: worker-thread stacks, the allocator's retained pages, per-tile small tensors
and lazily initialized library buffers. Measured on Linux (glibc, 2 threads, float64),
a call with a budget of one byte (one example pair per tile) grows the peak by 2.5-3
MiB; the constant is stated with room for other allocators and thread counts.
"""

from __future__ import annotations

import os

import torch

GiB = 2**30
#: Fraction of free device memory / available RAM taken by default.
DEFAULT_FRACTION = 0.25
#: Cap of the default CPU budget (see module docstring).
CPU_CAP = 8 * GiB
#: Budget when the free memory cannot be determined.
FALLBACK = 1 * GiB
#: Memory the engine may use beyond the budget, outputs and recorded variances (see the
#: module docstring; tested in tests/engine/test_memory_budget.py).
ENGINE_OVERHEAD = 16 * 2**20


def available_bytes(device: torch.device | str | None = None) -> int | None:
    """Free memory on ``device`` in bytes (CUDA: free device memory; CPU: available RAM).

    Returns None when it cannot be determined.
    """
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
            return int(free)
        except Exception:  # noqa: BLE001 - no driver, no context: fall back
            return None
    try:
        import psutil  # optional

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing: read /proc/meminfo
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def default_memory_budget(device: torch.device | str | None = None) -> int:
    """The default budget in bytes for work on ``device`` (see module docstring)."""
    device = torch.device("cpu" if device is None else device)
    free = available_bytes(device)
    if free is None:
        return FALLBACK
    budget = int(free * DEFAULT_FRACTION)
    if device.type == "cpu":
        budget = min(budget, CPU_CAP)
    return max(budget, 16 * 2**20)


def check_memory_budget(budget, device: torch.device | str | None = None) -> int:
    """Validate a user's ``memory_budget`` (bytes, or None for the default)."""
    if budget is None:
        return default_memory_budget(device)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f"memory_budget must be a number of bytes or None, got {budget!r}")
    if not (budget > 0 and budget < float("inf")):
        raise ValueError(f"memory_budget must be a positive finite number of bytes, "
                         f"got {budget!r}")
    return int(budget)
