"""Large-n NTK regression with the matrix-free solvers of ntkit.solvers (issue 12).

Four parts, each selectable (``--part``), printing a table:

- ``exact``: n points, PCG with the Nyström preconditioner (M centers) against the dense
  Cholesky solve: relative error of the test predictions, iterations, wall; and the plain
  Nyström solve's test error against the exact one. (Issue goal: n = 40k, M = 5k,
  ≤ 1e-4 in ≤ 50 iterations; Nyström test error within 1 %.)
- ``scale``: plain Nyström (subset of regressors) over a list of n, inputs streamed
  from an ``np.memmap`` on disk: test error curve, wall time, peak RSS (VmHWM).
  (Issue goal: depth-3 FC NTK, n = 10k … 1M, ≤ 60 min, ≤ 12 GB.)
- ``sweep``: n points in RAM, the exact (Cholesky) solve against plain Nyström for a
  list of M (``--ms``): how many centers the plain solve needs to come close.
- ``beyond``: n points, PCG with kernels recomputed per tile (never n × n), or with
  ``--zarr`` read from an upper-tile zarr array written once (half of n² on disk):
  iterations, wall, residual. (Issue goal: n = 100k.)

Data: MNIST-1D (``mnist1d`` generates it locally, d = 40, 10 classes; regression on
centred one-hot targets, error = misclassification rate) or a teacher network
(``--data teacher``: x ~ N(0, I_40), y = a random finite depth-2 ReLU net + noise 0.1;
error = test MSE / var(y)). Generated data is cached as .npy files in ``--workdir``.

Network: depth-3 ReLU FC NTK (``make_network(3, "relu")``), ridge ``--diag-reg``
relative to the mean diagonal (ntkit's convention).

Examples (the commands whose output is quoted in the README section):

    python benchmarks/bench_large_n.py --part exact --n 4000 --centers 500
    python benchmarks/bench_large_n.py --part scale --ns 10000,30000 --centers 2000
    python benchmarks/bench_large_n.py --part beyond --n 20000 --centers 2000
    python benchmarks/bench_large_n.py --part sweep --n 10000 --ms 1250,2500,5000
    # the issue's sizes (hours on a shared 2-core box):
    python benchmarks/bench_large_n.py --part exact --n 40000 --centers 5000 --cache
    python benchmarks/bench_large_n.py --part scale --ns 10000,30000,100000,300000,1000000
    python benchmarks/bench_large_n.py --part beyond --n 100000 --centers 5000 --zarr \
        --tol 1e-5 --max-iter 60
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from ntkit.sklearn import make_network
from ntkit.solvers import (
    KernelOperator,
    NystromPreconditioner,
    cholesky_jitter,
    nystrom_solve,
    pcg,
    predict_batched,
)

D = 40
N_TEST = 5000


def peak_rss_gb() -> float:
    """VmHWM of this process (peak resident set), in GB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


# ---- data -------------------------------------------------------------------------------
def _mnist1d_chunk(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = n
    args.seed = seed
    args.train_split = 1.0
    d = make_dataset(args)  # standardizes by the chunk's own mean/std (≈ constant)
    return d["x"].astype(np.float64), d["y"].astype(np.int64)


def _teacher_chunk(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, D))
    w = np.random.default_rng(12345)  # one fixed teacher
    w1 = w.standard_normal((D, 256)) * np.sqrt(2 / D)
    w2 = w.standard_normal((256, 256)) * np.sqrt(2 / 256)
    w3 = w.standard_normal(256) / np.sqrt(256)
    y = np.maximum(np.maximum(x @ w1, 0) @ w2, 0) @ w3 + 0.1 * g.standard_normal(n)
    return x, y


