"""Metrics of networks: representations of trained ones, training-free architecture scores
(re-exports only)."""

from ntkit.metrics.architecture import (
    naswot_score,
    ntk_condition_number,
    ntk_spectrum,
    relu_codes,
)
from ntkit.metrics.neural_collapse import neural_collapse

__all__ = ["naswot_score", "neural_collapse", "ntk_condition_number", "ntk_spectrum",
           "relu_codes"]
