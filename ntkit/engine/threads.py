"""Temporarily set torch's intra-op thread count.

Small per-op workloads (kernel tiles, training of small nets) spend their time in the
fork/join barriers of intra-op threading, and on a busy machine a barrier waits for a
descheduled core: measured 2-70× slower with 2 threads than with 1 on a loaded 2-core box.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` intra-op threads (None: leave as is); restore afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
