"""ntkit: neural tangent and NNGP kernels in PyTorch."""

__version__ = "0.1.0"
