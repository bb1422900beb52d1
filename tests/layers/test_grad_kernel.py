"""net.kernel(x1, x2) under autograd: inputs and w_std/b_std tensors (ntkit.dual.autodiff).

Truth: torch.autograd.gradcheck/gradgradcheck (finite differences of the kernel) at
generic inputs; central differences along chosen directions at duplicate and antipodal
inputs (where the NTK has a symmetric |·| kink, so the central difference is the
subgradient the module promises); the no-grad kernel for forward values.
"""

from __future__ import annotations

import pytest
import torch
from kernel_compare import assert_kernels_close

from ntkit import layers as nl

D = torch.float64


def _x(n=3, d=3, seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=D).to(dtype)


def _std(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=D, requires_grad=True)


def _fc(act, w, b):
    return nl.serial(nl.Dense(4, w_std=w, b_std=b), act, nl.Dense(4, w_std=w, b_std=b), act,
                     nl.Dense(1, w_std=w, b_std=b))


def _residual(act, w, b):
    block = nl.serial(nl.Dense(4, w_std=w, b_std=b), act, nl.Dense(4, w_std=w, b_std=b))
    return nl.serial(nl.Dense(4, w_std=w, b_std=b), nl.FanOut(2),
                     nl.parallel(block, nl.Identity()), nl.FanInSum(), act,
                     nl.Dense(1, w_std=w, b_std=b))


NETS = {
    "relu": lambda w, b: _fc(nl.ReLU(), w, b),
    "erf": lambda w, b: _fc(nl.Erf(), w, b),
    "gelu": lambda w, b: _fc(nl.GELU(), w, b),
    "tanh": lambda w, b: _fc(nl.Tanh(deg=48), w, b),
    "residual_relu": lambda w, b: _residual(nl.ReLU(), w, b),
}


CASES = [(name, get) for name in NETS for get in ("nngp", "ntk")
         if (name, get) != ("tanh", "nngp")]  # the NTK of the tanh net covers its NNGP


@pytest.mark.parametrize(("name", "get"), CASES)
def test_gradcheck_inputs_and_hyperparameters(name, get):
    x1, x2 = _x(2, seed=1), _x(2, seed=2)
    x1.requires_grad_(True)
    x2.requires_grad_(True)

    def f(a1, a2, w, b):
        return NETS[name](w, b).kernel(a1, a2, get=get)

    args = (x1, x2, _std(1.3), _std(0.4))
    assert torch.autograd.gradcheck(f, args)
    if name != "tanh":  # quadrature's gradgradcheck: tests/dual/test_grad_duals.py
        assert torch.autograd.gradgradcheck(f, args)


def test_gradcheck_symmetric_path():
    # x2 = None: every entry depends on x through both arguments.
    x = _x(3, seed=3).requires_grad_(True)

    def f(a, w, b):
        k = NETS["relu"](w, b).kernel(a, get=("nngp", "ntk"))
        return k.nngp, k.ntk

    args = (x, _std(1.2), _std(0.3))
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


def test_gradcheck_conv_net_hyperparameters_and_inputs():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 1, 3, 3, generator=g, dtype=D, requires_grad=True)

    def f(a, w, b):
        net = nl.serial(nl.Conv(3, (3, 3), padding="SAME", w_std=w, b_std=b), nl.ReLU(),
                        nl.Conv(3, (2, 2), w_std=w, b_std=b), nl.Erf(), nl.GlobalAvgPool(),
                        nl.Dense(1, w_std=w, b_std=b))
        return net.kernel(a, get="ntk")

    assert torch.autograd.gradcheck(f, (x, _std(1.4), _std(0.2)))


def test_gradient_reaches_each_layer_separately():
    w1, w2 = _std(1.1), _std(0.9)
    net = nl.serial(nl.Dense(4, w_std=w1, b_std=0.1), nl.ReLU(), nl.Dense(1, w_std=w2))
    k = net.kernel(_x(3), get="ntk")
    g1, g2 = torch.autograd.grad(k.sum(), (w1, w2))
    assert g1.item() > 0 and g2.item() > 0


