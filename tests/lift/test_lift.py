"""ntkit.lift: lifted torch modules against hand-written specs, exact moments of linear
layers, PyTorch's init variances, round trips and refusals."""

from __future__ import annotations

import math

import pytest
import torch
from lift_helpers import assert_same, jacobian_moments, kernels
from torch import nn

import ntkit
from ntkit import layers as nl

# Modules built at import (the tables below) are float64 too; the default is restored at
# the end of this module and around each test (tests/lift/conftest.py).
_DEFAULT_DTYPE = torch.get_default_dtype()
torch.set_default_dtype(torch.float64)

S3 = math.sqrt(1 / 3)


def b(fan_in):
    return math.sqrt(1 / (3 * fan_in))


def x_fc(n=4, d=5, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def x_img(n=3, shape=(3, 6, 6), seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


# ---- lifted Sequential == hand-written spec (to 1e-12) -------------------------------

class Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class Concat(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=1)


def P(out, w, bb):
    return dict(w_std=w, b_std=bb, parameterization="standard")


CASES = {
    "fc": (nn.Sequential(nn.Linear(5, 64), nn.ReLU(), nn.Linear(64, 32), nn.Tanh(),
                         nn.Linear(32, 2)),
           nl.serial(nl.Dense(64, **P(64, S3, b(5))), nl.ReLU(),
                     nl.Dense(32, **P(32, S3, b(64))), nl.Tanh(),
                     nl.Dense(2, **P(2, S3, b(32)))), None),
    "cnn_pooled": (nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                                 nn.Conv2d(16, 8, 3, padding="same"), nn.GELU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1)),
                   nl.serial(nl.Conv(16, (3, 3), padding="SAME", **P(0, S3, b(27))), nl.ReLU(),
                             nl.AvgPool((2, 2), (2, 2)),
                             nl.Conv(8, (3, 3), padding="SAME", **P(0, S3, b(144))), nl.GELU(),
                             nl.GlobalAvgPool(), nl.Dense(1, **P(0, S3, b(8)))), (3, 6, 6)),
    "cnn_flattened": (nn.Sequential(nn.Conv1d(3, 16, 3, stride=2), nn.SiLU(), nn.Flatten(),
                                    nn.Linear(16 * 3, 1, bias=False)),
                      nl.serial(nl.Conv(16, (3,), (2,), "VALID", **P(0, S3, b(9))), nl.SiLU(),
                                nl.Flatten(), nl.Dense(1, **P(0, S3, None))), (3, 8)),
    "residual": (nn.Sequential(nn.Linear(5, 32), Residual(nn.Sequential(
        nn.ReLU(), nn.Linear(32, 32))), nn.ReLU(), nn.Linear(32, 1)),
        nl.serial(nl.Dense(32, **P(0, S3, b(5))), nl.FanOut(2),
                  nl.parallel(nl.Identity(), nl.serial(nl.ReLU(), nl.Dense(32, **P(0, S3, b(32))))),
                  nl.FanInSum(), nl.ReLU(), nl.Dense(1, **P(0, S3, b(32)))), None),
    "concat": (nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Concat(
        nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 1)), nn.Sequential(nn.Sigmoid(), nn.Conv2d(
            8, 4, 3, padding=1, padding_mode="circular"))), nn.Flatten(),
        nn.Linear(12 * 36, 1)),
        nl.serial(nl.Conv(8, (3, 3), padding="SAME", **P(0, S3, b(27))), nl.FanOut(2),
                  nl.parallel(nl.serial(nl.ReLU(), nl.Conv(8, (1, 1), **P(0, S3, b(8)))),
                              nl.serial(nl.Sigmoid(), nl.Conv(4, (3, 3), padding="CIRCULAR",
                                                              **P(0, S3, b(72))))),
                  nl.FanInConcat(), nl.Flatten(), nl.Dense(1, **P(0, S3, b(432)))),
        (3, 6, 6)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lifted_sequential_equals_hand_written(name):
    model, spec, shape = CASES[name]
    lifted = ntkit.lift(model, input_shape=shape)
    x = x_fc() if shape is None else x_img(shape=shape)
    for got, want in zip(kernels(lifted, x), kernels(spec, x), strict=True):
        assert_same(got, want)


# ---- exact moments of models linear in their parameters -------------------------------

class Mean(nn.Module):
    def forward(self, x):
        return 0.5 * x.mean(dim=(2, 3))