def dataset(kind: str, n: int, workdir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x memmap (n, 40), y (n,)), generated in 10k chunks once and cached on disk."""
    os.makedirs(workdir, exist_ok=True)
    base = os.path.join(workdir, f"{kind}_{split}_{n}")
    if not os.path.exists(base + "_x.npy"):
        x = np.lib.format.open_memmap(base + "_x.tmp.npy", mode="w+", dtype=np.float64,
                                      shape=(n, D))
        ys = []
        chunk = 10000
        offset = 0 if split == "train" else 10**6
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            fn = _mnist1d_chunk if kind == "mnist1d" else _teacher_chunk
            # mnist1d makes whole classes per call: ask for a multiple of 10 ≥ m.
            xc, yc = fn(-(-m // 10) * 10, seed=offset + i // chunk)
            x[i:i + m] = xc[:m]
            ys.append(yc[:m])
        x.flush()
        del x
        np.save(base + "_y.npy", np.concatenate(ys))
        os.replace(base + "_x.tmp.npy", base + "_x.npy")
    return np.load(base + "_x.npy", mmap_mode="r"), np.load(base + "_y.npy")


def targets(kind: str, y: np.ndarray) -> torch.Tensor:
    if kind == "mnist1d":
        return torch.from_numpy(np.eye(10)[y] - 0.1)
    return torch.from_numpy(y.astype(np.float64))[:, None]


def test_error(kind: str, pred: torch.Tensor, y: np.ndarray) -> float:
    if kind == "mnist1d":
        return float((pred.argmax(1).numpy() != y).mean())
    return float(((pred[:, 0].numpy() - y) ** 2).mean() / y.var())


def operator(net, x, diag_reg: float) -> KernelOperator:
    op = KernelOperator(net, x, get="ntk")
    op.shift = diag_reg * float(op.diagonal().mean())  # ntkit's relative ridge
    return op


def _predict(net, x_test, ref_rows, coef):
    ref = torch.from_numpy(np.array(ref_rows, dtype=np.float64))
    return predict_batched(lambda xb: net.kernel(xb, ref, get="ntk"), x_test, coef,
                           n_cols=len(ref))


# ---- parts -------------------------------------------------------------------------------
def _print_solver_rows(rows) -> None:
    """The exact parts' table: (solver, iterations, wall s, rel err vs chol, test err)."""
    print(f"{'solver':<26}{'iterations':>22}{'wall s':>10}{'rel err vs chol':>18}"
          f"{'test err':>10}")
    for r in rows:
        print(f"{r[0]:<26}{r[1]:>22}{r[2]:>10.1f}{r[3]:>18.2e}{r[4]:>10.4f}")


def _cached_kernel(net, x, a) -> np.ndarray:
    """K(x, x) written once to an .npy memmap in --workdir (tile by tile, never whole in
    RAM), read back as a read-only memmap."""
    path = os.path.join(a.workdir, f"K_ntk_{a.data}_{a.n}.npy")
    if not os.path.exists(path):
        t = time.perf_counter()
        k = np.lib.format.open_memmap(path + ".tmp", mode="w+", dtype=np.float64,
                                      shape=(a.n, a.n))
        net.kernel(x, get="ntk", out=k, progress=a.progress)
        k.flush()
        del k
        os.replace(path + ".tmp", path)
        print(f"kernel {a.n}×{a.n} written to {path} in {time.perf_counter() - t:.0f} s",
              flush=True)
    return np.load(path, mmap_mode="r")


