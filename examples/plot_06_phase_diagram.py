"""
The order-to-chaos phase diagram
================================

Mean-field signal propagation (Poole et al. 2016; Schoenholz et al. 2017): for a deep
tanh network with weight variance σ_w² and bias variance σ_b², χ₁ = σ_w² E[φ'(u)²] at the
variance fixed point separates the ordered phase (χ₁ < 1: inputs become correlated) from
the chaotic one (χ₁ > 1). `ntkit.theory.phase_diagram` computes χ₁ and the correlation
depth scale ξ_c on a grid; training is possible to depth ~ ξ_c, which diverges on the
critical line.
"""

import matplotlib.pyplot as plt
import numpy as np

from ntkit import layers as nl
from ntkit import theory

sigma_w2 = np.linspace(0.5, 4.0, 22)
sigma_b2 = np.linspace(0.0, 0.3, 9)
pd = theory.phase_diagram(nl.Tanh(), sigma_w2, sigma_b2)   # arrays are (n_b, n_w)
print("χ₁ range:", float(np.nanmin(pd.chi_perp)), "to", float(np.nanmax(pd.chi_perp)))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
im = axes[0].pcolormesh(sigma_w2, sigma_b2, np.log(pd.chi_perp), cmap="RdBu_r",
                        vmin=-1, vmax=1, shading="auto")
fig.colorbar(im, ax=axes[0], label="log χ₁")
axes[0].set_title("log χ₁ (ordered < 0 < chaotic)")
xi = np.clip(pd.xi_c, 0, 200)
im = axes[1].pcolormesh(sigma_w2, sigma_b2, xi, cmap="viridis", shading="auto")
fig.colorbar(im, ax=axes[1], label="ξ_c (clipped at 200)")
axes[1].set_title("correlation depth scale ξ_c")
for ax in axes:
    ax.plot(pd.boundary_w2, pd.boundary_b2, "k-", lw=1.5, label="χ₁ = 1")
    ax.set_xlim(sigma_w2[0], sigma_w2[-1])
    ax.set_ylim(sigma_b2[0], sigma_b2[-1])
    ax.set_xlabel("σ_w²")
    ax.set_ylabel("σ_b²")
    ax.legend(loc="upper left", fontsize=8)
plt.tight_layout()
plt.show()
