"""Empirical NTK: ntkit's methods vs neural-tangents and the PyTorch NTK tutorial.

Prints a table of time and peak memory per implementation and workload, and each
result's relative error against a common reference. Not a test.

    python benchmarks/bench_empirical.py [--workloads mlp cnn] [--dtype float64] [--reps 5]
        [--device cpu|cuda] [--n 16] [--memory-budget-gb G]

``--device cuda`` runs the torch entries (ntkit and the PyTorch tutorial, the GPU
reference) on the GPU and reports peak GPU memory from ``torch.cuda.max_memory_allocated``
(beyond what was allocated before the timed calls); the neural-tangents entries stay
CPU-only (the reference venv has CPU JAX) and are skipped there. No address-space limit
is set on CUDA (the driver reserves huge virtual ranges); ``--n`` sets the number of
inputs (the issue's GPU table used 64 for the MLP); ``--memory-budget-gb`` passes
``memory_budget`` to ntkit (default: the device's, see ``ntkit.engine.memory``).

Entries (each runs in a fresh subprocess, so memory is measured per entry):

- ntkit:jacobian / ntkit:ntk_vp / ntkit:structured: ``ntkit.empirical.empirical_ntk``;
- nt:1 / nt:2 / nt:3: neural-tangents 0.6.5 ``empirical_ntk_fn`` implementations
  (Jacobian contraction, NTK-vector products, structured derivatives), jitted, JAX
  x64; run with the reference venv (``benchmarks/setup_reference.sh``, default
  ``.venv-nt``) on the same inputs and parameters, passed through a temporary .npz;
- tutorial:jac / tutorial:ntk_vp: the two functions of PyTorch's "Neural Tangent
  Kernels" tutorial (``vmap(jacrev)`` contraction; NTK-vector products over all pairs).

Workloads: "mlp" (3×[Dense(2048)+ReLU] + Dense(8), 16 inputs of dim 3072, the FCN of
Novak et al. 2022) and "cnn" (the tutorial's CNN: 3×[Conv(32, 3×3)+ReLU], Flatten,
Dense(10) on 16 inputs of 3×32×32). All kernels are traced over outputs (mean), between
the 16 inputs and themselves.

Time: best of ``--reps`` calls after one warm-up call (its time, which includes JIT
compilation for neural-tangents, is the "first" column). Memory: peak resident set
during the timed calls minus the resident set before them (Linux ``VmHWM`` reset
through ``/proc/self/clear_refs``), so it counts the computation's working memory, not
the libraries, inputs or parameters. Each subprocess runs under an address-space limit
(``--mem-limit-gb``) so that entries that would need tens of GB fail fast as "OOM"
instead of swamping the machine.

Recorded (2026-11, this 2-core AMD EPYC VM, shared with other jobs: timings vary by 2-4×
with the load; these are from a quiet spell, best of 5-10, 2 threads):

    MLP, float64 (J would be 16·8·14.7M·8 B = 15 GB)
      ntkit:structured   0.055 s     nt:3   0.064 s
      ntkit:ntk_vp       129 s (loaded machine)
      ntkit:jacobian     > 400 s (J does not fit the 1 GiB budget: 1-row tiles, recomputed)
      nt:1, nt:2, tutorial:jac, tutorial:ntk_vp: OOM under the 8 GB limit
      (1 thread each: structured 0.096 s, nt:3 0.110 s)
    CNN, float32
      ntkit:structured   0.097 s     ntkit:jacobian 0.146 s    nt:3 0.149 s
      nt:1               0.267 s     tutorial:jac   0.282 s    nt:2 1.76 s
      ntkit:ntk_vp       2.64 s      tutorial:ntk_vp 4.45 s
    CNN, float64 (XLA's float64 convolutions on CPU are ~30× slower than float32:
      nt:1 took 348 s for its first call; nt:3 1.86 s)
      ntkit:structured   0.200 s     ntkit:jacobian 0.352 s    tutorial:jac 0.635 s

All kernels agree with the reference to round-off (float64: ≤ 2e-14; float32: ≤ 2e-6),
which also confirms that neural-tangents' trace_axes=(-1,) is a mean over outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NT_PYTHON = ROOT / ".venv-nt" / "bin" / "python"
ENTRIES = ["ntkit:jacobian", "ntkit:ntk_vp", "ntkit:structured", "nt:1", "nt:2", "nt:3",
           "tutorial:jac", "tutorial:ntk_vp"]


# ---- workloads: parameters and inputs as numpy, torch layout --------------------------

def make_workload(name: str, seed: int = 0, n: int = 16) -> dict[str, np.ndarray]:
    """Parameters (torch layout: weights (out, in, ...)) and inputs x (n, ...)."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    if name == "mlp":
        dims = [3072, 2048, 2048, 2048, 8]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            arrays[f"w{i}"] = rng.standard_normal((b, a)) / np.sqrt(a)
            arrays[f"b{i}"] = 0.1 * rng.standard_normal(b)
        arrays["x"] = rng.standard_normal((n, 3072))
    elif name == "cnn":
        chans = [3, 32, 32, 32]
        for i in range(3):
            fan_in = chans[i] * 9
            arrays[f"w{i}"] = rng.standard_normal((chans[i + 1], chans[i], 3, 3)) / np.sqrt(fan_in)
            arrays[f"b{i}"] = 0.1 * rng.standard_normal(chans[i + 1])
        arrays["w3"] = rng.standard_normal((10, 32 * 26 * 26)) / np.sqrt(32 * 26 * 26)
        arrays["b3"] = 0.1 * rng.standard_normal(10)
        arrays["x"] = rng.standard_normal((n, 3, 32, 32))
    else:
        raise ValueError(f"unknown workload {name!r}")
    return arrays


