"""Small float64 networks used by the empirical-kernel tests (fast to differentiate)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def mlp(d: int = 5, k: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, 12), nn.Tanh(),
                         nn.Linear(12, k))


class CNN(nn.Module):
    """Conv2d (padding), max pool, grouped strided Conv2d, Conv1d (reflect 'same',
    dilation), average pooling, Linear."""

    def __init__(self, k: int = 2):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 6, 2, stride=2, groups=2)
        self.c3 = nn.Conv1d(6, 4, 3, padding="same", padding_mode="reflect", dilation=2)
        self.c4 = nn.Conv2d(4, 4, (2, 1), padding="same", bias=False)   # asymmetric 'same'
        self.fc = nn.Linear(4, k)

    def forward(self, x):
        h = F.max_pool2d(torch.relu(self.c1(x)), 2)          # (n, 4, 4, 4)
        h = torch.relu(self.c2(h))                            # (n, 6, 2, 2)
        h = torch.tanh(self.c3(h.flatten(2)))                 # (n, 4, 4)
        h = self.c4(h.reshape(-1, 4, 2, 2))                   # (n, 4, 2, 2)
        return self.fc(F.avg_pool2d(h, 2).flatten(1))


class ResNet(nn.Module):
    """Pre-LayerNorm residual MLP blocks on a short sequence (Linear sees 3 positions)."""

    def __init__(self, d: int = 6, k: int = 2, blocks: int = 2):
        super().__init__()
        self.inp = nn.Linear(d, 8)
        self.norms = nn.ModuleList(nn.LayerNorm(8) for _ in range(blocks))
        self.ups = nn.ModuleList(nn.Linear(8, 16) for _ in range(blocks))
        self.downs = nn.ModuleList(nn.Linear(16, 8) for _ in range(blocks))
        self.out = nn.Linear(8, k)

    def forward(self, x):                                     # x: (n, 3, d)
        h = self.inp(x)
        for ln, up, down in zip(self.norms, self.ups, self.downs, strict=True):
            h = h + down(F.gelu(up(ln(h))))
        return self.out(h.mean(1))


class MultiHead(nn.Module):
    """Two heads returned as a dict: (n, 2) and (n, 3, 2) (flattened to k = 8)."""

    def __init__(self, d: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 10), nn.SiLU())
        self.a = nn.Linear(10, 2)
        self.b = nn.Linear(10, 6)

    def forward(self, x):
        h = self.body(x)
        return {"a": self.a(h), "b": self.b(h).reshape(-1, 3, 2)}


class NtkDense(nn.Module):
    """NTK-parameterized dense layer written with ``x @ W.T * scale + b * b_std``."""

    def __init__(self, d_in: int, d_out: int, w_std: float = 1.5, b_std: float = 0.1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in))
        self.bias = nn.Parameter(torch.randn(d_out))
        self.w_scale, self.b_std = w_std / math.sqrt(d_in), b_std

    def forward(self, x):
        return (x @ self.weight.T) * self.w_scale + self.bias * self.b_std


class Tied(nn.Module):
    """One weight used three ways: F.linear twice and ``h @ (2·W)``; plus a parameter
    used elementwise (must take the Jacobian route)."""

    def __init__(self, d: int = 5):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d, d) / math.sqrt(d))
        self.gain = nn.Parameter(torch.ones(d))
        self.head = nn.Linear(d, 2)

    def forward(self, x):
        h = torch.tanh(F.linear(x, self.w))
        h = torch.tanh(F.linear(h, self.w) * self.gain)
        h = torch.sin(h @ (self.w.T * 2.0))
        return self.head(h)


class Permuted(nn.Module):
    """Weight views: identity permute, transposes, negation and division by a number."""

    def __init__(self, d: int = 4):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d, d) / math.sqrt(d))
        self.u = nn.Parameter(torch.randn(d, d) / math.sqrt(d))
        self.v = nn.Parameter(torch.randn(3, d) / 2)

    def forward(self, x):
        h = torch.tanh(F.linear(x, self.w.permute(0, 1)))
        h = torch.tanh(h @ self.w.permute(1, 0))                       # same layout as F.linear
        h = torch.tanh(torch.matmul(h, self.u.transpose(0, 1).t()))   # u used as (in, out)
        h = torch.tanh(h @ self.u.swapaxes(1, 0) + h @ self.w.mT)
        return F.linear(h, -self.v / 2)


class Embed(nn.Module):
    """Integer token inputs (n, 4): embedding (Jacobian route) and a Linear."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, tokens):
        return self.fc(torch.tanh(self.emb(tokens)).mean(1))


def models_and_inputs(seed: int = 0):
    """name -> (model, x1, x2): float64 models with matching random inputs."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return {
        "mlp": (mlp().double(), r(7, 5), r(5, 5)),
        "cnn": (CNN().double(), r(5, 2, 8, 8), r(4, 2, 8, 8)),
        "resnet": (ResNet().double(), r(6, 3, 6), r(4, 3, 6)),
        "multihead": (MultiHead().double(), r(5, 4), r(3, 4)),
        "ntkdense": (nn.Sequential(NtkDense(4, 9), nn.ReLU(), NtkDense(9, 2)).double(),
                     r(5, 4), r(4, 4)),
        "tied": (Tied().double(), r(5, 5), r(3, 5)),
        "permuted": (Permuted().double(), r(4, 4), r(3, 4)),
        "embed": (Embed().double(), torch.randint(0, 11, (5, 4), generator=g),
                  torch.randint(0, 11, (3, 4), generator=g)),
    }
