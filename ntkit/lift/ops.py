"""The exact ntkit layer of one traced operation (a leaf module, a function or a method).

Each converter gets a `Site` (where the operation is, its per-example input and output
shapes, the lift's options) and returns an ntkit `Layer`, or None for an operation that
is the identity on kernels (``nn.Identity``, dropout in eval mode, a flatten of
features that are already flat). Anything without an exact map raises `LiftError`.
Padding, strides and pooling are checked by running the candidate ntkit module and the
torch operation on one random input (with shared weights): an exact structural test.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ntkit import layers as nl
from ntkit.layers.base import ActivationModule, ExampleShape
from ntkit.layers.conv import ConvModule
from ntkit.layers.conv_transpose import ConvTransposeModule
from ntkit.layers.dense import DenseModule
from ntkit.layers.norm import LayerNormModule
from ntkit.layers.pooling import AvgPoolModule
from ntkit.lift.errors import LiftError
from ntkit.lift.init import layer_variances


@dataclass
class Site:
    """One operation to lift: where it is and what flows in and out of it."""

    place: str                    # e.g. "features.3" or "blocks.0 (add)"
    op: str                       # e.g. "MaxPool2d" or "torch.relu"
    in_shape: tuple               # per-example torch shape of the tensor input
    out_shape: tuple              # per-example torch shape of the output
    nt_spatial: int               # spatial axes of the ntkit stream (0 after GAP to 1x1)
    init: str = "torch"
    parameterization: str = "standard"
    overrides: dict = field(default_factory=dict)

    def fail(self, why: str, hint: bool = True) -> LiftError:
        return LiftError(self.place, self.op, why, hint=hint)

    def spatial_in(self) -> tuple:
        """The spatial input shape, checked to be the ntkit stream's."""
        spatial = tuple(self.in_shape[1:])
        if self.nt_spatial != len(spatial):
            raise self.fail("its input was pooled to one position (AdaptiveAvgPool to 1), "
                            "which ntkit keeps as fully-connected features; flatten it before "
                            "this operation")
        return spatial


# ---- activations ----------------------------------------------------------------------

def gelu_tanh(x):
    """torch's tanh approximation of GELU (``approximate='tanh'``)."""
    return F.gelu(x, approximate="tanh")


class ScaledSoftplus:
    """φ(x) = log(1 + e^{βx})/β, as ``nn.Softplus(beta)`` (smooth: threshold 40)."""

    def __init__(self, beta: float):
        self.beta = float(beta)
        self.__name__ = f"softplus_beta_{self.beta:g}"

    def __call__(self, x):
        return F.softplus(x, beta=self.beta, threshold=40.0)


def _gelu(approximate: str = "none"):
    return nl.GELU() if approximate == "none" else nl.Elementwise(gelu_tanh)


def _softplus(beta: float = 1.0, threshold: float = 20.0):
    # torch switches to x above ``threshold``/β (a jump of ~e^{-20} ≈ 2e-9 at the default):
    # ntkit's Softplus is the smooth function.
    return nl.Softplus() if beta == 1 else nl.Elementwise(ScaledSoftplus(beta))


def _elu(site: Site, alpha: float = 1.0):
    raise site.fail(f"ELU (alpha={alpha}) has no closed-form dual in ntkit, and its kink in "
                    "φ'' makes quadrature inexact (see the guide page 'Kernels of your own "
                    "models'); replace it by SiLU, GELU or Softplus, or write the layer as "
                    "ntkit.layers.Elementwise(F.elu) in a hand-written spec if ~1e-6 is enough")


#: activation name -> (factory of the ntkit layer from torch's keyword arguments)
def activation(site: Site, name: str, kwargs: dict):
    kwargs = {k: v for k, v in kwargs.items() if k != "inplace"}
    if name == "relu":
        return nl.ReLU()
    if name == "leaky_relu":
        return nl.LeakyReLU(float(kwargs.get("negative_slope", 0.01)))
    if name == "gelu":
        return _gelu(kwargs.get("approximate", "none"))
    if name == "tanh":
        return nl.Tanh()
    if name == "sigmoid":
        return nl.Sigmoid()
    if name == "silu":
        return nl.SiLU()
    if name == "softplus":
        return _softplus(kwargs.get("beta", 1.0), kwargs.get("threshold", 20.0))
    if name == "elu":
        return _elu(site, kwargs.get("alpha", 1.0))
    raise AssertionError(name)


