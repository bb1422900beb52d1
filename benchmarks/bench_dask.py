"""Dask overhead and the zarr (resumable) path against the in-RAM engine.

    python benchmarks/bench_dask.py [--n 20000] [--d 64] [--depth 3] [--skip-matvec]

Times the float64 NTK of a depth-3 ReLU FC net on x (n × d), all with 2 cores in use:

- single process, 2 torch threads (the engine runs two tiles at a time, one thread each);
- a LocalCluster(n_workers=2, threads_per_worker=1, processes=True): the same tiles, one
  task per row block, which the workers write into the driver's result in shared memory
  (cluster start-up and the workers' first import of torch are timed apart, in a
  warm-up call);
- the in-RAM kernel against ``out=`` a zarr array (256 × 256 chunks, one marker per
  tile), and a ``resume=True`` after forgetting half the tiles' markers;
- ``dask_matvec`` (K @ v on the cluster, no K formed: it computes all n² entries, not
  the symmetric half, so it costs about twice a kernel).

The fair comparison for the Dask overhead is single process × 2 threads against
2 workers × 1 thread: both use two cores and run two tiles at once. (Against one thread
the cluster would look better than it is.) Each number is one run on a shared 2-core
machine: expect noise of tens of percent when other jobs run; the table says the load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch

from ntkit import layers as nl


def relu_net(depth: int):
    layers = []
    for _ in range(depth):
        layers += [nl.Dense(512, 1.5, 0.05), nl.ReLU()]
    return nl.serial(*layers, nl.Dense(1, 1.5, 0.05))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--skip-matvec", action="store_true")
    args = ap.parse_args()

    from distributed import Client, LocalCluster
    from zarr.core.sync import sync  # StorePath.delete_sync is zarr >= 3.1.6 only

    from ntkit.engine import storage
    from ntkit.engine.distributed import dask_matvec

    net = relu_net(args.depth)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.d, generator=g, dtype=torch.float64)
    rows = []
    load0 = os.getloadavg()[0]

    torch.set_num_threads(2)
    k_ram, t_ram = timed(lambda: net.kernel(x, get="ntk", tile=256))
    rows.append(("single process, 2 threads (in RAM)", t_ram, ""))

    (cluster, client), t_start = timed(lambda: _cluster(LocalCluster, Client))
    try:
        _, t_warm = timed(lambda: net.kernel(x[:300], get="ntk", tile=256, client=client))
        k_dask, t_dask = timed(lambda: net.kernel(x, get="ntk", tile=256, client=client))
        rel = float((k_dask - k_ram).abs().max() / k_ram.abs().max())
        rows.append(("LocalCluster 2 workers × 1 thread", t_dask,
                     f"max |Δ|/max|K| = {rel:.1e}; cluster start {t_start:.1f} s, "
                     f"warm-up {t_warm:.1f} s (not included)"))
        del k_dask
        if not args.skip_matvec:
            v = torch.randn(args.n, generator=g, dtype=torch.float64)
            y, t_mv = timed(lambda: dask_matvec(client, net, x, v, tile=256))
            want = k_ram @ v
            rows.append(("dask_matvec K @ v (all n² entries)", t_mv,
                         f"rel. error {float((y - want).norm() / want.norm()):.1e}"))
    finally:
        client.close()
        cluster.close()

    tmp = tempfile.mkdtemp(prefix="bench_dask_")
    try:
        arr = storage.create_kernel_array(os.path.join(tmp, "K.zarr"), args.n, tile=256)
        _, t_z = timed(lambda: net.kernel(x, get="ntk", out=arr))
        same = np.array_equal(arr[:], k_ram.numpy())
        rows.append(("zarr out= (2 threads, markers)", t_z, f"bitwise equal to in-RAM: {same}"))
        ledger = storage.TileLedger(arr)
        done = sorted(ledger.done())
        for i, j in done[::2]:
            sync(ledger._key(i, j).delete())
        _, t_r = timed(lambda: net.kernel(x, get="ntk", out=arr, resume=True))
        same = np.array_equal(arr[:], k_ram.numpy())
        rows.append((f"zarr resume, {len(done[::2])} of {len(done)} tiles missing", t_r,
                     f"bitwise equal: {same}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nNTK, depth-{args.depth} ReLU FC, n = {args.n}, d = {args.d}, float64, tile 256; "
          f"load average {load0:.1f} → {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores (shared machine)")
    print(f"{'path':<44} {'time (s)':>9} {'vs in RAM':>10}  notes")
    for name, t, note in rows:
        print(f"{name:<44} {t:>9.1f} {100 * (t / t_ram - 1):>+9.0f}%  {note}")


def _cluster(LocalCluster, Client):
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    return cluster, Client(cluster)


if __name__ == "__main__":
    main()
