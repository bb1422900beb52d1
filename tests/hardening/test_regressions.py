"""Bugs found by the hardening tests, kept as regression tests (each names its finder)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from generator import call_options, generate, to_ntkit
from kernel_compare import assert_kernels_close

from ntkit import layers as nl


@pytest.mark.parametrize("c", [1e-150, 1e150])
@pytest.mark.parametrize("act", [nl.LeakyReLU(-0.3), nl.ABReLU(-0.5, 1.5)])
def test_arc_cosine_homogeneous_at_extreme_scales(c, act):
    """Found by test_properties' homogeneity check (generated seed 3131, x scaled by
    1e-100): var1·var2 underflowed to 0 in `ntkit.dual.relu.angle`, so a tiny input's
    own pair was taken as zero variance (θ = π), and LeakyReLU(-0.3) gave it a negative
    variance. A bias-free net is 1-homogeneous: K(c·x1, x2) = c·K(x1, x2) for c > 0,
    and K(c·x, c·x) = c²·K(x, x)."""
    net = nl.serial(nl.Dense(3, 1.3, None), act, nl.Dense(2, 1.1, None), act,
                    nl.Dense(1, 1.0, None))
    rng = np.random.default_rng(0)
    x1, x2 = torch.from_numpy(rng.standard_normal((3, 4))), torch.from_numpy(
        rng.standard_normal((2, 4)))
    ref = net.kernel(x1, x2)
    got = net.kernel(c * x1, x2)
    self_ref, self_got = net.kernel(x1), net.kernel(c * x1)
    v1, v2 = net.kernel(x1), net.kernel(x2)
    for f in ("nngp", "ntk"):
        assert_kernels_close(getattr(got, f) / c, getattr(ref, f), corr=1.0, gain=2.0,
                             var1=getattr(v1, f).diagonal(), var2=getattr(v2, f).diagonal())
        d = getattr(self_got, f).diagonal() / c**2
        assert (d > 0).all()
        np.testing.assert_allclose(d, getattr(self_ref, f).diagonal(), rtol=1e-13)


def test_generated_case_3131():
    """The generated network itself (ConvLocal, CIRCULAR conv, LeakyReLU, Abs, GAP)."""
    arch = generate(3131, nt=True, bias=False)
    net = to_ntkit(arch)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, *arch["input"])))
    x = torch.cat([x, torch.zeros_like(x)])
    for c in (1e-100, 1e100):
        got = net.kernel(c * x, x.flip(0), get="nngp") / c
        ref = net.kernel(x, x.flip(0), get="nngp")
        assert_kernels_close(got, ref, corr=1.0, gain=2.0,
                             var1=net.kernel(x, get="nngp").diagonal(),
                             var2=net.kernel(x.flip(0), get="nngp").diagonal())


@pytest.mark.parametrize("seed", [130, 2526])
@pytest.mark.parametrize("tile", [None, 2])
def test_repeated_rows_of_one_batch_equal_their_diagonal(seed, tile):
    """Found by the 'duplicates_exact' (seed 130) and 'permutation' (seed 2526: an
    ImageResize net on full covariances) properties: in K(x, None) a pair of identical
    rows was 4 ulps (130) and 7e-10 relative (2526) off its diagonal entry, because the
    symmetric path did not pin repeated rows. Rows 1, 2 and 4 are one example (within a
    tile and across tiles with tile=2), row 3 its negation."""
    arch = generate(seed, nt=True)
    net = to_ntkit(arch)
    g = np.random.default_rng(seed)
    a = g.standard_normal(tuple(arch["input"]))
    x = np.stack([g.standard_normal(a.shape), a, a, -a, a])
    k = net.kernel(torch.from_numpy(x), get=("nngp", "ntk"), tile=tile)
    for field in ("nngp", "ntk"):
        m = getattr(k, field).numpy()
        for i, j in [(1, 2), (2, 1), (1, 4), (4, 2)]:
            np.testing.assert_allclose(m[i, j], m[i, i], rtol=4 * np.finfo(float).eps,
                                       atol=0, err_msg=f"{field}[{i}, {j}]")
        assert m[1, 2] == m[2, 1] and m[1, 4] == m[4, 1]  # symmetric, bitwise


def test_aggregate_row_bits_do_not_depend_on_the_tile():
    """Found by test_properties' graph_and_masks check (generated seed 518113, graph):
    a row's kernel must be bitwise the same whatever other rows share its tile (as for
    every other layer: resumed, distributed and in-RAM runs agree bitwise). Aggregate's
    einsum folded the tile's examples into its matrix products (K[1, 1] NTK 64 ulps
    apart untiled and with tile=1); it now multiplies per example (pair)."""
    arch = generate(518113, nt=True, graph=True)
    net = to_ntkit(arch)
    a = np.random.default_rng(0).standard_normal(tuple(arch["input"]))
    x = np.stack([a, 0.1 * a])
    kw = call_options(arch, x)
    whole = net.kernel(torch.from_numpy(x), get="ntk", **kw)
    single = net.kernel(torch.from_numpy(x), get="ntk", tile=1, **kw)
    assert torch.equal(whole, single)

