"""Random features: Fourier features, arc-cosine (ReLU/step) features, NTK features, and
ridge regression on them (see `ntkit.features.samplers` and `ntkit.features.ridge`)."""

from ntkit.features.kernels import (
    activation_ntk_two_layer,
    arccos_kernel,
    cauchy_kernel,
    gaussian_kernel,
    laplacian_kernel,
    relu_ntk_two_layer,
)
from ntkit.features.ridge import RandomFeaturesRegressor, kernel_ridge
from ntkit.features.samplers import (
    KINDS,
    ArcCosineFeatures,
    NTKFeatures,
    RandomFeatureMap,
    RandomFourierFeatures,
    TwoLayerNet,
    exact_kernel,
    make_features,
)

__all__ = [
    "KINDS",
    "ArcCosineFeatures",
    "NTKFeatures",
    "RandomFeatureMap",
    "RandomFeaturesRegressor",
    "RandomFourierFeatures",
    "TwoLayerNet",
    "activation_ntk_two_layer",
    "arccos_kernel",
    "cauchy_kernel",
    "exact_kernel",
    "gaussian_kernel",
    "kernel_ridge",
    "laplacian_kernel",
    "make_features",
    "relu_ntk_two_layer",
]
