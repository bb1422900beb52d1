"""Concurrency: `Layer.kernel` called from several Python threads at once gives the same
results, bitwise, as sequential calls (the engine's thread pools, allocator settings and
caches are shared by the calls)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from generator import example_inputs, generate, to_ntkit

SEEDS = [1, 5, 8, 12, 21, 40]


def _run(seed, tile):
    arch = generate(seed, nt=True)
    x1, x2 = example_inputs(arch, seed=seed)
    k = to_ntkit(arch).kernel(torch.from_numpy(x1), torch.from_numpy(x2),
                              get=("nngp", "ntk"), tile=tile)
    return k.nngp.numpy(), k.ntk.numpy()


def test_threads_equal_sequential():
    jobs = [(s, t) for s in SEEDS for t in (None, 2)]
    sequential = [_run(*j) for j in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda j: _run(*j), jobs * 2))
    for j, (ref, got) in enumerate(zip(sequential * 2, threaded, strict=True)):
        for a, b in zip(ref, got, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=str(jobs[j % len(jobs)]))
