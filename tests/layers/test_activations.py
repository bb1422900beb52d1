"""Activation layer specs: hyperparameter validation, layer plumbing, and finite vs infinite.

The dual formulas themselves are tested in tests/dual (three routes, Monte Carlo, edge
cases). Here: constructors reject bad hyperparameters with errors naming them; the
specs work inside networks (``serial``, ``Dense``, ``kernel``, ``build``) in both dtypes;
and the output covariance of many wide random networks converges to ``kernel(...)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from kernel_compare import assert_kernels_close

from ntkit import layers as nl
from ntkit.layers import activations as A
from ntkit.layers.branching import serial
from ntkit.layers.dense import Dense

F64 = torch.float64

SPECS = [
    ("ReLU", A.ReLU()), ("LeakyReLU", A.LeakyReLU(0.2)), ("ABReLU", A.ABReLU(-0.5, 1.5)),
    ("Abs", A.Abs()), ("Sign", A.Sign()), ("Identity", A.Identity()),
    ("Erf", A.Erf(1.2, 0.8, 0.3)), ("GELU", A.GELU()), ("Sin", A.Sin(1.0, 1.5, 0.3)),
    ("Cos", A.Cos(1.0, 1.2, -0.4)), ("Exp", A.Exp(0.5, 0.7)), ("Gaussian", A.Gaussian(1.0, -1.0)),
    ("Gaussian_pos", A.Gaussian(1.0, 0.1)), ("Rbf", A.Rbf(0.8)), ("Monomial3", A.Monomial(3)),
    ("RectifiedMonomial0", A.RectifiedMonomial(0)), ("RectifiedMonomial2", A.RectifiedMonomial(2)),
    ("Polynomial", A.Polynomial([0.2, 1.0, -0.5, 0.1])), ("Hermite3", A.Hermite(3)),
    ("Tanh", A.Tanh()), ("Sigmoid", A.Sigmoid()), ("Softplus", A.Softplus()), ("SiLU", A.SiLU()),
    ("Elementwise", A.Elementwise(lambda x: torch.sin(x) + 0.5 * x)),
]
IDS = [n for n, _ in SPECS]


# ---- validation --------------------------------------------------------------------

BAD = [
    (A.LeakyReLU, ("0.1",), TypeError, "alpha"),
    (A.LeakyReLU, (math.nan,), ValueError, "alpha"),
    (A.ABReLU, (True, 1.0), TypeError, "a"),
    (A.ABReLU, (0.0, math.inf), ValueError, "b"),
    (A.Erf, (None,), TypeError, "a"),
    (A.Erf, (1.0, math.inf), ValueError, "b"),
    (A.Erf, (1.0, 1.0, "0"), TypeError, "c"),
    (A.Sin, (1.0, 1.0, math.nan), ValueError, "c"),
    (A.Cos, ([1.0],), TypeError, "a"),
    (A.Exp, (1.0, math.inf), ValueError, "b"),
    (A.Gaussian, (1.0, "x"), TypeError, "b"),
    (A.Rbf, (0.0,), ValueError, "gamma"),
    (A.Rbf, (-1.0,), ValueError, "gamma"),
    (A.Rbf, (math.inf,), ValueError, "gamma"),
    (A.Monomial, (2.5,), TypeError, "degree"),
    (A.Monomial, (-1,), ValueError, "degree"),
    (A.Monomial, (101,), ValueError, "degree"),
    (A.Monomial, (True,), TypeError, "degree"),
    (A.RectifiedMonomial, (1.5,), TypeError, "degree"),
    (A.RectifiedMonomial, (-2,), ValueError, "degree"),
    (A.Hermite, ("3",), TypeError, "degree"),
    (A.Hermite, (-1,), ValueError, "degree"),
    (A.Polynomial, ([],), ValueError, "coef"),
    (A.Polynomial, (3.0,), TypeError, "coef"),
    (A.Polynomial, ("123",), TypeError, "coef"),
    (A.Polynomial, ([1.0, math.nan],), ValueError, r"coef\[1\]"),
    (A.Polynomial, ([1.0, "a"],), TypeError, r"coef\[1\]"),
    (A.Polynomial, ([1.0] * 102,), ValueError, "coef"),
    (A.Elementwise, (None,), TypeError, "fn"),
    (A.Elementwise, (torch.tanh, 3.0), TypeError, "fn_deriv"),
    (A.Elementwise, (torch.tanh, None, 0), ValueError, "deg"),
    (A.Elementwise, (torch.tanh, None, 8.0), TypeError, "deg"),
    (A.Elementwise, (torch.tanh, None, 8, "gauss"), ValueError, "rule"),
    (A.Elementwise, (torch.tanh, None, 8, "hermite", 0), ValueError, "max_elements"),
    (A.Tanh, (-3,), ValueError, "deg"),
]


@pytest.mark.parametrize("cls,args,exc,match", BAD,
                         ids=[f"{c.__name__}{a!r}" for c, a, _, _ in BAD])
def test_bad_hyperparameters_raise_naming_the_parameter(cls, args, exc, match):
    with pytest.raises(exc, match=match):
        cls(*args)


def test_good_hyperparameters_are_normalized():
    assert A.LeakyReLU(1).alpha == 1.0 and isinstance(A.LeakyReLU(1).alpha, float)
    assert A.Monomial(np.int64(3)).degree == 3
    assert A.Polynomial(np.array([1.0, 2.0])).coef == (1.0, 2.0)
    assert A.Polynomial(torch.tensor([1.0, 2.0])).coef == (1.0, 2.0)
    assert A.Gaussian(2, 0.2).b == 0.2  # b > 0 is allowed (moments finite for small Σ)


@pytest.mark.parametrize("name,spec", SPECS, ids=IDS)
def test_repr_names_the_hyperparameters(name, spec):
    r = repr(spec)
    assert r.startswith(type(spec).__name__ + "(")
    for key in ("alpha", "gamma", "degree", "coef", "deg"):
        if hasattr(spec, key):
            assert key in r


# ---- plumbing --------------------------------------------------------------------

def _inputs(n=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(d)  # |x|²/d = 1
    scales = torch.tensor([1.0, 0.6, 1.2, 0.9, 0.0][:n], dtype=F64)  # last row: x = 0
    return x * scales[:, None]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name,spec", SPECS, ids=IDS)
def test_kernel_and_build_in_a_network(name, spec, dtype):
    x = _inputs()
    net = serial(Dense(64, 1.2, 0.1), spec, Dense(3))
    k = net.kernel(x, get=("nngp", "ntk", "cov1"), dtype=dtype)
    assert k.nngp.dtype == dtype and k.nngp.shape == (5, 5)
    assert k.nngp.isfinite().all() and k.ntk.isfinite().all()
    # The per-input variances (diagonal map) agree with the diagonal of the full kernel.
    # In float32, x xᵀ/d and |x|²/d differ by rounding, so the diagonal entries see
    # |ρ| = 1 − O(eps) and θ = O(√eps): sign and step, functions of θ alone, are off by
    # ~√eps_f32 ≈ 2.4e-4 there (ReLU-like T cancels that to first order).
    # Quadrature specs: T(v1, c, v2) and T(v2, c, v1) use different (equally accurate)
    # Cholesky rules, so x1-vs-x2 orderings agree to the quadrature error, ~1e-12.
    quad = isinstance(spec, A.Elementwise)
    tol = (1e-10 if quad else 1e-12) if dtype == F64 else (
        5e-4 if name in ("Sign", "RectifiedMonomial0") else 1e-5)
    torch.testing.assert_close(k.nngp.diagonal(), k.cov1, rtol=tol, atol=tol)
    # x2 ≠ x1 path: the same numbers.
    k12 = net.kernel(x, x[:3], get="nngp", dtype=dtype)
    # Pairs (i, i), i < 3, meet at correlation 1 on this path: sign and step (T = 1 − 2θ/π)
    # move by 2/π·Δθ there; ReLU-like T is flat in θ at θ = 0 and smooth duals have no
    # angle, so the rest is tight: 256 eps (float64 closed forms) or the tolerance above.
    assert_kernels_close(k12, k.nngp[:, :3], var1=k.cov1, var2=k.cov1[:3],
                         rtol=None if dtype == F64 and not quad else tol,
                         gain=2 / math.pi if name in ("Sign", "RectifiedMonomial0") else 0.0)
    # The finite network applies fn elementwise, in its dtype.
    m = net.build(in_features=8, seed=1, dtype=dtype)
    y = m(x.to(dtype))
    assert y.shape == (5, 3) and y.dtype == dtype and y.isfinite().all()


def test_activation_module_applies_fn():
    spec = A.Erf(2.0, 0.5, 0.1)
    m = spec.build(in_features=4)
    x = torch.randn(3, 4, dtype=F64)
    torch.testing.assert_close(m(x), 2.0 * torch.erf(0.5 * x) + 0.1)


# ---- finite vs infinite (Monte Carlo) -------------------------------------------

def _mc_nngp(spec, x, width, seeds, depth=1, first_seed=0):
    """Mean and standard error over seeds of the empirical output covariance
    f fᵀ / width of serial([Dense(width, 1.2, 0.1), spec] × depth)."""
    layers = []
    for _ in range(depth):
        layers += [Dense(width, 1.2, 0.1), spec]
    net = serial(*layers)
    samples = []
    with torch.no_grad():
        for s in range(first_seed, first_seed + seeds):
            f = net.build(in_features=x.shape[1], seed=s)(x)
            samples.append(f @ f.T / width)
    samples = torch.stack(samples)
    return net, samples.mean(0), samples.std(0) / math.sqrt(seeds)


def _check_mc(net, mean, se, x):
    k = net.kernel(x, get="nngp")
    err = (mean - k).norm() / k.norm()
    noise = se.norm() / k.norm()  # expected relative error of the mean
    # Heavy-tailed φ (cubics, exp) are noisier; 5% still rejects any real formula error.
    assert noise < 0.05, f"the Monte Carlo test has no power: noise {noise:.3g}"
    assert err <= 4 * noise + 1e-12, f"relative error {err:.3g} vs noise {noise:.3g}"


@pytest.mark.parametrize("i", range(len(SPECS)), ids=IDS)
def test_finite_width_nngp_converges_to_kernel(i):
    """One hidden layer: the width-4096 output covariance is an unbiased estimate of the
    NNGP (each channel is an exact sample), so the mean over 32 seeds must be within a few
    standard errors, measured from the same samples. A zero input (zero variance before
    the bias) is included."""
    x = _inputs()
    # Different seeds per activation: otherwise every test shares the same weight draws
    # and the same (correlated) Monte Carlo error.
    net, mean, se = _mc_nngp(SPECS[i][1], x, width=4096, seeds=32, first_seed=1000 * i)
    _check_mc(net, mean, se, x)


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(SPECS)), ids=IDS)
def test_finite_width_nngp_converges_two_hidden_layers(i):
    # Two hidden layers: the second layer's input covariance fluctuates, which biases the
    # mean by O(1/width) ≈ 1e-3 relative at width 1024, below the noise.
    name, spec = SPECS[i]
    if name in ("Exp", "Gaussian_pos", "Monomial3", "Polynomial", "Hermite3"):
        # A cubic of a cubic (or exp of exp) is too heavy-tailed for 64 seeds to pin down.
        pytest.skip("second-layer variances make φ's moments huge or infinite")
    x = _inputs()
    net, mean, se = _mc_nngp(spec, x, width=1024, seeds=64, depth=2, first_seed=1000 * i)
    _check_mc(net, mean, se, x)


def test_tanh_auto_degree_is_accurate_and_batch_independent():
    # Variances up to ~6 after the first layer: 64 fixed nodes would give ~3e-4 relative
    # error in Tdot there; "auto" raises the degree with the variance.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 8, generator=g, dtype=torch.float64) * 1.5
    net = nl.serial(nl.Dense(64, 1.0, 0.05), nl.Tanh(), nl.Dense(1))
    ref_net = nl.serial(nl.Dense(64, 1.0, 0.05), nl.Elementwise(torch.tanh, deg=512),
                        nl.Dense(1))
    k = net.kernel(x, get="ntk")
    ref = ref_net.kernel(x, get="ntk")
    # (quadrature error 1e-11 of the scale sqrt(K_ii K_jj); no arc-cosine in a tanh net)
    assert_kernels_close(k, ref, rtol=1e-11, gain=0.0, name="auto vs 512 nodes")
    # The same entries from a different batch composition agree (sklearn's subset checks).
    sub = net.kernel(x[:7], x, get="ntk")
    d = torch.diagonal(k)
    assert_kernels_close(sub, k[:7], var1=d[:7], var2=d, rtol=1e-11, gain=0.0,
                         name="k(x[:7], x) vs k(x)[:7]")