def part_exact_cached(a) -> None:
    """--part exact with --cache: K computed once to disk; PCG reads its panels, and the
    Cholesky solve factors it in RAM in place (one n × n array: 12.8 GB at n = 40k, where
    a second copy would not fit 24 GB). Each solver's test predictions are saved in
    --workdir, so a rerun redoes only what is missing."""
    net = make_network(3, "relu")
    x, y = dataset(a.data, a.n, a.workdir, "train")
    xt, yt = dataset(a.data, a.n_test, a.workdir, "test")
    Y = targets(a.data, y)
    kmm = _cached_kernel(net, x, a)
    op = KernelOperator(net, x, get="ntk", kernel=kmm)
    op.shift = a.diag_reg * float(op.diagonal().mean())
    tag = os.path.join(a.workdir, f"exact_{a.data}_{a.n}_M{a.centers}_it{a.max_iter}")

    def saved(name, fn):
        path = f"{tag}_{name}.npz"
        if not os.path.exists(path):
            f, info = fn()
            np.savez(path, f=f.numpy(), **info)
        z = np.load(path)
        return torch.from_numpy(z["f"]), {k: z[k].item() for k in z.files if k != "f"}

    def run_pcg():
        t = time.perf_counter()
        pre = NystromPreconditioner(op, a.centers, seed=0)
        setup = time.perf_counter() - t
        res = pcg(op.matvec, Y, precond=pre, tol=a.tol, max_iter=a.max_iter,
                  progress=a.progress)
        f = _predict(net, xt, x, res.x)
        return f, {"iterations": res.iterations, "setup": setup,
                   "resid": float(res.residual.max()), "converged": bool(res.converged),
                   "wall": time.perf_counter() - t}

    def run_nystrom():
        t = time.perf_counter()
        sol = nystrom_solve(op, Y, a.centers, seed=0)
        f = _predict(net, xt, np.asarray(x)[sol.centers.numpy()], sol.coef)
        return f, {"wall": time.perf_counter() - t}

    def run_cholesky():
        t = time.perf_counter()
        k = torch.from_numpy(np.array(kmm))   # into RAM (the page cache yields)
        k.diagonal().add_(op.shift)
        # In place: K is symmetric, so its transpose view is the column-major matrix
        # LAPACK wants, and cholesky(out=) then factors the buffer itself (peak RSS one
        # n × n array; measured). Triangular solves, not cholesky_solve, which copies L.
        # (scipy.linalg.cho_factor(overwrite_a=True) segfaulted inside scipy's OpenBLAS
        # at n = 40k.)
        lt = k.mT
        torch.linalg.cholesky(lt, out=lt)
        z = torch.linalg.solve_triangular(lt, Y, upper=False)
        alpha = torch.linalg.solve_triangular(lt.mT, z, upper=True)
        del k, lt
        f = _predict(net, xt, x, alpha)
        return f, {"wall": time.perf_counter() - t}

    f_pcg, i_pcg = saved("pcg", run_pcg)
    print(f"pcg: {i_pcg['iterations']} iterations, final relative residual "
          f"{i_pcg['resid']:.2e} (converged: {i_pcg['converged']}), {i_pcg['wall']:.0f} s",
          flush=True)
    f_nys, i_nys = saved("nystrom", run_nystrom)
    f_chol, i_chol = saved("cholesky", run_cholesky)
    rows = [("cholesky (in place)", "-", i_chol["wall"], 0.0, test_error(a.data, f_chol, yt))]
    rel = float(torch.linalg.norm(f_pcg - f_chol) / torch.linalg.norm(f_chol))
    rows.append((f"pcg+nystrom(M={a.centers})",
                 f"{i_pcg['iterations']} (setup {i_pcg['setup']:.0f}s)", i_pcg["wall"], rel,
                 test_error(a.data, f_pcg, yt)))
    rel = float(torch.linalg.norm(f_nys - f_chol) / torch.linalg.norm(f_chol))
    rows.append((f"nystrom(M={a.centers})", "-", i_nys["wall"], rel,
                 test_error(a.data, f_nys, yt)))
    print(f"\n[exact, cached kernel] {a.data}, n = {a.n}, n_test = {a.n_test}, depth-3 ReLU "
          f"NTK, diag_reg = {a.diag_reg} (δ = {op.shift:.3g}), tol = {a.tol}, "
          f"max_iter = {a.max_iter}")
    _print_solver_rows(rows)
    print(f"peak RSS {peak_rss_gb():.2f} GB (this process; earlier parts may have been "
          "loaded from --workdir)")


def part_exact(a) -> None:
    if a.cache:
        return part_exact_cached(a)
    net = make_network(3, "relu")
    x, y = dataset(a.data, a.n, a.workdir, "train")
    xt, yt = dataset(a.data, a.n_test, a.workdir, "test")
    Y = targets(a.data, y)
    op = operator(net, x, a.diag_reg)
    rows = []
    t = time.perf_counter()
    k = net.kernel(torch.from_numpy(np.array(x)), get="ntk")
    k.diagonal().add_(op.shift)
    alpha = cholesky_jitter(k, validate=False).solve(Y)
    del k
    f_chol = _predict(net, xt, x, alpha)
    rows.append(("cholesky", "-", time.perf_counter() - t, 0.0, test_error(a.data, f_chol, yt)))
    t = time.perf_counter()
    pre = NystromPreconditioner(op, a.centers, seed=0)
    setup = time.perf_counter() - t
    res = pcg(op.matvec, Y, precond=pre, tol=a.tol, max_iter=a.max_iter, progress=a.progress)
    f_pcg = _predict(net, xt, x, res.x)
    rel = float(torch.linalg.norm(f_pcg - f_chol) / torch.linalg.norm(f_chol))
    rows.append((f"pcg+nystrom(M={a.centers})", f"{res.iterations} (setup {setup:.0f}s)",
                 time.perf_counter() - t, rel, test_error(a.data, f_pcg, yt)))
    t = time.perf_counter()
    sol = nystrom_solve(op, Y, a.centers, seed=0)
    f_nys = _predict(net, xt, np.asarray(x)[sol.centers.numpy()], sol.coef)
    rel = float(torch.linalg.norm(f_nys - f_chol) / torch.linalg.norm(f_chol))
    rows.append((f"nystrom(M={a.centers})", "-", time.perf_counter() - t, rel,
                 test_error(a.data, f_nys, yt)))
    print(f"\n[exact] {a.data}, n = {a.n}, n_test = {a.n_test}, depth-3 ReLU NTK, "
          f"diag_reg = {a.diag_reg} (δ = {op.shift:.3g}), tol = {a.tol}")
    _print_solver_rows(rows)
    print(f"peak RSS {peak_rss_gb():.2f} GB")


