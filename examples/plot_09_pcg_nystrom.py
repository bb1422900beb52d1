"""
PCG and Nyström at large n
==========================

Kernel ridge regression with an NTK without forming the kernel: `ntkit.solvers.KernelOperator`
computes (K + λI)v tile by tile, `ntkit.solvers.pcg` solves with it, and a Nyström
preconditioner with M centers (`ntkit.solvers.NystromPreconditioner`, Falkon's form) cuts
the iterations. Plain Nyström with the same M centers is cheaper still but stays away
from the exact solution when the spectrum decays slowly.
"""

import matplotlib.pyplot as plt
import torch

from ntkit import layers as nl
from ntkit import solvers

torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
n, d = 3000, 20
x = torch.randn(n, d, generator=g, dtype=torch.float64)
y = torch.sin(x[:, :1] * 2) + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
net = nl.serial(nl.Dense(1, w_std=1.5, b_std=0.1), nl.ReLU(), nl.Dense(1, w_std=1.5, b_std=0.1),
                nl.ReLU(), nl.Dense(1, w_std=1.5))
lam = 1e-3

# (K + λI) v by row panels. With ``net, x`` instead of ``kernel=`` the operator recomputes
# the tiles at every product and never holds K (kernel= may also be a memmap or zarr
# array on disk); here the n × n kernel fits in memory and is computed once.
k_full = net.kernel(x, get="ntk")
op = solvers.KernelOperator(kernel=k_full, shift=lam)
histories = {}
for name, precond in (("CG", None),
                      ("PCG + Nyström, M = 100", solvers.NystromPreconditioner(op, 100)),
                      ("PCG + Nyström, M = 400", solvers.NystromPreconditioner(op, 400))):
    out = solvers.pcg(op.matvec, y, precond=precond, tol=1e-8, max_iter=150)
    histories[name] = [float(r.max()) for r in out.residual_history]
    print(f"{name}: {out.iterations} iterations, converged: {out.converged}")

# %%
# Plain Nyström (subset of regressors) against the exact solve, on test points.
x_test = torch.randn(500, d, generator=g, dtype=torch.float64)
alpha = torch.linalg.solve(k_full + lam * torch.eye(n, dtype=torch.float64), y)
f_exact = net.kernel(x_test, x, get="ntk") @ alpha
ms, gaps = [100, 200, 400, 800], []
for m in ms:
    sol = solvers.nystrom_solve(op, y, m)           # f(x) = K(x, x[centers]) @ coef
    f = net.kernel(x_test, x[sol.centers], get="ntk") @ sol.coef
    gaps.append(float((f - f_exact).norm() / f_exact.norm()))
    print(f"plain Nyström M = {m}: test predictions {gaps[-1]:.3f} from the exact solve")

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for name, res in histories.items():
    axes[0].semilogy(res, label=name)
axes[0].set_xlabel("iteration")
axes[0].set_ylabel("relative residual")
axes[0].set_title(f"n = {n}, depth-2 ReLU NTK, λ = {lam}")
axes[0].legend()
axes[1].loglog(ms, gaps, "o-")
axes[1].set_xlabel("centers M")
axes[1].set_ylabel("‖f_Nyström − f_exact‖ / ‖f_exact‖")
axes[1].set_title("plain Nyström on test points")
plt.tight_layout()
plt.show()