ACTIVATION_MODULES = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.GELU: "gelu",
                      nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SiLU: "silu",
                      nn.Softplus: "softplus", nn.ELU: "elu"}
_ACTIVATION_ATTRS = {nn.LeakyReLU: ("negative_slope",), nn.GELU: ("approximate",),
                     nn.Softplus: ("beta", "threshold"), nn.ELU: ("alpha",)}
ACTIVATION_FUNCTIONS = {
    F.relu: "relu", F.relu_: "relu", torch.relu: "relu", torch.relu_: "relu",
    F.leaky_relu: "leaky_relu", F.leaky_relu_: "leaky_relu", F.gelu: "gelu",
    torch.tanh: "tanh", F.tanh: "tanh", torch.tanh_: "tanh", torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid", torch.sigmoid_: "sigmoid", F.silu: "silu", F.softplus: "softplus",
    F.elu: "elu", F.elu_: "elu",
}
#: positional argument names after the input, for the functional forms
ACTIVATION_POSITIONAL = {"leaky_relu": ("negative_slope",), "softplus": ("beta", "threshold"),
                         "elu": ("alpha",), "gelu": ()}
ACTIVATION_METHODS = {"relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh",
                      "sigmoid": "sigmoid", "sigmoid_": "sigmoid"}


def activation_module(site: Site, module: nn.Module):
    base = next(t for t in ACTIVATION_MODULES if isinstance(module, t))
    kwargs = {a: getattr(module, a) for a in _ACTIVATION_ATTRS.get(base, ())}
    return activation(site, ACTIVATION_MODULES[base], kwargs)


# ---- structural checks ----------------------------------------------------------------

def _same_map(site: Site, spec: nl.Layer, torch_fn, in_shape, copy_weights=None) -> bool:
    """Whether the ntkit module of ``spec`` computes what ``torch_fn`` does on a random
    input of per-example shape ``in_shape`` (float64; weights shared via
    ``copy_weights(ntkit_module)``)."""
    gen = torch.Generator().manual_seed(0)
    try:
        mod, _ = spec.make_module(ExampleShape(in_shape), gen, torch.float64)
    except ValueError:
        return False
    if copy_weights is not None:
        copy_weights(mod)
    x = torch.randn((1, *in_shape), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        a, b = mod(x), torch_fn(x)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-12, atol=1e-12))


def _window_candidates(padding, padding_mode: str = "zeros") -> list[str]:
    if isinstance(padding, str):
        if padding == "valid":
            return ["VALID"]
        return ["CIRCULAR" if padding_mode == "circular" else "SAME"]
    pads = padding if isinstance(padding, (tuple, list)) else (padding,)
    if not any(pads):
        return ["VALID"]
    if padding_mode == "circular":
        return ["CIRCULAR"]
    return ["SAME"]


def _no_padding_choice(site: Site, what: str) -> LiftError:
    return site.fail(f"its padding ({what}) matches none of ntkit's: 'VALID', 'SAME' (total "
                     "padding split with the extra one after, as in neural-tangents) or "
                     "'CIRCULAR' (the same amounts, wrapping)", hint=True)


# ---- affine layers ----------------------------------------------------------------------

def linear(site: Site, m: nn.Linear):
    if len(site.in_shape) != 1:
        raise site.fail(f"it acts on the last axis of a {len(site.in_shape) + 1}-D input "
                        f"{('n', *site.in_shape)}; ntkit's Dense needs (n, features): "
                        "flatten or pool first (a 1×1 Conv acts per position)")
    w_std, b_std = layer_variances(m, site.place, site.init, site.overrides)
    return nl.Dense(m.out_features, w_std=w_std, b_std=b_std,
                    parameterization=site.parameterization)


