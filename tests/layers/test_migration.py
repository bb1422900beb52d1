"""neural-tangents code ported as written: its layer names (Relu, Gelu, LeakyRelu, ABRelu),
``W_std=``, ``Elementwise(fn, nngp_fn, d_nngp_fn)``, and clear refusals for the rest."""

from __future__ import annotations

import math

import pytest
import torch
from kernel_compare import assert_kernels_close

from ntkit import layers as nl

F64 = torch.float64


def _x(n, d=5, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ------------------------------------------------------------------ activation names
def test_nt_activation_names_are_ntkit_layers():
    assert type(nl.Relu()) is nl.ReLU and type(nl.Relu(do_stabilize=True)) is nl.ReLU
    assert type(nl.Gelu()) is nl.GELU
    leaky = nl.LeakyRelu(0.2, do_stabilize=True)
    assert type(leaky) is nl.LeakyReLU and leaky.alpha == 0.2
    ab = nl.ABRelu(-0.3, 1.7)
    assert type(ab) is nl.ABReLU and (ab.a, ab.b) == (-0.3, 1.7)
    with pytest.raises(ValueError, match=r"approximate=True\) is refused"):
        nl.Gelu(approximate=True)
    with pytest.raises(TypeError, match="do_stabilize must be a bool"):
        nl.Relu(do_stabilize=1)


def test_abrelu_dual_is_relus_plus_a_linear_part():
    # φ = a·x + (b − a)·relu(x); Stein's lemma gives E[u relu(v)] = cov/2, so
    # T = ab·cov + (b − a)²·T_relu and Tdot = ab + (b − a)²·Tdot_relu (independent of
    # ABReLU's own formula).
    a, b = -0.3, 1.7
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.rand(50, generator=g, dtype=F64) + 0.2, torch.rand(50, generator=g,
                                                                      dtype=F64) + 0.2
    c = (2 * torch.rand(50, generator=g, dtype=F64) - 1) * torch.sqrt(v1 * v2)
    t, td = nl.ABRelu(a, b).dual(v1, c, v2, True)
    tr, tdr = nl.ReLU().dual(v1, c, v2, True)
    torch.testing.assert_close(t, a * b * c + (b - a) ** 2 * tr, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(td, a * b + (b - a) ** 2 * tdr, rtol=1e-13, atol=1e-15)


def test_abrelu_dual_against_monte_carlo():
    a, b, n = -0.3, 1.7, 400_000
    g = torch.Generator().manual_seed(2)
    v1, v2, c = 1.3, 0.7, 0.5
    z = torch.randn(2, n, generator=g, dtype=F64)
    u = math.sqrt(v1) * z[0]
    v = c / math.sqrt(v1) * z[0] + math.sqrt(v2 - c * c / v1) * z[1]
    phi = nl.ABRelu(a, b).fn
    samples = phi(u) * phi(v)
    t, _ = nl.ABRelu(a, b).dual(torch.tensor(v1, dtype=F64), torch.tensor(c, dtype=F64),
                                torch.tensor(v2, dtype=F64), False)
    se = float(samples.std()) / math.sqrt(n)
    assert abs(float(samples.mean()) - float(t)) < 5 * se  # 5 sigma: fails by chance ~6e-7


# ---------------------------------------------------------------------- W_std alias
@pytest.mark.parametrize("make", [
    lambda **kw: nl.serial(nl.Dense(8, b_std=0.1, **kw), nl.ReLU(), nl.Dense(1, **kw)),
    lambda **kw: nl.serial(nl.Conv(4, (3,), padding="SAME", b_std=0.1, **kw), nl.ReLU(),
                           nl.Flatten(), nl.Dense(1, **kw)),
], ids=["Dense", "Conv"])
def test_W_std_is_w_std(make):
    x = _x(4, 6).reshape(4, 2, 3) if "Conv" in repr(make(w_std=1.0)) else _x(4, 6)
    ref = make(w_std=1.7).kernel(x, get="ntk")
    assert torch.equal(make(W_std=1.7).kernel(x, get="ntk"), ref)
    with pytest.raises(TypeError, match="both w_std=1.0 and W_std=1.7"):
        make(w_std=1.0, W_std=1.7)


def test_default_w_std_is_unchanged():
    d = nl.Dense(3)
    assert d.w_std == 1.0 and type(d.w_std) is float and repr(d).count("w_std=1.0") == 1
    assert type(nl.Conv(2, (3,)).w_std) is float


# ---------------------------------------------------------------- unknown names
def test_unknown_names_say_what_to_use():
    with pytest.raises(AttributeError, match="did you mean Dense"):
        nl.Dens  # noqa: B018
    with pytest.raises(AttributeError, match="neural-tangents' ElementwiseNumerical is "
                                             r"ntkit's Elementwise\(fn"):
        nl.ElementwiseNumerical  # noqa: B018
    with pytest.raises(AttributeError, match="Sigmoid_like is ntkit's Erf"):
        nl.Sigmoid_like  # noqa: B018
    with pytest.raises(AttributeError, match="SliceFanInConcat has no ntkit counterpart"):
        nl.SliceFanInConcat  # noqa: B018
    with pytest.raises(AttributeError, match="the layers are: .*Dense"):
        nl.Zzzz  # noqa: B018
    assert not hasattr(nl, "Relu2x")


def test_sigmoid_like_map_is_the_same_function():
    x = torch.linspace(-4, 4, 9, dtype=F64)
    nt = 0.5 * torch.erf(x / 2.4020563531719796) + 0.5
    torch.testing.assert_close(nl.Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5).fn(x), nt,
                               rtol=0, atol=1e-16)


# ------------------------------------------------------- Elementwise(nngp_fn=...)
def erf_nngp(c, v1, v2):
    return 2 / math.pi * torch.asin(2 * c / torch.sqrt((1 + 2 * v1) * (1 + 2 * v2)))


def erf_d_nngp(c, v1, v2):
    return 4 / math.pi / torch.sqrt((1 + 2 * v1) * (1 + 2 * v2) - 4 * c * c)


def relu_nngp(c, v1, v2):
    s = torch.sqrt(torch.clamp(v1 * v2 - c * c, min=0))
    return (s + (math.pi - torch.atan2(s, c)) * c) / (2 * math.pi)


def _fc(act):
    return nl.serial(nl.Dense(16, 1.4, 0.1), act, nl.Dense(16, 1.2, 0.05), act, nl.Dense(1))


@pytest.mark.parametrize("d_nngp_fn", [None, erf_d_nngp], ids=["autograd", "given"])
def test_elementwise_closed_form_equals_erf(d_nngp_fn):
    x = _x(6)
    ref = _fc(nl.Erf()).kernel(x, get=("nngp", "ntk"))
    act = nl.Elementwise(torch.erf, nngp_fn=erf_nngp, d_nngp_fn=d_nngp_fn)
    got = _fc(act).kernel(x, get=("nngp", "ntk"))
    assert_kernels_close(got.nngp, ref.nngp, rtol=1e-13, gain=0.0, name="nngp")
    assert_kernels_close(got.ntk, ref.ntk, rtol=1e-13, gain=0.0, name="ntk")


def test_elementwise_closed_form_equals_relu_off_the_diagonal():
    # A user's arc-cosine has an infinite autograd derivative at correlation 1 (as in
    # neural-tangents); off it, Price's theorem by autograd is ReLU's (π − θ)/(2π).
    x1, x2 = _x(5, seed=1), _x(4, seed=2)
    ref = _fc(nl.ReLU()).kernel(x1, x2, get=("nngp", "ntk"))
    got = _fc(nl.Elementwise(torch.relu, nngp_fn=relu_nngp)).kernel(x1, x2, get=("nngp", "ntk"))
    assert_kernels_close(got.nngp, ref.nngp, rtol=1e-13, name="nngp")
    assert_kernels_close(got.ntk, ref.ntk, rtol=1e-13, name="ntk")


def test_elementwise_closed_form_keeps_gradients():
    x = _x(5)
    w = torch.tensor(1.3, dtype=F64, requires_grad=True)
    (g_ref,) = torch.autograd.grad(
        nl.serial(nl.Dense(8, w), nl.Erf(), nl.Dense(1, w)).kernel(x, get="ntk").sum(), w)
    act = nl.Elementwise(torch.erf, nngp_fn=erf_nngp)
    (g,) = torch.autograd.grad(
        nl.serial(nl.Dense(8, w), act, nl.Dense(1, w)).kernel(x, get="ntk").sum(), w)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=0)


