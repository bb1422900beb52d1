"""Finite vs infinite: Monte Carlo averages of empirical NNGP/NTK of `net.build(...)`
converge to `net.kernel(...)`, for Dense in both parameterizations and the combinators."""

import pytest
import torch
from kernel_compare import assert_kernels_close

from ntkit import layers as nl
from ntkit.empirical import empirical_ntk


def mc_kernels(net, x, n_seeds):
    """Per-seed empirical NNGP (output covariance) and NTK of the built network."""
    nngps, ntks = [], []
    for s in range(n_seeds):
        model = net.build(in_features=x.shape[1], seed=1000 + s)
        with torch.no_grad():
            f = model(x)
        nngps.append(f @ f.T / f.shape[1])
        ntks.append(empirical_ntk(model, x, method="jacobian"))
    return torch.stack(nngps), torch.stack(ntks)


def check_mc(samples, exact, bias_rel=0.0, z=4.5):
    """The sample mean is within z standard errors (entrywise, in Frobenius norm) of the
    exact kernel, plus an allowance for the known O(1/width) bias of deep finite nets."""
    mean = samples.mean(0)
    se = samples.std(0) / samples.shape[0] ** 0.5
    err = (mean - exact).norm()
    tol = z * se.norm() + bias_rel * exact.norm()
    assert err <= tol, f"MC error {err:.3e} > tolerance {tol:.3e}"
    return err / exact.norm()


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    x[4] = -x[0]
    return x


WIDTH = 1024


@pytest.mark.parametrize("act", [nl.ReLU(), nl.Erf(), nl.Identity()], ids=repr)
def test_one_hidden_layer_mc_matches_exactly(x, act):
    # One hidden layer: the MC mean of both kernels is unbiased at any width.
    net = nl.serial(nl.Dense(WIDTH, 1.4, 0.3), act, nl.Dense(1, 1.1, 0.2))
    nngp_s, ntk_s = mc_kernels(net, x, 24)
    k = net.kernel(x, get=("nngp", "ntk"))
    check_mc(nngp_s, k.nngp)
    check_mc(ntk_s, k.ntk)


def test_standard_parameterization_ntk_depends_on_width(x):
    net = nl.serial(nl.Dense(WIDTH, 1.4, 0.3, parameterization="standard"), nl.ReLU(),
                    nl.Dense(1, 1.1, 0.2, parameterization="standard"))
    nngp_s, ntk_s = mc_kernels(net, x, 24)
    k = net.kernel(x, get=("nngp", "ntk"))
    check_mc(nngp_s, k.nngp)
    check_mc(ntk_s, k.ntk)
    wide = nl.serial(nl.Dense(4 * WIDTH, 1.4, 0.3, parameterization="standard"), nl.ReLU(),
                     nl.Dense(1, 1.1, 0.2, parameterization="standard"))
    # The readout's weight-gradient term is width × nngp: it grows with the spec's width.
    assert wide.kernel(x, get="ntk").trace() > 3 * k.ntk.trace()
    assert_kernels_close(wide.kernel(x, get="nngp"), k.nngp, identical="diagonal")


@pytest.mark.parametrize("act", [nl.ReLU(), nl.Erf()], ids=repr)
def test_two_hidden_layers_mc(x, act):
    net = nl.serial(nl.Dense(WIDTH, 1.3, 0.2), act, nl.Dense(WIDTH, 1.3, 0.2), act,
                    nl.Dense(1, 1.3, 0.2))
    nngp_s, ntk_s = mc_kernels(net, x, 12)
    k = net.kernel(x, get=("nngp", "ntk"))
    # Beyond one hidden layer the finite-width mean is off by O(1/width).
    check_mc(nngp_s, k.nngp, bias_rel=3.0 / WIDTH)
    check_mc(ntk_s, k.ntk, bias_rel=3.0 / WIDTH)


def test_residual_fan_in_sum_mc(x):
    net = nl.serial(
        nl.Dense(WIDTH, 1.2, 0.1), nl.FanOut(2),
        nl.parallel(nl.Identity(), nl.serial(nl.ReLU(), nl.Dense(WIDTH, 1.1, 0.1))),
        nl.FanInSum(), nl.Erf(), nl.Dense(1, 1.0, 0.1))
    nngp_s, ntk_s = mc_kernels(net, x, 12)
    k = net.kernel(x, get=("nngp", "ntk"))
    check_mc(nngp_s, k.nngp, bias_rel=3.0 / WIDTH)
    check_mc(ntk_s, k.ntk, bias_rel=3.0 / WIDTH)