def torch_model(name: str, arrays: dict[str, np.ndarray], dtype):
    import torch
    from torch import nn

    if name == "mlp":
        layers = []
        for i in range(4):
            w = arrays[f"w{i}"]
            lin = nn.Linear(w.shape[1], w.shape[0])
            layers += [lin] + ([nn.ReLU()] if i < 3 else [])
        model = nn.Sequential(*layers)
        lins = [m for m in model if isinstance(m, nn.Linear)]
    else:
        model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(),
                              nn.Conv2d(32, 32, 3), nn.Flatten(), nn.Linear(32 * 26 * 26, 10))
        lins = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    model = model.to(dtype)
    with torch.no_grad():
        for i, m in enumerate(lins):
            m.weight.copy_(torch.as_tensor(arrays[f"w{i}"]))
            m.bias.copy_(torch.as_tensor(arrays[f"b{i}"]))
    return model


# ---- measurement helpers ----------------------------------------------------------------

def _status(key: str) -> int:
    """VmRSS / VmHWM of this process in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(fn, reps: int, budget_s: float = 60.0, cuda: bool = False) -> dict:
    """Time ``fn`` (which must return host data, so each call ends synchronized) and its
    peak memory: resident set on the CPU, allocated GPU memory with ``cuda``."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        exact_peak = True
    else:
        base = _status("VmRSS")
        exact_peak = _reset_peak()
    times = []
    start = time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _status("VmHWM") - base if exact_peak else -1
    return {"first_s": first, "time_s": min(times), "reps": len(times),
            "peak_mb": peak / 2**20, "out": out}


# ---- entries ------------------------------------------------------------------------------