def part_sweep(a) -> None:
    """Plain Nyström against the exact solve as M grows, at one n (in RAM)."""
    net = make_network(3, "relu")
    x, y = dataset(a.data, a.n, a.workdir, "train")
    xt, yt = dataset(a.data, a.n_test, a.workdir, "test")
    Y = targets(a.data, y)
    xr = torch.from_numpy(np.array(x))
    op = KernelOperator(net, xr, get="ntk")
    op.shift = a.diag_reg * float(op.diagonal().mean())
    k = net.kernel(xr, get="ntk")
    k.diagonal().add_(op.shift)
    f_ex = _predict(net, xt, x, cholesky_jitter(k, validate=False).solve(Y))
    del k
    e_ex = test_error(a.data, f_ex, yt)
    print(f"\n[sweep] {a.data}, n = {a.n}, n_test = {a.n_test}, depth-3 ReLU NTK, diag_reg = "
          f"{a.diag_reg}; exact (Cholesky) test err {e_ex:.4f}")
    print(f"{'M':>7}{'M/n':>8}{'test err':>10}{'vs exact':>10}{'rel. diff of predictions':>26}")
    for m in a.ms:
        sol = nystrom_solve(op, Y, m, seed=0)
        f = _predict(net, xt, np.asarray(x)[sol.centers.numpy()], sol.coef)
        e = test_error(a.data, f, yt)
        rel = float(torch.linalg.norm(f - f_ex) / torch.linalg.norm(f_ex))
        print(f"{m:>7}{m / a.n:>8.3f}{e:>10.4f}{100 * (e / e_ex - 1):>+9.1f}%{rel:>26.3f}",
              flush=True)


def part_scale(a) -> None:
    net = make_network(3, "relu")
    xt, yt = dataset(a.data, a.n_test, a.workdir, "test")
    print(f"\n[scale] {a.data}, plain Nyström M = {a.centers}, depth-3 ReLU NTK, inputs "
          f"from np.memmap, diag_reg = {a.diag_reg}, n_test = {a.n_test}")
    print(f"{'n':>9}{'test err':>10}{'data s':>9}{'solve s':>9}{'predict s':>11}"
          f"{'peak RSS GB':>13}")
    for n in a.ns:
        t = time.perf_counter()
        x, y = dataset(a.data, n, a.workdir, "train")
        t_data = time.perf_counter() - t
        t = time.perf_counter()
        op = operator(net, x, a.diag_reg)
        m = min(a.centers, n)
        sol = nystrom_solve(op, targets(a.data, y), m, seed=0)
        t_solve = time.perf_counter() - t
        t = time.perf_counter()
        f = _predict(net, xt, np.asarray(x[sol.centers.numpy()]), sol.coef)
        t_pred = time.perf_counter() - t
        print(f"{n:>9}{test_error(a.data, f, yt):>10.4f}{t_data:>9.0f}{t_solve:>9.0f}"
              f"{t_pred:>11.1f}{peak_rss_gb():>13.2f}", flush=True)


