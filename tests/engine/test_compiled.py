"""torch.compile traces every closed-form kernel map as one graph, without recompiles.

Tracing is checked with ``fullgraph=True`` (a graph break raises) and a counting
backend that runs the captured graph as is (no code generation, so it is cheap; dynamo's
tracing is what can break). By default one network chains every closed-form activation;
the slow tests trace each activation on its own through ``aot_eager`` (functionalized
aten ops) and check the inductor backend.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend

from ntkit import layers as nl
from ntkit.engine.compiled import tile_function

# Compiled tiles run on one worker (ntkit.engine.schedule.workers): no parallel path to
# cover here, so one intra-op thread (tests/engine/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")

# One graph for the whole kernel map needs dynamo to trace frozen dataclasses
# (Kernel(...), dataclasses.replace): torch 2.7 does, 2.3-2.6 break the graph there
# (measured on 2.3.0, 2.4.0, 2.5.0, 2.6.0). Older torch still gets correct kernels:
# compile=True falls back to eager with a RuntimeWarning (tested below on any version).
fullgraph_torch = pytest.mark.skipif(
    torch.__version__ < "2.7", reason="fullgraph tracing of the Kernel dataclass needs "
    "torch >= 2.7")


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given."""

    def __init__(self, inner: str = "eager"):
        self.graphs = 0
        self.inner = lookup_backend(inner)

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return self.inner(gm, example_inputs)


CLOSED_FORMS = {
    "ReLU": lambda: nl.ReLU(),
    "ABReLU": lambda: nl.ABReLU(-0.3, 1.2),
    "LeakyReLU": lambda: nl.LeakyReLU(0.1),
    "Abs": lambda: nl.Abs(),
    "Sign": lambda: nl.Sign(),
    "Step": lambda: nl.RectifiedMonomial(0),
    "ReLU^3": lambda: nl.RectifiedMonomial(3),
    "Identity": lambda: nl.Identity(),
    "Erf": lambda: nl.Erf(0.9, 1.1, 0.1),
    "GELU": lambda: nl.GELU(),
    "Sin": lambda: nl.Sin(1.0, 1.3, 0.2),
    "Cos": lambda: nl.Cos(),
    "Rbf": lambda: nl.Rbf(0.7),
    "Exp": lambda: nl.Exp(0.5, 0.3),
    "Gaussian": lambda: nl.Gaussian(1.0, -0.5),
    "Polynomial": lambda: nl.Polynomial([0.1, 1.0, 0.5]),
    "Monomial": lambda: nl.Monomial(3),
    "Hermite": lambda: nl.Hermite(3),
}


def _inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(7, 3, generator=g, dtype=dtype)
    x1[2] = 0.0  # a zero-variance input: the masked branch of the arc-cosine angle
    x2 = torch.randn(5, 3, generator=g, dtype=dtype)
    return x1, x2


def _check_trace(net, counter):
    x1, x2 = _inputs()
    for sym in (True, False):
        fn = tile_function(net, True, sym_tile=sym, compiled=True, backend=counter,
                           fullgraph=True)
        eager = tile_function(net, True, sym_tile=sym, compiled=False)
        args = (x1,) if sym else (x1, x2)
        # Same values as eager (the captured aten ops are the eager ones, so 1e-12 is
        # far above their rounding; the diagonal stays exactly the variance).
        got, want = fn(*args), eager(*args)
        _assert_kernels_equal(got, want, 1e-12)
        if sym:
            assert torch.equal(got.nngp.diagonal(), got.cov1)
            assert torch.equal(got.ntk.diagonal(), want.ntk.diagonal())
    assert counter.graphs == 2  # one graph per (diagonal?, shape): no break, no recompile


def _net(act):
    # b_std = 0 keeps the zero input at zero variance through every layer.
    return nl.serial(nl.Dense(16, 1.4, 0.0), act, nl.Dense(16, 1.2, 0.0), act,
                     nl.Dense(1, 1.0, 0.0))


def _assert_kernels_equal(a, b, rtol):
    for name in ("nngp", "ntk", "cov1"):
        u, v = getattr(a, name), getattr(b, name)
        scale = float(v.abs().max().clamp_min(1e-300))
        err = float((u - v).abs().max())
        assert err <= rtol * scale, f"{name}: {err:.3g} > {rtol:g} × {scale:.3g}"


@fullgraph_torch
def test_every_closed_form_traces_as_one_graph():
    # Arc-cosine family first, while the zero input still has zero variance.
    torch._dynamo.reset()
    layers = []
    for make in CLOSED_FORMS.values():
        layers += [nl.Dense(16, 1.0, 0.0), make()]
    _check_trace(nl.serial(*layers, nl.Dense(1, 1.0, 0.0)), CountingBackend())


@pytest.mark.slow
@fullgraph_torch
@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_fullgraph_trace_matches_eager(name):
    torch._dynamo.reset()
    _check_trace(_net(CLOSED_FORMS[name]()), CountingBackend("aot_eager"))


@fullgraph_torch
def test_float32_arc_cosine_traces():
    torch._dynamo.reset()
    net = _net(nl.ReLU())
    x1, x2 = _inputs(torch.float32)
    counter = CountingBackend()
    fn = tile_function(net, True, sym_tile=False, compiled=True, backend=counter,
                       fullgraph=True)
    eager = tile_function(net, True, sym_tile=False, compiled=False)
    _assert_kernels_equal(fn(x1, x2), eager(x1, x2), 1e-6)
    assert counter.graphs == 1


@fullgraph_torch
def test_deep_net_compiles_once_per_tile_shape():
    # The Kernel's n_dense/source differ at each Dense layer; with one trace
    # of the whole network they are constants, so only tile shapes cause new graphs.
    torch._dynamo.reset()
    layers = []
    for _ in range(4):
        layers += [nl.Dense(8, 1.4, 0.1), nl.ReLU()]
    net = nl.serial(*layers, nl.Dense(1))
    counter = CountingBackend()
    fn = tile_function(net, True, sym_tile=False, compiled=True, backend=counter,
                       fullgraph=True)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(11, 3, generator=g, dtype=torch.float64)
    eager = tile_function(net, True, sym_tile=False, compiled=False)
    shapes = [(4, 4), (4, 3), (4, 4)]
    for r, c in shapes:
        _assert_kernels_equal(fn(x[:r], x[-c:]), eager(x[:r], x[-c:]), 1e-12)
    assert counter.graphs == len(set(shapes))


@pytest.mark.slow
def test_inductor_matches_eager_depth5_relu():
    pytest.importorskip("torch._inductor")
    torch._dynamo.reset()
    layers = []
    for _ in range(5):
        layers += [nl.Dense(8, 1.4, 0.1), nl.ReLU()]
    net = nl.serial(*layers, nl.Dense(1))
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    fn = tile_function(net, True, sym_tile=True, compiled=True, fullgraph=True)
    eager = tile_function(net, True, sym_tile=True, compiled=False)
    got, want = fn(x), eager(x)
    # Inductor fuses and may reorder the arithmetic: rounding-level differences only.
    _assert_kernels_equal(got, want, 1e-12)
    assert torch.equal(got.nngp.diagonal(), got.cov1)
