"""Metrics of trained networks' representations (re-exports only)."""

from ntkit.metrics.neural_collapse import neural_collapse

__all__ = ["neural_collapse"]
