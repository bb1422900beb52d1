"""Empirical NTK / NNGP kernels of any ``torch.nn.Module``.

Methods (see each module for costs): `jacobian` (Jacobian contraction, the reference),
`ntk_vp` (NTK-vector products), `structured` (structured derivatives of linear and
convolution layers), chosen with ``method=`` or automatically by a cost model; `projected` (random
projections of per-example gradients, ``projection_dim=``) for models too large for them.
"""

from ntkit.empirical.api import (
    METHODS,
    empirical_nngp,
    empirical_ntk,
    estimate_costs,
)
from ntkit.empirical.common import eval_mode
from ntkit.empirical.projected import (
    DEFAULT_PROJECTION,
    PROJECTIONS,
    projected_gradients,
    projection_matrix,
)

__all__ = ["empirical_ntk", "empirical_nngp", "estimate_costs", "eval_mode", "METHODS",
           "PROJECTIONS", "DEFAULT_PROJECTION", "projected_gradients", "projection_matrix"]
