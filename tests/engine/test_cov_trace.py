"""CovTrace: each example's own covariance chain mapped once and replayed into the tiles.

Reference: the whole kernel map on the untiled batch (`layer.kernel_map` on
`input_kernel`), which never records or replays anything.
"""

import numpy as np
import pytest
import torch
from kernel_compare import assert_kernels_close

from ntkit import layers as nl
from ntkit import models
from ntkit.kernel import any_full, input_kernel
from ntkit.layers import windows

F64 = torch.float64


def _nets():
    relu = nl.ReLU()
    return {
        "pooled": nl.serial(nl.Conv(4, (3, 3), padding="SAME", w_std=1.4, b_std=0.1), relu,
                            nl.AvgPool((2, 2), strides=(2, 2)),
                            nl.Conv(4, (3, 3), padding="CIRCULAR", w_std=1.4), nl.Erf(),
                            nl.GlobalAvgPool(), nl.Dense(1, 1.2, 0.05)),
        "residual_layernorm": nl.serial(
            nl.Conv(4, (3, 3), padding="SAME", w_std=1.3),
            nl.FanOut(2),
            nl.parallel(nl.Identity(),
                        nl.serial(nl.ReLU(), nl.Conv(4, (3, 3), padding="SAME", w_std=1.3))),
            nl.FanInSum(), nl.LayerNorm(axis=(1, 2, 3)), nl.GELU(),
            nl.Conv(4, (2, 2), strides=(2, 2), parameterization="standard", w_std=1.1,
                    b_std=0.2),
            nl.FanOut(2), nl.parallel(nl.ReLU(), nl.Tanh()), nl.FanInConcat(),
            nl.Conv(3, (1, 1)), nl.GlobalAvgPool(), nl.Dense(1)),
        "flatten_1d": nl.serial(nl.Conv(5, (3,), padding="SAME", w_std=1.4, b_std=0.1),
                                nl.ReLU(), nl.Conv(5, (3,), strides=(2,), w_std=1.4), nl.ReLU(),
                                nl.Flatten(), nl.Dense(1, 1.3)),
        "myrtle5": models.myrtle(5),
    }


def _reference(net, x1, x2):
    full = any_full(net.requires_full(False))
    k = net.kernel_map(input_kernel(x1, x2, track_ntk=True, full=full))
    return k.nngp, k.ntk


def _inputs(name, n, seed):
    g = torch.Generator().manual_seed(seed)
    shape = {"flatten_1d": (2, 11), "myrtle5": (3, 8, 8)}.get(name, (2, 6, 6))
    return torch.randn(n, *shape, generator=g, dtype=F64)


@pytest.mark.parametrize("name", list(_nets()))
@pytest.mark.parametrize("tile", [1, 2, 3])
def test_traced_tiles_equal_the_whole_map(name, tile):
    net = _nets()[name]
    x, y = _inputs(name, 7, 0), _inputs(name, 4, 1)
    for x1, x2 in ((x, None), (x, y)):
        got = net.kernel(x1, x2, get=("nngp", "ntk"), tile=tile)
        ref = _reference(net, x1, x2)
        # Same formulas on the same numbers; only the batch shapes of reductions differ.
        # (x2 = y is a disjoint batch: the cross kernel is compared tight everywhere)
        sym = {"identical": "diagonal"} if x2 is None else {}
        assert_kernels_close(got.nngp, ref[0], name=f"nngp, tile {tile}", **sym)
        assert_kernels_close(got.ntk, ref[1], name=f"ntk, tile {tile}", **sym)
        if x2 is None:
            assert torch.equal(got.ntk, got.ntk.T)


def test_traced_cov_outputs_equal_the_whole_map():
    net = _nets()["pooled"]
    x, y = _inputs("pooled", 5, 0), _inputs("pooled", 3, 1)
    got = net.kernel(x, y, get=None, tile=2)
    full = any_full(net.requires_full(False))
    ref = net.kernel_map(input_kernel(x, y, track_ntk=True, full=full))
    torch.testing.assert_close(got.cov1, ref.cov1, rtol=1e-12, atol=0)
    torch.testing.assert_close(got.cov2, ref.cov2, rtol=1e-12, atol=0)


def test_a_full_spatial_cov_output_is_computed_not_replayed():
    # A net ending in a pooled spatial layer: cov1 is (n, *S, *S) and the trace only
    # keeps variances, so the engine must map the full covariances itself.
    net = nl.serial(nl.Conv(3, (3, 3), padding="SAME"), nl.ReLU(), nl.AvgPool((2, 2)))
    x, y = _inputs("pooled", 4, 0), _inputs("pooled", 3, 1)
    got = net.kernel(x, y, get=("nngp", "cov1", "cov2"), tile=1)
    ref = net.kernel_map(input_kernel(x, y, track_ntk=False, full=True))
    assert got.cov1.shape == ref.cov1.shape == (4, 5, 5, 5, 5)  # stride 1
    torch.testing.assert_close(got.cov1, ref.cov1, rtol=1e-12, atol=0)
    torch.testing.assert_close(got.cov2, ref.cov2, rtol=1e-12, atol=0)
    assert_kernels_close(got.nngp, ref.nngp, var1=ref.cov1, var2=ref.cov2, name="nngp")


def test_each_examples_covariances_are_mapped_once(monkeypatch):
    """The work the trace saves: untraced, every tile maps its rows' and columns' own
    covariances (conv_sum on a cov field, b == 1); traced with single-pair tiles, one
    example with itself maps none (its covariance is its pair's nngp)."""
    calls = {"cov": 0, "pair": 0}
    real = windows.conv_sum

    def counting(t, b, *args, **kw):
        calls["cov" if b == 1 else "pair"] += 1
        return real(t, b, *args, **kw)

    monkeypatch.setattr(windows, "conv_sum", counting)
    net = _nets()["pooled"]
    x = _inputs("pooled", 6, 0)
    net.kernel(x, get="ntk", tile=1)
    n_conv = 2
    # The probe (one example) is traced too: no cov maps anywhere.
    assert calls["cov"] == 0
    # 1 probe + 6 diagonal + 15 off-diagonal single-pair tiles, each conv maps nngp and ntk.
    assert calls["pair"] == (1 + 6 + 15) * n_conv * 2 - n_conv  # the probe has no ntk


def test_traced_zarr_resume_is_bit_identical(tmp_path, killed_after_marks):
    # A resumed traced run records the blocks again (the diagonal tiles it does not
    # rewrite included) and replays them into the missing tiles: same bits.
    pytest.importorskip("zarr")
    from ntkit.engine import storage

    net = _nets()["pooled"]
    x = _inputs("pooled", 9, 0)
    ref = net.kernel(x, get="ntk", tile=2).numpy()
    a = storage.create_kernel_array(str(tmp_path / "k.zarr"), 9, tile=2)
    with killed_after_marks(7):
        net.kernel(x, get="ntk", out=a)
    assert storage.kernel_progress(a) == (7, 15)
    net.kernel(x, get="ntk", out=a, resume=True)
    assert np.array_equal(a[:], ref)