def test_elementwise_closed_form_builds_with_fn_and_refuses_without():
    x = _x(3)
    m = nl.serial(nl.Dense(4), nl.Elementwise(torch.erf, nngp_fn=erf_nngp)).build(5)
    assert m(x).shape == (3, 4)
    bare = nl.serial(nl.Dense(4), nl.Elementwise(nngp_fn=erf_nngp))
    assert bare.kernel(x, get="nngp").shape == (3, 3)
    with pytest.raises(ValueError, match="has no fn"):
        bare.build(5)(x)


def test_elementwise_argument_errors():
    with pytest.raises(TypeError, match="pass it by keyword"):
        nl.Elementwise(torch.erf, erf_nngp)  # neural-tangents' positional order
    with pytest.raises(TypeError, match="needs fn"):
        nl.Elementwise()
    with pytest.raises(TypeError, match="d_nngp_fn needs nngp_fn"):
        nl.Elementwise(torch.erf, d_nngp_fn=erf_d_nngp)
    with pytest.raises(TypeError, match="fn_deriv is for the quadrature form"):
        nl.Elementwise(torch.erf, lambda x: x, nngp_fn=erf_nngp)
    with pytest.raises(TypeError, match="nngp_fn must be callable"):
        nl.Elementwise(torch.erf, nngp_fn=3.0)
    with pytest.raises(ValueError, match="must act elementwise"):
        nl.Elementwise(nngp_fn=lambda c, v1, v2: c.sum(0, keepdim=True)[:, :1].repeat(2, 2)
                       ).kernel(_x(3), get="nngp")


def test_help_documents_layer_methods_once():
    import pydoc

    text = pydoc.render_doc(nl, renderer=pydoc.plaintext)
    # 4,172 lines for 41 names when every layer repeated Layer's docs (~100 per name);
    # documented once, a layer costs its own docstring and methods only.
    assert len(text.splitlines()) < 40 * len(nl.__all__)
    assert text.count("channels_last: True: x1 and x2 are channels last") == 1
    assert "kernel" in dir(nl.Dense(1)) and "build" in dir(nl.ReLU())  # instances: all
