"""Analytic tools: signal propagation and criticality (`ntkit.theory.criticality`)."""

from ntkit.theory.criticality import (
    CriticalPoint,
    DepthScales,
    FixedPoint,
    MeasuredPropagation,
    PhaseDiagram,
    Propagation,
    VarianceFixedPoints,
    chi_parallel,
    chi_perp,
    correlation_fixed_points,
    correlation_map,
    critical_initialization,
    critical_points,
    depth_scale,
    depth_scales,
    measure_propagation,
    order_chaos_boundary,
    phase_diagram,
    plot_phase_diagram,
    propagate,
    variance_fixed_point,
    variance_fixed_points,
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
