"""Analytic NNGP+NTK of convolutional nets: ntkit vs neural-tangents, per kernel entry.

    bash benchmarks/setup_reference.sh            # once: neural-tangents in .venv-nt
    python benchmarks/bench_conv.py [--only myrtle5 ...] [--n N] [--repeat R]
                                    [--dtype float32 float64] [--nt-mem-gb 8]

Cases (inputs 32×32×3, random normal, channels first for ntkit, transposed for NT):

- myrtle5: Myrtle-5 (Shankar et al. 2020), pooled, needs full covariances;
- conv8_flatten: 8 × [3×3 SAME conv, ReLU] + Flatten + Dense, diagonal only;
- cnn21_gap / cnn21_flatten: neural-tangents' README benchmark, 21 × [Conv(1, (3, 3),
  (1, 1), 'SAME'), Relu()] + GlobalAvgPool() / Flatten();
- cnn1_gap_oom: one [3×3 SAME conv, ReLU] + GAP + Dense at an n where NT's full
  covariance, (n, n, 32, 32, 32, 32) per kernel, does not fit in --nt-mem-gb.

Both libraries compute the symmetric kernel of x (n examples) with itself, NNGP and NTK
together. "Per entry" is the wall time divided by n², the number of output entries (NT
computes all n² of them; ntkit only n(n+1)/2, which is part of its speed). Both also
compute the n per-example variances, so small n inflates both per-entry times alike.

neural-tangents runs in a subprocess of its venv, one at a time, with its address space
capped at --nt-mem-gb (RLIMIT_AS) so that running out of memory is reported as "OOM"
rather than taking down the machine. Its kernel_fn is jitted; the first call (compile +
run) is reported separately and the best of --repeat further calls is the NT time.
ntkit runs in process (default mode: fused duals, see ntkit.dual.fused; ``--eager``
adds compile=False in the same run): best of --repeat calls, and its first call's time.
"rel diff" is the largest |ntkit − NT| over max|NT|;
until ntkit has conv layers its columns print "n/a".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("conv_archs",
                                               ROOT / "tests" / "layers" / "conv_archs.py")
conv_archs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv_archs)

SQ2 = 2.0**0.5
CONV = ("conv", 64, (3, 3), None, "SAME", SQ2, 0.0, "ntk")
README_CONV = ("conv", 1, (3, 3), (1, 1), "SAME", 1.0, None, "ntk")  # NT's README net

CASES = {
    "myrtle5": dict(n=4, layers=conv_archs.myrtle5(32)),
    "conv8_flatten": dict(n=200, layers=[CONV, ("relu",)] * 8
                          + [("flatten",), ("dense", 1, 1.0, 0.0, "ntk")]),
    "cnn21_gap": dict(n=2, layers=[README_CONV, ("relu",)] * 21 + [("gap",)]),
    "cnn21_flatten": dict(n=100, layers=[README_CONV, ("relu",)] * 21 + [("flatten",)]),
    "cnn1_gap_oom": dict(n=40, layers=[CONV, ("relu",), ("gap",),
                                       ("dense", 1, 1.0, 0.0, "ntk")]),
}
INPUT = (3, 32, 32)

NT_SCRIPT = r"""
import importlib.util, json, sys, time
cfg = json.loads(sys.argv[1])
spec = importlib.util.spec_from_file_location("make_nt", cfg["make_nt"])
make_nt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_nt)   # stubs neural_tangents.experimental, imports stax
import jax
jax.config.update("jax_enable_x64", cfg["dtype"] == "float64")
import numpy as np
stax = make_nt.stax
x = np.load(cfg["x"]).astype(cfg["dtype"])
x = np.moveaxis(x, 1, -1)          # channels last
_, _, kernel_fn = stax.serial(*make_nt.to_stax(cfg["layers"], x.ndim))
kf = jax.jit(kernel_fn, static_argnames="get")
t = time.perf_counter()
k = kf(x, None, get=("nngp", "ntk"))
k.ntk.block_until_ready()
first = time.perf_counter() - t
times, cpu = [], []
for _ in range(cfg["repeat"]):
    t, c = time.perf_counter(), time.process_time()
    k = kf(x, None, get=("nngp", "ntk"))
    k.ntk.block_until_ready()
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
np.save(cfg["out_nngp"], np.asarray(k.nngp))
np.save(cfg["out_ntk"], np.asarray(k.ntk))
import resource
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
print(json.dumps({"first": first, "time": min(times), "cpu": min(cpu), "rss_gb": rss}))
"""

OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "MemoryError",
               "bad_alloc", "Cannot allocate memory", "failed to allocate")


def run_nt(nt_python: Path, layers, x: np.ndarray, dtype: str, repeat: int,
           mem_gb: float, timeout: float) -> dict:
    """Run neural-tangents on x in a memory-capped subprocess.

    Returns dict(status="ok", time=..., first=..., nngp=..., ntk=...) or
    dict(status="OOM" | "error" | "timeout", detail=...)."""
    limit = int(mem_gb * 2**30)

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: str(Path(tmp) / f"{k}.npy") for k in ("x", "out_nngp", "out_ntk")}
        np.save(paths["x"], x)
        cfg = dict(paths, layers=layers, dtype=dtype, repeat=repeat,
                   make_nt=str(ROOT / "tests" / "fixtures" / "make_nt_conv_kernels.py"))
        start = time.perf_counter()
        try:
            r = subprocess.run([str(nt_python), "-c", NT_SCRIPT, json.dumps(cfg)],
                               capture_output=True, text=True, preexec_fn=cap, timeout=timeout)
        except subprocess.TimeoutExpired:
            return dict(status="timeout", detail=f"> {timeout:.0f} s")
        if r.returncode != 0:
            lines = [ln.strip() for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
            hits = [ln for ln in lines if any(m in ln for m in OOM_MARKERS)]
            oom = bool(hits) or r.returncode in (-9, -6)  # SIGKILL / SIGABRT (bad_alloc)
            line = (hits or lines or [""])[-1]
            return dict(status="OOM" if oom else "error",
                        detail=f"after {time.perf_counter() - start:.0f} s, rc {r.returncode}: "
                               f"{line[:200]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res.update(status="ok", nngp=np.load(paths["out_nngp"]), ntk=np.load(paths["out_ntk"]))
        return res


def run_ntkit(layers, x: np.ndarray, dtype: torch.dtype, repeat: int,
              compile=None) -> dict:
    """Time ntkit in process; dict(status="n/a", detail=...) until the layers exist.

    ``first``: the first call's wall time (with the fused duals' compilation, or their
    loading from the on-disk cache, when this process has not used them yet)."""
    try:
        net = conv_archs.to_ntkit(layers)
    except (ImportError, AttributeError) as e:
        return dict(status="n/a", detail=f"{type(e).__name__}: {e}")
    xt = torch.from_numpy(x).to(dtype)

    def call():
        return net.kernel(xt, get=("nngp", "ntk"), dtype=dtype, compile=compile)

    # No separate warm-up call (a heavy case would double the benchmark's time): the
    # first call is reported on its own, and the best of all calls as the time.
    best, k, cpu, first = float("inf"), None, (0.0, 0.0), None
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        k = call()
        wall = time.perf_counter() - t
        first = wall if first is None else first
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        if wall < best:
            best = wall
            cpu = (r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime)
    return dict(status="ok", time=best, first=first, user=cpu[0], sys=cpu[1],
                nngp=k.nngp.double().numpy(), ntk=k.ntk.double().numpy())


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    p.add_argument("--n", type=int, default=None, help="examples (default: per case)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--dtype", nargs="+", choices=["float32", "float64"],
                   default=["float32", "float64"])
    p.add_argument("--nt-mem-gb", type=float, default=8.0,
                   help="address-space cap for the neural-tangents subprocess")
    p.add_argument("--nt-timeout", type=float, default=900.0)
    p.add_argument("--no-nt", action="store_true", help="time ntkit only")
    p.add_argument("--no-ntkit", action="store_true", help="time neural-tangents only")
    p.add_argument("--eager", action="store_true",
                   help="also time ntkit with compile=False (eager duals) in the same run")
    p.add_argument("--venv", default=str(ROOT / ".venv-nt"))
    p.add_argument("--no-retain", action="store_true",
                   help="ntkit without engine.allocator's scope (freed arrays unmapped, "
                        "as before it existed): shows the page-fault time it saves")
    args = p.parse_args()
    if args.no_retain:
        import contextlib

        import ntkit.engine.evaluate as ev

        ev.retain_freed_memory = lambda enabled=True: contextlib.nullcontext()
    nt_python = Path(args.venv) / "bin" / "python"
    have_nt = nt_python.exists() and not args.no_nt
    if not have_nt and not args.no_nt:
        print(f"(neural-tangents venv not found at {args.venv}: run "
              "benchmarks/setup_reference.sh; timing ntkit only)")
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, input "
          f"{INPUT}, NNGP+NTK of x with itself, time per entry = wall / n², "
          f"NT capped at {args.nt_mem_gb:g} GB")
    header = (f"{'case':14} {'dtype':7} {'n':>4} | {'ntkit/entry':>11} {'NT/entry':>11} "
              f"{'NT/ntkit':>8} | {'rel diff':>8} | {'NT 1st call':>11}  notes")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for name in args.only:
        case = CASES[name]
        n = args.n or case["n"]
        x = rng.standard_normal((n, *INPUT))
        for dtype in args.dtype:
            notes = []
            ours = (dict(status="skip") if args.no_ntkit
                    else run_ntkit(case["layers"], x, getattr(torch, dtype), args.repeat))
            nt = (run_nt(nt_python, case["layers"], x, dtype, args.repeat, args.nt_mem_gb,
                         args.nt_timeout) if have_nt else dict(status="n/a", detail="no NT"))
            t_ours = ours["time"] / n**2 if ours["status"] == "ok" else None
            t_nt = nt["time"] / n**2 if nt["status"] == "ok" else None
            col_ours = fmt_time(t_ours) if t_ours else ours["status"]
            col_nt = fmt_time(t_nt) if t_nt else nt["status"]
            ratio = f"{t_nt / t_ours:8.2f}" if t_ours and t_nt else f"{'':8}"
            diff = f"{'':8}"
            if t_ours and t_nt:
                d = max(np.abs(ours[f] - nt[f]).max() / np.abs(nt[f]).max()
                        for f in ("nngp", "ntk"))
                diff = f"{d:8.1e}"
            first = fmt_time(nt["first"]) if nt["status"] == "ok" else ""
            if ours["status"] == "ok":
                notes.append(f"ntkit 1st call {fmt_time(ours['first'])}")
            if ours["status"] == "ok" and args.eager:
                eager = run_ntkit(case["layers"], x, getattr(torch, dtype), args.repeat,
                                  compile=False)
                notes.append(f"eager/entry {fmt_time(eager['time'] / n**2)} "
                             f"(eager/fused {eager['time'] / ours['time']:.2f})")
            if ours["status"] == "ok":
                notes.append(f"ntkit cpu/entry {fmt_time((ours['user'] + ours['sys']) / n**2)}"
                             f" (sys {fmt_time(ours['sys'] / n**2)})")
            if nt["status"] == "ok":
                # CPU seconds (all threads) per entry: less sensitive to a shared machine.
                notes.append(f"NT cpu/entry {fmt_time(nt['cpu'] / n**2)}, "
                             f"peak RSS {nt['rss_gb']:.2f} GiB")
            for side, res in (("ntkit", ours), ("NT", nt)):
                if res["status"] not in ("ok", "skip") and "detail" in res:
                    notes.append(f"{side}: {res['detail']}")
            print(f"{name:14} {dtype:7} {n:>4} | {col_ours:>11} {col_nt:>11} {ratio} | "
                  f"{diff} | {first:>11}  {'; '.join(notes)}", flush=True)


if __name__ == "__main__":
    main()