LINEAR_MODELS = {
    "conv2d_same_stride": (nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Flatten()),
                           (3, 7, 7)),
    "conv2d_even_same": (nn.Sequential(nn.Conv2d(2, 3, 4, padding="same"), nn.Flatten()),
                         (2, 5, 6)),
    "conv1d_circular": (nn.Sequential(nn.Conv1d(2, 3, 3, padding=1, padding_mode="circular"),
                                      nn.Flatten()), (2, 7)),
    "conv3d_valid": (nn.Sequential(nn.Conv3d(2, 3, 2), nn.Flatten()), (2, 3, 4, 3)),
    "conv_transpose1d": (nn.Sequential(nn.ConvTranspose1d(2, 3, 3, stride=2), nn.Flatten()),
                         (2, 5)),
    "conv_transpose2d_same": (nn.Sequential(nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1),
                                            nn.Flatten()), (2, 3, 4)),
    "pool_then_linear": (nn.Sequential(nn.AvgPool2d(3, 1, padding=1, count_include_pad=False),
                                       nn.Flatten(), nn.Linear(2 * 16, 3)), (2, 4, 4)),
    "mean_then_linear": (nn.Sequential(Mean(), nn.Linear(3, 2)), (3, 4, 5)),
}


@pytest.mark.parametrize("name", sorted(LINEAR_MODELS))
def test_linear_models_match_their_exact_moments(name):
    """One random layer: the lifted NNGP is E[f f'] exactly (weights and biases of torch's
    init have the same variance 1/(3·torch fan-in)) and the NTK is J Jᵀ, to 1e-12."""
    model, shape = LINEAR_MODELS[name]
    spec = ntkit.lift(model, input_shape=shape)
    layer = next(m for m in model.modules() if hasattr(m, "weight"))
    torch_fan = layer.weight.shape[1] * math.prod(layer.weight.shape[2:])
    x = x_img(n=3, shape=shape)
    nngp, ntk = jacobian_moments(model, x, lambda name, p: 1 / (3 * torch_fan))
    got_nngp, got_ntk = kernels(spec, x)
    assert_same(got_nngp, nngp)
    assert_same(got_ntk, ntk)


# ---- variances --------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [nn.Linear(400, 500), nn.Conv2d(40, 50, 3),
                                   nn.ConvTranspose2d(30, 60, 3)])
def test_torch_init_variances_are_those_torch_draws(layer):
    """w_std²/fan_in and b_std² against the sample variances of torch's own draws
    (independent truth: the parameters), within 5 standard errors of a variance."""
    from ntkit.lift.init import fan_in, layer_variances
    w_std, b_std = layer_variances(layer, "l", "torch", {})
    for p, var in ((layer.weight, w_std**2 / fan_in(layer)), (layer.bias, b_std**2)):
        n = p.numel()
        sample = float(p.detach().double().pow(2).mean())
        # Var of the sample second moment of U(-a, a): (a⁴/5 - a⁴/9)/n = var²·(9/5 - 1)/n.
        se = var * math.sqrt(0.8 / n)
        assert abs(sample - var) < 5 * se, (sample, var)


def test_init_module_and_overrides():
    model = nn.Sequential(nn.Linear(5, 300), nn.ReLU(), nn.Linear(300, 1))
    with torch.no_grad():
        model[0].weight.normal_(0, 2 / math.sqrt(5))
        model[0].bias.zero_()
    spec = ntkit.lift(model, init="module")
    dense = spec.layers[0]
    want = math.sqrt(5 * float(model[0].weight.detach().pow(2).mean()))
    assert dense.w_std == pytest.approx(want, rel=1e-14)
    assert dense.b_std == 0.0          # zero biases are present parameters of variance 0
    # The zero bias still adds to the NTK: +1 per Dense output in the standard NTK.
    no_bias = ntkit.lift(model, init="module", overrides={"0": {"b_std": None}})
    x = x_fc()
    diff = kernels(spec, x)[1] - kernels(no_bias, x)[1]
    assert float(diff.min()) > 0
    spec = ntkit.lift(model, overrides={"2": {"w_std": 1.5, "b_std": 0.25}})
    assert (spec.layers[-1].w_std, spec.layers[-1].b_std) == (1.5, 0.25)
    with pytest.raises(ValueError, match="no Linear/Conv layer"):
        ntkit.lift(model, overrides={"1": {"w_std": 1.0}})
    with pytest.raises(ValueError, match="init must be one of"):
        ntkit.lift(model, init="kaiming")


def test_custom_reset_parameters_needs_init_module():
    class MyLinear(nn.Linear):
        def reset_parameters(self):
            nn.init.normal_(self.weight, 0, 1.0)
            nn.init.zeros_(self.bias)

    with pytest.raises(ntkit.LiftError, match="0: MyLinear.*init='module'"):
        ntkit.lift(nn.Sequential(MyLinear(3, 4)))
    ntkit.lift(nn.Sequential(MyLinear(3, 4)), init="module")


