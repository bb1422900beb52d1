"""Analytic NTK of fully-connected nets: ntkit vs neural-tangents, side by side.

    bash benchmarks/setup_reference.sh            # once: neural-tangents in .venv-nt
    python benchmarks/bench_kernel.py [--n 1000 3000 5000] [--depth 5 20] [--repeat 3]

For each (activation, depth, n) it times the float64 NTK of x (n × 64) with itself in
both libraries on the same inputs (best of --repeat after one warm-up, which includes
XLA's compilation), and prints both times, the ratio, and the largest relative
difference between the two outputs, over all entries and off the diagonal (on the
diagonal, correlation 1, neural-tangents' arc-cosine angle carries a ~sqrt(eps) rounding
error; ntkit's diagonal is exact, see tests/layers/test_edge_cases.py). It also times
the "floor": the transcendental math alone (atan2+sqrt for ReLU, asin+sqrt for Erf) over
the same n(n+1)/2 × depth entries.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ntkit import layers as nl

ROOT = Path(__file__).resolve().parents[1]

NT_SCRIPT = r"""
import sys, types, json, time
sys.modules["neural_tangents.experimental"] = types.ModuleType("x")
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from neural_tangents import stax
cfg = json.loads(sys.argv[1])
x = np.load(cfg["x"])
act = {"relu": stax.Relu(), "erf": stax.Erf()}[cfg["act"]]
layers = []
for _ in range(cfg["depth"]):
    layers += [stax.Dense(512, W_std=cfg["w"], b_std=cfg["b"]), act]
_, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=cfg["w"], b_std=cfg["b"]))
kf = jax.jit(kernel_fn, static_argnames="get")
kf(x, None, get="ntk").block_until_ready()
times = []
for _ in range(cfg["repeat"]):
    t = time.perf_counter()
    k = kf(x, None, get="ntk").block_until_ready()
    times.append(time.perf_counter() - t)
np.save(cfg["out"], np.asarray(k))
print(json.dumps({"time": min(times)}))
"""


def ntkit_net(act: str, depth: int, w: float, b: float):
    layers = []
    for _ in range(depth):
        layers += [nl.Dense(512, w, b), nl.ReLU() if act == "relu" else nl.Erf()]
    return nl.serial(*layers, nl.Dense(1, w, b))


def time_best(fn, repeat: int) -> tuple[float, object]:
    fn()  # warm-up
    best, res = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t)
    return best, res


def floor_time(act: str, n: int, depth: int, tile: int, repeat: int) -> float:
    """Time of the per-entry transcendental calls alone, on the same number of entries,
    run the way the engine runs tiles (one single-threaded tile per worker thread)."""
    from concurrent.futures import ThreadPoolExecutor

    workers = torch.get_num_threads()
    entries = n * (n + 1) // 2 * depth
    reps = max(1, round(entries / (tile * tile)))

    def work(count):
        a = torch.rand(tile, tile, dtype=torch.float64) + 0.5
        c = torch.rand(tile, tile, dtype=torch.float64) * 0.5
        out = torch.empty_like(a)
        for _ in range(count):
            torch.sqrt(a, out=out)
            if act == "relu":
                torch.atan2(out, c, out=out)
            else:
                torch.asin(c, out=out)

    def run():
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                share = [reps // workers + (i < reps % workers) for i in range(workers)]
                list(pool.map(work, share))
        finally:
            torch.set_num_threads(workers)

    return time_best(run, repeat)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 3000, 5000])
    p.add_argument("--depth", type=int, nargs="+", default=[5, 20])
    p.add_argument("--act", nargs="+", default=["relu", "erf"])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--venv", default=str(ROOT / ".venv-nt"))
    args = p.parse_args()
    nt_python = Path(args.venv) / "bin" / "python"
    have_nt = nt_python.exists()
    if not have_nt:
        print(f"(neural-tangents venv not found at {args.venv}: run "
              "benchmarks/setup_reference.sh; timing ntkit only)")
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float64, d = 64")
    header = (f"{'act':5} {'depth':>5} {'n':>6} | {'ntkit s':>8} {'NT s':>8} {'NT/ntkit':>8} "
              f"| {'rel diff':>8} {'off-diag':>8} | {'floor s':>8} {'ntkit/floor':>11}")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for act in args.act:
        w, b = (2.0**0.5, 0.05) if act == "relu" else (1.3, 0.05)
        for depth in args.depth:
            net = ntkit_net(act, depth, w, b)
            for n in args.n:
                x = rng.standard_normal((n, 64))
                xt = torch.from_numpy(x)
                t_ours, k_ours = time_best(lambda net=net, xt=xt: net.kernel(xt, get="ntk"),
                                           args.repeat)
                t_nt, diff, off = float("nan"), float("nan"), float("nan")
                if have_nt:
                    with tempfile.TemporaryDirectory() as tmp:
                        xp, kp = Path(tmp) / "x.npy", Path(tmp) / "k.npy"
                        np.save(xp, x)
                        cfg = dict(x=str(xp), out=str(kp), act=act, depth=depth, w=w, b=b,
                                   repeat=args.repeat)
                        r = subprocess.run([str(nt_python), "-c", NT_SCRIPT, json.dumps(cfg)],
                                           capture_output=True, text=True, check=True)
                        t_nt = json.loads(r.stdout.strip().splitlines()[-1])["time"]
                        k_nt = np.load(kp)
                    scale = np.abs(k_nt).max()
                    delta = np.abs(k_ours.numpy() - k_nt)
                    diff = float(delta.max() / scale)
                    np.fill_diagonal(delta, 0.0)
                    off = float(delta.max() / scale)
                t_floor = floor_time(act, n, depth, 256, args.repeat)
                print(f"{act:5} {depth:>5} {n:>6} | {t_ours:8.3f} {t_nt:8.3f} "
                      f"{t_nt / t_ours:8.2f} | {diff:8.1e} {off:8.1e} | {t_floor:8.3f} "
                      f"{t_ours / t_floor:11.2f}", flush=True)


if __name__ == "__main__":
    main()
