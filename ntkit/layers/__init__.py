"""Layer specs: each gives a finite torch module (`build`) and its infinite-width kernel map.

    from ntkit import layers as nl
    net = nl.serial(nl.Dense(512, w_std=1.5, b_std=0.05), nl.ReLU(), nl.Dense(1))
    k = net.kernel(x1, x2, get=("nngp", "ntk"))
    model = net.build(in_features=x1.shape[1], seed=0)
"""

from ntkit.layers.activations import (
    GELU,
    ABReLU,
    Abs,
    Cos,
    Elementwise,
    Erf,
    Exp,
    Gaussian,
    Hermite,
    Identity,
    LeakyReLU,
    Monomial,
    Polynomial,
    Rbf,
    RectifiedMonomial,
    ReLU,
    Sigmoid,
    Sign,
    SiLU,
    Sin,
    Softplus,
    Tanh,
)
from ntkit.layers.attention import GlobalSelfAttention
from ntkit.layers.base import Activation, Layer
from ntkit.layers.branching import FanInConcat, FanInSum, FanOut, parallel, serial
from ntkit.layers.conv import Conv
from ntkit.layers.dense import Dense
from ntkit.layers.norm import LayerNorm
from ntkit.layers.pooling import AvgPool, Flatten, GlobalAvgPool

__all__ = [
    "ABReLU", "GELU", "Abs", "Activation", "AvgPool", "Conv", "Cos", "Dense", "Elementwise",
    "Erf", "Exp", "FanInConcat", "FanInSum", "FanOut", "Flatten", "Gaussian",
    "GlobalAvgPool", "GlobalSelfAttention", "Hermite", "Identity", "Layer", "LayerNorm",
    "LeakyReLU", "Monomial", "Polynomial", "Rbf", "RectifiedMonomial", "ReLU", "Sigmoid",
    "SiLU", "Sign", "Sin", "Softplus", "Tanh", "parallel", "serial",
]
