"""Dask: generated networks on a LocalCluster equal the in-memory kernel (bitwise for
fully-connected nets), and a worker killed mid-run never yields a wrong kernel: the call
finishes correctly on the remaining (or restarted) workers, or raises. Slow: a process
cluster takes seconds to start."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch
from generator import example_inputs, generate, to_ntkit
from kernel_compare import assert_kernels_close

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def test_generated_nets_on_dask_equal_memory(client):
    for seed in range(12):
        arch = generate(seed, nt=True)
        x1, _ = example_inputs(arch, seed=seed)
        x = torch.from_numpy(np.concatenate([x1, 1.7 * x1[::-1]]))
        net = to_ntkit(arch)
        try:
            ref = net.kernel(x, get="ntk", tile=4)
        except FloatingPointError:
            continue
        got = net.kernel(x, get="ntk", tile=4, client=client)
        if len(arch["input"]) == 1:  # fully connected: the same tiles, bitwise
            assert got.numpy().tobytes() == ref.numpy().tobytes(), seed
        else:
            assert_kernels_close(got, ref, identical="diagonal", corr=1.0, name=str(seed))


def test_worker_killed_mid_run(client):
    from ntkit.sklearn import make_network

    x = torch.from_numpy(np.random.default_rng(3).standard_normal((1600, 8)))
    net = make_network(4, "relu", 1.4, 0.1)
    ref = net.kernel(x, get="ntk", tile=100)
    result: dict = {}

    def run():
        try:
            result["k"] = net.kernel(x, get="ntk", tile=100, client=client)
        except Exception as e:  # noqa: BLE001 -- a clear failure is allowed
            result["error"] = e

    t = threading.Thread(target=run)
    t.start()
    time.sleep(1.5)
    victim = sorted(client.scheduler_info()["workers"])[0]
    assert t.is_alive(), "the run ended before the kill: make it longer"
    try:
        client.run(lambda: os._exit(1), workers=[victim])
    except Exception:  # noqa: BLE001 -- the worker dies before it can answer
        pass
    t.join(timeout=600)
    assert not t.is_alive()
    print("worker killed mid-run:", "finished" if "k" in result else repr(result["error"]))
    if "k" in result:
        assert result["k"].numpy().tobytes() == ref.numpy().tobytes()
    else:
        assert str(result["error"]), "a failure must say what went wrong"
