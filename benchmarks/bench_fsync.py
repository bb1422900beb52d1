"""Cost of durable (fsync'ed) tile markers in zarr kernel outputs (issue 26).

Writes the same kernel into a local zarr array with ``durable=True`` (each tile's chunk
files, their directories and its marker fsync'ed; the default) and ``durable=False``,
alternating, and prints the median wall time of each and the cost per tile. Run where
the kernels would be written (``--dir``): the cost of an fsync depends on the disk.

    python benchmarks/bench_fsync.py --n 2048 --tile 256 --reps 5
    python benchmarks/bench_fsync.py --n 1024 --tile 64 --reps 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ntkit.engine import storage
from ntkit.sklearn import make_network


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", default=".", help="directory to write the arrays in")
    a = ap.parse_args()
    X = np.random.default_rng(0).standard_normal((a.n, 32))
    net = make_network(a.depth, "relu", 1.5, 0.05)
    b = -(-a.n // a.tile)
    tiles = b * (b + 1) // 2
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        for rep in range(a.reps + 1):  # the first round warms up (fused duals, caches)
            for durable in (True, False):
                path = Path(d) / f"K{int(durable)}.zarr"
                shutil.rmtree(path, ignore_errors=True)
                arr = storage.create_kernel_array(str(path), a.n, tile=a.tile,
                                                  durable=durable)
                t = time.perf_counter()
                net.kernel(X, get="ntk", out=arr)
                if rep:
                    times[durable].append(time.perf_counter() - t)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"n={a.n} tile={a.tile} tiles={tiles} depth={a.depth} reps={a.reps}")
    print(f"durable=True : {on:.3f} s  ({on / tiles * 1e3:.2f} ms/tile)")
    print(f"durable=False: {off:.3f} s  ({off / tiles * 1e3:.2f} ms/tile)")
    print(f"fsync cost   : {(on - off) / tiles * 1e3:.2f} ms/tile "
          f"({(on - off) / off * 100:+.1f} %)")


if __name__ == "__main__":
    main()
