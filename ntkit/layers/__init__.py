"""Layer specs: each gives a finite torch module (`build`) and its infinite-width kernel map.

    from ntkit import layers as nl
    net = nl.serial(nl.Dense(512, w_std=1.5, b_std=0.05), nl.ReLU(), nl.Dense(1))
    k = net.kernel(x1, x2, get=("nngp", "ntk"))
    model = net.build(in_features=x1.shape[1], seed=0)

Every layer has ``kernel(x1, x2, get=..., **options)``, ``kernel_map(k)`` and
``build(in_features)``, documented once on `Layer` (``help(nl.Layer.kernel)``).
Inputs are channels first (n, C, *S); pass ``channels_last=True`` for NHWC data.

Linear: Dense, LayerNorm, Identity, DotGeneral.
Convolution family (channels first; 1-D, 2-D and 3-D): Conv, ConvTranspose, ConvLocal,
AvgPool, SumPool, GlobalAvgPool, GlobalSumPool, Flatten, ImageResize, Index.
Combinators: serial, parallel, repeat, FanOut, FanInSum, FanInConcat, FanInProd.
Attention: GlobalSelfAttention. Masked inputs (``mask_constant``): see `ntkit.layers.masking`.
Regularization: Dropout (p is the drop probability). Graphs: Aggregate (patterns via
with_pattern). Normalized exponential and Gabor kernels: ExpNormalized, Gabor.
Activations, closed form: ReLU, LeakyReLU, ABReLU, Abs, Sign, RectifiedMonomial, Erf,
GELU, Sin, Cos, Rbf, Exp, Gaussian, Polynomial, Monomial, Hermite; by quadrature: Tanh,
Sigmoid, Softplus, SiLU, Elementwise(fn); from a user's closed form:
Elementwise(nngp_fn=...). Base classes: Layer, Activation.
neural-tangents spellings: Relu, LeakyRelu, ABRelu, Gelu, and ``W_std=`` in Dense/Conv;
other neural-tangents names raise an AttributeError saying what to use.
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
from ntkit.layers.branching import (
    FanInConcat,
    FanInProd,
    FanInSum,
    FanOut,
    parallel,
    repeat,
    serial,
)
from ntkit.layers.conv import Conv
from ntkit.layers.conv_local import ConvLocal
from ntkit.layers.conv_transpose import ConvTranspose
from ntkit.layers.dense import Dense
from ntkit.layers.dot_general import DotGeneral
from ntkit.layers.dropout import Dropout
from ntkit.layers.graph import Aggregate, with_pattern
from ntkit.layers.norm import LayerNorm
from ntkit.layers.nt_names import NT_NAMES as _NT_NAMES
from ntkit.layers.nt_names import ABRelu, Gelu, LeakyRelu, Relu
from ntkit.layers.pooling import AvgPool, Flatten, GlobalAvgPool, GlobalSumPool, SumPool
from ntkit.layers.resize import ImageResize, Index
from ntkit.layers.special import ExpNormalized, Gabor

__all__ = [
    "ABReLU", "ABRelu", "GELU", "Abs", "Activation", "AvgPool", "Conv", "Cos", "Dense",
    "Elementwise", "Erf", "Exp", "FanInConcat", "FanInSum", "FanOut", "Flatten", "Gaussian",
    "Gelu", "GlobalAvgPool", "Hermite", "Identity", "Layer", "LayerNorm", "LeakyReLU",
    "LeakyRelu", "Monomial", "Polynomial", "Rbf", "RectifiedMonomial", "ReLU", "Relu",
    "Sigmoid", "SiLU", "Sign", "Sin", "Softplus", "Tanh", "parallel", "serial",
    # graphs, dropout, products, constant maps and two closed-form kernels
    "Aggregate", "DotGeneral", "Dropout", "ExpNormalized", "FanInProd", "Gabor", "repeat",
    "with_pattern",
    # convolution family: transposed, local, sum pools, resizing and indexing
    "ConvLocal", "ConvTranspose", "GlobalSumPool", "ImageResize", "Index", "SumPool",
    # attention
    "GlobalSelfAttention",
]


def __getattr__(name: str):
    """Unknown names: say what to use (neural-tangents' names, or the closest ones)."""
    import difflib  # stdlib, here so that it is no name of this module

    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _NT_NAMES:
        use = _NT_NAMES[name]
        hint = (f"neural-tangents' {name} is ntkit's {use}" if use else
                f"neural-tangents' {name} has no ntkit counterpart yet")
    else:
        close = difflib.get_close_matches(name, __all__, n=3, cutoff=0.6)
        close += [n for n in __all__ if n.lower() == name.lower() and n not in close]
        hint = f"did you mean {' or '.join(close)}?" if close else \
            f"the layers are: {', '.join(sorted(__all__))}"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}; {hint}")