def run_torch_entry(entry: str, workload: str, arrays, dtype_name: str, reps: int,
                    device: str = "cpu", memory_budget: int | None = None) -> dict:
    import torch
    from torch.func import functional_call, jacrev, jvp, vjp, vmap

    dtype = getattr(torch, dtype_name)
    dev = torch.device(device)
    model = torch_model(workload, arrays, dtype).eval().to(dev)
    x = torch.as_tensor(arrays["x"]).to(dtype).to(dev)

    if entry.startswith("ntkit:"):
        from ntkit.empirical import empirical_ntk

        method = entry.split(":")[1]

        def fn():
            return empirical_ntk(model, x, method=method,
                                 memory_budget=memory_budget).cpu().numpy()
    else:
        # Verbatim in substance from the PyTorch "Neural Tangent Kernels" tutorial.
        params = {k: v.detach() for k, v in model.named_parameters()}

        def fnet_single(params, x):
            return functional_call(model, params, (x.unsqueeze(0),)).squeeze(0)

        def empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2):
            jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x1)
            jac1 = [j.flatten(2) for j in jac1.values()]
            jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x2)
            jac2 = [j.flatten(2) for j in jac2.values()]
            result = torch.stack([torch.einsum("Naf,Maf->NM", j1, j2)
                                  for j1, j2 in zip(jac1, jac2, strict=True)])
            return result.sum(0)

        def empirical_ntk_ntk_vps(func, params, x1, x2):
            def get_ntk(x1, x2):
                def func_x1(params):
                    return func(params, x1)

                def func_x2(params):
                    return func(params, x2)

                output, vjp_fn = vjp(func_x1, params)

                def get_ntk_slice(vec):
                    vjps = vjp_fn(vec)
                    _, jvps = jvp(func_x2, (params,), vjps)
                    return jvps

                basis = torch.eye(output.numel(), dtype=output.dtype,
                                  device=output.device).view(output.numel(), -1)
                return vmap(get_ntk_slice)(basis)

            result = vmap(vmap(get_ntk, (None, 0)), (0, None))(x1, x2)
            return torch.einsum("NMKK->NM", result)

        k_out = 8 if workload == "mlp" else 10   # the tutorial's trace is a sum: / k

        def fn():
            if entry == "tutorial:jac":
                r = empirical_ntk_jacobian_contraction(fnet_single, params, x, x)
            else:
                r = empirical_ntk_ntk_vps(fnet_single, params, x, x)
            return (r / k_out).cpu().numpy()

    return measure(fn, reps, cuda=dev.type == "cuda")


def run_nt_entry(entry: str, workload: str, arrays, dtype_name: str, reps: int) -> dict:
    # neural_tangents' experimental module pulls TensorFlow: stub it out.
    sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")
    import jax

    if dtype_name == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax

    dt = jnp.float64 if dtype_name == "float64" else jnp.float32
    if workload == "mlp":
        layers = []
        for i in range(4):
            layers.append(stax.Dense(arrays[f"w{i}"].shape[0], b_std=1.0,
                                     parameterization="standard"))
            if i < 3:
                layers.append(stax.Relu())
        x = jnp.asarray(arrays["x"], dtype=dt)
    else:
        layers = []
        for _ in range(3):
            layers += [stax.Conv(32, (3, 3), padding="VALID", b_std=1.0,
                                 parameterization="standard"), stax.Relu()]
        layers = layers[:-1] + [stax.Flatten(), stax.Dense(10, b_std=1.0,
                                                           parameterization="standard")]
        x = jnp.asarray(arrays["x"].transpose(0, 2, 3, 1), dtype=dt)   # NCHW -> NHWC
    init_fn, apply_fn, _ = stax.serial(*layers)
    _, params0 = init_fn(jax.random.PRNGKey(0), x.shape)
    params, i = [], 0
    for p in params0:
        if not p:   # activations / flatten
            params.append(p)
            continue
        w, b = arrays[f"w{i}"], arrays[f"b{i}"]
        if w.ndim == 4:
            w = w.transpose(2, 3, 1, 0)                 # OIHW -> HWIO
        elif workload == "cnn":                          # Flatten order: torch CHW, NT HWC
            w = w.reshape(10, 32, 26, 26).transpose(0, 2, 3, 1).reshape(10, -1).T
        else:
            w = w.T                                      # (out, in) -> (in, out)
        params.append((jnp.asarray(w, dtype=dt), jnp.asarray(b.reshape(p[1].shape), dtype=dt)))
        i += 1
    ntk_fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0,
                                         implementation=int(entry.split(":")[1])))

    def fn():
        return np.asarray(jax.block_until_ready(ntk_fn(x, None, params)))

    return measure(fn, reps)


