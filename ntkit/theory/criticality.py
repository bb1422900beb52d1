"""Signal propagation in deep random networks and tuning to criticality.

References: Poole, Lahiri, Raghu, Sohl-Dickstein & Ganguli 2016, "Exponential expressivity
in deep neural networks through transient chaos"; Schoenholz, Gilmer, Ganguli &
Sohl-Dickstein 2017, "Deep information propagation"; Roberts, Yaida & Hanin 2022, "The
Principles of Deep Learning Theory" (Cambridge University Press), ch. 5.

Network (the recursion of the NNGP limit; Lee et al. 2018, "Deep neural networks as Gaussian
processes"): layer-1 pre-activations z¹ = b + W x with W_ij ~ N(0, C_w/n₀), b ~ N(0, C_b),
and z^{l+1} = b + W σ(z^l) with W_ij ~ N(0, C_w/n_l). At infinite width the second
moments K^l_{αβ} = E[z_α z_β] follow

    K^{l+1}_{αβ} = C_b + C_w T(K^l_{αα}, K^l_{αβ}, K^l_{ββ}),   T = E[σ(u)σ(v)],

where T (and Tdot = E[σ'(u)σ'(v)]) come from an ntkit `Activation` spec's ``dual``. This is
the 'ntk'-parameterized ``Dense(w_std=√C_w, b_std=√C_b)`` after the activation.

Quantities (all with V(K) = T(K, K, K) = E[σ(z)²], z ~ N(0, K)):

- variance map      F(K) = C_b + C_w V(K); fixed points K* = F(K*).
- χ∥(K) = F'(K) = C_w V'(K) = (C_w/2) E[∂²(σ²)(z)] (heat equation / Price's theorem).
  Computed by autograd through ``dual(K, K, K)`` (or finite differences, ``method="fd"``).
- χ⊥(K) = C_w E[σ'(z)²] = C_w Tdot(K, K, K): the slope of the correlation map at ρ = 1.
- correlation map   ρ ↦ c(ρ) = (C_b + C_w T(K*, ρK*, K*)) / K*, with c(1) = 1 always; its
  slope at ρ is χ_c(ρ) = C_w Tdot(K*, ρK*, K*) (Price), so χ_c(1) = χ⊥.
- depth scales ξ = −1/log χ: a perturbation decays like χ^l = e^{−l/ξ}. ξ∥ uses χ∥(K*),
  ξ⊥ uses χ⊥(K*), and ξ_c uses χ_c at the stable correlation fixed point ρ* (ρ* = 1, so
  ξ_c = ξ⊥, in the ordered phase). Conventions: ξ = +inf at χ = 1 (criticality: power laws
  instead of exponentials, e.g. 1 − ρ_l ≈ 9π²/(2l²) for ReLU at (C_b, C_w) = (0, 2), and
  K_l ≈ 1/(2l) for tanh at (0, 1)); ξ < 0 when χ > 1 (growth on the scale |ξ|); ξ = 0 at χ = 0.
- phases: ordered if χ⊥(K*) < 1 (nearby inputs converge), chaotic if χ⊥(K*) > 1
  (they decorrelate to ρ* < 1); the order-to-chaos boundary is χ⊥(K*) = 1.
- criticality: K* = F(K*) and χ∥(K*) = χ⊥(K*) = 1.

At K = 0 (the critical point of tanh-like activations) σ(√K z) is degenerate and autograd
through √K fails; χ∥(0) and χ⊥(0) mean the limits K → 0⁺, computed by Richardson
extrapolation from K = ε, ε/2, ε/4, ε/8 (ε = 1e-4; error O(ε⁴) for V analytic at 0,
and exact for the positively homogeneous ReLU family). That limit is what a deep network
approaching K* = 0 sees (for ReLU, χ⊥ → 1/2·C_w, not the zero-variance convention of
Tdot at exactly K = 0).

Everything is float64 and on the CPU; inputs may be floats or tensors.

The code lives in `ntkit.theory.signal_maps` (the maps and slopes), `ntkit.theory.fixed_points`
(fixed points, depth scales, critical points), `ntkit.theory.phase_diagram` and
`ntkit.theory.propagation`; this module gathers their public names.
"""

from ntkit.theory.fixed_points import (
    CriticalPoint,
    DepthScales,
    FixedPoint,
    VarianceFixedPoints,
    correlation_fixed_points,
    critical_initialization,
    critical_points,
    depth_scales,
    variance_fixed_point,
    variance_fixed_points,
)
from ntkit.theory.phase_diagram import (
    PhaseDiagram,
    order_chaos_boundary,
    phase_diagram,
    plot_phase_diagram,
)
from ntkit.theory.propagation import (
    MeasuredPropagation,
    Propagation,
    measure_propagation,
    propagate,
)
from ntkit.theory.signal_maps import (
    chi_parallel,
    chi_perp,
    correlation_map,
    depth_scale,
    variance_map,
)

__all__ = [
    "CriticalPoint", "DepthScales", "FixedPoint", "MeasuredPropagation", "PhaseDiagram",
    "Propagation", "VarianceFixedPoints", "chi_parallel", "chi_perp",
    "correlation_fixed_points", "correlation_map", "critical_initialization",
    "critical_points", "depth_scale", "depth_scales", "measure_propagation",
    "order_chaos_boundary", "phase_diagram", "plot_phase_diagram", "propagate",
    "variance_fixed_point", "variance_fixed_points", "variance_map",
]