def conv(site: Site, m: nn.Module):
    spatial = site.spatial_in()
    d = len(m.kernel_size)
    if m.groups != 1:
        raise site.fail(f"groups={m.groups}: a grouped convolution's fan-in is "
                        "in_channels/groups, which ntkit's Conv does not express (and "
                        "depthwise convolutions have a finite fan-in: no Gaussian limit)")
    if any(g != 1 for g in m.dilation) and any(q != 1 for q in m.kernel_size):
        raise site.fail(f"dilation={m.dilation}: ntkit's Conv has no dilation")
    if m.padding_mode not in ("zeros", "circular"):
        raise site.fail(f"padding_mode={m.padding_mode!r}: only 'zeros' and 'circular' have "
                        "exact kernel maps in ntkit")
    w_std, b_std = layer_variances(m, site.place, site.init, site.overrides)
    ref = nn.Conv1d if d == 1 else nn.Conv2d if d == 2 else nn.Conv3d
    probe = ref(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                m.dilation, 1, m.bias is not None, m.padding_mode, dtype=torch.float64)

    def copy(mod):
        mod.weight.data.copy_(probe.weight.data)
        if mod.bias is not None:
            mod.bias.data.copy_(probe.bias.data)

    for pad in _window_candidates(m.padding, m.padding_mode):
        spec = nl.Conv(m.out_channels, tuple(m.kernel_size), tuple(m.stride), pad,
                       w_std=w_std, b_std=b_std, parameterization=site.parameterization)
        check = nl.Conv(m.out_channels, tuple(m.kernel_size), tuple(m.stride), pad,
                        w_std=1.0, b_std=None if m.bias is None else 1.0,
                        parameterization="standard")
        if _same_map(site, check, probe, (m.in_channels, *spatial), copy):
            return spec
    raise _no_padding_choice(site, f"padding={m.padding!r}, stride={m.stride}, "
                                   f"padding_mode={m.padding_mode!r}")


def conv_transpose(site: Site, m: nn.Module):
    spatial = site.spatial_in()
    d = len(m.kernel_size)
    if m.groups != 1:
        raise site.fail(f"groups={m.groups}: ntkit's ConvTranspose has no groups")
    if any(g != 1 for g in m.dilation) and any(q != 1 for q in m.kernel_size):
        raise site.fail(f"dilation={m.dilation}: ntkit's ConvTranspose has no dilation")
    w_std, b_std = layer_variances(m, site.place, site.init, site.overrides)
    ref = nn.ConvTranspose1d if d == 1 else nn.ConvTranspose2d if d == 2 else \
        nn.ConvTranspose3d
    probe = ref(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                m.output_padding, 1, m.bias is not None, m.dilation, dtype=torch.float64)

    def copy(mod):
        # torch: (in, out, *q), applied flipped; ntkit: (out, in, *q), not flipped.
        w = probe.weight.data.transpose(0, 1).flip(tuple(range(2, 2 + d)))
        mod.weight.data.copy_(w)
        if mod.bias is not None:
            mod.bias.data.copy_(probe.bias.data)

    for pad in ("VALID", "SAME"):
        args = (m.out_channels, tuple(m.kernel_size), tuple(m.stride), pad)
        check = nl.ConvTranspose(*args, w_std=1.0, b_std=None if m.bias is None else 1.0,
                                 parameterization="standard")
        if _same_map(site, check, probe, (m.in_channels, *spatial), copy):
            return nl.ConvTranspose(*args, w_std=w_std, b_std=b_std,
                                    parameterization=site.parameterization)
    raise _no_padding_choice(site, f"padding={m.padding}, output_padding={m.output_padding}, "
                                   f"stride={m.stride}")


def ntkit_affine(site: Site, m: nn.Module):
    """A Dense/Conv/ConvTranspose module that an ntkit spec built: its own spec back."""
    w_std, b_std = layer_variances(m, site.place, site.init, site.overrides)
    if isinstance(m, DenseModule):
        return nl.Dense(m.out_features, w_std=w_std, b_std=b_std,
                        parameterization=m.parameterization)
    cls = nl.Conv if isinstance(m, ConvModule) else nl.ConvTranspose
    return cls(int(m.weight.shape[0]), m.filter_shape, m.strides, m.padding, w_std=w_std,
               b_std=b_std, parameterization=m.parameterization)


# ---- pooling, reshaping, normalization ------------------------------------------------

