"""Random feature maps: closed-form kernels, unbiasedness, m^(-1/2) convergence, NTK features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from kernel_compare import assert_kernels_close
from scipy import integrate
from sklearn.metrics.pairwise import laplacian_kernel as sk_laplacian
from sklearn.metrics.pairwise import rbf_kernel

from ntkit.features import (
    KINDS,
    ArcCosineFeatures,
    NTKFeatures,
    RandomFourierFeatures,
    activation_ntk_two_layer,
    arccos_kernel,
    cauchy_kernel,
    exact_kernel,
    gaussian_kernel,
    laplacian_kernel,
    make_features,
    relu_ntk_two_layer,
)
from ntkit.layers.activations import Erf, ReLU

F64 = torch.float64


def _data(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---------------------------------------------------------------- closed-form kernels
def test_shift_invariant_kernels_match_sklearn_and_formula():
    x, y = _data(12, 4, 0), _data(9, 4, 1)
    xn, yn = x.numpy(), y.numpy()
    for g in (0.1, 1.0, 3.0):
        np.testing.assert_allclose(gaussian_kernel(x, y, g).numpy(), rbf_kernel(xn, yn, gamma=g),
                                   rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(laplacian_kernel(x, y, g).numpy(),
                                   sk_laplacian(xn, yn, gamma=g), rtol=1e-13, atol=1e-15)
        direct = np.prod(1.0 / (1.0 + g**2 * (xn[:, None, :] - yn[None, :, :]) ** 2), axis=-1)
        np.testing.assert_allclose(cauchy_kernel(x, y, g).numpy(), direct, rtol=1e-13)
    for fn in (gaussian_kernel, laplacian_kernel, cauchy_kernel):
        assert torch.equal(torch.diagonal(fn(x)), torch.ones(12, dtype=F64))


def _arccos_numeric(x: np.ndarray, y: np.ndarray, n: int) -> float:
    """2 E[Θ(w·x)Θ(w·y)(w·x)^n(w·y)^n] for 2-D x, y by quadrature over the direction of w.

    With w = r e(φ), r² ~ χ²₂ independent of φ ~ U[0, 2π): E[r^{2n}] = 2ⁿ n!.
    """
    def integrand(phi):
        e = np.array([math.cos(phi), math.sin(phi)])
        a, b = e @ x, e @ y
        return (a ** n) * (b ** n) if (a > 0 and b > 0) else 0.0

    # Integrate in pieces split where e·x or e·y changes sign: the integrand is smooth in each.
    kinks = sorted({(math.atan2(v[1], v[0]) + s * math.pi / 2) % (2 * math.pi)
                    for v in (x, y) for s in (-1, 1)} | {0.0, 2 * math.pi})
    total = sum(integrate.quad(integrand, a, b, epsabs=1e-14, epsrel=1e-13)[0]
                for a, b in zip(kinks[:-1], kinks[1:], strict=True))
    return 2.0 * (2.0 ** n) * math.factorial(n) * total / (2 * math.pi)


@pytest.mark.parametrize("degree", [0, 1, 2])
def test_arccos_closed_form_vs_numeric_integration(degree):
    rng = np.random.default_rng(degree)
    cases = [(np.array([1.3, 0.0]), np.array([math.cos(t), math.sin(t)]) * 0.7)
             for t in (0.0, 1e-6, 0.3, 1.0, math.pi / 2, 2.5, math.pi - 1e-6, math.pi)]
    cases += [(rng.normal(size=2), rng.normal(size=2)) for _ in range(5)]
    for x, y in cases:
        closed = arccos_kernel(torch.tensor(x[None]), torch.tensor(y[None]), degree).item()
        assert closed == pytest.approx(_arccos_numeric(x, y, degree), rel=1e-9, abs=1e-12)
    # Invariant under rotation, so a 2-D check covers R^d: embed in R^6 by a random rotation.
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    x, y = rng.normal(size=2), rng.normal(size=2)
    x6, y6 = q[:, :2] @ x, q[:, :2] @ y
    closed6 = arccos_kernel(torch.tensor(x6[None]), torch.tensor(y6[None]), degree).item()
    assert closed6 == pytest.approx(_arccos_numeric(x, y, degree), rel=1e-9)


def test_arccos_diagonal_and_zero_vectors_are_finite():
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, -1.0], [1e-300, 0.0, 0.0]], dtype=F64)
    for n in (0, 1, 2):
        k = arccos_kernel(x, x, n)
        assert bool(torch.isfinite(k).all())
    sq = (x * x).sum(1)
    torch.testing.assert_close(torch.diagonal(arccos_kernel(x, x, 1)), sq, rtol=1e-15, atol=0)
    torch.testing.assert_close(torch.diagonal(arccos_kernel(x, x, 2)), 3 * sq**2, rtol=1e-15,
                               atol=0)
    # Zero vector: k_0(0, ·) = 0, the convention Θ(0) = 0 of ntkit.dual and of the features.
    assert arccos_kernel(x, x, 0)[0].tolist() == [0.0, 0.0, 0.0]
    assert arccos_kernel(x, x, 0)[1, 1].item() == 1.0
    f = ArcCosineFeatures(0, 3, 64, seed=1)
    torch.testing.assert_close(f.gram(x)[0], torch.zeros(3, dtype=F64))
    # Nearly parallel: the atan2 form keeps k_0 < 1 and k_1 ≤ |x||y| (no NaN from arccos(1+ε)).
    y = x[1:2] * (1 + 1e-15)
    assert 0.99999 < arccos_kernel(x[1:2], y, 0).item() <= 1.0


def test_two_layer_relu_ntk_matches_dual_form():
    x, y = _data(7, 5, 3), _data(6, 5, 4)
    k0, k1 = arccos_kernel(x, y, 0), arccos_kernel(x, y, 1)
    assert_kernels_close(relu_ntk_two_layer(x, y), (x @ y.T) * k0 / 2 + k1 / 2, rtol=1e-14)
    assert_kernels_close(activation_ntk_two_layer(ReLU(), x, y), relu_ntk_two_layer(x, y),
                         rtol=1e-13)


# ----------------------------------------------------------------- Monte Carlo checks
SLOPE_CASES = [("fourier_gaussian", {}), ("fourier_gaussian", {"variant": "cos"}),
               ("fourier_laplacian", {}), ("fourier_cauchy", {"variant": "cos"}),
               ("fourier_cauchy", {}), ("relu", {}), ("step", {}), ("ntk", {})]


@pytest.mark.parametrize("kind,opts", SLOPE_CASES)
def test_sup_error_falls_like_inverse_sqrt_m(kind, opts):
    """E sup|K̂ − K| over a 40-point batch ∝ m^(−1/2): fitted log-log slope in [−0.6, −0.4]."""
    x = _data(40, 3, 0)
    ms = [2**k for k in range(6, 15)]
    errs = []
    for m in ms:
        e = []
        for s in range(6):  # average the sup over 6 draws: the slope of a mean is stabler
            f = make_features(kind, 3, m, 0.5, seed=1000 * s + m, **opts)
            e.append((f.gram(x) - f.exact_kernel(x)).abs().max().item())
        errs.append(np.mean(e))
    slope = np.polyfit(np.log(ms), np.log(errs), 1)[0]
    assert -0.6 < slope < -0.4, (kind, opts, slope, errs)


def _pair_contributions(f, x, y) -> torch.Tensor:
    """i.i.d. per-draw terms whose mean is φ(x)·φ(y): (pairs, draws)."""
    px, py = f(x), f(y)
    prod = px * py * f.n_features
    if isinstance(f, RandomFourierFeatures) and f.variant == "cos_sin":
        h = f.n_features // 2
        return (prod[:, :h] + prod[:, h:]) / 2  # each frequency: cos(ω·δ)
    return prod


def _analytic_variance(f, x, y) -> torch.Tensor:
    """Var of one term of `_pair_contributions`, derived in the feature classes' docstrings."""
    if isinstance(f, RandomFourierFeatures):
        k = torch.diagonal(f.exact_kernel(x, y))
        k2 = torch.diagonal(f.exact_kernel(2 * x - y, y))  # kernel at difference 2δ
        if f.variant == "cos_sin":
            return (1 + k2) / 2 - k**2
        return 1 + k2 / 2 - k**2
    s = math.sqrt(f.gamma)
    k = torch.diagonal(arccos_kernel(s * x, s * y, f.degree))
    k2n = torch.diagonal(arccos_kernel(s * x, s * y, 2 * f.degree))
    return 2 * k2n - k**2