# ---- custom forward == Sequential; round trips -----------------------------------------

class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


class ResNet(nn.Module):
    """The same network as SEQ_RESNET, written as one forward."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList([Block(8), Block(8)])
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        h = torch.nn.functional.relu(h)
        return self.head(h.mean(dim=(2, 3)))


def test_custom_forward_equals_sequential():
    seq = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Block(8), Block(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1))
    custom = ntkit.lift(ResNet(), input_shape=(3, 5, 5))
    lifted = ntkit.lift(seq, input_shape=(3, 5, 5))
    assert repr(custom) == repr(lifted)
    x = x_img(shape=(3, 5, 5))
    for got, want in zip(kernels(custom, x), kernels(lifted, x), strict=True):
        assert_same(got, want)


ROUND_TRIPS = [
    (nl.serial(nl.Dense(64, 1.5, 0.1), nl.ReLU(), nl.FanOut(2),
               nl.parallel(nl.Identity(), nl.serial(nl.Dense(64), nl.Erf(), nl.Dense(64))),
               nl.FanInSum(), nl.Dense(1, parameterization="standard")), 5),
    (nl.serial(nl.Conv(8, (3, 3), padding="SAME", b_std=0.2),
               nl.AvgPool((2, 2), (2, 2)), nl.FanOut(2),
               nl.parallel(nl.Conv(4, (1, 1)),
                           nl.serial(nl.GELU(), nl.Conv(4, (3, 3), padding="CIRCULAR"))),
               nl.FanInConcat(), nl.LayerNorm(axis=(1, 2, 3)), nl.GlobalAvgPool(),
               nl.Dense(2, w_std=2.0, b_std=None)), (3, 6, 6)),
]


@pytest.mark.parametrize("i", range(len(ROUND_TRIPS)))
def test_build_then_lift_gives_the_same_spec(i):
    spec, shape = ROUND_TRIPS[i]
    lifted = ntkit.lift(spec.build(shape, seed=3), input_shape=shape)
    assert repr(lifted) == repr(spec)


def test_print_shows_places():
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), Residual(nn.Linear(8, 8)))
    text = str(ntkit.lift(model))
    assert "# 0: Linear" in text and "# 2.body: Linear" in text and "FanInSum()" in text
    assert text.startswith("serial(\n") and text.endswith(")")


# ---- activations ----------------------------------------------------------------------

F = torch.nn.functional


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


ACTIVATIONS = [
    (nn.ReLU(inplace=True), nl.ReLU), (Fn(F.relu), nl.ReLU), (Fn(torch.relu_), nl.ReLU),
    (Fn(lambda x: x.relu()), nl.ReLU), (Fn(lambda x: F.relu(x, inplace=True)), nl.ReLU),
    (nn.LeakyReLU(0.2), nl.LeakyReLU), (Fn(lambda x: F.leaky_relu(x, 0.3)), nl.LeakyReLU),
    (nn.GELU(), nl.GELU), (Fn(F.gelu), nl.GELU), (nn.Tanh(), nl.Tanh),
    (Fn(torch.tanh), nl.Tanh), (Fn(lambda x: x.tanh()), nl.Tanh), (nn.Sigmoid(), nl.Sigmoid),
    (Fn(torch.sigmoid), nl.Sigmoid), (nn.SiLU(), nl.SiLU), (Fn(F.silu), nl.SiLU),
    (nn.Softplus(), nl.Softplus), (Fn(F.softplus), nl.Softplus),
]


@pytest.mark.parametrize("i", range(len(ACTIVATIONS)))
def test_activation_forms(i):
    act, cls = ACTIVATIONS[i]
    spec = ntkit.lift(nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 1)))
    assert type(spec.layers[1]) is cls
    if cls is nl.LeakyReLU:
        x = torch.randn(3)
        assert torch.equal(spec.layers[1].fn(x), act(x.clone()))


def test_activation_functions_agree_with_torch():
    """The lifted activation computes the same function as the torch one (so its dual is
    the right one), including GELU's tanh form and Softplus with beta."""
    x = torch.linspace(-5, 5, 101)
    for act in (nn.GELU(approximate="tanh"), nn.Softplus(beta=2.0), nn.LeakyReLU(0.1),
                nn.SiLU(), nn.Sigmoid(), nn.Tanh(), nn.GELU()):
        layer = ntkit.lift(nn.Sequential(nn.Linear(3, 4), act)).layers[1]
        torch.testing.assert_close(layer.fn(x), act(x), rtol=1e-15, atol=1e-9)


