"""ntkit: neural tangent and NNGP kernels in PyTorch.

    from ntkit import layers as nl
    net = nl.serial(nl.Dense(512, w_std=1.5, b_std=0.05), nl.ReLU(), nl.Dense(1))
    k = net.kernel(x1, x2, get=("nngp", "ntk"))        # exact infinite-width kernels
    model = net.build(in_features=d, seed=0)            # the matching finite network
    ntkit.empirical_ntk(model, x1, x2)                  # its empirical NTK
    ntkit.predict.gradient_descent_mse(k_train_train, y_train)   # closed-form training
    spec = ntkit.lift(torch_model, input_shape=(3, 32, 32))  # the spec of your own module

Subpackages: layers, models, predict, solvers, empirical, features, theory, lab, sklearn.
"""

import importlib as _importlib

from ntkit import engine, layers, predict, solvers  # noqa: F401 (engine serves Layer.kernel)
from ntkit._version import __version__
from ntkit.empirical import empirical_nngp, empirical_ntk, projected_gradients
from ntkit.kernel import Kernel
from ntkit.lift import LiftError, lift
from ntkit.linearize import linearize, taylor_expand
from ntkit.monte_carlo import monte_carlo_kernel

# Heavier subpackages (matplotlib, scikit-learn) load on first use: `ntkit.lab`, ...
_LAZY = ("features", "theory", "lab", "sklearn", "empirical", "demo", "models", "curvature",
         "metrics", "geometry", "apps")


def __getattr__(name: str):
    if name in _LAZY:
        return _importlib.import_module(f"ntkit.{name}")
    raise AttributeError(f"module 'ntkit' has no attribute {name!r}")


__all__ = [
    "Kernel", "LiftError", "empirical_nngp", "empirical_ntk", "layers", "lift", "linearize",
    "monte_carlo_kernel",
    "predict", "projected_gradients", "solvers", "taylor_expand", "__version__", *_LAZY,
]


def __dir__() -> list[str]:
    # The public names only: the eagerly imported helper modules (ntkit.engine, ntkit.dual,
    # ...) stay importable but are not part of `dir(ntkit)`.
    return sorted(__all__)