def avg_pool(site: Site, m: nn.Module):
    spatial = site.spatial_in()
    d = len(spatial)
    if getattr(m, "divisor_override", None) is not None:
        raise site.fail("divisor_override is not a pooling ntkit has")

    def tup(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * d

    window = tup(m.kernel_size)
    strides = tup(m.stride if m.stride is not None else m.kernel_size)
    for pad in _window_candidates(tup(m.padding)):
        spec = nl.AvgPool(window, strides, pad, normalize_edges=pad == "SAME" and not getattr(
            m, "count_include_pad", True))
        if _same_map(site, spec, m, (1, *spatial)):
            return spec
    raise _no_padding_choice(site, f"padding={m.padding}, stride={m.stride}, "
                                   f"ceil_mode={m.ceil_mode}")


def adaptive_avg_pool(site: Site, output_size):
    spatial = site.spatial_in()
    d = len(spatial)
    out = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * d
    out = tuple(n if o is None else o for o, n in zip(out, spatial, strict=True))
    if all(o == 1 for o in out):
        return nl.GlobalAvgPool()
    if out == spatial:
        return None
    if all(n % o == 0 for n, o in zip(spatial, out, strict=True)):
        window = tuple(n // o for n, o in zip(spatial, out, strict=True))
        return nl.AvgPool(window, window, "VALID")
    raise site.fail(f"adaptive pooling from {spatial} to {out} uses windows of unequal sizes; "
                    "only output size 1 (global average) or sizes that divide the input are "
                    "exact average pools")


def ntkit_pool(site: Site, m: AvgPoolModule):
    cls = nl.SumPool if m.mode == "sum" else nl.AvgPool
    if m.mode == "sum":
        return cls(m.window, m.strides, m.padding)
    return cls(m.window, m.strides, m.padding, normalize_edges=m.normalize_edges)


def flatten(site: Site, start_dim: int = 1, end_dim: int = -1):
    """A flatten of every axis after the batch (``start_dim`` 1, ``end_dim`` -1)."""
    ndim = len(site.in_shape) + 1
    if start_dim % ndim != 1 or end_dim % ndim != ndim - 1:
        raise site.fail(f"a flatten of axes {start_dim}..{end_dim} of a {ndim}-D tensor; only "
                        "flattening everything after the batch axis (start_dim=1) is a "
                        "layer ntkit has")
    return flat_or_none(site)


def flat_or_none(site: Site):
    return nl.Flatten() if site.nt_spatial else None


def reshape(site: Site):
    """``view``/``reshape``: a flatten when the output is (n, prod(input))."""
    if tuple(site.out_shape) == (math.prod(site.in_shape),):
        return flat_or_none(site)
    if tuple(site.out_shape) == tuple(site.in_shape):
        return None
    raise site.fail(f"a reshape from {('n', *site.in_shape)} to {('n', *site.out_shape)}; only "
                    "a flatten to (n, features) (or no change) has an exact kernel map")


def mean_or_sum(site: Site, dims, keepdim: bool, total: bool):
    """``x.mean(dims)``/``x.sum(dims)`` over every spatial axis: global pooling."""
    ndim = len(site.in_shape) + 1
    dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
    if sorted(a % ndim for a in dims) != list(range(2, ndim)) or site.nt_spatial == 0:
        raise site.fail(f"a {'sum' if total else 'mean'} over axes {dims} of a {ndim}-D tensor; "
                        "only one over all spatial axes (2..) is a pooling ntkit has")
    return nl.GlobalSumPool() if total else nl.GlobalAvgPool()


def _affine_norm_args(site: Site, weight, bias) -> dict:
    """LayerNorm's affine options for γ = ``weight``, β = ``bias`` (None: absent)."""
    if weight is None:
        if bias is not None:
            raise site.fail("a bias β without a weight γ is not a LayerNorm ntkit has")
        return {}
    if site.init == "module":
        # ntkit's kernel is the limit at γ = 1, β = 0 (torch's initialization); other
        # values change the output's scale and mean per entry (a nonzero mean breaks the
        # zero-mean Gaussian limit of what follows), which it does not express.
        with torch.no_grad():
            ok = bool((weight == 1).all()) and (bias is None or bool((bias == 0).all()))
        if not ok:
            raise site.fail(
                "init='module' and its affine parameters are not at their initial values "
                "γ = 1, β = 0: ntkit's LayerNorm(affine=True) is exact only there; lift "
                "with init='torch' (γ, β as torch initializes them) or reset them")
    return {"affine": True, "bias": bias is not None}


def layer_norm(site: Site, normalized_shape, eps: float, weight=None, bias=None):
    """``weight``/``bias``: the module's γ, β tensors (None: absent)."""
    affine = _affine_norm_args(site, weight, bias)
    shape = tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else \
        (normalized_shape,)
    if shape != tuple(site.in_shape) or site.nt_spatial != len(site.in_shape) - 1:
        raise site.fail(f"it normalizes the last axes {shape} of an input of shape "
                        f"{('n', *site.in_shape)}; ntkit's LayerNorm needs the channel axis "
                        "among them: normalize (C,) features or whole (C, *S) examples")
    return nl.LayerNorm(axis=tuple(range(1, len(shape) + 1)), eps=float(eps), **affine)


def ntkit_norm(site: Site, m: LayerNormModule):
    return nl.LayerNorm(axis=m.axis, eps=m.eps, **_affine_norm_args(site, m.weight, m.bias))


# ---- dispatch on leaf modules ---------------------------------------------------------

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVS_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)


def _module_type(spec: nl.Layer) -> type:
    """The class of the finite module a (parameter-free) spec builds."""
    gen = torch.Generator()
    return type(spec.make_module(ExampleShape((1, 2)), gen, torch.float64)[0])


#: ntkit's global pools: x.mean/sum over ``range(2, x.ndim)``, which fx cannot trace
MEAN_POSITIONS, SUM_POSITIONS = _module_type(nl.GlobalAvgPool()), _module_type(nl.GlobalSumPool())
#: ntkit-built modules that lift as leaves (the rest of a built spec is traced through)
NTKIT_LEAVES = (DenseModule, ConvModule, ConvTransposeModule, ActivationModule,
                AvgPoolModule, LayerNormModule, MEAN_POSITIONS, SUM_POSITIONS)
#: torch layers (and their subclasses) that lift as leaves
TORCH_LEAVES = (nn.Linear, *_CONVS, *_CONVS_T, *_POOLS, *_ADAPTIVE, *_DROPOUTS, nn.Flatten,
                nn.LayerNorm, nn.Identity, *ACTIVATION_MODULES, nn.MultiheadAttention)


def module_layer(site: Site, m: nn.Module):
    """The ntkit layer of the leaf module ``m`` (None: the identity)."""
    if type(m) in (nn.Linear,) or isinstance(m, nn.Linear):
        return linear(site, m)
    if isinstance(m, _CONVS):
        return conv(site, m)
    if isinstance(m, _CONVS_T):
        return conv_transpose(site, m)
    if isinstance(m, tuple(ACTIVATION_MODULES)):
        return activation_module(site, m)
    if isinstance(m, _POOLS):
        return avg_pool(site, m)
    if isinstance(m, _ADAPTIVE):
        return adaptive_avg_pool(site, m.output_size)
    if isinstance(m, nn.Flatten):
        return flatten(site, m.start_dim, m.end_dim)
    if isinstance(m, nn.LayerNorm):
        return layer_norm(site, m.normalized_shape, m.eps, m.weight, getattr(m, "bias", None))
    if isinstance(m, (nn.Identity, *_DROPOUTS)):
        return None   # dropout as in eval mode: the identity (see ntkit.lift)
    if isinstance(m, (DenseModule, ConvModule, ConvTransposeModule)):
        return ntkit_affine(site, m)
    if isinstance(m, ActivationModule):
        return m.spec
    if isinstance(m, AvgPoolModule):
        return ntkit_pool(site, m)
    if isinstance(m, LayerNormModule):
        return ntkit_norm(site, m)
    if isinstance(m, (MEAN_POSITIONS, SUM_POSITIONS)):
        site.spatial_in()
        return nl.GlobalAvgPool() if isinstance(m, MEAN_POSITIONS) else nl.GlobalSumPool()
    if isinstance(m, nn.MultiheadAttention):
        raise site.fail(
            "nn.MultiheadAttention has a fixed number of heads with softmax over "
            "query-key products of O(1) size: its infinite-width limit is not Gaussian "
            "(exact kernels need infinitely many heads, or 1/d_head logit scaling, as in "
            "ntkit.layers.GlobalSelfAttention, which a hand-written spec can use)")
    raise site.fail(_why_not(type(m).__name__))


def _why_not(name: str) -> str:
    reasons = {
        "MaxPool1d": "max pooling has no closed-form kernel", "MaxPool2d":
        "max pooling has no closed-form kernel", "MaxPool3d": "max pooling has no closed-"
        "form kernel", "BatchNorm1d": "batch normalization couples the examples of a batch",
        "BatchNorm2d": "batch normalization couples the examples of a batch", "Softmax":
        "softmax outside attention has no exact kernel map",
    }
    return reasons.get(name, "ntkit has no exact infinite-width map for it")


# ---- scalar arithmetic ----------------------------------------------------------------

SCALAR_OPS = {operator.mul: "mul", torch.mul: "mul", operator.truediv: "div",
              torch.div: "div", operator.neg: "neg", torch.neg: "neg"}


def scale(a: float):
    """Multiplication by the number ``a`` (nngp and ntk times a²)."""
    return nl.DotGeneral(rhs=float(a))
