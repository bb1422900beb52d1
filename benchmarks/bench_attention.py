"""Analytic NNGP+NTK of attention, transposed-conv and graph networks: ntkit vs
neural-tangents, per kernel entry, in one run.

    bash benchmarks/setup_reference.sh            # once: neural-tangents in .venv-nt
    python benchmarks/bench_attention.py [--only transformer_L32 ...] [--n N]
                                         [--repeat R] [--dtype float32 float64]

Cases (random normal inputs, channels first for ntkit, transposed for neural-tangents):

- transformer_L32 / transformer_L64: `ntkit.models.transformer(depth=2)` (post-LayerNorm
  blocks of softmax attention with summed positional embeddings and a ReLU MLP, then
  GlobalAvgPool and Dense) on sequences (n, 4, L); the stax network is the same
  structure written out in tests/fixtures/make_nt_models.py; transformer_L128 (not in the
  default run: minutes per library): the same at length 128;
- convT_decoder: (n, 8, 2, 2) -> 2 × [ConvTranspose 3×3 stride 2 SAME, ReLU] -> 8×8 ->
  GlobalAvgPool, Dense (full position-pair covariances through transposed convs);
- graph: (n, 8, 16) node features, 2 × [1×1 Conv, ReLU, Aggregate] + GlobalAvgPool +
  Dense, with a random dense adjacency per graph (neural-tangents' ``pattern``).

Both libraries compute the symmetric kernel of x (n examples) with itself, NNGP and NTK
together; "per entry" is the wall time over n² (ntkit computes n(n+1)/2 pairs, NT all
n²). neural-tangents runs jitted in a subprocess of its venv with its address space
capped at --nt-mem-gb ("OOM" if it runs out); its first call (compile + run) is shown
apart and the best of --repeat further calls is its time. ntkit runs in process, best of
--repeat calls. "rel diff" is max |ntkit − NT| / max |NT| over both kernels. The machine
may be shared: the load average before and after is printed, and CPU seconds per entry
(less sensitive to other processes) are in the notes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ntkit import layers as nl
from ntkit import models

ROOT = Path(__file__).resolve().parents[1]
SQ2 = 2.0**0.5

CASES = {
    "transformer_L32": dict(kind="transformer", n=64, input=(4, 32)),
    "transformer_L64": dict(kind="transformer", n=64, input=(4, 64)),
    "transformer_L128": dict(kind="transformer", n=64, input=(4, 128)),
    "convT_decoder": dict(kind="decoder", n=64, input=(8, 2, 2)),
    "graph": dict(kind="graph", n=64, input=(8, 16)),
}
TRANSFORMER = dict(depth=2, n_heads=2, width=64, attention_mechanism="softmax",
                   pos_emb_type="sum", layer_norm="post", b_std=0.1)


def ntkit_net(kind: str):
    if kind == "transformer":
        return models.transformer(**TRANSFORMER)
    if kind == "decoder":
        up = [nl.ConvTranspose(32, (3, 3), (2, 2), "SAME", w_std=SQ2, b_std=0.05), nl.ReLU()]
        return nl.serial(*up, *up, nl.GlobalAvgPool(), nl.Dense(1))
    block = [nl.Conv(64, (1,), w_std=SQ2, b_std=0.05), nl.ReLU(), nl.Aggregate()]
    return nl.serial(*block, *block, nl.GlobalAvgPool(), nl.Dense(1))


NT_SCRIPT = r"""
import importlib.util, json, sys, time
cfg = json.loads(sys.argv[1])
spec = importlib.util.spec_from_file_location("make_nt_models", cfg["make_nt"])
mk = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mk)   # stubs neural_tangents.experimental, imports stax
import jax
jax.config.update("jax_enable_x64", cfg["dtype"] == "float64")
import numpy as np
stax = mk.stax
SQ2 = 2.0 ** 0.5
kind = cfg["kind"]
if kind == "transformer":
    net = mk.transformer(**cfg["transformer"], act="relu", decay=None)
elif kind == "decoder":
    up = [stax.ConvTranspose(32, (3, 3), (2, 2), "SAME", W_std=SQ2, b_std=0.05), stax.Relu()]
    net = stax.serial(*up, *up, stax.GlobalAvgPool(), stax.Dense(1))
else:
    block = [stax.Conv(64, (1,), W_std=SQ2, b_std=0.05), stax.Relu(), stax.Aggregate()]
    net = stax.serial(*block, *block, stax.GlobalAvgPool(), stax.Dense(1))
x = np.moveaxis(np.load(cfg["x"]).astype(cfg["dtype"]), 1, -1)   # channels last
kw = {}
if cfg["pattern"]:
    p = np.load(cfg["pattern"]).astype(cfg["dtype"])
    kw = {"pattern": (p, p)}
kf = jax.jit(net[2], static_argnames="get")
t = time.perf_counter()
k = kf(x, None, get=("nngp", "ntk"), **kw)
k.ntk.block_until_ready()
first = time.perf_counter() - t
times, cpu = [], []
for _ in range(cfg["repeat"]):
    t, c = time.perf_counter(), time.process_time()
    k = kf(x, None, get=("nngp", "ntk"), **kw)
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


