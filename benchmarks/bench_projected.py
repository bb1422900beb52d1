"""Projected empirical NTK of a ResNet-18 (CIFAR-style, 3×32×32, ~11.2 M parameters) on CPU.

The exact empirical NTK needs the per-example Jacobians, P·k_out floats per image
(11.2 M × 10 outputs × 4 B ≈ 447 MB per image in float32, ≈ 447 GB for 1,000 images),
or, with a recomputing method, n² Jacobian-vector work. `ntkit.projected_gradients`
keeps a chunk of per-example Jacobians at a time and projects each parameter's block at
once, so memory is O(chunk·k_out·P + n·k_out·k).

    python benchmarks/bench_projected.py --n 64 --k 2048                # countsketch
    python benchmarks/bench_projected.py --n 2 --k 2048 --projection gaussian
    python benchmarks/bench_projected.py --n 8 --k 2048 --check         # vs exact kernel

Prints the time, the time per image (and the extrapolation to --extrapolate images when
fewer were measured), the peak resident memory (VmHWM from /proc/self/status) and, with
--check, the relative Frobenius error of the projected kernel against the exact one on
the measured images, next to its predicted size from the estimator's variance.
Random images (the kernel's cost does not depend on the pixels); torchvision is not
needed: the ResNet-18 is defined below (BasicBlock ×[2,2,2,2], 3×3 stem as for CIFAR,
BatchNorm in eval mode with its initial running statistics).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

import ntkit


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x):
        h = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(h)) + self.short(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU())
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        h = self.layers(self.stem(x))
        return self.fc(h.mean((2, 3)))


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="images measured")
    ap.add_argument("--extrapolate", type=int, default=1000, help="images to extrapolate to")
    ap.add_argument("--k", type=int, default=2048, help="projection dimension")
    ap.add_argument("--projection", default="countsketch", choices=ntkit.empirical.PROJECTIONS)
    ap.add_argument("--classes", type=int, default=10, help="output units")
    ap.add_argument("--chunk", type=int, default=None, help="images per Jacobian chunk")
    ap.add_argument("--budget-mib", type=float, default=2048, help="memory budget (MiB)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check", action="store_true",
                    help="also compute the exact kernel on the n images and compare")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ResNet18(args.classes).eval()          # float32
    x = torch.randn(args.n, 3, 32, 32)
    p = sum(t.numel() for t in model.parameters())
    base = vm_hwm_mib()
    t0 = time.perf_counter()
    phi = ntkit.projected_gradients(model, x, args.k, seed=0, projection=args.projection,
                                    chunk_size=args.chunk,
                                    memory_budget=int(args.budget_mib * 2**20))
    kernel = torch.einsum("iuk,jvk->ij", phi, phi)   # the outputs-summed NTK (TE-NAS form)
    dt = time.perf_counter() - t0
    peak = vm_hwm_mib()
    jac_gb = args.extrapolate * args.classes * p * 4 / 1e9
    print(f"ResNet-18 (CIFAR stem), P = {p:,} parameters, {args.classes} outputs, float32, "
          f"{torch.get_num_threads()} threads")
    print(f"projection {args.projection}, k = {args.k}, n = {args.n} images, budget "
          f"{args.budget_mib:.0f} MiB")
    print(f"features {tuple(phi.shape)}, kernel {tuple(kernel.shape)}, finite: "
          f"{bool(torch.isfinite(kernel).all())}")
    print(f"time {dt:.1f} s = {dt / args.n:.2f} s/image"
          + (f" -> {args.extrapolate} images ≈ {dt / args.n * args.extrapolate / 60:.0f} min "
             "(extrapolated linearly)" if args.n < args.extrapolate else ""))
    print(f"peak RSS (VmHWM) {peak:.0f} MiB (before the call: {base:.0f} MiB); features "
          f"{phi.numel() * 4 / 2**20:.1f} MiB")
    print(f"exact kernel by Jacobian contraction: {args.extrapolate} × {args.classes} × {p:,} "
          f"floats of Jacobian = {jac_gb:.0f} GB in float32")
    if args.check:
        t1 = time.perf_counter()
        exact = ntkit.empirical_ntk(model, x, trace_outputs=False,
                                    memory_budget=int(args.budget_mib * 2**20))
        g = exact.permute(0, 2, 1, 3).reshape(args.n * args.classes, -1).double()
        est = torch.einsum("iuk,jvk->iujv", phi, phi).reshape(g.shape).double()
        d = g.diagonal()
        c = float((d[:, None] * d[None, :] + g**2).sum())   # Gaussian-rate bound (see projected)
        print(f"exact untraced kernel on {args.n} images: {time.perf_counter() - t1:.1f} s; "
              f"relative Frobenius error of the estimate {float((est - g).norm() / g.norm()):.4f}"
              f" (expected ≲ sqrt(E‖Ĝ−G‖²)/‖G‖ = {math.sqrt(c / args.k) / float(g.norm()):.4f})")


if __name__ == "__main__":
    main()
