"""Entries of an example against itself are exact on every path: bitwise the values of
the x2=None diagonal, whether the engine meets the pair as x2 sharing rows with x1, as
columns K(x, x[idx]) of Nystrom centers, or as a block of a kernel operator.

Near correlation 1 the arc-cosine turns a rounding error of 1e-16 into 1e-8, so without
care these entries differ from the diagonal at the 1e-8 level.
"""

from __future__ import annotations

import pytest
import torch

import ntkit.layers as nl
from ntkit.engine.pairs import identical_rows
from ntkit.solvers import KernelOperator

F64 = torch.float64

NETS = {
    "fc-relu": (nl.serial(nl.Dense(8), nl.ReLU(), nl.Dense(8, b_std=0.1), nl.ReLU(),
                          nl.Dense(1)), (6,)),
    "fc-erf-layernorm": (nl.serial(nl.Dense(8), nl.LayerNorm(), nl.Erf(), nl.Dense(8),
                                   nl.GELU(), nl.Dense(1)), (6,)),
    "conv-gap": (nl.serial(nl.Conv(4, (3,), padding="SAME"), nl.ReLU(), nl.Conv(4, (2,)),
                           nl.ReLU(), nl.GlobalAvgPool(), nl.Dense(1)), (2, 7)),
    "conv-flatten": (nl.serial(nl.Conv(4, (3, 3), padding="SAME"), nl.ReLU(),
                               nl.AvgPool((2, 2)), nl.Conv(4, (2, 2)), nl.Erf(),
                               nl.Flatten(), nl.Dense(1)), (2, 5, 5)),
}


def inputs(shape, n, seed):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.fixture(params=sorted(NETS))
def net_and_x(request):
    net, shape = NETS[request.param]
    return net, inputs(shape, 9, 0), shape


def test_identical_rows_finds_exactly_the_equal_rows():
    x = inputs((3,), 6, 1)
    y = torch.cat([x[[4, 1]], inputs((3,), 2, 2), x[[4]]])
    rows, cols = identical_rows(x, y)
    assert rows.tolist() == [1, 4, 4] and cols.tolist() == [1, 0, 4]
    y[0, 2] = torch.nextafter(y[0, 2], torch.tensor(10.0, dtype=F64))  # one ulp off
    rows, cols = identical_rows(x, y)
    assert rows.tolist() == [1, 4] and cols.tolist() == [1, 4]


@pytest.mark.parametrize("tile", [None, 4])
def test_x2_sharing_rows_with_x1(net_and_x, tile):
    net, x, shape = net_and_x
    idx = [7, 0, 3, 3]
    x2 = torch.cat([x[idx[:2]], inputs(shape, 2, 3), x[idx[2:]]])
    sym = net.kernel(x, get=None, tile=tile)
    cross = net.kernel(x, x2, get=None, tile=tile)
    cols = [0, 1, 4, 5]
    for name in ("nngp", "ntk"):
        got = getattr(cross, name)[idx, cols]
        want = getattr(sym, name).diagonal()[idx]
        assert torch.equal(got, want), name
    assert torch.equal(cross.cov2[cols], sym.cov1[idx])


def test_x2_a_copy_of_x1(net_and_x):
    net, x, _ = net_and_x
    sym = net.kernel(x)
    copy = net.kernel(x, x.clone())
    assert torch.equal(copy.nngp, sym.nngp) and torch.equal(copy.ntk, sym.ntk)


def test_columns_of_centers(net_and_x):
    net, x, _ = net_and_x
    idx = torch.tensor([0, 4, 8])
    want = net.kernel(x, get="ntk").diagonal()[idx]
    got = net.kernel(x, x[idx], get="ntk")[idx, torch.arange(3)]
    assert torch.equal(got, want)


def test_kernel_operator_columns_and_blocks():
    net = NETS["fc-relu"][0]
    x = inputs((6,), 40, 4)
    ref = net.kernel(x, get="ntk")
    op = KernelOperator(net, x, get="ntk", tile=16)
    idx = torch.tensor([2, 17, 30])
    cols = op.columns(idx, slice(0, 40))
    assert torch.equal(cols[idx, torch.arange(3)], ref.diagonal()[idx])
    blk = op.block(slice(10, 30), slice(20, 40))   # rows 20..29 in both
    assert torch.equal(blk[torch.arange(10, 20), torch.arange(10)], ref.diagonal()[20:30])


def test_gradients_of_the_hyperparameters_still_flow():
    w = torch.tensor(1.2, dtype=F64, requires_grad=True)
    net = nl.serial(nl.Dense(8, w_std=w), nl.ReLU(), nl.Dense(1, w_std=w))
    x = inputs((6,), 5, 5)
    cross = net.kernel(x, x[[1, 3]], get="ntk")
    sym = net.kernel(x, get="ntk")
    g_cross, = torch.autograd.grad(cross[[1, 3], [0, 1]].sum(), w)
    g_sym, = torch.autograd.grad(sym.diagonal()[[1, 3]].sum(), w)
    torch.testing.assert_close(g_cross, g_sym, rtol=1e-13, atol=0)


def test_identical_pairs_on_a_dask_cluster():
    distributed = pytest.importorskip("distributed")
    net = NETS["fc-relu"][0]
    x = inputs((6,), 12, 6)
    x2 = torch.cat([x[[3, 9]], inputs((6,), 3, 7)])
    want = net.kernel(x, get="ntk").diagonal()[[3, 9]]
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        got = net.kernel(x, x2, get="ntk", tile=4, client=client)
    finally:
        client.close()
        cluster.close()
    assert torch.equal(got[[3, 9], [0, 1]], want)
