"""trace_axes / diagonal_axes of the empirical kernels against neural-tangents 0.6.5.

Fixture: tests/fixtures/nt_empirical.npz from tests/fixtures/make_nt_empirical.py
(neural-tangents' ``empirical_kernel_fn`` on the same finite networks, same weights).
A second, independent truth: the full per-example Jacobians (torch.autograd), contracted
into the full kernel and reduced by a port of neural-tangents' own trace/diagonal/zip steps.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ntkit.empirical import empirical_nngp, empirical_ntk

FIXTURE = Path(__file__).parents[1] / "fixtures" / "nt_empirical.npz"
TOL = 1e-10   # relative (max abs error / max abs entry); both sides are float64


class Erf(nn.Module):
    def forward(self, x):
        return torch.erf(x)


def _load(module: nn.Module, data, name: str) -> nn.Module:
    lin = [m for m in module if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    with torch.no_grad():
        for i, m in enumerate(lin):
            m.weight.copy_(torch.as_tensor(data[f"{name}/w{i}"]))
            m.bias.copy_(torch.as_tensor(data[f"{name}/b{i}"]))
    return module


def _models():
    return {
        "mlp": nn.Sequential(nn.Linear(5, 7), Erf(), nn.Linear(7, 3)),
        "cnn1d": nn.Sequential(nn.Conv1d(2, 5, 3, padding=1), Erf(), nn.Conv1d(5, 4, 2)),
        "cnn2d": nn.Sequential(nn.Conv2d(1, 3, 2), nn.ReLU(),
                               nn.Conv2d(3, 2, 2, padding="same")),
    }


@pytest.fixture(scope="module")
def nt():
    data = np.load(FIXTURE)
    models = {n: _load(m.double(), data, n) for n, m in _models().items()}
    return data, models


def _cases():
    data = np.load(FIXTURE)
    keys = [k for k in data.files if k.count("/") >= 3 and "/ntk" in k]
    out = []
    for k in keys:
        name, t, d, _, *sym = k.split("/")
        axes = tuple(tuple(int(a) for a in s[1:].split("_")) if s[1:] != "none" else ()
                     for s in (t, d))
        out.append((name, axes[0], axes[1], bool(sym), k))
    return out


CASES = _cases()


def _inputs(data, name, trace, diag):
    """x1 and x2; with the batch axis chosen, an x2 with as many examples as x1."""
    x2 = f"{name}/x2n" if 0 in trace + diag else f"{name}/x2"
    return torch.as_tensor(data[f"{name}/x1"]), torch.as_tensor(data[x2])


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_weights_transfer(nt):
    """The torch twins compute the same function as the neural-tangents networks."""
    data, models = nt
    for name, model in models.items():
        out = model(torch.as_tensor(data[f"{name}/x1"])).detach().numpy()
        assert _rel(out, data[f"{name}/out1"]) < 1e-13


@pytest.mark.parametrize("method", ["jacobian", "ntk_vp", "structured"])
@pytest.mark.parametrize("case", CASES, ids=[c[-1] for c in CASES])
def test_ntk_matches_neural_tangents(nt, case, method):
    data, models = nt
    name, trace, diag, sym, key = case
    x1, x2 = _inputs(data, name, trace, diag)
    got = empirical_ntk(models[name], x1, None if sym else x2, method=method,
                        trace_axes=trace, diagonal_axes=diag, batch_size=2)
    assert _rel(got, data[key]) < TOL


@pytest.mark.parametrize("case", CASES, ids=[c[-1] for c in CASES])
def test_nngp_matches_neural_tangents(nt, case):
    data, models = nt
    name, trace, diag, sym, key = case
    x1, x2 = _inputs(data, name, trace, diag)
    got = empirical_nngp(models[name], x1, None if sym else x2, trace_axes=trace,
                         diagonal_axes=diag, batch_size=2)
    assert _rel(got, data[key.replace("/ntk", "/nngp")]) < TOL


# ---- independent reference: explicit Jacobians + neural-tangents' reduction, ported ----

def _full_ntk(model, x1, x2):
    """(n1, *out, n2, *out) from explicit per-example Jacobians (torch.autograd)."""
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach() for p in model.parameters())

    def one(xi):
        def f(*ps):
            return torch.func.functional_call(model, dict(zip(names, ps, strict=True)),
                                              (xi[None],))[0]
        out = f(*params)
        g = torch.autograd.functional.jacobian(f, params)
        return torch.cat([gi.reshape(*out.shape, -1) for gi in g], -1)

    def jac(x):
        return torch.stack([one(xi) for xi in x])

    j1, j2 = jac(x1), jac(x2)
    return torch.tensordot(j1, j2, dims=([j1.ndim - 1], [j2.ndim - 1]))


def _nt_reduce(ntk: np.ndarray, trace_axes, diagonal_axes) -> np.ndarray:
    """neural-tangents' _trace_and_diagonal (empirical.py), in numpy."""
    ndim = ntk.ndim // 2
    trace = sorted({a % ndim for a in trace_axes})
    diag = sorted({a % ndim for a in diagonal_axes})
    size = int(np.prod([ntk.shape[a] for a in trace]))
    for i, c in enumerate(reversed(trace)):
        ntk = np.trace(ntk, axis1=c, axis2=ndim + c - i)
    for i, d in enumerate(diag):
        a1, a2 = d - i, ndim + d - 2 * i - len(trace)
        for c in trace:
            if c < d:
                a1, a2 = a1 - 1, a2 - 1
        ntk = np.diagonal(ntk, axis1=a1, axis2=a2)
    # zip (interleave) the remaining x1 / x2 axes
    m = (ntk.ndim - len(diag)) // 2
    ntk = np.transpose(ntk, [a for p in zip(range(m), range(m, 2 * m), strict=True)
                             for a in p] + list(range(2 * m, ntk.ndim)))
    res = [2 * b - i for i, b in enumerate(diag)]
    for i, b in enumerate(diag):
        res[i] -= 2 * sum(b > c for c in trace)
    ntk = np.moveaxis(ntk, list(range(-len(diag), 0)), res)
    return ntk / size


@pytest.mark.parametrize("name,trace,diag", [
    ("cnn1d", (-1,), ()), ("cnn1d", (), (1,)), ("cnn1d", (2,), (1,)),
    ("cnn2d", (), (2,)), ("cnn2d", (1, 3), (2,)), ("cnn2d", (2,), ()),
])
def test_against_explicit_jacobians(nt, name, trace, diag):
    data, models = nt
    x1, x2 = torch.as_tensor(data[f"{name}/x1"]), torch.as_tensor(data[f"{name}/x2"])
    full = _full_ntk(models[name], x1, x2).detach().numpy()
    ref = _nt_reduce(full, trace, diag)
    got = empirical_ntk(models[name], x1, x2, trace_axes=trace, diagonal_axes=diag,
                        method="jacobian")
    assert _rel(got, ref) < TOL
