"""Analytic NTK of fully-connected nets: ntkit vs neural-tangents, side by side.

    bash benchmarks/setup_reference.sh            # once: neural-tangents in .venv-nt
    python benchmarks/bench_kernel.py [--n 1000 3000 5000] [--depth 5 20] [--repeat 3]
    python benchmarks/bench_kernel.py --device cuda --n 20000 --depth 5 --act relu \
        --dtype float64 float32 [--tile 256 8192] [--compile]

For each (activation, depth, n) it times the float64 NTK of x (n × 64) with itself in
both libraries on the same inputs (best of --repeat after one warm-up, which includes
XLA's compilation), and prints both times (and ntkit's CPU time: on a shared machine
the wall time also counts other jobs), the ratio, and the largest relative
difference between the two outputs, over all entries and off the diagonal (on the
diagonal, correlation 1, neural-tangents' arc-cosine angle carries a ~sqrt(eps) rounding
error; ntkit's diagonal is exact, see tests/layers/test_edge_cases.py). It also times
the "floor": the transcendental math alone (sqrt and atan2, which both duals take, in one
fused pass) over the same n(n+1)/2 × depth entries.

With ``--device cuda`` the inputs live on the GPU (neural-tangents, CPU-only here, is
skipped): each time is synchronized, the floor is the same transcendental math as one
(n, n) pass per layer on the device, and the peak memory above the inputs comes from
``torch.cuda.max_memory_allocated``. ``--tile`` times given tile sizes next to the
default (the engine's budget rule), ``--compile`` adds ``compile=True``.

On the CPU, "ntkit" is the default mode (fused duals, `ntkit.dual.fused`); "eager" is
``compile=False`` in the same run, and "1st call" the default mode's first call (it
includes compiling the fused duals when their on-disk cache is cold).
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
times, cpus = [], []
for _ in range(cfg["repeat"]):
    t, c = time.perf_counter(), time.process_time()
    k = kf(x, None, get="ntk").block_until_ready()
    times.append(time.perf_counter() - t)
    cpus.append(time.process_time() - c)
np.save(cfg["out"], np.asarray(k))
print(json.dumps({"time": min(times), "cpu": min(cpus)}))
"""


def ntkit_net(act: str, depth: int, w: float, b: float):
    layers = []
    for _ in range(depth):
        layers += [nl.Dense(512, w, b), nl.ReLU() if act == "relu" else nl.Erf()]
    return nl.serial(*layers, nl.Dense(1, w, b))