def worker(args) -> None:
    """Subprocess side: run one entry, save its kernel, print a JSON line."""
    if args.device == "cpu":  # CUDA reserves far more address space than it uses
        soft = int(args.mem_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
    arrays = dict(np.load(args.npz))
    budget = None if args.memory_budget_gb is None else int(args.memory_budget_gb * 2**30)
    try:
        if args.entry.startswith("nt:"):
            res = run_nt_entry(args.entry, args.workload, arrays, args.dtype, args.reps)
        else:
            res = run_torch_entry(args.entry, args.workload, arrays, args.dtype, args.reps,
                                  args.device, budget)
    except (MemoryError, RuntimeError) as e:   # allocation failures under the limit
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        oom = isinstance(e, MemoryError) or "alloc" in msg.lower() or "memory" in msg.lower()
        print(json.dumps({"error": "OOM" if oom else msg}))
        return
    np.save(args.out, res.pop("out"))
    print(json.dumps(res))


# ---- driver -------------------------------------------------------------------------------

def run_entry(entry: str, workload: str, npz: str, out: str, args) -> dict:
    py = str(NT_PYTHON) if entry.startswith("nt:") else sys.executable
    if entry.startswith("nt:") and args.device != "cpu":
        return {"error": "skipped: the neural-tangents reference runs on the CPU only"}
    if entry.startswith("nt:") and not NT_PYTHON.exists():
        return {"error": f"no {NT_PYTHON} (run benchmarks/setup_reference.sh)"}
    cmd = [py, str(Path(__file__).resolve()), "--worker", "--entry", entry, "--workload",
           workload, "--npz", npz, "--out", out, "--dtype", args.dtype, "--reps",
           str(args.reps), "--mem-limit-gb", str(args.mem_limit_gb), "--device", args.device]
    if args.memory_budget_gb is not None:
        cmd += ["--memory-budget-gb", str(args.memory_budget_gb)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        if args.threads == 1:
            env["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false "
                                "intra_op_parallelism_threads=1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {args.timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:100]
        oom = "memory" in tail.lower() or "alloc" in tail.lower() or proc.returncode < 0
        return {"error": "OOM" if oom else tail}
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", nargs="+", default=["mlp", "cnn"])
    p.add_argument("--entries", nargs="+", default=ENTRIES)
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--mem-limit-gb", type=float, default=8.0)
    p.add_argument("--threads", type=int, default=0,
                   help="threads per entry (torch and XLA); 0: library defaults")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (torch entries)")
    p.add_argument("--n", type=int, default=16, help="number of inputs")
    p.add_argument("--memory-budget-gb", type=float, default=None,
                   help="ntkit's memory_budget in GiB (default: the device's)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--entry", help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    p.add_argument("--npz", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    if args.device == "cpu":
        where = (f"{os.cpu_count()} CPU cores, threads {args.threads or 'default'}; "
                 f"memory limit {args.mem_limit_gb} GB per entry; peak = resident set")
    else:
        import torch

        where = (f"{torch.cuda.get_device_name(args.device)}; peak = "
                 "torch.cuda.max_memory_allocated beyond the inputs and parameters")
    print(f"dtype {args.dtype}, {args.n} inputs, best of {args.reps}, {where}")
    header = (f"{'workload':8s} {'entry':18s} {'time [s]':>10s} {'first [s]':>10s} "
              f"{'peak [MB]':>10s} {'rel err':>9s}  note")
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads:
            npz = os.path.join(tmp, f"{workload}.npz")
            np.savez(npz, **make_workload(workload, n=args.n))
            results = {}
            for entry in args.entries:
                out = os.path.join(tmp, f"{workload}-{entry.replace(':', '_')}.npy")
                res = run_entry(entry, workload, npz, out, args)
                if "error" not in res:
                    res["kernel"] = np.load(out)
                results[entry] = res
                print(f"  ... {workload} {entry}: "
                      f"{res.get('error') or format(res['time_s'], '.4f') + ' s'}",
                      file=sys.stderr, flush=True)
            ref_name = next((e for e in ("ntkit:jacobian", "nt:1", "ntkit:structured")
                             if "kernel" in results.get(e, {})), None)
            print(header)
            for entry, res in results.items():
                if "error" in res:
                    print(f"{workload:8s} {entry:18s} {'-':>10s} {'-':>10s} {'-':>10s} "
                          f"{'-':>9s}  {res['error']}")
                    continue
                ref = results[ref_name]["kernel"]
                err = np.linalg.norm(res["kernel"] - ref) / np.linalg.norm(ref)
                print(f"{workload:8s} {entry:18s} {res['time_s']:10.4f} {res['first_s']:10.3f} "
                      f"{res['peak_mb']:10.1f} {err:9.1e}  vs {ref_name}")
            print()


if __name__ == "__main__":
    main()
