"""
Infinite-width FC network on digits
====================================

The NNGP and NTK of a depth-3 ReLU network, used as kernels for regression on
scikit-learn's 8×8 digits: the Bayesian posterior mean (NNGP) and the end of gradient
descent (NTK) of an infinitely wide network. Test accuracy as the training set grows.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits

from ntkit import layers as nl
from ntkit import predict

torch.set_num_threads(2)
X, y = load_digits(return_X_y=True)
X = torch.tensor(X / 16.0)
X = X - X.mean(0)
rng = np.random.default_rng(0)
perm = torch.tensor(rng.permutation(len(X)))
X, y = X[perm], torch.tensor(y)[perm]
Y = torch.nn.functional.one_hot(y, 10).double() - 0.1      # centred one-hot targets
x_test, y_test = X[1500:], y[1500:]

net = nl.serial(nl.Dense(512, w_std=1.5, b_std=0.05), nl.ReLU(),
                nl.Dense(512, w_std=1.5, b_std=0.05), nl.ReLU(),
                nl.Dense(10, w_std=1.5, b_std=0.05))

# %%
# One kernel over all training candidates and the test set; smaller training sets are
# its sub-blocks.
sizes = [25, 50, 100, 200, 400, 800]
k_train = net.kernel(X[:800])
k_test = net.kernel(x_test, X[:800])
acc = {"nngp": [], "ntk": []}
for n in sizes:
    for kind in acc:
        kt, ks = getattr(k_train, kind)[:n, :n], getattr(k_test, kind)[:, :n]
        if kind == "nngp":
            post = predict.gp_inference(kt, Y[:n], diag_reg=1e-4)(get="nngp", k_test_train=ks)
            f = post if torch.is_tensor(post) else post.mean
        else:
            _, f = predict.gradient_descent_mse(kt, Y[:n], diag_reg=1e-4)(None, k_test_train=ks)
        acc[kind].append(float((f.argmax(1) == y_test).double().mean()))
    print(f"n = {n:4d}: NNGP {acc['nngp'][-1]:.3f}, NTK {acc['ntk'][-1]:.3f}")

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for kind, a in acc.items():
    ax.plot(sizes, a, "o-", label=kind.upper())
ax.set_xscale("log")
ax.set_xlabel("training examples")
ax.set_ylabel(f"test accuracy ({len(y_test)} digits)")
ax.set_title("Infinite-width depth-3 ReLU network on digits")
ax.legend()
ax.grid(alpha=0.3)
plt.show()