# ---- refusals -------------------------------------------------------------------------

class Forward(nn.Module):
    def __init__(self, fn, **mods):
        super().__init__()
        self.fn = fn
        for k, v in mods.items():
            setattr(self, k, v)

    def forward(self, x):
        return self.fn(self, x)


def _branchy(s, x):
    if x.sum() > 0:
        return s.l(x)
    return x


REFUSED = {
    "1: MaxPool2d": (nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2)), (3, 6, 6)),
    "1: BatchNorm2d": (nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), (3, 6, 6)),
    "softmax": (Forward(lambda s, x: torch.softmax(s.l(x), -1), l=nn.Linear(3, 4)), (3,)),
    "1: ELU": (nn.Sequential(nn.Linear(3, 4), nn.ELU()), (3,)),
    "attn: MultiheadAttention": (Forward(lambda s, x: s.attn(x, x, x)[0],
                                         attn=nn.MultiheadAttention(4, 2)), (5, 4)),
    "forward": (Forward(_branchy, l=nn.Linear(3, 3)), (3,)),
    "2: Tanh": (nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Tanh()), (3,)),
    "0: Conv2d": (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), (4, 6, 6)),
    "0: Conv1d": (nn.Sequential(nn.Conv1d(2, 4, 3, padding=1, padding_mode="reflect")), (2, 6)),
    "l: Linear": (Forward(lambda s, x: s.l(s.l(x)), l=nn.Linear(3, 3)), (3,)),
    "add": (Forward(lambda s, x: x + 1.0, l=nn.Linear(3, 3)), (3,)),
    "1: AdaptiveAvgPool1d": (nn.Sequential(nn.Conv1d(2, 3, 1), nn.AdaptiveAvgPool1d(3)), (2, 7)),
    "0: Linear": (nn.Sequential(nn.Linear(7, 3)), (2, 7)),
    "torch.max": (Forward(lambda s, x: torch.max(s.l(x), dim=1)[0], l=nn.Linear(3, 3)), (3,)),
}


@pytest.mark.parametrize("place", sorted(REFUSED))
def test_unsupported_operations_raise_lift_error_with_place(place):
    model, shape = REFUSED[place]
    with pytest.raises(ntkit.LiftError) as info:
        ntkit.lift(model, input_shape=shape)
    assert isinstance(info.value, ValueError)
    assert place in str(info.value), str(info.value)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 1),
                                      nn.MaxPool2d(2))

    def forward(self, x):
        return self.features(x)


def test_refusals_point_to_monte_carlo():
    with pytest.raises(ntkit.LiftError, match=r"features\.3: MaxPool2d.*monte_carlo_kernel.*"
                                              r"empirical_ntk"):
        ntkit.lift(Net(), input_shape=(1, 6, 6))


def test_correlated_sums_are_refused_with_their_place():
    """The spec API's independence rule, as a LiftError naming the addition: h + h, and
    relu(h) + h (no fresh layer in either branch)."""
    for fn in (lambda s, x: (lambda h: h + h)(s.a(x)),
               lambda s, x: (lambda h: torch.relu(h) + h)(s.a(x))):
        with pytest.raises(ntkit.LiftError, match="add.*correlated"):
            ntkit.lift(Forward(fn, a=nn.Linear(3, 3)), input_shape=(3,))


def test_method_and_operator_forms_of_a_residual_agree():
    def with_method(s, x):
        h = s.a(x)
        return h.add(s.b(torch.relu(h))) - s.c(torch.tanh(h))

    def with_operator(s, x):
        h = s.a(x)
        return h + s.b(torch.relu(h)) - s.c(torch.tanh(h))

    mods = dict(a=nn.Linear(3, 8), b=nn.Linear(8, 8), c=nn.Linear(8, 8))
    lifted = [ntkit.lift(Forward(fn, **mods), input_shape=(3,))
              for fn in (with_method, with_operator)]
    assert repr(lifted[0]) == repr(lifted[1])
    assert "FanOut(n=3)" in repr(lifted[0]) or "DotGeneral" in repr(lifted[0])


def test_module_is_unchanged_by_lift():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.ReLU(), nn.Linear(4, 1))
    model.train()
    before = [p.clone() for p in model.parameters()]
    spec = ntkit.lift(model)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert len(spec.layers) == 3     # dropout lifts as in eval mode: the identity

torch.set_default_dtype(_DEFAULT_DTYPE)
