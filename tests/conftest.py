"""Suite-wide test settings: pin torch's intra-op threads to one.

Why: torch starts one OpenMP thread per core. The suite's tensors are small (mostly
n ≤ a few hundred), so each op pays the threads' wake-up and barrier costs rather than
gaining speed, and on a shared or busy machine it is far worse, since spinning threads
wait for cores held by other processes (a 300×300 QR under a load of 9 on 2 cores was
30× slower with 2 threads than with 1). One thread makes the suite's wall time
independent of the core count and of other processes. The engine tests
(tests/engine/conftest.py) run with min(2, cores) threads, so the engine's parallel tile
workers and the fused duals' row split stay covered; tests that measure threading set
their own count and restore it. Override with NTKIT_TEST_THREADS=<n> (then used by every
test, the engine's included).
"""

from __future__ import annotations

import os

import torch


def pytest_configure(config) -> None:
    threads = int(os.environ.get("NTKIT_TEST_THREADS", 1))
    torch.set_num_threads(max(1, threads))
