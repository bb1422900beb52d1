"""
Lab: depth separation
=====================

Telgarsky's (2016) construction: composing a tent map k times, a deep ReLU network with
O(k) units represents a sawtooth Δ^k with 2^k linear pieces, which a shallow network needs
exponentially many units to approximate. The lab experiment ``depth_separation`` counts
the pieces exactly with `ntkit.geometry.count_linear_regions` and compares shallow fits
with the L1 lower bound. Its claims, then the regions of a small random network drawn
with the same tools.
"""

import tempfile

import matplotlib.pyplot as plt
import torch

import ntkit.lab as lab
from ntkit.geometry import count_linear_regions, sawtooth

res = lab.run("depth_separation", quick=True, seed=0, out=tempfile.mkdtemp(),
              progress=False, threads=1)
print(res.claims_table())

# %%
# The sawtooth of depth k has exactly 2^k pieces on [0, 1].
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
xs = torch.linspace(0, 1, 2001, dtype=torch.float64)[:, None]
for k in (1, 2, 4):
    net = sawtooth(k)
    axes[0].plot(xs[:, 0], net(xs).detach()[:, 0], label=f"k = {k}")
axes[0].set_title("Δ^k: tent map composed k times")
axes[0].legend()
ks = list(range(1, 11))
pieces = []
for k in ks:
    r = count_linear_regions(sawtooth(k), torch.zeros(1, dtype=torch.float64),
                             torch.ones(1, dtype=torch.float64))
    pieces.append(r.n_pieces)
axes[1].semilogy(ks, pieces, "o-", label="counted exactly")
axes[1].semilogy(ks, [2**k for k in ks], "k--", lw=1, label="2^k")
axes[1].set_xlabel("k (depth)")
axes[1].set_ylabel("linear pieces on [0, 1]")
axes[1].legend()
plt.tight_layout()
plt.show()
