"""Suite-wide test settings: pin torch's intra-op threads.

Why: torch starts one OpenMP thread per core. The suite's tensors are small (mostly
n ≤ a few hundred), so on many cores each op pays the threads' wake-up and barrier
costs rather than gaining speed: the whole suite took 183 s on a 16-core H200 host
against 57 s on 2 cores. On a shared or busy machine it is worse still, since spinning
threads wait for cores held by other processes (here, under a load of 9 on 2 cores, a
300×300 QR took 1.6 s with 2 threads and 0.05 s with 1). Pinning to min(2, cores) makes
the suite's wall time independent of the core count. Tests that measure threading set
their own count and restore it. Override with NTKIT_TEST_THREADS=<n>.
"""

from __future__ import annotations

import os

import torch


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pytest_configure(config) -> None:
    threads = int(os.environ.get("NTKIT_TEST_THREADS", min(2, _cores())))
    torch.set_num_threads(max(1, threads))
