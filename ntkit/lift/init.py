"""The weight and bias variances of a lifted layer: PyTorch's default initialization
(derived exactly), the module's current parameters, or the user's overrides.

Convention (neural-tangents' and ntkit's, see `ntkit.layers.Dense`): a layer with fan-in
``C·q`` (input channels times filter size) has weights of variance ``w_std²/(C·q)`` and
biases of variance ``b_std²`` ("standard" parameterization, the one a torch module
has). So the numbers returned here are ``w_std² = fan_in · Var(weight entry)`` and
``b_std² = Var(bias entry)``.

PyTorch's default for ``nn.Linear`` and ``nn.Conv*d`` (``reset_parameters``):
``kaiming_uniform_(weight, a=√5)`` draws U(−1/√f, 1/√f) with f = ``weight.size(1)·q``
(torch's fan-in of the weight tensor), whose variance is 1/(3f), and the bias draws
U(−1/√f, 1/√f) too, variance 1/(3f). For ``nn.Linear`` and ``nn.Conv*d`` f is the
layer's fan-in, so ``w_std² = 1/3`` and ``b_std² = 1/(3f)``. For ``nn.ConvTranspose*d``
the weight is stored (in, out, *q), so torch's f is ``out·q`` while the layer's fan-in
is ``in·q``: ``w_std² = in/(3·out)`` and ``b_std² = 1/(3·out·q)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ntkit.layers.conv import ConvModule
from ntkit.layers.conv_transpose import ConvTransposeModule
from ntkit.layers.dense import DenseModule
from ntkit.lift.errors import LiftError

INITS = ("torch", "module")
_TORCH_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                nn.ConvTranspose2d, nn.ConvTranspose3d)
NTKIT_TYPES = (DenseModule, ConvModule, ConvTransposeModule)
_OVERRIDE_KEYS = ("w_std", "b_std")


def fan_in(module: nn.Module) -> int:
    """The layer's fan-in in ntkit's sense: input channels × filter size."""
    w = module.weight
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return int(w.shape[0]) * math.prod(w.shape[2:])      # (in, out, *q)
    return int(w.shape[1]) * math.prod(w.shape[2:])          # (out, in, *q)


def _torch_default(module: nn.Module, place: str) -> tuple[float, float | None]:
    """(w_std, b_std) of PyTorch's default ``reset_parameters`` (module docstring)."""
    cls = type(module)
    base = next(t for t in _TORCH_TYPES if isinstance(module, t))
    if cls.reset_parameters is not base.reset_parameters:
        raise LiftError(place, cls.__name__,
                        f"it overrides reset_parameters, so its initialization is not "
                        f"torch's default for {base.__name__}; lift it with init='module' "
                        "(variances estimated from its parameters) or give overrides=",
                        hint=False)
    w = module.weight
    torch_fan = int(w.shape[1]) * math.prod(w.shape[2:])   # torch's fan-in of the tensor
    var_w = 1.0 / (3.0 * torch_fan)                         # U(±1/√f): bound²/3
    w_std = math.sqrt(var_w * fan_in(module))
    b_std = None if module.bias is None else math.sqrt(1.0 / (3.0 * torch_fan))
    return w_std, b_std


def _from_parameters(module: nn.Module) -> tuple[float, float | None]:
    """(w_std, b_std) estimated from the current parameters: w_std² = fan-in × mean of
    the squared effective weights, b_std² = mean of the squared biases (second moments
    about zero: the kernel assumes zero-mean parameters)."""
    with torch.no_grad():
        w = module.weight.detach().double() * float(getattr(module, "w_scale", 1.0))
        w_std = math.sqrt(fan_in_of(module) * float(w.pow(2).mean()))
        if module.bias is None:
            return w_std, None
        b = module.bias.detach().double() * float(getattr(module, "b_scale", 1.0))
        return w_std, math.sqrt(float(b.pow(2).mean()))


def fan_in_of(module: nn.Module) -> int:
    """Fan-in of a torch layer or of an ntkit-built one (whose weights are (out, in, *q))."""
    if isinstance(module, NTKIT_TYPES):
        return int(module.weight.shape[1]) * math.prod(module.weight.shape[2:])
    return fan_in(module)


def layer_variances(module: nn.Module, place: str, init: str,
                    overrides: dict) -> tuple[float, float | None]:
    """(w_std, b_std) of one affine layer (b_std None: the layer has no bias parameter).

    ``init="torch"``: torch's default for torch layers, the spec's own values for layers
    that an ntkit spec built (they record them). ``init="module"``: estimated from the
    parameters. An entry of ``overrides`` for ``place`` replaces either value."""
    if init == "module":
        w_std, b_std = _from_parameters(module)
    elif isinstance(module, NTKIT_TYPES):
        w_std, b_std = module.w_std, module.b_std
    else:
        w_std, b_std = _torch_default(module, place)
    given = overrides.get(place)
    if given is not None:
        if "w_std" in given:
            w_std = float(given["w_std"])
        if "b_std" in given:
            if module.bias is None and given["b_std"] is not None:
                raise ValueError(f"overrides[{place!r}] gives b_std, but that layer has no "
                                 "bias (bias=False)")
            b_std = None if given["b_std"] is None else float(given["b_std"])
    return w_std, b_std


def check_overrides(overrides, affine_places: set[str]) -> dict:
    """Validated overrides: {place: {"w_std": float, "b_std": float | None}}."""
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise TypeError("overrides must be a dict {module name: {'w_std': ..., 'b_std': ...}}, "
                        f"got {type(overrides).__name__}")
    out = {}
    for place, given in overrides.items():
        if place not in affine_places:
            raise ValueError(f"overrides names {place!r}, which is no Linear/Conv layer of the "
                             f"module; its layers with weights are: "
                             f"{', '.join(sorted(affine_places)) or 'none'}")
        if not isinstance(given, dict) or not given or set(given) - set(_OVERRIDE_KEYS):
            raise ValueError(f"overrides[{place!r}] must be a dict with keys among "
                             f"{_OVERRIDE_KEYS}, got {given!r}")
        for key, value in given.items():
            if value is None and key == "b_std":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not (0.0 <= float(value) < math.inf):
                raise ValueError(f"overrides[{place!r}][{key!r}] must be a finite number "
                                 f">= 0, got {value!r}")
        out[place] = dict(given)
    return out


def check_init(init) -> str:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}: 'torch' (PyTorch's default "
                         "initialization, variances derived exactly) or 'module' (estimated "
                         f"from the module's current parameters); got {init!r}")
    return init
