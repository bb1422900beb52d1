"""Architecture scores against brute force: NTK spectra from a dense torch.func Jacobian,
NASWOT from explicitly computed ReLU codes and pairwise Hamming distances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, vmap

from ntkit.metrics import naswot_score, ntk_condition_number, ntk_spectrum, relu_codes

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mlp(seed: int = 0, inplace: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 9), nn.ReLU(inplace=inplace),
                         nn.Linear(9, 4)).to(F64)


class _Functional(nn.Module):
    """The same network as `_mlp`, with functional / tensor-method ReLUs."""

    def __init__(self, seq: nn.Sequential):
        super().__init__()
        self.seq = seq

    def forward(self, x):
        h = F.relu(self.seq[0](x))
        h = self.seq[2](h).relu()
        return self.seq[4](h)


def _x(n: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 6, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _dense_jacobian(model, x, names=None):
    params = {n: p.detach() for n, p in model.named_parameters() if names is None or n in names}
    jac = vmap(jacrev(lambda xi, p: functional_call(model, p, (xi[None],))[0], argnums=1),
               in_dims=(0, None))(x, params)
    n, k = x.shape[0], jac[next(iter(params))].shape[1]
    return torch.cat([jac[name].reshape(n, k, -1) for name in params], dim=-1).detach()


# ----------------------------------------------------------------------- NTK spectrum
@pytest.mark.parametrize("outputs", ["sum", "mean", "full"])
def test_spectrum_matches_dense_jacobian(outputs):
    m, x = _mlp(), _x()
    j = _dense_jacobian(m, x)
    n, k, p = j.shape
    if outputs == "sum":     # TE-NAS: gradient of the summed logits of each example
        js = j.sum(1)
        theta = js @ js.T
    elif outputs == "mean":
        theta = torch.einsum("iup,jup->ij", j, j) / k
    else:
        theta = j.reshape(n * k, p) @ j.reshape(n * k, p).T
    ref = np.sort(np.linalg.eigvalsh(theta.numpy()))[::-1].copy()
    ev = ntk_spectrum(m, x, outputs=outputs)
    assert ev.shape == ((n * k,) if outputs == "full" else (n,))
    assert bool((ev[:-1] >= ev[1:]).all())   # descending
    scale = float(ref[0])
    np.testing.assert_allclose(ev.numpy(), ref, rtol=0, atol=1e-12 * scale)
    kappa = ntk_condition_number(m, x, outputs=outputs)
    assert ref[-1] > 1e-6 * ref[0]   # P = 247 > 40 rows: nonsingular, κ well defined
    assert kappa == pytest.approx(ref[0] / ref[-1], rel=1e-8)


def test_condition_number_weights_only_and_singular():
    m, x = _mlp(), _x()
    names = [n for n, _ in m.named_parameters() if n.endswith("weight")]
    js = _dense_jacobian(m, x, names).sum(1)
    ref = np.linalg.eigvalsh((js @ js.T).numpy())
    kappa = ntk_condition_number(m, x, params=lambda n, p: n.endswith("weight"))
    assert kappa == pytest.approx(ref[-1] / ref[0], rel=1e-8)
    assert ntk_condition_number(m, x, params=names) == pytest.approx(kappa, rel=1e-10)
    weights = [p for n, p in m.named_parameters() if n.endswith("weight")]
    assert ntk_condition_number(m, x, params=weights) == pytest.approx(kappa, rel=1e-10)
    # duplicate inputs: two equal rows, a singular NTK, κ = inf (not a huge finite number)
    xd = torch.cat([x[:3], x[:1]])
    assert ntk_condition_number(m, xd) == math.inf


# ----------------------------------------------------------------------- NASWOT
def _explicit_codes(m: nn.Sequential, x: torch.Tensor) -> np.ndarray:
    w1, b1 = m[0].weight.detach().numpy(), m[0].bias.detach().numpy()
    w2, b2 = m[2].weight.detach().numpy(), m[2].bias.detach().numpy()
    xn = x.numpy()
    z1 = xn @ w1.T + b1
    z2 = np.maximum(z1, 0) @ w2.T + b2
    return np.concatenate([z1 > 0, z2 > 0], axis=1)


def _explicit_naswot(codes: np.ndarray) -> float:
    n, n_a = codes.shape
    k = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            k[i, j] = n_a - int(np.sum(codes[i] != codes[j]))   # N_A − Hamming distance
    sign, logdet = np.linalg.slogdet(k)
    return logdet if sign != 0 else -math.inf


@pytest.mark.parametrize("inplace", [False, True])
def test_naswot_matches_explicit_hamming_kernel(inplace):
    m = _mlp(seed=3, inplace=inplace)
    x = _x(8, seed=4)
    codes = _explicit_codes(m, x)
    got = relu_codes(m, x)
    assert got.shape == (8, 12 + 9) and got.dtype == torch.bool
    np.testing.assert_array_equal(got.numpy(), codes)
    ref = _explicit_naswot(codes)
    assert math.isfinite(ref)
    assert naswot_score(m, x) == pytest.approx(ref, rel=1e-12, abs=1e-12)


def test_functional_relus_give_the_same_codes():
    m, x = _mlp(seed=5), _x(8, seed=6)
    np.testing.assert_array_equal(relu_codes(_Functional(m), x).numpy(),
                                  relu_codes(m, x).numpy())
    assert naswot_score(_Functional(m), x) == naswot_score(m, x)


def test_conv_codes_count_every_unit():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 5 * 5, 4), nn.ReLU(), nn.Linear(4, 2)).to(F64)
    x = torch.randn(6, 2, 5, 5, dtype=F64)
    codes = relu_codes(net, x)
    assert codes.shape == (6, 3 * 5 * 5 + 4)
    pre = net[0](x).detach()
    np.testing.assert_array_equal(codes[:, :75].numpy(), (pre > 0).reshape(6, -1).numpy())


def test_naswot_rank_bound():
    # K_H has rank ≤ N_A + 1: with more examples it is singular, the score −inf; the
    # explicit kernel agrees (its smallest eigenvalue is round-off).
    torch.manual_seed(2)
    m = nn.Sequential(nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 2)).to(F64)
    x = _x(6, seed=8)
    codes = relu_codes(m, x).numpy()
    k = np.array([[3 - np.sum(a != b) for b in codes] for a in codes], dtype=float)
    ev = np.linalg.eigvalsh(k)
    assert ev[0] < 1e-10 * ev[-1]
    assert naswot_score(m, x) == -math.inf


def test_naswot_duplicate_codes_give_minus_inf_and_model_restored():
    m = _mlp(seed=1)
    m.train()
    x = _x(5)
    x = torch.cat([x, x[:1]])   # a repeated example: two equal codes, K_H singular
    assert naswot_score(m, x) == -math.inf
    assert m.training   # eval mode only for the duration of the call


def test_bad_input():
    m, x = _mlp(), _x()
    with pytest.raises(ValueError, match="outputs"):
        ntk_spectrum(m, x, outputs="trace")
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ntk_condition_number(m, bad)
    with pytest.raises(ValueError, match="NaN"):
        naswot_score(m, bad)
    with pytest.raises(ValueError, match="no ReLU"):
        naswot_score(nn.Sequential(nn.Linear(6, 3), nn.Tanh()).to(F64), x)
    with pytest.raises(ValueError, match="at least 2"):
        naswot_score(m, x[:1])
    with pytest.raises(TypeError, match="nn.Module"):
        naswot_score(lambda t: t.relu(), x)
    with pytest.raises(TypeError, match="tensor"):
        relu_codes(m, "not a tensor")
    with pytest.raises(RuntimeError):   # wrong feature size: the model's own error surfaces
        naswot_score(m, torch.zeros(4, 5, dtype=F64))
