"""Cost of differentiating an analytic kernel: backward pass relative to the forward kernel.

    python benchmarks/bench_grad.py [--n 100 400] [--repeat 3] [--threads 1]

For each network and n it times, best of --repeat after one warm-up, in float64:

- ``nograd``: ``net.kernel(x, get="ntk")`` under ``torch.no_grad()`` (the fast, in-place,
  multi-threaded engine);
- ``fwd``: the same with ``x`` and the tied w_std/b_std requiring grad (the autograd
  path: out-of-place duals, tiles in one thread, concatenated);
- ``bwd``: ``loss.backward()`` of ``loss = (K * R).sum()`` for a fixed random R (one
  vector-Jacobian product, gradients to x, w_std and b_std);

and prints bwd/fwd and (fwd + bwd)/nograd: what a marginal-likelihood or KIP step pays
per kernel evaluation on top of the plain kernel.
"""

from __future__ import annotations

import argparse
import time

import torch

from ntkit import layers as nl


def nets(w, b):
    def fc(act, depth=3):
        layers = []
        for _ in range(depth):
            layers += [nl.Dense(512, w_std=w, b_std=b), act]
        return nl.serial(*layers, nl.Dense(1, w_std=w, b_std=b))

    block = nl.serial(nl.Dense(512, w_std=w, b_std=b), nl.ReLU(),
                      nl.Dense(512, w_std=w, b_std=b))
    residual = nl.serial(nl.Dense(512, w_std=w, b_std=b), nl.FanOut(2),
                         nl.parallel(block, nl.Identity()), nl.FanInSum(), nl.ReLU(),
                         nl.Dense(1, w_std=w, b_std=b))
    return {
        "relu x3": fc(nl.ReLU()),
        "erf x3": fc(nl.Erf()),
        "gelu x3": fc(nl.GELU()),
        "tanh x1 (quadrature)": fc(nl.Tanh(), depth=1),
        "residual relu": residual,
    }


def best(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def time_case(net, plain, x0, r, repeat):
    """(no-grad kernel, autograd forward, backward) seconds, best of ``repeat``."""
    x = x0.clone().requires_grad_(True)

    def nograd():
        with torch.no_grad():
            plain.kernel(x0, get="ntk")

    def fwd():
        return (net.kernel(x, get="ntk") * r).sum()

    t_plain = best(nograd, repeat)
    t_fwd = best(fwd, repeat)
    bwd_times = []
    for _ in range(repeat + 1):
        loss = fwd()
        t0 = time.perf_counter()
        loss.backward()
        bwd_times.append(time.perf_counter() - t0)
    return t_plain, t_fwd, min(bwd_times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--nets", nargs="+", default=None,
                    help="network names to run (default: all; the quadrature (tanh) net "
                         "runs only for n <= 100 unless named: ~15 s forward at n = 100)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"float64, d={args.d}, torch threads={args.threads}, best of {args.repeat}")
    print(f"{'network':<22}{'n':>6}{'nograd s':>11}{'fwd s':>10}{'bwd s':>10}"
          f"{'bwd/fwd':>9}{'(f+b)/nograd':>14}")
    g = torch.Generator().manual_seed(0)
    for n in args.n:
        x0 = torch.randn(n, args.d, generator=g, dtype=torch.float64)
        r = torch.randn(n, n, generator=g, dtype=torch.float64)
        for name in nets(1.0, 0.1):
            if args.nets is not None and name not in args.nets:
                continue
            if args.nets is None and "quadrature" in name and n > 100:
                continue
            w = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
            b = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
            net = nets(w, b)[name]
            plain = nets(1.3, 0.2)[name]
            t_plain, t_fwd, t_bwd = time_case(net, plain, x0, r, args.repeat)
            print(f"{name:<22}{n:>6}{t_plain:>11.4f}{t_fwd:>10.4f}{t_bwd:>10.4f}"
                  f"{t_bwd / t_fwd:>9.2f}{(t_fwd + t_bwd) / t_plain:>14.2f}", flush=True)


if __name__ == "__main__":
    main()
