"""Dense → activation fused into one pass (ntkit.layers.fc_fusion): the same kernels as
the two layers mapped one after the other, exact diagonals and identical pairs kept
bitwise, and the layer-by-layer path wherever fusion must not apply."""

from __future__ import annotations

import pytest
import torch

from ntkit import layers as nl
from ntkit.dual import fused, native
from ntkit.layers.fc_fusion import fused_key

try:
    native.library()
    HAVE_C = True
except RuntimeError:
    HAVE_C = False

ACTS = [nl.ReLU(), nl.LeakyReLU(0.1), nl.Abs(), nl.ABReLU(-0.3, 2.0), nl.Sign(),
        nl.Erf(), nl.Gelu(), nl.Sin(), nl.Cos(), nl.Rbf(1.0), nl.Exp(0.5, 0.3),
        nl.Gaussian(1.0, -0.5)]


class _Count:
    def __init__(self, monkeypatch):
        self.n = 0
        real = native.run_dense

        def counted(*args):
            self.n += 1
            return real(*args)

        monkeypatch.setattr(native, "run_dense", counted)


def _inputs():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(40, 12, generator=g, dtype=torch.float64)
    x2 = torch.randn(30, 12, generator=g, dtype=torch.float64)
    # duplicates within x1 and across, a zero row, an antipodal pair
    x1[5], x2[3], x1[9], x2[4] = x1[7], x1[7], 0.0, -x1[11]
    return x1, x2


def _net(act, parameterization, b_std, depth=3):
    layers = []
    for _ in range(depth):
        layers += [nl.Dense(32, w_std=1.3, b_std=b_std, parameterization=parameterization),
                   act]
    return nl.serial(*layers, nl.Dense(1, w_std=1.3, b_std=b_std,
                                       parameterization=parameterization))


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("act", ACTS, ids=[type(a).__name__ for a in ACTS])
@pytest.mark.parametrize("parameterization, b_std",
                         [("ntk", 0.1), ("ntk", None), ("standard", 0.1), ("standard", None)])
def test_fused_pair_matches_layer_by_layer(act, parameterization, b_std, monkeypatch):
    count = _Count(monkeypatch)
    net = _net(act, parameterization, b_std)
    x1, x2 = _inputs()
    for args in ((x1,), (x1, x2)):
        before = count.n
        got = net.kernel(*args)
        assert count.n > before or not HAVE_C  # it really fused
        want = net.kernel(*args, compile=False)
        assert _rel(got.nngp, want.nngp) <= 1e-13 and _rel(got.ntk, want.ntk) <= 1e-13
    # Exact diagonals and identical pairs, bitwise: x1[5] == x1[7] == x2[3].
    sym = net.kernel(x1)
    cross = net.kernel(x1, x2)
    for name in ("nngp", "ntk"):
        s, c = getattr(sym, name), getattr(cross, name)
        assert torch.equal(s[5, 7], s[7, 7]) and torch.equal(s[5, 5], s[7, 7])
        assert torch.equal(c[7, 3], s[7, 7]) and torch.equal(c[5, 3], s[7, 7])


def test_every_keyed_activation_has_its_duals_kernel():
    # The key must be the one the activation's own dual uses: run both through the C
    # library on the same (var, cov, var) and compare bitwise.
    if not HAVE_C:
        pytest.skip("no C compiler")
    v = torch.tensor([1.3, 0.7, 2.0], dtype=torch.float64)
    c = torch.tensor([[1.3, 0.5, -0.9], [0.5, 0.7, 0.2], [-0.9, 0.2, 2.0]],
                     dtype=torch.float64)
    for act in ACTS:
        key = fused_key(act, True)
        assert key is not None
        with fused.enabled(True):
            t, d = act.dual(v[:, None], c.clone(), v[None, :], True)
        tt, dd = native.run(key, v[:, None], c.clone(), v[None, :])
        assert torch.equal(t, tt) and torch.equal(d, dd), type(act).__name__


def test_layer_by_layer_where_fusion_must_not_apply(monkeypatch):
    count = _Count(monkeypatch)
    x1, _ = _inputs()
    # Subclasses may change the dual; activations without a C kernel; learnable
    # hyperparameters; fusion off; masks; autograd.
    class MyReLU(nl.ReLU):
        pass

    w = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    cases = [
        (_net(MyReLU(), "ntk", 0.1), {}),
        (_net(nl.Tanh(), "ntk", 0.1, depth=1), {}),
        (nl.serial(nl.Dense(8, w_std=w), nl.ReLU(), nl.Dense(1)), {}),
        (_net(nl.ReLU(), "ntk", 0.1), {"compile": False}),
        (_net(nl.ReLU(), "ntk", 0.1), {"mask_constant": 0.0}),
    ]
    for net, kw in cases:
        net.kernel(x1, **kw)
    assert count.n == 0
    xg = x1.clone().requires_grad_(True)
    k = _net(nl.ReLU(), "ntk", 0.1).kernel(xg, get="ntk")
    assert count.n == 0
    (g,) = torch.autograd.grad(k.sum(), xg)
    assert torch.isfinite(g).all()


def test_gradients_through_a_fused_network_match_eager():
    # Kernel gradients with fusion on use the layer-by-layer autograd path: same values.
    x1, _ = _inputs()
    net = _net(nl.Erf(), "ntk", 0.1)
    grads = []
    for compile in (None, False):
        xg = x1.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net.kernel(xg, get="ntk", compile=compile).sum(), xg)
        grads.append(g)
    assert _rel(grads[0], grads[1]) <= 1e-12
