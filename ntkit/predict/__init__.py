"""Predictions of wide-network training in function space.

- `gradient_descent_mse`: closed-form gradient flow on MSE with a given kernel.
- `gradient_descent_mse_ensemble`: mean and covariance of an infinite ensemble of
  infinitely wide networks at any training time, from a layer spec or precomputed
  kernels.
- `gp_inference`: exact NNGP / NTK / NTK-GP posteriors (t = ∞).
- `gradient_descent`: ODE solution for any differentiable loss, optional momentum.
- `max_learning_rate`: the largest stable step size for MSE.

Conventions follow neural-tangents: the squared loss is 0.5 · mean((f - y)²) over all
entries of y, time runs in steps of size ``learning_rate``, and t = None means t = ∞.
"""

from ntkit.predict._utils import Gaussian
from ntkit.predict.ensemble import EnsemblePredictor, gradient_descent_mse_ensemble
from ntkit.predict.gp import GPPredictor, gp_inference
from ntkit.predict.learning_rate import max_learning_rate
from ntkit.predict.mse import MSEPredictor, gradient_descent_mse
from ntkit.predict.ode import LOSSES, ODEPredictor, gradient_descent

__all__ = [
    "LOSSES",
    "EnsemblePredictor",
    "GPPredictor",
    "Gaussian",
    "MSEPredictor",
    "ODEPredictor",
    "gp_inference",
    "gradient_descent",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "max_learning_rate",
]
