"""Per-example graph patterns through the engine: ``net.kernel(x1, x2, pattern=...)``
gives each tile its rows' patterns on every path (tiles, diagonal tiles, covariance
replay, disk outputs, Dask, compiled tiles, autograd), equal to the kernel map of the
whole batch; the finite network's empirical NTK with the same patterns converges to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntkit import layers as nl
from ntkit.empirical import empirical_ntk
from ntkit.engine.compiled import tile_function
from ntkit.engine.plan import plan
from ntkit.kernel import Storage, input_kernel

EPS = torch.finfo(torch.float64).eps

F64 = torch.float64
V = 6


def _x(*shape, seed=0):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _adj(n, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, V, V, generator=g) < 0.4).to(F64) * torch.rand(n, V, V, generator=g,
                                                                         dtype=F64)


def _arcs(n, seed, E=9):
    g = torch.Generator().manual_seed(seed)
    arcs = torch.randint(0, V, (n, E, 2), generator=g)
    arcs[:, -1] = -1  # a padding arc
    return arcs


def _net(impl="dense", w=1):
    return nl.serial(nl.Conv(w, (1,), w_std=1.5, b_std=0.2),
                     nl.Aggregate(implementation=impl), nl.ReLU(),
                     nl.Conv(w, (1,), w_std=1.3, b_std=0.1),
                     nl.Aggregate(implementation=impl), nl.GlobalAvgPool(),
                     nl.Dense(1, w_std=1.2, b_std=0.1))


def _reference(net, x1, x2, p1, p2):
    """The whole batch in one kernel map (no engine)."""
    full = net.requires_full(Storage()).any_full
    k0 = input_kernel(x1, x2, track_ntk=True, full=full)
    return net.kernel_map(nl.with_pattern(k0, p1, p2))


@pytest.fixture(scope="module")
def data():
    x1, x2 = _x(7, 3, V), _x(5, 3, V, seed=1)
    return x1, x2, _adj(7, 2), _adj(5, 3)


def test_tiles_equal_the_whole_batch(data):
    """Tiles of other shapes round the channel sums differently (≤ 2e-15 here), hence
    1e-13; paths with the same tiles agree bitwise (disk and Dask tests below)."""
    x1, x2, p1, p2 = data
    net = _net()
    for xs, ps in (((x1, None), (p1, None)), ((x1, x2), (p1, p2))):
        ref = _reference(net, *xs, *ps)
        untiled = net.kernel(*xs, pattern=ps, tile=7)
        torch.testing.assert_close(untiled.nngp, ref.nngp, rtol=1e-13, atol=0)
        torch.testing.assert_close(untiled.ntk, ref.ntk, rtol=1e-13, atol=0)
        for tile in (1, 2, 3):  # replayed covariance chains, diagonal and edge tiles
            k = net.kernel(*xs, pattern=ps, tile=tile)
            torch.testing.assert_close(k.nngp, ref.nngp, rtol=1e-13, atol=0)
            torch.testing.assert_close(k.ntk, ref.ntk, rtol=1e-13, atol=0)


def test_sparse_patterns_through_tiles(data):
    x1, x2, _, _ = data
    a1, a2 = _arcs(7, 4), _arcs(5, 5)
    net = _net("sparse")
    ref = _reference(net, x1, x2, a1, a2)
    k = net.kernel(x1, x2, pattern=(a1.numpy(), a2.numpy()), tile=2)
    torch.testing.assert_close(k.nngp, ref.nngp, rtol=1e-13, atol=0)
    torch.testing.assert_close(k.ntk, ref.ntk, rtol=1e-13, atol=0)


def test_disk_outputs_equal_the_in_memory_kernel_bitwise(data, tmp_path):
    x1, x2, p1, p2 = data
    net = _net()
    ram = net.kernel(x1, x2, pattern=(p1, p2), get="ntk", tile=3)
    mm = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64,
                                   shape=(7, 5))
    net.kernel(x1, x2, pattern=(p1, p2), get="ntk", tile=3, out=mm)
    assert np.array_equal(np.asarray(mm), ram.numpy())
    zarr = pytest.importorskip("zarr")
    storage = pytest.importorskip("ntkit.engine.storage")
    assert zarr is not None
    a = storage.create_kernel_array(str(tmp_path / "k.zarr"), 7, 5, tile=3)
    net.kernel(x1, x2, pattern=(p1, p2), get="ntk", out=a)
    assert np.array_equal(a[...], ram.numpy())
    # Resuming with other patterns is refused (they are part of the fingerprint).
    with pytest.raises(ValueError):
        net.kernel(x1, x2, pattern=(p2[[0, 1, 2, 3, 4, 0, 1]], p2), get="ntk", out=a,
                   resume=True)


def test_dask_equals_one_process_bitwise(data):
    distributed = pytest.importorskip("distributed")
    x1, x2, p1, p2 = data
    net = _net()
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        for xs, ps in (((x1, None), (p1, None)), ((x1, x2), (p1, p2))):
            # The same tiles as one process: the same bits.
            want = net.kernel(*xs, pattern=ps, tile=3)
            got = net.kernel(*xs, pattern=ps, tile=3, client=client)
            assert torch.equal(got.ntk, want.ntk) and torch.equal(got.nngp, want.nngp)
            ref = _reference(net, *xs, *ps)
            torch.testing.assert_close(got.ntk, ref.ntk, rtol=1e-13, atol=0)
    finally:
        client.close()
        cluster.close()


def test_compiled_tiles_and_autograd_carry_patterns(data):
    x1, x2, p1, p2 = data
    net = _net()
    ref = _reference(net, x1, x2, p1, p2)
    fn = tile_function(net, True, sym_tile=False, compiled=True, backend="eager",
                       full=True)
    k = fn(x1, x2, pattern=(p1, p2))
    torch.testing.assert_close(k.ntk, ref.ntk, rtol=1e-13, atol=0)
    xg = x1.clone().requires_grad_(True)
    kg = net.kernel(xg, x2, pattern=(p1, p2), get="ntk", tile=3)
    torch.testing.assert_close(kg.detach(), ref.ntk, rtol=1e-13, atol=0)
    kg.sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


def test_equal_inputs_need_equal_patterns_to_be_symmetric(data):
    x1, _, p1, p2 = data
    net = _net()
    p1b = _adj(7, 9)
    # Equal inputs and patterns: the symmetric path, equal to x2=None.
    assert plan(net, x1, x1.clone(), pattern=(p1, p1.clone())).sym
    k_sym = net.kernel(x1, pattern=(p1, None))
    k_eq = net.kernel(x1, x1.clone(), pattern=(p1, p1.clone()))
    assert torch.equal(k_sym.ntk, k_eq.ntk)
    # Equal inputs, other graphs: not symmetric, and each side keeps its own graph.
    p = plan(net, x1, x1.clone(), pattern=(p1, p1b))
    assert not p.sym and p.same is None
    k = net.kernel(x1, x1.clone(), pattern=(p1, p1b), tile=3)
    ref = _reference(net, x1, x1.clone(), p1, p1b)
    torch.testing.assert_close(k.ntk, ref.ntk, rtol=1e-13, atol=0)
    assert not torch.allclose(k.ntk, k_sym.ntk)
    # Identical rows are identical examples only where their patterns are equal too.
    x2 = x1[[0, 3, 5]].clone()
    q2 = p1[[0, 3, 5]].clone()
    q2[1] = p1b[3]
    same = plan(net, x1, x2, pattern=(p1, q2)).same
    assert [tuple(map(int, t)) for t in same] == [(0, 5), (0, 2)]
    k = net.kernel(x1, x2, pattern=(p1, q2), tile=2)
    # The pairs kept are the symmetric kernel's diagonal entries: no arc-cosine error at
    # correlation 1, only the linear maps' rounding, which depends on the tiles' shapes
    # and on the CPU's kernels (bitwise here with AVX-512, an ulp apart with ATen's
    # portable kernels): within 4 ulps of the entry. The dropped one is the kernel map of
    # the two different graphs.
    k_sym2 = net.kernel(x1, pattern=(p1, None), tile=2)
    for (i, j), d in (((0, 0), 0), ((5, 2), 5)):
        want = k_sym2.ntk[d, d]
        assert abs(float(k.ntk[i, j] - want)) <= 4 * EPS * abs(float(want)), (i, j)
    # Elsewhere the kernel map of the whole batch; at the identical pairs the plain map
    # (without `same`) meets correlation 1, where the arc-cosine turns 1e-16 into ~1e-8.
    ref = _reference(net, x1, x2, p1, q2)
    off = torch.ones_like(k.ntk, dtype=torch.bool)
    off[same] = False
    torch.testing.assert_close(k.ntk[off], ref.ntk[off], rtol=1e-12, atol=0)
    torch.testing.assert_close(k.ntk[~off], ref.ntk[~off], rtol=1e-7, atol=0)


def test_bad_patterns(data):
    x1, x2, p1, p2 = data
    net = _net()
    with pytest.raises(ValueError, match=r"pattern: pattern1 has shape \(5, 6, 6\)"):
        net.kernel(x1, x2, pattern=(p2, p2))
    with pytest.raises(ValueError, match=r"pattern: pattern2 has shape \(7, 6, 6\)"):
        net.kernel(x1, x2, pattern=(p1, p1))
    with pytest.raises(ValueError, match="pattern must be a pair"):
        net.kernel(x1, pattern=p1)
    with pytest.raises(ValueError, match="pattern2 is given but x2 is None"):
        net.kernel(x1, pattern=(p1, p1))
    with pytest.raises(ValueError, match=r"Aggregate pattern has shape \(1, 5, 5\)"):
        net.kernel(x1, pattern=(p1[:, :5, :5], None))
    model = _net(w=8).build((3, V))
    with pytest.raises(ValueError, match="pattern: pattern1 has shape"):
        empirical_ntk(model, x1, x2, pattern=(p2, p2))
    with pytest.raises(ValueError, match="pattern= works with"):
        empirical_ntk(model, x1, x2, pattern=(p1, p2), method="ntk_vp")


@pytest.mark.usefixtures("one_thread")
def test_empirical_ntk_with_patterns_converges_to_the_kernel(data):
    """The built graph network's empirical NTK, through empirical_ntk with the same
    patterns, at growing width: relative error (RMS over 4 networks) falls with slope
    ≈ −½ (band [−0.8, −0.3]; a pattern not reaching the rows levels off)."""
    x1, x2, p1, p2 = data
    x1, p1, x2, p2 = x1[:4], p1[:4], x2[:3], p2[:3]
    exact = _net().kernel(x1, x2, pattern=(p1, p2), get="ntk")
    widths, errs = [128, 512, 2048], []
    for w in widths:
        e = []
        for seed in range(4):
            model = _net(w=w).build((3, V), seed=seed)
            emp = empirical_ntk(model, x1, x2, pattern=(p1, p2))
            e.append(float(torch.linalg.norm(emp - exact) / torch.linalg.norm(exact)))
        errs.append(float(np.sqrt(np.mean(np.square(e)))))
    slope = np.polyfit(np.log(widths), np.log(errs), 1)[0]
    print(f"graph net via empirical_ntk(pattern=): errors {errs}, slope {slope:.3f}")
    assert -0.8 < slope < -0.3, (errs, slope)
    assert errs[-1] < 0.1, errs


def test_monte_carlo_kernel_forwards_patterns(data):
    """monte_carlo_kernel(pattern=) averages the same networks' empirical kernels as
    empirical_ntk/empirical_nngp with those patterns (and differs from the graph-free
    average, so the patterns reach the forward)."""
    from ntkit.empirical import empirical_nngp
    from ntkit.monte_carlo import monte_carlo_kernel, sample_seeds

    x1, x2, p1, p2 = data
    x1, p1, x2, p2 = x1[:3], p1[:3], x2[:2], p2[:2]
    net = _net(w=16)
    got = monte_carlo_kernel(net, x1, x2, n_samples=2, pattern=(p1, p2))
    models = [net.build((3, V), seed=s) for s in sample_seeds(0, 2)]
    ntk = sum(empirical_ntk(m, x1, x2, pattern=(p1, p2)) for m in models) / 2
    nngp = sum(empirical_nngp(m, x1, x2, pattern=(p1, p2)) for m in models) / 2
    torch.testing.assert_close(got.ntk, ntk, rtol=1e-12, atol=0)
    torch.testing.assert_close(got.nngp, nngp, rtol=1e-12, atol=0)
    plain = monte_carlo_kernel(net, x1, x2, n_samples=2)
    assert not torch.allclose(plain.ntk, got.ntk)