def run_nt(nt_python: Path, kind: str, x: np.ndarray, pattern: np.ndarray | None,
           dtype: str, repeat: int, mem_gb: float, timeout: float) -> dict:
    """neural-tangents on x in a memory-capped subprocess: dict(status="ok", time, first,
    cpu, rss_gb, nngp, ntk) or dict(status="OOM" | "error" | "timeout", detail)."""
    limit = int(mem_gb * 2**30)

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: str(Path(tmp) / f"{k}.npy") for k in ("x", "out_nngp", "out_ntk")}
        np.save(paths["x"], x)
        pat = None
        if pattern is not None:
            pat = str(Path(tmp) / "pattern.npy")
            np.save(pat, pattern)
        cfg = dict(paths, kind=kind, pattern=pat, dtype=dtype, repeat=repeat,
                   transformer=TRANSFORMER,
                   make_nt=str(ROOT / "tests" / "fixtures" / "make_nt_models.py"))
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


def run_ntkit(kind: str, x: np.ndarray, pattern: np.ndarray | None, dtype: torch.dtype,
              repeat: int) -> dict:
    """ntkit in process: best of ``repeat`` calls, the first call's time, CPU seconds."""
    net = ntkit_net(kind)
    xt = torch.from_numpy(x).to(dtype)
    kw = {} if pattern is None else {"pattern": (torch.from_numpy(pattern).to(dtype), None)}
    best, k, cpu, first = float("inf"), None, (0.0, 0.0), None
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        k = net.kernel(xt, get=("nngp", "ntk"), dtype=dtype, **kw)
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


def inputs(case: dict, n: int, rng: np.random.Generator):
    x = rng.standard_normal((n, *case["input"]))
    pattern = None
    if case["kind"] == "graph":
        nodes = case["input"][1]
        pattern = (rng.random((n, nodes, nodes)) < 0.3).astype(np.float64)
    return x, pattern


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=sorted(CASES),
                   default=[c for c in CASES if c != "transformer_L128"])
    p.add_argument("--n", type=int, default=None, help="examples (default: per case)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--dtype", nargs="+", choices=["float32", "float64"],
                   default=["float64", "float32"])
    p.add_argument("--nt-mem-gb", type=float, default=8.0,
                   help="address-space cap for the neural-tangents subprocess")
    p.add_argument("--nt-timeout", type=float, default=900.0)
    p.add_argument("--no-nt", action="store_true", help="time ntkit only")
    p.add_argument("--venv", default=str(ROOT / ".venv-nt"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="intra-op threads of both libraries (1: XLA's Eigen pool off too); "
                        "on a machine shared with other work, 1 avoids both libraries' "
                        "threads spinning against each other's")
    args = p.parse_args()
    nt_python = Path(args.venv) / "bin" / "python"
    have_nt = nt_python.exists() and not args.no_nt
    if not have_nt and not args.no_nt:
        print(f"(neural-tangents venv not found at {args.venv}: run "
              "benchmarks/setup_reference.sh; timing ntkit only)")
    torch.set_num_threads(args.threads)
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_"
                                   "eigen=false intra_op_parallelism_threads=1").strip()
    load0 = os.getloadavg()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, NNGP+NTK of x with "
          f"itself, time per entry = wall / n², NT capped at {args.nt_mem_gb:g} GB; "
          f"load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} on {os.cpu_count()} "
          "cores (shared machine)")
    header = (f"{'case':16} {'dtype':7} {'n':>4} | {'ntkit/entry':>11} {'NT/entry':>11} "
              f"{'NT/ntkit':>8} | {'rel diff':>8} | {'NT 1st call':>11}  notes")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for name in args.only:
        case = CASES[name]
        n = args.n or case["n"]
        x, pattern = inputs(case, n, rng)
        for dtype in args.dtype:
            ours = run_ntkit(case["kind"], x, pattern, getattr(torch, dtype), args.repeat)
            nt = (run_nt(nt_python, case["kind"], x, pattern, dtype, args.repeat,
                         args.nt_mem_gb, args.nt_timeout) if have_nt
                  else dict(status="n/a", detail="no NT"))
            t_ours = ours["time"] / n**2
            t_nt = nt["time"] / n**2 if nt["status"] == "ok" else None
            col_nt = fmt_time(t_nt) if t_nt else nt["status"]
            ratio = f"{t_nt / t_ours:8.2f}" if t_nt else f"{'':8}"
            diff = f"{'':8}"
            if t_nt:
                d = max(np.abs(ours[f] - nt[f]).max() / np.abs(nt[f]).max()
                        for f in ("nngp", "ntk"))
                diff = f"{d:8.1e}"
            first = fmt_time(nt["first"]) if nt["status"] == "ok" else ""
            notes = [f"ntkit 1st call {fmt_time(ours['first'])}",
                     f"ntkit cpu/entry {fmt_time((ours['user'] + ours['sys']) / n**2)}"]
            if nt["status"] == "ok":
                notes.append(f"NT cpu/entry {fmt_time(nt['cpu'] / n**2)}, "
                             f"peak RSS {nt['rss_gb']:.2f} GiB")
            elif "detail" in nt:
                notes.append(f"NT: {nt['detail']}")
            print(f"{name:16} {dtype:7} {n:>4} | {fmt_time(t_ours):>11} {col_nt:>11} {ratio} | "
                  f"{diff} | {first:>11}  {'; '.join(notes)}", flush=True)
    load1 = os.getloadavg()
    print(f"load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
