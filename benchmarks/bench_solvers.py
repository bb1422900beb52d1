"""Solver overhead: ntkit's validated, conditioned solves vs a bare Cholesky solve.

    python benchmarks/bench_solvers.py [--n 2000 5000] [--device cpu|cuda] [--repeat 3]
                                       [--threads 2] [--dtype float64]

For each n it builds an SPD kernel on the device (an RBF plus a linear kernel of
n × 64 inputs, exactly symmetric, as ntkit's engine returns train-train kernels) and
times, best of --repeat after one warm-up, interleaved so that load drifts hit all
columns alike:

- bare: ``torch.linalg.cholesky(K)`` + ``torch.cholesky_solve(y, L)``, no checks;
- cholesky_jitter: ``ntkit.solvers.cholesky_jitter(K)`` + ``.solve(y)`` (validation,
  factorization, condition estimate on the device);
- gd_mse(t=None): ``ntkit.predict.gradient_descent_mse(K, y)(None, 0.0, None, K_td)``,
  the whole t = ∞ prediction, against bare + ``K_td @ x``;

and prints the times and their ratios to bare (the goal: ≤ 1.3 for n ≥ 5000). A round-off
asymmetric K would cost one more pass (the symmetrizing copy). ``--breakdown`` also
times each of ntkit's steps on its own (best of --repeat): on a loaded machine the
Cholesky time itself varies 2×, which swamps whole-call ratios, while the steps'
costs relative to an adjacent Cholesky are stable.
"""

from __future__ import annotations

import argparse
import time

import torch

from ntkit.predict import gradient_descent_mse
from ntkit.solvers import cholesky_jitter


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_problem(n: int, m: int, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """(K (n, n) SPD, K_td (m, n), y (n, 1)) on ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n + m, 64, generator=g, dtype=dtype, device=device)
    k = torch.exp(-torch.cdist(x, x) ** 2 / 128) + x @ x.T / 64
    k = 0.5 * (k + k.T)
    y = torch.randn(n, 1, generator=g, dtype=dtype, device=device)
    return k[:n, :n].contiguous(), k[n:, :n].contiguous(), y


def bench(n: int, m: int, device: torch.device, dtype: torch.dtype, repeat: int) -> dict:
    k, k_td, y = make_problem(n, m, device, dtype)

    def bare():
        L = torch.linalg.cholesky(k)
        return torch.cholesky_solve(y, L)

    def bare_pred():
        return k_td @ bare()

    def ntkit_chol():
        return cholesky_jitter(k, warn=False).solve(y)

    def ntkit_mse():
        return gradient_descent_mse(k, y, dtype=dtype)(None, None, None, k_td)[1]

    fns = {"bare": bare, "bare_pred": bare_pred, "cholesky_jitter": ntkit_chol,
           "gd_mse": ntkit_mse}
    best = {name: float("inf") for name in fns}
    results = {}
    for rep in range(repeat + 1):  # the first round is the warm-up
        for name, fn in fns.items():
            _sync(device)
            t = time.perf_counter()
            results[name] = fn()
            _sync(device)
            if rep:
                best[name] = min(best[name], time.perf_counter() - t)
    err = float((results["cholesky_jitter"] - results["bare"]).abs().max()
                / results["bare"].abs().max())
    return {**best, "rel_diff": err}


def breakdown(n: int, device: torch.device, dtype: torch.dtype, repeat: int) -> dict:
    """Best-of-``repeat`` seconds of each step of ``cholesky_jitter(K).solve(y)``."""
    from ntkit.solvers.checks import _extremes, max_asymmetry
    from ntkit.solvers.cholesky import _chol_solve, estimate_condition

    k, _, y = make_problem(n, 1, device, dtype)
    L = torch.linalg.cholesky(k)
    steps = {
        "extremes (finite+scale)": lambda: _extremes(k),
        "asymmetry": lambda: max_asymmetry(k),
        "cholesky": lambda: torch.linalg.cholesky_ex(k),
        "condition estimate": lambda: estimate_condition(k, L),
        "solve (2 triangular)": lambda: _chol_solve(L, y),
        "torch.cholesky_solve": lambda: torch.cholesky_solve(y, L),
    }
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeat):
        for name, fn in steps.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[2000, 5000])
    p.add_argument("--m", type=int, default=100, help="test points for gd_mse")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--breakdown", action="store_true", help="time each step too")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU, {torch.get_num_threads()} threads")
    print(f"# {name}, {args.dtype}, torch {torch.__version__}, best of {args.repeat}")
    print(f"{'n':>6} | {'bare chol+solve':>15} | {'cholesky_jitter':>15} {'ratio':>6} | "
          f"{'bare +K_td@':>11} | {'gd_mse(None)':>12} {'ratio':>6} | {'rel diff':>8}")
    for n in args.n:
        r = bench(n, args.m, device, dtype, args.repeat)
        print(f"{n:>6} | {r['bare']:>14.3f}s | {r['cholesky_jitter']:>14.3f}s "
              f"{r['cholesky_jitter'] / r['bare']:>6.2f} | {r['bare_pred']:>10.3f}s | "
              f"{r['gd_mse']:>11.3f}s {r['gd_mse'] / r['bare_pred']:>6.2f} | "
              f"{r['rel_diff']:>8.1e}", flush=True)
    if args.breakdown:
        for n in args.n:
            b = breakdown(n, device, dtype, args.repeat)
            chol = b["cholesky"]
            print(f"\nsteps at n={n} (fraction of the Cholesky time):")
            for name, t in b.items():
                print(f"  {name:>24}: {t:8.4f}s  {t / chol:6.3f}")
            ours = chol + sum(b[s] for s in ("extremes (finite+scale)", "asymmetry",
                                             "condition estimate", "solve (2 triangular)"))
            bare = chol + b["torch.cholesky_solve"]
            print(f"  sum of steps: ntkit / bare = {ours / bare:.2f}")


if __name__ == "__main__":
    main()