def time_best(fn, repeat: int) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls after a warm-up; also sets ``time_best.first``
    (the warm-up's wall time, with any compilation) and ``time_best.cpu`` (the best
    calls' CPU time of this process, all threads: on a shared machine wall time counts
    the other jobs too)."""
    t = time.perf_counter()
    fn()  # warm-up (its time: the first call, with any compilation)
    time_best.first = time.perf_counter() - t
    best, res, cpu = float("inf"), None, float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        res = fn()
        cpu = min(cpu, time.process_time() - c)
        best = min(best, time.perf_counter() - t)
    time_best.cpu = cpu
    return best, res


def floor_time(act: str, n: int, depth: int, tile: int, repeat: int) -> float:
    """Time of the per-entry transcendental calls alone (a square root and an arctangent:
    both the ReLU and the Erf dual have exactly these), on the same number of entries, in
    one fused pass (`ntkit.dual.native.elementwise_floor`; two torch passes if it is not
    available), run the way the engine runs tiles (one single-threaded tile per worker
    thread)."""
    from concurrent.futures import ThreadPoolExecutor

    from ntkit.dual import native

    try:
        native.library()
        one_pass = True
    except RuntimeError:
        one_pass = False
    workers = torch.get_num_threads()
    entries = n * (n + 1) // 2 * depth
    reps = max(1, round(entries / (tile * tile)))

    def work(count):
        a = torch.rand(tile, tile, dtype=torch.float64) + 0.5
        c = torch.rand(tile, tile, dtype=torch.float64) * 0.5
        out = torch.empty_like(a)
        for _ in range(count):
            if one_pass:
                native.elementwise_floor(a, c, out)
            else:
                torch.sqrt(a, out=out)
                torch.atan2(out, c, out=out)

    def run():
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                share = [reps // workers + (i < reps % workers) for i in range(workers)]
                list(pool.map(work, share))
        finally:
            torch.set_num_threads(workers)

    return time_best(run, repeat)[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_floor(act: str, n: int, depth: int, dtype: torch.dtype, device: torch.device,
                 repeat: int) -> float:
    """The floor on an accelerator: atan2+sqrt (or asin+sqrt) over n(n+1)/2 entries per
    layer, as full (n, n) passes (what a fused kernel has to do at least)."""
    a = torch.rand(n, n, dtype=dtype, device=device) + 0.5
    c = torch.rand(n, n, dtype=dtype, device=device) * 0.5
    out = torch.empty_like(a)
    frac = (n + 1) / (2 * n)   # only the upper triangle is needed

    def run():
        for _ in range(depth):
            torch.sqrt(a, out=out)
            if act == "relu":
                torch.atan2(out, c, out=out)
            else:
                torch.asin(c, out=out)
        _sync(device)

    return time_best(run, repeat)[0] * frac


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 3000, 5000])
    p.add_argument("--depth", type=int, nargs="+", default=[5, 20])
    p.add_argument("--act", nargs="+", default=["relu", "erf"])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--venv", default=str(ROOT / ".venv-nt"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", nargs="+", default=["float64"], choices=["float64", "float32"])
    p.add_argument("--tile", type=int, nargs="*", default=[],
                   help="also time these tile sizes (default tile always timed)")
    p.add_argument("--compile", action="store_true", help="also time compile=True")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type != "cpu":
        return main_device(args, device)
    nt_python = Path(args.venv) / "bin" / "python"
    have_nt = nt_python.exists()
    if not have_nt:
        print(f"(neural-tangents venv not found at {args.venv}: run "
              "benchmarks/setup_reference.sh; timing ntkit only)")
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float64, d = 64")
    header = (f"{'act':5} {'depth':>5} {'n':>6} | {'ntkit s':>8} {'NT s':>8} {'NT/ntkit':>8} "
              f"| {'rel diff':>8} {'off-diag':>8} | {'floor s':>8} {'ntkit/floor':>11} "
              f"| {'eager s':>8} {'eager/fused':>11} {'1st call':>8} "
              f"| {'cpu s':>6} {'NT cpu':>6} {'eager cpu':>9} {'floor cpu':>9}")
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
                t_first = time_best.first  # default mode: fused duals (compiles if cold)
                c_ours = time_best.cpu
                t_eager, _ = time_best(
                    lambda net=net, xt=xt: net.kernel(xt, get="ntk", compile=False),
                    args.repeat)
                c_eager = time_best.cpu
                t_nt, diff, off = float("nan"), float("nan"), float("nan")
                c_nt = float("nan")
                if have_nt:
                    with tempfile.TemporaryDirectory() as tmp:
                        xp, kp = Path(tmp) / "x.npy", Path(tmp) / "k.npy"
                        np.save(xp, x)
                        cfg = dict(x=str(xp), out=str(kp), act=act, depth=depth, w=w, b=b,
                                   repeat=args.repeat)
                        r = subprocess.run([str(nt_python), "-c", NT_SCRIPT, json.dumps(cfg)],
                                           capture_output=True, text=True, check=True)
                        res = json.loads(r.stdout.strip().splitlines()[-1])
                        t_nt, c_nt = res["time"], res["cpu"]
                        k_nt = np.load(kp)
                    scale = np.abs(k_nt).max()
                    delta = np.abs(k_ours.numpy() - k_nt)
                    diff = float(delta.max() / scale)
                    np.fill_diagonal(delta, 0.0)
                    off = float(delta.max() / scale)
                t_floor = floor_time(act, n, depth, 256, args.repeat)
                c_floor = time_best.cpu
                print(f"{act:5} {depth:>5} {n:>6} | {t_ours:8.3f} {t_nt:8.3f} "
                      f"{t_nt / t_ours:8.2f} | {diff:8.1e} {off:8.1e} | {t_floor:8.3f} "
                      f"{t_ours / t_floor:11.2f} | {t_eager:8.3f} {t_eager / t_ours:11.2f} "
                      f"{t_first:8.2f} | {c_ours:6.3f} {c_nt:6.3f} {c_eager:9.3f} {c_floor:9.3f}",
                      flush=True)


def main_device(args, device: torch.device) -> None:
    """The GPU table: default tile (budget rule) vs given tiles, compiled, and the floor."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"torch {torch.__version__}, {name}, d = 64")
    header = (f"{'act':5} {'depth':>5} {'n':>6} {'dtype':>8} {'setting':>14} | {'s':>8} "
              f"{'peak GiB':>8} | {'floor s':>8} {'x floor':>8}")
    print(header)
    print("-" * len(header))
    gen = torch.Generator(device="cpu").manual_seed(0)
    for act in args.act:
        w, b = (2.0**0.5, 0.05) if act == "relu" else (1.3, 0.05)
        for depth in args.depth:
            net = ntkit_net(act, depth, w, b)
            for n in args.n:
                for dname in args.dtype:
                    dtype = getattr(torch, dname)
                    x = torch.randn(n, 64, generator=gen, dtype=dtype).to(device)
                    floor = device_floor(act, n, depth, dtype, device, args.repeat)
                    settings = [("default", {})] + [(f"tile {t}", {"tile": t})
                                                    for t in args.tile]
                    if args.compile:
                        settings.append(("compile", {"compile": True}))
                    for label, kw in settings:
                        if device.type == "cuda":
                            torch.cuda.reset_peak_memory_stats(device)
                        base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0

                        def run(kw=kw, x=x, dtype=dtype, net=net):
                            k = net.kernel(x, get="ntk", dtype=dtype, **kw)
                            _sync(device)
                            return k

                        t, _ = time_best(run, args.repeat)
                        peak = ((torch.cuda.max_memory_allocated(device) - base) / 2**30
                                if device.type == "cuda" else float("nan"))
                        print(f"{act:5} {depth:>5} {n:>6} {dname:>8} {label:>14} | {t:8.4f} "
                              f"{peak:8.2f} | {floor:8.4f} {t / floor:8.2f}", flush=True)


if __name__ == "__main__":
    main()