def test_tensor_hyperparameters_give_the_float_kernel():
    x = _x(5, seed=5)
    ref = NETS["residual_relu"](1.3, 0.4).kernel(x, get=("nngp", "ntk"))
    got = NETS["residual_relu"](_std(1.3), _std(0.4)).kernel(x, get=("nngp", "ntk"))
    for a, b in zip(got, ref, strict=True):
        assert_kernels_close(a.detach(), b, rtol=1e-15, identical="diagonal")
    with torch.no_grad():  # no graph needed: the fast engine, same values
        fast = NETS["residual_relu"](_std(1.3), _std(0.4)).kernel(x, get="ntk")
    assert_kernels_close(fast, ref.ntk, rtol=1e-15, identical="diagonal")


def test_conv_tensor_hyperparameters_give_the_float_kernel():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 2, 5, 5, generator=g, dtype=D)

    def net(w, b):
        return nl.serial(nl.Conv(3, (3, 3), padding="SAME", w_std=w, b_std=b), nl.ReLU(),
                         nl.AvgPool((2, 2)), nl.Flatten(), nl.Dense(1, w_std=w, b_std=b))

    ref = net(1.3, 0.2).kernel(x, get="ntk")
    got = net(_std(1.3), _std(0.2)).kernel(x, get="ntk")
    assert_kernels_close(got.detach(), ref, rtol=1e-14, identical="diagonal")


def _directional(f, x, h, eps):
    with torch.no_grad():
        return (f(x + eps * h) - f(x - eps * h)) / (2 * eps), \
            (f(x + eps * h) - f(x)) / eps


