"""
Function space vs weight space: linearized training
===================================================

A wide network trained by gradient descent stays close to its first-order Taylor
expansion around the initialization (Lee et al. 2019, "Wide neural networks of any depth
evolve as linear models under gradient descent"). Here the same initialization is trained
three ways on a 1-D regression problem:

* the network itself, in weight space;
* its linearization `ntkit.linearize`, in weight space;
* the closed-form function-space solution from the empirical NTK at initialization,
  `ntkit.predict.gradient_descent_mse` with ``fx_train_0``/``fx_test_0``.
"""

import matplotlib.pyplot as plt
import torch

import ntkit
from ntkit import layers as nl
from ntkit import predict

torch.set_num_threads(2)
torch.manual_seed(0)
x_train = torch.linspace(-2, 2, 12, dtype=torch.float64)[:, None]
y_train = torch.sin(2 * x_train)
x_test = torch.linspace(-3, 3, 100, dtype=torch.float64)[:, None]

spec = nl.serial(nl.Dense(512, w_std=1.5, b_std=0.5), nl.Erf(),
                 nl.Dense(1, w_std=1.5, b_std=0.5))
model = spec.build(in_features=1, seed=0)
lin = ntkit.linearize(model)
f0_train, f0_test = model(x_train).detach(), model(x_test).detach()

# %%
# Function space: the empirical NTK at initialization gives the whole trajectory.
ntk_train = ntkit.empirical_ntk(model, x_train)
ntk_test = ntkit.empirical_ntk(model, x_test, x_train)
# A learning rate safely below the stability limit 2/λ_max of the empirical NTK.
lr, steps = 0.5 * float(predict.max_learning_rate(ntk_train)), 200
mse = predict.gradient_descent_mse(ntk_train, y_train, learning_rate=lr)
_, f_fn = mse(steps, fx_train_0=f0_train, fx_test_0=f0_test, k_test_train=ntk_test)


# %%
# Weight space: plain gradient descent on 0.5·mean((f − y)²) for both models (neural-
# tangents' and ntkit's loss; time is counted in steps × learning rate).
def train(m):
    opt = torch.optim.SGD(m.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((m(x_train) - y_train) ** 2).mean()).backward()
        opt.step()
    return m(x_test).detach()


f_net = train(model)
f_lin = train(lin)
print("max |net − linearized|:", float((f_net - f_lin).abs().max()))
print("max |linearized − function space|:", float((f_lin - f_fn).abs().max()))

# %%
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(x_test, f0_test, color="0.7", label="at initialization")
ax.plot(x_test, f_net, lw=3, alpha=0.5, label="network, trained")
ax.plot(x_test, f_lin, "--", label="linearized network, trained")
ax.plot(x_test, f_fn, ":", color="k", label="function space (empirical NTK)")
ax.plot(x_train, y_train, "o", color="C3", label="training data")
ax.set_xlabel("x")
ax.set_ylabel("f(x)")
ax.set_title(f"Width 512, {steps} steps of gradient descent")
ax.legend(fontsize=8)
plt.show()
