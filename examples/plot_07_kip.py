"""
Dataset distillation with KIP
=============================

Kernel inducing points (Nguyen, Chen & Lee 2021, "Dataset meta-learning from kernel
ridge-regression"): learn a small support set whose kernel ridge regression with a
network's infinite-width NTK predicts the training set. `ntkit.apps.kip.distill`
differentiates through the kernel with respect to the support images. Here: 20 learned
digits against 20 random real ones.
"""

import matplotlib.pyplot as plt
import torch

from ntkit import layers as nl
from ntkit.apps import kip
from ntkit.lab.framework import digits_subset

torch.set_num_threads(2)
x, y = digits_subset(1000, seed=0)          # sklearn digits, shuffled, rows on the sphere
x_train, y_train, x_test, y_test = x[:500], y[:500], x[500:], y[500:]
net = nl.serial(nl.Dense(1, w_std=2**.5, b_std=0.1), nl.ReLU(),
                nl.Dense(1, w_std=2**.5, b_std=0.1))

res = kip.distill(net, x_train, y_train, n_support=20, steps=20, kernel="ntk",
                  batch_size=200, lr=0.01, seed=0)
rand = kip.distill(net, x_train, y_train, n_support=20, steps=0, seed=0)   # the starting set
acc_kip, acc_rand = res.accuracy(net, x_test, y_test), rand.accuracy(net, x_test, y_test)
print(f"test accuracy with 20 support images: learned {acc_kip:.3f}, real {acc_rand:.3f}")

# %%
fig = plt.figure(figsize=(11, 4.4))
for row, (r, name) in enumerate(((rand, "real (start)"), (res, "learned"))):
    for i in range(10):
        ax = fig.add_subplot(2, 11, row * 11 + i + 1)
        ax.imshow(r.x_support[i].reshape(8, 8), cmap="gray_r")
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            ax.set_ylabel(name, fontsize=8)
ax = fig.add_axes([0.78, 0.15, 0.2, 0.7])
ax.bar(["real", "learned"], [acc_rand, acc_kip], color=["0.6", "C0"])
ax.set_ylim(0, 1)
ax.set_title("test accuracy", fontsize=9)
plt.show()