@pytest.mark.parametrize("get", ["nngp", "ntk"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_duplicate_and_antipodal_inputs_match_central_differences(get, sign):
    # x2 = ±x1 exactly (first layer without bias, so ρ = ±1 exactly there; biases later
    # keep deeper layers inside the cone only partly). The NNGP is C¹ in x1 there, and
    # the NTK's arc-cosine Tdot term has a |·| kink that is symmetric in the direction:
    # the central difference is the linear part, which is what the gradient (subgradient
    # 0 for the kink) must give. Directions: random, and parallel to x (no kink).
    net = nl.serial(nl.Dense(4, w_std=1.4, b_std=None), nl.ReLU(),
                    nl.Dense(4, w_std=1.4, b_std=None), nl.ReLU(), nl.Dense(1))
    x1 = _x(2, seed=7)
    x2 = sign * x1.clone()

    def f(a):
        return net.kernel(a, x2, get=get).sum()

    a = x1.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(a), a)
    assert torch.isfinite(g).all()
    gen = torch.Generator().manual_seed(8)
    # Random h, ε = 1e-4: θ ~ ε is far above its rounding error (~√eps ~ 1e-8; at
    # ε = 1e-6 that rounding makes the difference quotient itself wrong at 1e-4).
    # h = x (scaling; ρ stays 1, θ is pure rounding ~1e-8 at both ends): the bias-free
    # ReLU net is positively homogeneous, so a large ε = 1e-2 has no truncation error.
    for h, eps in ((torch.randn(x1.shape, generator=gen, dtype=D), 1e-4), (x1.clone(), 1e-2)):
        central, _ = _directional(f, x1, h, eps)
        assert (g * h).sum().item() == pytest.approx(central.item(), rel=1e-6, abs=1e-8)


def test_ntk_kink_at_duplicates_is_real():
    # The one-sided derivative of the NTK along a direction orthogonal to x differs from
    # the central one (the gradient's value): the kink is genuine, not an artefact.
    net = nl.serial(nl.Dense(4, w_std=1.4, b_std=None), nl.ReLU(), nl.Dense(1))
    x = _x(1, seed=9)
    h = torch.randn(x.shape, generator=torch.Generator().manual_seed(10), dtype=D)
    h = h - (h * x).sum() / (x * x).sum() * x  # orthogonal to x

    def f(a):
        return net.kernel(a, x.clone(), get="ntk").sum()

    central, forward = _directional(f, x, h, 1e-5)
    # Tdot = (π − θ)/(2π), θ ≈ ε|h|/|x|: the one-sided slope has an extra −|h|/(2π|x|)·
    # (w² ntk_in) ≈ O(1) term; measured values differ by far more than FD error (1e-5).
    assert abs(forward.item() - central.item()) > 1e-2


@pytest.mark.parametrize("name", ["relu", "erf", "gelu", "tanh", "residual_relu"])
def test_float32_backward_finite_at_duplicates_and_antipodes(name):
    x1 = _x(2, seed=11, dtype=torch.float32)
    x = torch.cat([x1, x1, -x1]).requires_grad_(True)
    w = torch.tensor(1.3, requires_grad=True)
    b = torch.tensor(0.1, requires_grad=True)
    k = NETS[name](w, b).kernel(x, get=("nngp", "ntk"), dtype=torch.float32)
    grads = torch.autograd.grad(k.nngp.sum() + k.ntk.sum(), (x, w, b))
    assert all(torch.isfinite(gr).all() for gr in grads)
    assert all(torch.isfinite(t).all() for t in k)


def test_equal_but_distinct_x2_differentiates_first_argument_only():
    # torch.equal(x1, x2) must not switch to the symmetric path when gradients are asked
    # for: d/dx1 k(x1, x2) ≠ d/dx k(x, x).
    x = _x(3, seed=12)
    a = x.clone().requires_grad_(True)
    (g_first,) = torch.autograd.grad(NETS["erf"](1.2, 0.3).kernel(a, x.clone(), get="ntk").sum(),
                                     a)
    b = x.clone().requires_grad_(True)
    (g_both,) = torch.autograd.grad(NETS["erf"](1.2, 0.3).kernel(b, get="ntk").sum(), b)
    torch.testing.assert_close(2 * g_first, g_both, rtol=1e-12, atol=1e-12)  # k symmetric


def test_tiles_assemble_under_autograd():
    x = _x(7, seed=13).requires_grad_(True)
    k_tiled = NETS["relu"](1.3, 0.2).kernel(x, get="ntk", tile=3)
    k_one = NETS["relu"](1.3, 0.2).kernel(x, get="ntk")
    assert_kernels_close(k_tiled.detach(), k_one.detach(), rtol=1e-15, identical="diagonal")
    w = torch.randn(7, 7, generator=torch.Generator().manual_seed(14), dtype=D)
    (g1,) = torch.autograd.grad((k_tiled * w).sum(), x)
    (g2,) = torch.autograd.grad((k_one * w).sum(), x)
    torch.testing.assert_close(g1, g2, rtol=1e-13, atol=1e-13)


def test_bad_tensor_hyperparameters_are_rejected():
    with pytest.raises(TypeError, match="0-d floating tensor"):
        nl.Dense(3, w_std=torch.ones(2))
    with pytest.raises(TypeError, match="0-d floating tensor"):
        nl.Conv(3, (2,), b_std=torch.tensor(1))
    with pytest.raises(ValueError, match="finite and >= 0"):
        nl.Dense(3, w_std=torch.tensor(float("nan")))
    with pytest.raises(ValueError, match="finite and >= 0"):
        nl.Dense(3, b_std=torch.tensor(-0.5))


def test_out_with_gradients_is_rejected():
    x = _x(3).requires_grad_(True)
    with pytest.raises(ValueError, match="out= cannot carry gradients"):
        NETS["relu"](1.0, 0.1).kernel(x, get="nngp", out=torch.empty(3, 3, dtype=D))


def test_build_uses_current_tensor_values():
    w = _std(1.7)
    net = nl.serial(nl.Dense(5, w_std=w, b_std=_std(0.3)), nl.ReLU(), nl.Dense(1))
    ref = nl.serial(nl.Dense(5, w_std=1.7, b_std=0.3), nl.ReLU(), nl.Dense(1))
    x = _x(4)
    torch.testing.assert_close(net.build(3, seed=0)(x), ref.build(3, seed=0)(x))
