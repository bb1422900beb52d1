"""Kernels stay finite, symmetric and PSD where they must: zero rows, duplicate and
antipodal rows, norms from 1e-6 to 1e6, depth 50; diagonals are exact."""

import math

import pytest
import torch

from ntkit import layers as nl


def deep(act, depth, w=1.5, b=0.05):
    layers = []
    for _ in range(depth):
        layers += [nl.Dense(256, w, b), act]
    return nl.serial(*layers, nl.Dense(1, w, b))


def awkward_inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 7, generator=g, dtype=dtype)
    x[0] = 0.0                 # zero row
    x[4] = x[1]                # duplicate
    x[5] = -x[2]               # antipodal
    x[6] = x[3] * 1e-6         # tiny norm, same direction as row 3
    x[7] = x[3] * 1e6          # huge norm, same direction as row 3
    x[8] *= 1e-6
    x[9] *= 1e6
    return x


def assert_finite_sym_psd(k: torch.Tensor, what: str, rel_tol: float = 1e-12):
    assert torch.isfinite(k).all(), f"{what}: non-finite entries"
    assert torch.equal(k, k.T), f"{what}: not exactly symmetric"
    # The inputs span norms 1e-6..1e6, so eigenvalues span ~24 orders of magnitude; the
    # smallest must not be negative beyond rounding of the largest.
    evals = torch.linalg.eigvalsh(k)
    scale = evals.abs().max()
    assert evals.min() >= -rel_tol * k.shape[0] * scale, (what, evals.min().item(), scale.item())


ACTS = {
    "relu": nl.ReLU(),
    "erf": nl.Erf(),
    "abs": nl.Abs(),
    "leaky": nl.LeakyReLU(0.1),
    "gelu": nl.GELU(),
    "sign": nl.Sign(),
    "rect_mono2": nl.RectifiedMonomial(2),
    "gaussian": nl.Gaussian(1.0, -1.0),
    "sin": nl.Sin(),
    "rbf": nl.Rbf(0.5),
}


@pytest.mark.parametrize("name", sorted(ACTS))
def test_awkward_inputs_give_finite_symmetric_psd_kernels(name):
    depth = 1 if name == "rect_mono2" else 3
    net = deep(ACTS[name], depth)
    k = net.kernel(awkward_inputs(), get=("nngp", "ntk"))
    for field in ("nngp", "ntk"):
        assert_finite_sym_psd(getattr(k, field), f"{name}/{field}")
    # The zero row: the kernel of an all-zero input is the bias-only limit, never NaN.
    assert torch.isfinite(k.ntk[0]).all()


@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_depth_50_is_finite_and_psd(act, dtype):
    # He-critical ReLU and an Erf net: neural-tangents returns NaN for deep nets in float32.
    a = nl.ReLU() if act == "relu" else nl.Erf()
    w = math.sqrt(2.0) if act == "relu" else 1.5
    net = deep(a, 50, w=w, b=0.0 if act == "relu" else 0.05)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 5, generator=g, dtype=torch.float64)
    x[3] = x[2]
    k64 = net.kernel(x, get=("nngp", "ntk"))
    k = net.kernel(x, get=("nngp", "ntk"), dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for field in ("nngp", "ntk"):
        assert_finite_sym_psd(getattr(k, field).double(), f"{act}/{field}/{dtype}", tol)
    if dtype == torch.float32:
        # float32 error against float64, measured ~2e-6 for both at depth 50. Row 3 (a
        # duplicate of row 2) is left out: this Erf net is in the chaotic phase (χ⊥ > 1),
        # where correlation 1 is an unstable fixed point and float32 rounding of ρ = 1
        # grows like χ⊥^depth (to ~6e-4 here); that is the network's sensitivity, not
        # the formula's.
        keep = torch.arange(20) != 3
        err = (k.ntk.double() - k64.ntk)[keep][:, keep].norm() / k64.ntk[keep][:, keep].norm()
        assert err < 1e-5, err.item()


def test_deep_relu_diagonal_equals_scalar_recursion():
    # On the diagonal θ = 0 at every layer, so ReLU halves both q and Θ exactly.
    w, b, depth = 1.3, 0.2, 60
    net = deep(nl.ReLU(), depth, w=w, b=b)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64) * torch.logspace(-6, 6, 6)[:, None]
    k = net.kernel(x, get=("nngp", "ntk"))
    q = (x * x).sum(1) / 4
    theta = torch.zeros_like(q)
    for _ in range(depth):
        q = w * w * q + b * b
        theta = q + w * w * theta
        q, theta = q / 2, theta / 2
    q = w * w * q + b * b
    theta = q + w * w * theta
    torch.testing.assert_close(torch.diagonal(k.nngp), q, rtol=1e-13, atol=0)
    torch.testing.assert_close(torch.diagonal(k.ntk), theta, rtol=1e-13, atol=0)


def test_rectified_monomial_duplicate_rows_match_closed_form():
    # neural-tangents returns NaN (diagonal) or wrong values (duplicate rows) here.
    x = torch.tensor([[0.3, -1.2, 0.5], [0.3, -1.2, 0.5], [1.0, 2.0, -0.5]], dtype=torch.float64)
    net = nl.serial(nl.Dense(64, 1.0, 0.1), nl.RectifiedMonomial(2), nl.Dense(1, 1.0, 0.1))
    k = net.kernel(x, get=("nngp", "ntk"))
    v = (x * x).sum(1) / 3 + 0.01
    # E[relu(u)^4] = 3v²/2, E[(2 relu(u))²] = 2v for u ~ N(0, v).
    nngp = 1.5 * v**2 + 0.01
    ntk = nngp + v * 2 * v
    torch.testing.assert_close(torch.diagonal(k.nngp), nngp, rtol=1e-13, atol=0)
    torch.testing.assert_close(torch.diagonal(k.ntk), ntk, rtol=1e-13, atol=0)
    torch.testing.assert_close(k.ntk[0, 1], ntk[0], rtol=1e-7, atol=0)


def test_zero_input_kernel_is_the_bias_limit():
    # x = 0: the first layer's pre-activations are pure bias, N(0, b²).
    b, w = 0.3, 1.2
    net = nl.serial(nl.Dense(64, w, b), nl.ReLU(), nl.Dense(1, w, b))
    k = net.kernel(torch.zeros(2, 3, dtype=torch.float64), get=("nngp", "ntk"))
    q1 = b * b
    nngp = w * w * q1 / 2 + b * b
    ntk = nngp + w * w * (q1 * 0.5)
    torch.testing.assert_close(k.nngp, torch.full((2, 2), nngp, dtype=torch.float64))
    torch.testing.assert_close(k.ntk, torch.full((2, 2), ntk, dtype=torch.float64))