def _zarr_kernel(net, x, a):
    """K(x, x) as an upper-tile zarr array in --workdir (half the disk of the full
    matrix), written tile by tile and resumed if an earlier run was interrupted."""
    import zarr

    from ntkit.engine.storage import create_kernel_array, kernel_progress

    path = os.path.join(a.workdir, f"K_ntk_{a.data}_{a.n}_t{a.tile}.zarr")
    if os.path.exists(path):
        arr = zarr.open_array(path, mode="r+")
    else:
        arr = create_kernel_array(path, a.n, tile=a.tile, upper=True)
    done, total = kernel_progress(arr)
    if total == 0 or done < total:
        t = time.perf_counter()
        net.kernel(x, get="ntk", out=arr, resume=True, progress=a.progress)
        print(f"kernel {a.n}×{a.n} (upper tiles) written to {path} in "
              f"{time.perf_counter() - t:.0f} s ({done} of {total} tiles were done before)",
              flush=True)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    print(f"on disk: {size / 1e9:.1f} GB", flush=True)
    return arr


def part_beyond(a) -> None:
    net = make_network(3, "relu")
    x, y = dataset(a.data, a.n, a.workdir, "train")
    xt, yt = dataset(a.data, a.n_test, a.workdir, "test")
    Y = targets(a.data, y)
    kernel = _zarr_kernel(net, x, a) if a.zarr else None
    t = time.perf_counter()
    op = KernelOperator(net, x, get="ntk", kernel=kernel)
    op.shift = a.diag_reg * float(op.diagonal().mean())  # ntkit's relative ridge
    pre = NystromPreconditioner(op, a.centers, seed=0) if a.centers else None
    setup = time.perf_counter() - t
    t = time.perf_counter()
    log = []
    res = pcg(op.matvec, Y, precond=pre, tol=a.tol, max_iter=a.max_iter, progress=a.progress,
              callback=lambda it, r, v: log.append((it, float(r.max()),
                                                    time.perf_counter() - t)))
    wall = time.perf_counter() - t
    f = _predict(net, xt, x, res.x)
    how = (f"kernel read from the upper-tile zarr array (chunks {a.tile})" if a.zarr
           else f"kernels recomputed per tile (tile {op.tile})")
    print(f"\n[beyond] {a.data}, n = {a.n} ({a.n**2 * 8 / 1e9:.0f} GB as a float64 matrix), "
          f"PCG with {how}, Nyström M = {a.centers}, diag_reg = {a.diag_reg}")
    print(f"{'iteration':>10}{'max rel residual':>18}{'elapsed s':>11}")
    for it, r, s in log:
        print(f"{it:>10}{r:>18.2e}{s:>11.0f}")
    print(f"converged {res.converged} in {res.iterations} iterations, preconditioner setup "
          f"{setup:.0f} s, PCG {wall:.0f} s ({wall / max(1, res.iterations):.0f} s/iteration), "
          f"test err {test_error(a.data, f, yt):.4f}, peak RSS {peak_rss_gb():.2f} GB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["exact", "scale", "beyond", "sweep"], action="append",
                   required=True, help="which part(s) to run (repeatable)")
    p.add_argument("--data", choices=["mnist1d", "teacher"], default="mnist1d")
    p.add_argument("--n", type=int, default=40000, help="train size for exact / beyond")
    p.add_argument("--ns", type=lambda s: [int(v) for v in s.split(",")],
                   default=[10000, 30000, 100000, 300000, 1000000], help="sizes for scale")
    p.add_argument("--ms", type=lambda s: [int(v) for v in s.split(",")],
                   default=[1250, 2500, 5000], help="numbers of centers for sweep")
    p.add_argument("--n-test", type=int, default=N_TEST)
    p.add_argument("--centers", type=int, default=5000, help="Nyström centers M")
    p.add_argument("--diag-reg", type=float, default=1e-3,
                   help="ridge relative to mean(diag K)")
    p.add_argument("--tol", type=float, default=1e-6, help="PCG relative residual")
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default="/tmp/ntkit_large_n")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--cache", action="store_true",
                   help="exact: compute K once to an .npy memmap in --workdir; PCG reads it, "
                        "Cholesky factors it in RAM in place (n = 40k fits 24 GB this way)")
    p.add_argument("--zarr", action="store_true",
                   help="beyond: write K once as an upper-tile zarr array in --workdir "
                        "(resumed if interrupted) and let PCG read it")
    p.add_argument("--tile", type=int, default=512, help="zarr chunk / tile size")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for part in a.part:
        {"exact": part_exact, "scale": part_scale, "beyond": part_beyond,
         "sweep": part_sweep}[part](a)


if __name__ == "__main__":
    main()