@pytest.mark.parametrize("kind,opts", SLOPE_CASES[:-1])
def test_unbiased_within_derived_standard_errors(kind, opts):
    d, pairs = 4, 12
    x, y = _data(pairs, d, 10), _data(pairs, d, 11)
    y[0] = x[0]  # the diagonal
    y[1] = x[1] + 1e-3
    m = 2**16
    f = make_features(kind, d, m, 0.7, seed=5, **opts)
    terms = _pair_contributions(f, x, y)
    est = terms.mean(1)
    torch.testing.assert_close(est, torch.diagonal(f.gram(x, y)), rtol=1e-12, atol=1e-12)
    var = _analytic_variance(f, x, y)
    # The derived variance matches the sample variance of the i.i.d. terms (a check of the
    # formula), within 5 standard errors of a sample variance, √((μ₄ − σ⁴)/m); heavy-tailed
    # frequencies (Cauchy) make μ₄ large for nearby pairs, so μ₄ is estimated too.
    emp_var = terms.var(1)
    mu4 = ((terms - est[:, None]) ** 4).mean(1)
    se_var = torch.sqrt((mu4 - emp_var**2).clamp_min(0) / m)
    # (+ 20 var/m: the second-order term, which dominates for two-point terms such as the
    # step features' Z ∈ {0, 2} at x = y, where μ₄ = σ⁴.)
    tol = 5 * se_var + 20 * var / m + 1e-12
    assert bool(((emp_var - var).abs() <= tol).all()), (emp_var, var, se_var)
    se = torch.sqrt(var.clamp_min(0) / terms.shape[1])
    z = (est - torch.diagonal(f.exact_kernel(x, y))) / se.clamp_min(1e-300)
    # 12 pairs at |z| < 4.5: a false alarm has probability < 1e-4.
    assert float(z.abs().max()) < 4.5, z


