"""Path counting in random ReLU networks: exact gradient moments (Hanin 2018, "Which neural net
architectures give rise to exploding and vanishing gradients?"; Hanin & Nica 2020,
"Products of many large random matrices and gradients in deep neural networks" and
"Finite depth and width corrections to the neural tangent kernel").

Setting. A bias-free ReLU net with ``widths = [n_0, …, n_L]``
(input, hidden n_1…n_{L−1}, output n_L) and He initialization

    z^(1) = W^(1) x,  z^(l) = W^(l) relu(z^(l−1)),  W^(l)_ij = √(2/n_{l−1}) Ŵ_ij,  Ŵ_ij ~ N(0, 1)

(ntkit: ``serial(Dense(n_1, w_std=√2, b_std=None), ReLU(), …, Dense(n_L, w_std=√2,
b_std=None))``).

- Path counting gives E[(∂z_q/∂x_p)²] = 2/n_0 for every output q and input p, whatever the
  hidden widths.
- For u ≠ 0 let h = relu(z^(L−1)) be the last hidden layer and
  **Y = (n_0/n_{L−1})·‖(∂h/∂x) u‖²/‖u‖²**, the normalized squared Jacobian–vector product
  (equivalently n_0/2 times the average over the output weights of (∂z/∂x · u)²/‖u‖² for
  a scalar output). Conditionally on the previous layers, each layer multiplies it by an
  independent (2/n_l)·χ²_{K_l} with K_l ~ Binomial(n_l, ½) active neurons, so

      Y = Π_{l=1}^{L−1} (2/n_l) χ²_{K_l},   E[Y] = 1,   E[Y²] = Π_{l=1}^{L−1} (1 + 5/n_l),

  and ln Y ≈ N(−β/2, β) with β = 5 Σ_{l=1}^{L−1} 1/n_l when all n_l are large.
- E[(∂z/∂x · u)⁴] = 3·(2/n_0)²·E[Y²]·‖u‖⁴ for a scalar output (12/n_0² Π(1 + 5/n_l)).
- The NTK diagonal: with all parameters Ŵ (no biases), Θ(x, x) = Σ_l ‖∂z/∂Ŵ^(l)‖² has
  E[Θ(x, x)] = 2·L·‖x‖²/n_0 for a scalar output, L = number of weight matrices
  (each layer contributes 2‖x‖²/n_0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import digamma, polygamma
from scipy.stats import binom

from ntkit.theory.random_matrix import check_widths

__all__ = ["relu_gradient_moments"]


def _layer_log_moments(n: int) -> tuple[float, float, float]:
    """Exact mean/var of ln((2/n) χ²_K), K ~ Bin(n, ½), conditioned on K ≥ 1; P(K = 0)."""
    k = np.arange(1, n + 1, dtype=np.float64)
    p = binom.pmf(k, n, 0.5)
    p0 = 0.5**n
    p = p / p.sum()
    m = digamma(k / 2) + math.log(2.0) + math.log(2.0 / n)
    mean = float(np.sum(p * m))
    var = float(np.sum(p * polygamma(1, k / 2)) + np.sum(p * (m - mean) ** 2))
    return mean, var, p0


def relu_gradient_moments(widths: Sequence[int]) -> dict[str, float]:
    """Exact gradient moments of a He-initialized bias-free ReLU net (see module doc).

    Args:
      widths: [n_0, n_1, …, n_L] — input dimension, hidden widths, output width (L ≥ 1).

    Returns:
      dict with
        ``second_moment``: E[(∂z_q/∂x_p)²] = 2/n_0;
        ``fourth_moment``: E[Y²] = Π_{hidden} (1 + 5/n_l) (Y of the module doc, E[Y] = 1);
        ``beta``: 5 Σ_{hidden} 1/n_l;
      and also
        ``fourth_moment_scalar``: E[(∂z/∂x · u)⁴] for a scalar output and unit u, 12/n_0²·Π;
        ``log_mean``, ``log_var``: exact mean and variance of ln Y conditioned on no
          hidden layer being entirely inactive (ln Y = −∞ then);
        ``p_dead``: the probability of that event, 1 − Π(1 − 2^{−n_l});
        ``ntk_diagonal``: E[Θ(x, x)]/‖x‖² = 2L/n_0 (L weight matrices, scalar output).
    """
    w = check_widths(widths)
    n0, hidden = w[0], w[1:-1]
    prod = float(np.prod([1.0 + 5.0 / n for n in hidden])) if hidden else 1.0
    lm = [_layer_log_moments(n) for n in hidden]
    alive = float(np.prod([1.0 - p0 for _, _, p0 in lm])) if lm else 1.0
    return {
        "second_moment": 2.0 / n0,
        "fourth_moment": prod,
        "beta": 5.0 * sum(1.0 / n for n in hidden),
        "fourth_moment_scalar": 12.0 / n0**2 * prod,
        "log_mean": float(sum(m for m, _, _ in lm)),
        "log_var": float(sum(v for _, v, _ in lm)),
        "p_dead": 1.0 - alive,
        "ntk_diagonal": 2.0 * (len(w) - 1) / n0,
    }
