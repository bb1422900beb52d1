"""Masked inputs (``mask_constant``) through every engine path: tiles (diagonal, edge,
covariance replay), memory-budget tiling, symmetric and x2-given, disk outputs (memmap,
zarr, resume fingerprint), Dask, compiled tiles, autograd; identical pairs; the Monte
Carlo average of the built networks (``module(x, mask_constant=c)``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kernel_compare import assert_kernels_close

from ntkit import layers as nl
from ntkit.engine.compiled import tile_function
from ntkit.engine.pairs import identical_rows
from ntkit.engine.plan import plan
from ntkit.kernel import Storage, input_kernel

F64 = torch.float64
MASK = -3.0


def _x(n, seed, L=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, L, dtype=F64, generator=g)
    for i in range(n):  # every example its own padding: i % L trailing positions absent
        if i % L:
            x[i, :, L - i % L:] = MASK
    return x


def _net():
    return nl.serial(nl.Conv(4, (3,), padding="SAME", w_std=1.3, b_std=0.2), nl.ReLU(),
                     nl.FanOut(2),
                     nl.parallel(nl.Identity(),
                                 nl.serial(nl.GlobalSelfAttention(4, 3, 3, 2, b_std=0.1),
                                           nl.Erf())),
                     nl.FanInConcat(), nl.Conv(4, (1,), w_std=1.1), nl.LayerNorm((1, 2)),
                     nl.AvgPool((2,), (1,), "SAME"), nl.ReLU(), nl.GlobalAvgPool(),
                     nl.Dense(1, b_std=0.1))


def _reference(net, x1, x2, pairs: bool = True):
    """The whole batch in one kernel map (no engine), identical rows marked as the
    engine marks them (`ntkit.engine.pairs`: exact at correlation 1) unless ``pairs`` is
    False (the engine does not look for them when inputs need gradients)."""
    full = net.requires_full(Storage()).any_full
    same = None
    if x2 is not None and pairs:
        same = identical_rows(x1, x2)
        same = same if same[0].numel() else None
    return net.kernel_map(input_kernel(x1, x2, track_ntk=True, full=full, same=same,
                                       mask_constant=MASK))


@pytest.fixture(scope="module")
def data():
    x1, x2 = _x(7, 0), _x(5, 1)
    x1[6] = MASK      # a fully masked example
    x2[3] = x1[2]     # an identical pair
    return x1, x2


def test_tiles_and_budget_equal_the_whole_batch(data):
    x1, x2 = data
    net = _net()
    for xs in ((x1, None), (x1, x2)):
        ref = _reference(net, *xs)
        var = {} if xs[1] is None else {
            "var1": torch.diagonal(_reference(net, x1, None).ntk),
            "var2": torch.diagonal(_reference(net, x2, None).ntk)}
        var_nngp = {} if xs[1] is None else {
            "var1": torch.diagonal(_reference(net, x1, None).nngp),
            "var2": torch.diagonal(_reference(net, x2, None).nngp)}
        for options in ({"tile": 7}, {"tile": 1}, {"tile": 3}, {"memory_budget": 2**17}):
            k = net.kernel(*xs, get=("nngp", "ntk"), mask_constant=MASK, **options)
            assert (k.nngp[6] == 0).all() and (k.ntk[6] == 0).all()
            assert_kernels_close(k.nngp, ref.nngp, name="nngp", **var_nngp)
            assert_kernels_close(k.ntk, ref.ntk, name="ntk", **var)


def test_symmetric_equals_x2_copy(data):
    """x2 = a copy of x1 plus one row (so not the symmetric path): its first n1 columns
    are the symmetric kernel, the copies found as identical pairs (exact diagonal)."""
    x1, x2 = data
    net = _net()
    assert plan(net, x1, x1.clone(), mask_constant=MASK).sym  # equal inputs, equal masks
    sym = net.kernel(x1, get=("nngp", "ntk"), mask_constant=MASK, tile=3)
    xc = torch.cat([x1, x2[:1]])
    p = plan(net, x1, xc, mask_constant=MASK)
    assert not p.sym and p.same is not None
    copy = net.kernel(x1, xc, get=("nngp", "ntk"), mask_constant=MASK, tile=3)
    for f in ("nngp", "ntk"):
        assert_kernels_close(getattr(copy, f)[:, :7], getattr(sym, f), name=f,
                             identical="diagonal")


def test_identical_pairs_need_identical_masks(data):
    """Bitwise-identical rows have identical masks (masks are functions of the rows), so
    they are identical examples; a row equal to another except at masked entries is not
    (its bits differ), and gets the kernel map of the whole batch."""
    x1, x2 = data
    net = _net()
    p = plan(net, x1, x2, mask_constant=MASK)
    assert [tuple(map(int, t)) for t in p.same] == [(2,), (3,)]
    k = net.kernel(x1, x2, get="ntk", mask_constant=MASK, tile=2)
    k_sym = net.kernel(x1, get="ntk", mask_constant=MASK, tile=2)
    assert abs(float(k[2, 3] - k_sym[2, 2])) <= 4 * 2.2e-16 * abs(float(k_sym[2, 2]))
    # x1 row 0 padded at its last position: other bits, other mask, another example.
    xb = x1[:1].clone()
    xb[:, :, -1] = MASK
    assert plan(net, x1[:1], xb, mask_constant=MASK).same is None
    kb = net.kernel(x1[:1], xb, get="ntk", mask_constant=MASK)
    ref = _reference(net, x1[:1], xb).ntk
    torch.testing.assert_close(kb, ref, rtol=1e-12, atol=0)
    assert not torch.allclose(kb, k_sym[:1, :1])


def test_disk_outputs_equal_the_in_memory_kernel_bitwise(data, tmp_path):
    x1, x2 = data
    net = _net()
    ram = net.kernel(x1, x2, get="ntk", tile=3, mask_constant=MASK)
    mm = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64,
                                   shape=(7, 5))
    net.kernel(x1, x2, get="ntk", tile=3, out=mm, mask_constant=MASK)
    assert np.array_equal(np.asarray(mm), ram.numpy())
    # Inputs on disk (memmaps, read per tile): each tile's masks from its own rows. (x2
    # without the row identical to one of x1: pairs are not searched in inputs on disk.)
    xin = np.lib.format.open_memmap(tmp_path / "x1.npy", mode="w+", dtype=np.float64,
                                    shape=tuple(x1.shape))
    xin[...] = x1.numpy()
    xc = x2[[0, 1, 2, 4]]
    lazy = net.kernel(xin, xc, get="ntk", tile=3, mask_constant=MASK)
    assert torch.equal(lazy, net.kernel(x1, xc, get="ntk", tile=3, mask_constant=MASK))
    pytest.importorskip("zarr")
    storage = pytest.importorskip("ntkit.engine.storage")
    a = storage.create_kernel_array(str(tmp_path / "k.zarr"), 7, 5, tile=3)
    net.kernel(x1, x2, get="ntk", out=a, mask_constant=MASK)
    assert np.array_equal(a[...], ram.numpy())
    # The mask constant is part of the fingerprint: resuming without it is refused.
    with pytest.raises(ValueError):
        net.kernel(x1, x2, get="ntk", out=a, resume=True)


def test_dask_equals_one_process_bitwise(data):
    distributed = pytest.importorskip("distributed")
    x1, x2 = data
    net = _net()
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        for xs in ((x1, None), (x1, x2)):
            want = net.kernel(*xs, tile=3, mask_constant=MASK)
            got = net.kernel(*xs, tile=3, client=client, mask_constant=MASK)
            assert torch.equal(got.ntk, want.ntk) and torch.equal(got.nngp, want.nngp)
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow
def test_compiled_tiles_carry_masks(data):
    """Tracing takes tens of seconds on a loaded CPU, hence slow."""
    x1, x2 = data
    # Compiled tiles: a small net (tracing the attention one takes tens of seconds), on
    # rows without identical pairs (compiled tiles with pairs run eagerly).
    small = nl.serial(nl.Conv(3, (3,), padding="SAME", w_std=1.2, b_std=0.1), nl.Erf(),
                      nl.AvgPool((2,), (1,), "SAME"), nl.GlobalAvgPool(), nl.Dense(1))
    xc = x2[[0, 1, 2, 4]]
    fn = tile_function(small, True, sym_tile=False, compiled=True, backend="eager",
                       full=True, mask_constant=MASK)
    k = fn(x1, xc)
    torch.testing.assert_close(k.ntk, _reference(small, x1, xc).ntk, rtol=1e-13, atol=0)
    assert (k.ntk[6] == 0).all()


def test_autograd_carries_masks(data):
    x1, x2 = data
    net = _net()
    ref = _reference(net, x1, x2, pairs=False)
    xg = x1.clone().requires_grad_(True)
    kg = net.kernel(xg, x2, get="ntk", tile=3, mask_constant=MASK)
    # Without pair detection (inputs need gradients) the identical pair (2, 3) meets
    # correlation 1 through the arc-cosine: the conditioning bound at correlation 1
    # applies there (corr = 1), the NNGP correlation elsewhere.
    v1 = torch.diagonal(_reference(net, x1, None).nngp)
    v2 = torch.diagonal(_reference(net, x2, None).nngp)
    corr = (ref.nngp / torch.sqrt(v1[:, None] * v2[None, :])).abs()
    corr[2, 3] = 1.0
    assert_kernels_close(kg.detach(), ref.ntk, name="ntk", corr=corr,
                         var1=torch.diagonal(_reference(net, x1, None).ntk),
                         var2=torch.diagonal(_reference(net, x2, None).ntk))
    kg.sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    assert (xg.grad[6] == 0).all()  # a fully masked example: no dependence


@pytest.mark.slow
def test_monte_carlo_of_the_built_network_agrees_with_the_kernel():
    """Finite networks run as ``module(x, mask_constant=c)`` (their empirical NNGP and
    NTK, the average `ntkit.monte_carlo.monte_carlo_kernel` takes) agree with the masked
    kernel within sampling error: the Frobenius distance of the mean over networks is at
    most 4 standard errors (from the networks' spread) plus the O(1/width) finite-width
    bias, and a fully masked example gives exactly 0 in every network."""
    from ntkit.empirical import empirical_nngp, empirical_ntk
    from ntkit.monte_carlo import monte_carlo_kernel, sample_seeds

    x = _x(4, 5, L=5)
    x[3] = MASK
    width, n_nets = 128, 20

    def net(w, out=8):
        return nl.serial(nl.Conv(w, (2,), padding="SAME", w_std=1.3, b_std=0.2), nl.ReLU(),
                         nl.AvgPool((2,), (1,), "SAME"), nl.Conv(w, (1,), w_std=1.2),
                         nl.LayerNorm((1, 2)), nl.Erf(), nl.GlobalAvgPool(),
                         nl.Dense(out, b_std=0.1))

    exact = net(1).kernel(x, get=("nngp", "ntk"), mask_constant=MASK)
    spec = net(width)
    seeds = sample_seeds(0, n_nets)
    samples = {"nngp": [], "ntk": []}
    for s in seeds:
        model = spec.build((3, 5), seed=s)
        samples["nngp"].append(empirical_nngp(model, x, mask_constant=MASK))
        samples["ntk"].append(empirical_ntk(model, x, mask_constant=MASK))
    for f in ("nngp", "ntk"):
        ks = torch.stack(samples[f])
        assert (ks[:, 3] == 0).all() and (ks[:, :, 3] == 0).all()
        e = getattr(exact, f)
        se = float(torch.sqrt((ks.var(0) / n_nets).sum()))
        err = float(torch.linalg.norm(ks.mean(0) - e))
        bound = 4 * se + float(torch.linalg.norm(e)) / width
        print(f"{f}: |mean - exact| = {err:.4g}, 4 SE = {4 * se:.4g}, bound {bound:.4g}")
        assert err < bound, (f, err, se)
    # monte_carlo_kernel forwards mask_constant to the same networks' forwards.
    mc = monte_carlo_kernel(spec, x, n_samples=2, mask_constant=MASK)
    torch.testing.assert_close(mc.ntk, torch.stack(samples["ntk"][:2]).mean(0), rtol=1e-12,
                               atol=0)


@pytest.mark.parametrize("x2_given", [False, True])
def test_get_none_kernel_carries_the_masks_and_composes(data, x2_given):
    """``get=None`` returns the whole call's output masks (gathered from the tiles), so
    ``net2.kernel(net1.kernel(x, get=None))`` is the kernel of ``serial(net1, net2)``."""
    x1, x2 = data
    x2 = x2 if x2_given else None
    net1 = nl.serial(nl.Conv(4, (3,), padding="SAME", w_std=1.3, b_std=0.2), nl.ReLU(),
                     nl.Conv(4, (2,), w_std=1.2))
    net2 = nl.serial(nl.Erf(), nl.Flatten(), nl.Dense(1, b_std=0.1))  # diagonal storage
    k = net1.kernel(x1, x2, get=None, tile=3, mask_constant=MASK)
    want1 = (x1 == MASK).all(1)[:, :-1]    # VALID width-2 window: its centre is the left
    assert torch.equal(k.mask1, want1)
    if x2_given:
        assert torch.equal(k.mask2, (x2 == MASK).all(1)[:, :-1])
    else:
        assert k.mask2 is None
    got = net2.kernel(k)
    want = nl.serial(net1, net2).kernel(x1, x2, get=("nngp", "ntk"), tile=3,
                                        mask_constant=MASK)
    torch.testing.assert_close(got.nngp, want.nngp, rtol=1e-13, atol=0)
    torch.testing.assert_close(got.ntk, want.ntk, rtol=1e-13, atol=0)


def test_mask_constant_compared_at_the_inputs_precision():
    """A float32 batch padded with 0.1 (stored as 0.1f) is masked by mask_constant=0.1
    although the kernel is computed in float64 (neural-tangents compares in the inputs'
    dtype): the same kernel as the float64 batch padded with the float64 constant."""
    x = _x(3, 2).to(torch.float32)
    x[1, :, 3:] = 0.1
    x64 = x.to(F64)
    x64[1, :, 3:] = 0.25
    net = nl.serial(nl.Conv(3, (1,), w_std=1.2, b_std=0.1), nl.ReLU(), nl.GlobalAvgPool(),
                    nl.Dense(1))
    got = net.kernel(x, get="ntk", mask_constant=0.1)
    want = net.kernel(x64, get="ntk", mask_constant=0.25)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
