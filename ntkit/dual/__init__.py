"""Dual activations: T = E[φ(u)φ(v)] and Tdot = E[φ'(u)φ'(v)] for (u, v) ~ N(0, Σ).

Pure functions of tensors ``(var1, cov, var2)`` (broadcastable; typically (n1, 1),
(n1, n2), (1, n2)), computed in the inputs' dtype. One idea per module:

- :mod:`~ntkit.dual.relu`: the arc-cosine family (ReLU, ABReLU, sign, step, max(x,0)^n);
- :mod:`~ntkit.dual.erf`: erf and GELU;
- :mod:`~ntkit.dual.trig`: sin/cos and the RBF activation;
- :mod:`~ntkit.dual.exponential`: exp(b x) and exp(b x²);
- :mod:`~ntkit.dual.polynomial`: polynomials, monomials and Hermite polynomials (exact);
- :mod:`~ntkit.dual.quadrature`: any φ by 2-D Gaussian quadrature.
"""

from ntkit.dual.erf import erf_dual, gelu_dual
from ntkit.dual.exponential import exp_dual, gaussian_dual
from ntkit.dual.polynomial import hermite_dual, monomial_dual, polynomial_dual
from ntkit.dual.quadrature import gauss_hermite, quadrature_dual, trapezoid_rule
from ntkit.dual.relu import (
    abrelu_dual,
    angle,
    rectified_monomial_dual,
    relu_dual,
    sign_dual,
)
from ntkit.dual.trig import rbf_dual, sin_dual

__all__ = [
    "abrelu_dual", "angle", "erf_dual", "exp_dual", "gauss_hermite", "gaussian_dual",
    "gelu_dual", "hermite_dual", "monomial_dual", "polynomial_dual", "quadrature_dual",
    "rbf_dual", "rectified_monomial_dual", "relu_dual", "sign_dual", "sin_dual",
    "trapezoid_rule",
]