def test_fan_in_concat_mc(x):
    net = nl.serial(
        nl.FanOut(2),
        nl.parallel(nl.serial(nl.Dense(WIDTH // 4, 1.3, 0.1), nl.ReLU()),
                    nl.serial(nl.Dense(3 * WIDTH // 4, 0.8, 0.2), nl.Erf())),
        nl.FanInConcat(), nl.Dense(1, 1.1, 0.05))
    nngp_s, ntk_s = mc_kernels(net, x, 24)
    k = net.kernel(x, get=("nngp", "ntk"))
    check_mc(nngp_s, k.nngp)
    check_mc(ntk_s, k.ntk)


def test_dense_kernel_map_closed_form(x):
    w, b = 1.7, 0.4
    for param in ("ntk", "standard"):
        k = nl.Dense(7, w, b, parameterization=param).kernel(x, get=("nngp", "ntk"))
        lin = x @ x.T / 3
        torch.testing.assert_close(k.nngp, w * w * lin + b * b)
        expected = (w * w * lin + b * b) if param == "ntk" else (3 * lin + 1.0)
        torch.testing.assert_close(k.ntk, expected)


def test_no_bias_standard():
    x = torch.eye(3, dtype=torch.float64)
    k = nl.Dense(4, 1.0, None, parameterization="standard").kernel(x, get="ntk")
    torch.testing.assert_close(k, torch.eye(3, dtype=torch.float64))
    model = nl.Dense(4, 1.0, None).build(3)
    assert model.bias is None


def test_correlated_sum_is_refused(x):
    # Both streams are the same Dense output: the sum's kernel is 4·nngp, not 2·nngp.
    net = nl.serial(nl.Dense(8), nl.FanOut(2), nl.FanInSum())
    with pytest.raises(ValueError, match="cross-"):
        net.kernel(x)
    net = nl.serial(nl.FanOut(2), nl.parallel(nl.ReLU(), nl.Erf()), nl.FanInSum())
    with pytest.raises(ValueError, match="cross-"):
        net.kernel(x)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: nl.Dense(0), ValueError, "out_features"),
        (lambda: nl.Dense(2.5), TypeError, "out_features"),
        (lambda: nl.Dense(4, w_std=-1.0), ValueError, "w_std"),
        (lambda: nl.Dense(4, b_std=float("nan")), ValueError, "b_std"),
        (lambda: nl.Dense(4, w_std="1"), TypeError, "w_std"),
        (lambda: nl.Dense(4, parameterization="mup"), ValueError, "parameterization"),
        (lambda: nl.serial(), ValueError, "at least one"),
        (lambda: nl.serial(nl.Dense(2), "relu"), TypeError, "not an ntkit layer"),
        (lambda: nl.FanOut(0), ValueError, "FanOut"),
    ],
)
def test_bad_specs_are_rejected(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_structural_errors(x):
    with pytest.raises(ValueError, match="parallel"):
        nl.serial(nl.FanOut(2), nl.Dense(3)).kernel(x)
    with pytest.raises(ValueError, match="stream"):
        nl.serial(nl.FanOut(3), nl.parallel(nl.Dense(2), nl.Dense(2))).kernel(x)
    with pytest.raises(ValueError, match="parallel streams"):
        nl.serial(nl.FanOut(2)).kernel(x)
    with pytest.raises(ValueError, match="in_features"):
        nl.Dense(3).build(0)


def test_build_matches_spec_and_is_seeded(x):
    net = nl.serial(nl.Dense(16, 1.5, 0.1), nl.ReLU(), nl.Dense(2))
    m1, m2 = net.build(3, seed=5), net.build(3, seed=5)
    assert m1(x).shape == (5, 2)
    assert m1(x).dtype == torch.float64
    torch.testing.assert_close(m1(x), m2(x), rtol=0, atol=0)
    assert not torch.equal(net.build(3, seed=6)(x), m1(x))
    assert net.build(3, dtype=torch.float32)(x.float()).dtype == torch.float32
