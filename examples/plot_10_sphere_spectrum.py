"""
Mercer spectra on the sphere
============================

On the sphere S^(d−1) the NNGP and NTK of a fully-connected network are dot-product kernels
κ(⟨u, u'⟩), diagonalized by spherical harmonics: eigenvalue μ_k with multiplicity N(d, k).
`ntkit.theory.spectrum.dot_product_eigenvalues` computes the μ_k (Funk–Hecke). For ReLU
networks the NTK decays like k^(−d) and the NNGP like k^(−(d+2)) (Bietti & Mairal 2019;
Bach 2017) — the NTK's slower decay is why it interpolates rougher functions. The Gram
matrix eigenvalues of points drawn uniformly on the sphere approach the μ_k.
"""

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from ntkit import layers as nl
from ntkit.theory.spectrum import dot_product_eigenvalues

d, k_max = 3, 30
net = nl.serial(nl.Dense(1, w_std=math.sqrt(2)), nl.ReLU(),
                nl.Dense(1, w_std=math.sqrt(2)), nl.ReLU(), nl.Dense(1))
spec = {kind: dot_product_eigenvalues(net, d, k_max, kind=kind) for kind in ("ntk", "nngp")}

# %%
# Gram matrix of n uniform points: eig(K / n) estimates μ_k, each N(d, k) times.
n = 1500
g = torch.Generator().manual_seed(0)
u = torch.randn(n, d, generator=g, dtype=torch.float64)
u = u / u.norm(dim=1, keepdim=True) * math.sqrt(d)    # ‖u‖² = d: input kernel u·u'/d = cos
gram = torch.linalg.eigvalsh(net.kernel(u, get="ntk") / n).flip(0).numpy()

fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
ks = np.arange(k_max + 1)
for kind, s in spec.items():
    mu = np.asarray(s.eigenvalues)
    keep = mu > 1e-14 * mu[0]
    axes[0].loglog(ks[keep][1:], mu[keep][1:], "o", ms=4, label=f"ReLU {kind.upper()}")
ref = ks[4:].astype(float)
mu_ntk = np.asarray(spec["ntk"].eigenvalues)
mu_nngp = np.asarray(spec["nngp"].eigenvalues)
axes[0].loglog(ref, mu_ntk[4] * (ref / 4) ** -d, "--", color="C0", lw=1, label=f"k^-{d}")
axes[0].loglog(ref, mu_nngp[4] * (ref / 4) ** -(d + 2), "--", color="C1", lw=1,
               label=f"k^-{d + 2}")
axes[0].set_xlabel("degree k")
axes[0].set_ylabel("μ_k")
axes[0].set_title(f"Mercer eigenvalues on S^{d - 1}, depth 2")
axes[0].legend(fontsize=8)
# Expected sorted eigenvalues: μ_k repeated N(d, k) times.
mult = np.asarray(spec["ntk"].multiplicities)
expected = np.sort(np.repeat(mu_ntk, mult))[::-1][:200]
axes[1].semilogy(expected, "k-", label="μ_k with multiplicity")
axes[1].semilogy(gram[:200], ".", label=f"eig(K/n), n = {n}")
axes[1].set_xlabel("index")
axes[1].set_title("NTK Gram eigenvalues approach μ_k")
axes[1].legend()
plt.tight_layout()
plt.show()