def test_ntk_features_gram_equals_torch_func_empirical_ntk():
    from torch.func import functional_call, jacrev

    x, y = _data(9, 5, 20), _data(7, 5, 21)
    for train_output in (True, False):
        f = NTKFeatures(5, 64, gamma=0.6, seed=2, train_output=train_output)
        net = f.network()
        params = {k: v.detach() for k, v in net.named_parameters()}
        names = ["weight", "output"] if train_output else ["weight"]

        def jac(z, params=params, net=net, names=names):
            j = jacrev(lambda p: functional_call(net, {**params, **p}, (z,)))(
                {k: params[k] for k in names})
            return torch.cat([j[k].reshape(z.shape[0], -1) for k in names], 1)

        jx, jy = jac(x), jac(y)
        torch.testing.assert_close(f(x), jx, rtol=1e-14, atol=1e-15)  # same layout
        torch.testing.assert_close(f.gram(x, y), jx @ jy.T, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(f.gram(x), f(x) @ f(x).T, rtol=1e-13, atol=1e-13)
        # and the network's output is the one the features differentiate
        assert net(x).shape == (9,)


def test_ntk_features_converge_for_activation_specs():
    x = _data(10, 3, 30)
    for act in (ReLU(), Erf()):
        errs = []
        for m in (2**8, 2**14):
            f = NTKFeatures(3, m, gamma=1.3, seed=m, activation=act)
            errs.append((f.gram(x) - f.exact_kernel(x)).abs().max().item())
        assert errs[1] < errs[0] / 4, errs  # 64× the width: ≈ 8× smaller
    f = NTKFeatures(3, 8, activation=ReLU())
    assert_kernels_close(f.exact_kernel(x), relu_ntk_two_layer(x * math.sqrt(1.0)))


def test_exact_kernel_function_agrees_with_samplers():
    x, y = _data(5, 3, 40), _data(4, 3, 41)
    for kind in KINDS:
        f = make_features(kind, 3, 16, 0.8, seed=0)
        assert_kernels_close(exact_kernel(kind, x, y, 0.8), f.exact_kernel(x, y), rtol=1e-14,
                             name=kind)


def test_seed_reproducible_and_float32():
    x = _data(5, 3, 50)
    a = make_features("fourier_laplacian", 3, 64, seed=7)(x)
    b = make_features("fourier_laplacian", 3, 64, seed=7)(x)
    assert torch.equal(a, b)
    c = make_features("fourier_laplacian", 3, 64, seed=8)(x)
    assert not torch.equal(a, c)
    f32 = make_features("relu", 3, 256, seed=7, dtype=torch.float32)
    f64 = make_features("relu", 3, 256, seed=7)
    assert f32(x).dtype == torch.float32
    torch.testing.assert_close(f32(x).double(), f64(x), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------- validation
def test_validation_errors():
    f = RandomFourierFeatures("gaussian", 3, 8)
    with pytest.raises(ValueError, match="2-D"):
        f(torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="NaN"):
        f(torch.tensor([[0.0, float("nan"), 1.0]], dtype=F64))
    with pytest.raises(ValueError, match="in_features=3"):
        f(torch.zeros(2, 4, dtype=F64))
    with pytest.raises(ValueError, match="unknown Fourier kernel"):
        RandomFourierFeatures("matern", 3, 8)
    with pytest.raises(ValueError, match="even n_features"):
        RandomFourierFeatures("gaussian", 3, 7)
    with pytest.raises(ValueError, match="variant"):
        RandomFourierFeatures("gaussian", 3, 8, variant="sin")
    with pytest.raises(ValueError, match="gamma"):
        RandomFourierFeatures("gaussian", 3, 8, gamma=0.0)
    with pytest.raises(ValueError, match="gamma"):
        gaussian_kernel(torch.zeros(2, 2, dtype=F64), gamma=float("inf"))
    with pytest.raises(ValueError, match="n_features"):
        ArcCosineFeatures(1, 3, 0)
    with pytest.raises(ValueError, match="degree"):
        ArcCosineFeatures(2, 3, 8)
    with pytest.raises(ValueError, match="degree"):
        arccos_kernel(torch.zeros(2, 2, dtype=F64), degree=3)
    with pytest.raises(ValueError, match="unknown random-features kind"):
        make_features("rbf", 3, 8)
    with pytest.raises(ValueError, match="unknown random-features kind"):
        exact_kernel("rbf", torch.zeros(2, 2, dtype=F64))
    with pytest.raises(ValueError, match="activation"):
        NTKFeatures(3, 8, activation="tanh")
    with pytest.raises(ValueError, match="feature dimensions"):
        arccos_kernel(torch.zeros(2, 2, dtype=F64), torch.zeros(2, 3, dtype=F64))
