"""Convolutional kernels: window maps against brute force, exact reductions and identities,
the diagonal and full storage paths against each other, finite networks, and errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from kernel_compare import assert_kernels_close

from ntkit import layers as nl
from ntkit.kernel import Kernel, input_kernel, position_diagonal
from ntkit.layers import windows as W

F64 = torch.float64


def _imgs(n, c, *s, seed=0):
    return torch.randn(n, c, *s, dtype=F64, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- window maps, brute force
def _brute_conv(t, window, strides, padding):
    """out[i, j, p, p'] = Σ_k in_padded[s·p + k, s·p' + k] for a (n1, n2, *S, *S) tensor."""
    d = len(window)
    spatial = t.shape[2:2 + d]
    pads = [W.pads(n, q, s, padding) for n, q, s in zip(spatial, window, strides, strict=True)]
    outs = W.output_spatial(spatial, window, strides, padding)
    out = torch.zeros(*t.shape[:2], *outs, *outs, dtype=t.dtype)

    def src(o, k, i):
        a = o * strides[i] + k - pads[i][0]
        if padding == "CIRCULAR":
            return a % spatial[i]
        return a if 0 <= a < spatial[i] else None

    for p in itertools.product(*map(range, outs)):
        for q in itertools.product(*map(range, outs)):
            for k in itertools.product(*map(range, window)):
                a = [src(p[i], k[i], i) for i in range(d)]
                b = [src(q[i], k[i], i) for i in range(d)]
                if None not in a and None not in b:
                    out[(slice(None), slice(None), *p, *q)] += t[(slice(None), slice(None),
                                                                  *a, *b)]
    return out


def _brute_pool(t, window, strides, padding):
    d = len(window)
    spatial = t.shape[2:2 + d]
    pads = [W.pads(n, q, s, padding) for n, q, s in zip(spatial, window, strides, strict=True)]
    outs = W.output_spatial(spatial, window, strides, padding)
    out = torch.zeros(*t.shape[:2], *outs, *outs, dtype=t.dtype)
    for p in itertools.product(*map(range, outs)):
        for q in itertools.product(*map(range, outs)):
            for k in itertools.product(*map(range, window)):
                for k2 in itertools.product(*map(range, window)):
                    a = [p[i] * strides[i] + k[i] - pads[i][0] for i in range(d)]
                    b = [q[i] * strides[i] + k2[i] - pads[i][0] for i in range(d)]
                    if padding == "CIRCULAR":
                        a = [a[i] % spatial[i] for i in range(d)]
                        b = [b[i] % spatial[i] for i in range(d)]
                    elif not all(0 <= a[i] < spatial[i] and 0 <= b[i] < spatial[i]
                                 for i in range(d)):
                        continue
                    out[(slice(None), slice(None), *p, *q)] += t[(slice(None), slice(None),
                                                                  *a, *b)]
    return out


WINDOW_CASES = [
    ((3, 3), (1, 1), "SAME"), ((2, 3), (1, 1), "SAME"), ((4, 2), (2, 1), "SAME"),
    ((3, 2), (1, 1), "VALID"), ((2, 2), (2, 2), "VALID"), ((3, 3), (2, 1), "CIRCULAR"),
    ((2, 3), (1, 1), "CIRCULAR"), ((3,), (1,), "SAME"), ((4,), (3,), "CIRCULAR"),
    ((7, 1), (1, 1), "SAME"),  # window larger than the image: padding on both sides
]


@pytest.mark.parametrize("window,strides,padding", WINDOW_CASES)
def test_conv_sum_matches_brute_force(window, strides, padding):
    spatial = (5, 4)[:len(window)]
    t = torch.randn(2, 3, *spatial, *spatial, dtype=F64,
                    generator=torch.Generator().manual_seed(1))
    ref = _brute_conv(t, window, strides, padding)
    full = W.conv_sum(t, 2, True, window, strides, padding)
    torch.testing.assert_close(full, ref, rtol=1e-13, atol=1e-13)
    # The diagonal path is the position diagonal of the full one.
    d = len(window)
    diag = W.conv_sum(position_diagonal(t, d), 2, False, window, strides, padding)
    torch.testing.assert_close(diag, position_diagonal(ref, d), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("window,strides,padding", WINDOW_CASES[:6])
def test_pool_sum_matches_brute_force(window, strides, padding):
    spatial = (5, 4)[:len(window)]
    t = torch.randn(2, 1, *spatial, *spatial, dtype=F64,
                    generator=torch.Generator().manual_seed(2))
    ref = _brute_pool(t, window, strides, padding)
    torch.testing.assert_close(W.pool_sum(t, 2, True, window, strides, padding), ref,
                               rtol=1e-13, atol=1e-13)


# ------------------------------------------------------------------------ reductions
@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_whole_image_valid_conv_is_dense_on_flattened_image(param):
    x = _imgs(6, 3, 4, 5)
    conv = nl.serial(nl.Conv(7, (4, 5), w_std=1.3, b_std=0.2, parameterization=param),
                     nl.ReLU(), nl.Flatten(), nl.Dense(1, 0.9, 0.1, parameterization=param))
    dense = nl.serial(nl.Dense(7, w_std=1.3, b_std=0.2, parameterization=param),
                      nl.ReLU(), nl.Dense(1, 0.9, 0.1, parameterization=param))
    flat = x.reshape(6, -1)
    # Disjoint batches (no correlation-1 pairs, where √eps rounding would show) and the
    # symmetric path (exact diagonal in both).
    for a, b in ((conv.kernel(x[:3], x[3:], get=("nngp", "ntk")),
                  dense.kernel(flat[:3], flat[3:], get=("nngp", "ntk"))),
                 (conv.kernel(x, get=("nngp", "ntk")), dense.kernel(flat, get=("nngp", "ntk")))):
        assert_kernels_close(a.nngp, b.nngp, name="conv vs dense nngp")
        assert_kernels_close(a.ntk, b.ntk, name="conv vs dense ntk")


def test_one_by_one_images_reduce_to_fully_connected():
    x = torch.randn(5, 6, dtype=F64, generator=torch.Generator().manual_seed(3))
    for tail in (nl.Flatten(), nl.GlobalAvgPool()):
        conv = nl.serial(nl.Conv(9, (1, 1), w_std=1.4, b_std=0.1), nl.Erf(),
                         nl.Conv(9, (1, 1), padding="SAME", w_std=1.2), nl.ReLU(),
                         nl.AvgPool((1, 1)), tail, nl.Dense(1, 1.1, 0.05))
        fc = nl.serial(nl.Dense(9, 1.4, 0.1), nl.Erf(), nl.Dense(9, 1.2), nl.ReLU(),
                       nl.Dense(1, 1.1, 0.05))
        a = conv.kernel(x.reshape(5, 6, 1, 1), get=("nngp", "ntk"))
        b = fc.kernel(x, get=("nngp", "ntk"))
        assert_kernels_close(a.nngp, b.nngp, identical="diagonal", name="1x1 conv vs FC nngp")
        assert_kernels_close(a.ntk, b.ntk, identical="diagonal", name="1x1 conv vs FC ntk")


def _constant_full_kernel(c: torch.Tensor, spatial) -> Kernel:
    """A full spatial kernel whose entries are c[i, j] at every pair of positions."""
    n = c.shape[0]
    shape = (n, n, *spatial, *spatial)
    nngp = c.reshape(n, n, *([1] * 2 * len(spatial))).expand(shape).clone()
    cov = c.diagonal().reshape(n, *([1] * 2 * len(spatial))).expand(
        (n, *spatial, *spatial)).clone()
    return Kernel(nngp=nngp, ntk=2 * nngp, cov1=cov, cov2=None, channels=3,
                  x1_is_x2=True, spatial=tuple(spatial), full=True)


@pytest.mark.parametrize("pool", [nl.AvgPool((2, 3)), nl.AvgPool((2, 2), (2, 2)),
                                  nl.AvgPool((3, 3), padding="CIRCULAR"), nl.GlobalAvgPool()])
def test_pooling_a_position_constant_kernel_leaves_it_unchanged(pool):
    g = torch.Generator().manual_seed(4)
    a = torch.randn(4, 4, dtype=F64, generator=g)
    c = a @ a.T
    k = pool.kernel_map(_constant_full_kernel(c, (5, 6)))
    expect = c.reshape(4, 4, *([1] * (k.nngp.ndim - 2)))
    torch.testing.assert_close(k.nngp, expect.expand_as(k.nngp), rtol=1e-14, atol=0)
    torch.testing.assert_close(k.ntk, 2 * expect.expand_as(k.ntk), rtol=1e-14, atol=0)


def test_zero_padded_pooling_shrinks_the_edges():
    # SAME pooling averages zeros in (neural-tangents' normalize_edges=False): the corner
    # of a 3×3 SAME pool of a constant kernel sees 4 of 9 positions, in both inputs.
    c = torch.eye(2, dtype=F64) + 1
    k = nl.AvgPool((3, 3), padding="SAME").kernel_map(_constant_full_kernel(c, (4, 4)))
    torch.testing.assert_close(k.nngp[:, :, 0, 0, 0, 0], c * (4 / 9) ** 2)
    torch.testing.assert_close(k.nngp[:, :, 1, 1, 1, 1], c)


def test_circular_gap_is_the_flatten_kernel_averaged_over_cyclic_shifts():
    x1, x2 = _imgs(3, 2, 4, 5, seed=5), _imgs(2, 2, 4, 5, seed=6)

    def body():
        return [nl.Conv(8, (3, 2), padding="CIRCULAR", w_std=1.5, b_std=0.2), nl.ReLU(),
                nl.Conv(8, (2, 3), padding="CIRCULAR", w_std=1.3), nl.Erf()]

    gap = nl.serial(*body(), nl.GlobalAvgPool()).kernel(x1, x2, get="nngp")
    flat = nl.serial(*body(), nl.Flatten())
    shifts = [flat.kernel(x1, torch.roll(x2, (a, b), dims=(2, 3)), get="nngp")
              for a in range(4) for b in range(5)]
    torch.testing.assert_close(gap, torch.stack(shifts).mean(0), rtol=1e-12, atol=0)


def test_diagonal_and_full_paths_agree():
    x = _imgs(4, 3, 6, 5, seed=7)
    body = nl.serial(nl.Conv(8, (3, 3), padding="SAME", w_std=1.4, b_std=0.1), nl.ReLU(),
                     nl.Conv(8, (2, 3), strides=(2, 1), padding="CIRCULAR", w_std=1.2),
                     nl.GELU(), nl.Conv(8, (3, 2), w_std=1.1, b_std=0.3),
                     nl.LayerNorm(axis=(1, 2, 3)), nl.Tanh())
    for sym in (True, False):
        x2 = None if sym else _imgs(3, 3, 6, 5, seed=17)  # no correlation-1 pairs
        diag = body.map_planned(input_kernel(x, x2, track_ntk=True, full=False), False)
        full = body.map_planned(input_kernel(x, x2, track_ntk=True, full=True), True)
        assert full.full and not diag.full
        same = {"identical": "diagonal"} if sym else {}  # x2: a disjoint batch
        for f in ("nngp", "ntk"):
            assert_kernels_close(position_diagonal(getattr(full, f), 2), getattr(diag, f),
                                 name=f"full vs diagonal storage, {f}", **same)
        torch.testing.assert_close(position_diagonal(full.cov1, 2), diag.cov1, rtol=1e-12,
                                   atol=1e-14)


def test_flatten_networks_store_only_the_diagonal(monkeypatch):
    seen = []
    orig = nl.Conv.kernel_map

    def spy(self, k):
        seen.append((self.out_channels, k.full))
        return orig(self, k)

    monkeypatch.setattr(nl.Conv, "kernel_map", spy)
    x = _imgs(3, 2, 6, 6)
    nl.serial(nl.Conv(4, (3, 3)), nl.ReLU(), nl.Conv(5, (3, 3)), nl.Flatten(),
              nl.Dense(1)).kernel(x)
    assert seen and not any(full for _, full in seen)
    seen.clear()
    # Pooling at the end: every conv before it needs the full covariance...
    nl.serial(nl.Conv(4, (3, 3)), nl.ReLU(), nl.AvgPool((2, 2)), nl.Flatten()).kernel(x)
    assert seen and all(full for _, full in seen)
    seen.clear()
    # ... but only up to the last pooling layer.
    nl.serial(nl.Conv(4, (3, 3)), nl.AvgPool((2, 2)), nl.ReLU(), nl.Conv(5, (2, 2)),
              nl.Flatten()).kernel(x)
    assert {c: f for c, f in seen} == {4: True, 5: False}


# ----------------------------------------------------------------- engine on images
def _pooled_net():
    return nl.serial(nl.Conv(8, (3, 3), padding="SAME", w_std=1.4, b_std=0.1), nl.ReLU(),
                     nl.AvgPool((2, 2), (2, 2)), nl.Conv(8, (2, 2), w_std=1.3), nl.ReLU(),
                     nl.GlobalAvgPool(), nl.Dense(1, 1.2, 0.1))


def test_tiles_symmetry_and_out_arrays(tmp_path):
    x = _imgs(7, 2, 6, 6, seed=8)
    net = _pooled_net()
    ref = net.kernel(x, get=("nngp", "ntk"), tile=7)
    for tile in (1, 2, 3):
        k = net.kernel(x, get=("nngp", "ntk"), tile=tile)
        assert_kernels_close(k.ntk, ref.ntk, identical="diagonal", name=f"tile {tile}")
    assert torch.equal(ref.ntk, ref.ntk.T)
    # Off-diagonal blocks from the asymmetric path agree with the symmetric one.
    k12 = net.kernel(x[:3], x[3:], get="ntk", tile=2)
    d = torch.diagonal(ref.ntk)
    assert_kernels_close(k12, ref.ntk[:3, 3:], var1=d[:3], var2=d[3:], name="k(x[:3], x[3:])")
    mm = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64,
                                   shape=(7, 7))
    net.kernel(x, get="ntk", tile=3, out=mm)
    assert_kernels_close(np.load(tmp_path / "k.npy"), ref.ntk, identical="diagonal")


def test_spatial_outputs_are_returned_with_positions():
    x = _imgs(3, 2, 5, 4)
    k = nl.serial(nl.Conv(4, (2, 2)), nl.ReLU()).kernel(x, get=None)
    assert k.nngp.shape == (3, 3, 4, 3) and k.cov1.shape == (3, 4, 3)
    assert k.spatial == (4, 3) and not k.full
    torch.testing.assert_close(k.nngp.diagonal(0, 0, 1).movedim(-1, 0), k.cov1)
    k = nl.serial(nl.Conv(4, (2, 2)), nl.AvgPool((2, 2))).kernel(x, get="nngp")
    assert k.shape == (3, 3, 3, 2, 3, 2)


def test_edge_inputs_stay_finite_and_psd():
    x = _imgs(6, 2, 5, 5, seed=9)
    x[1] = 0.0
    x[2] = x[0]
    x[3] = 3.0 * x[0]
    x[4] = -x[0]
    x[5] = 1e-5 * x[5]
    net = _pooled_net()
    for dtype, tol in ((F64, 1e-12), (torch.float32, 1e-5)):
        k = net.kernel(x, get=("nngp", "ntk"), dtype=dtype)
        for m in (k.nngp, k.ntk):
            assert torch.isfinite(m).all()
            ev = torch.linalg.eigvalsh(m.double())
            assert ev.min() >= -tol * ev.max(), ev
        # Duplicate rows agree up to the arc-cosine's conditioning at correlation 1: the
        # pair (0, 2) is not on the example diagonal, so its angle is √(rounding) ≈ √eps,
        # and Tdot moves by θ/(2π) per ReLU layer (a few √eps in all).
        for m in (k.ntk, k.nngp):
            d = torch.diagonal(m)
            assert_kernels_close(m[[2]], m[[0]], var1=d[[0]], var2=d, name="duplicate rows")


def test_deep_conv_stays_finite():
    x = _imgs(3, 2, 4, 4, seed=10)
    layers = []
    for _ in range(50):
        layers += [nl.Conv(4, (3, 3), padding="CIRCULAR", w_std=2**0.5), nl.ReLU()]
    k = nl.serial(*layers, nl.Flatten(), nl.Dense(1)).kernel(x, get=("nngp", "ntk"))
    assert torch.isfinite(k.ntk).all() and torch.isfinite(k.nngp).all()
    ev = torch.linalg.eigvalsh(k.ntk)
    assert ev.min() > -1e-10 * ev.max()


# ---------------------------------------------------------------- finite networks
def test_build_shapes_and_parameterization():
    x = _imgs(5, 3, 8, 8)
    net = nl.serial(nl.Conv(6, (3, 3), padding="SAME", w_std=2**0.5), nl.ReLU(),
                    nl.AvgPool((2, 2), (2, 2)), nl.Conv(4, (2, 3), strides=(2, 1),
                                                        padding="CIRCULAR"),
                    nl.LayerNorm(axis=(1, 2, 3)), nl.ReLU(),
                    nl.FanOut(2), nl.parallel(nl.Identity(), nl.Conv(5, (1, 1))),
                    nl.FanInConcat(), nl.GlobalAvgPool(), nl.Dense(10))
    model = net.build(in_features=(3, 8, 8), seed=0)
    assert model(x).shape == (5, 10)
    seq = nl.serial(nl.Conv(4, (3,), padding="SAME"), nl.ReLU(), nl.Flatten(), nl.Dense(2))
    assert seq.build((2, 9))(torch.randn(3, 2, 9, dtype=F64)).shape == (3, 2)
    # The 'ntk' weights are N(0, 1); the conv scales by w_std/√(C·q).
    conv = nl.Conv(64, (3, 3), w_std=2.0).build((5, 7, 7), seed=1)
    assert abs(conv.weight.std().item() - 1) < 0.05
    assert math.isclose(conv.w_scale, 2.0 / math.sqrt(5 * 9))


@pytest.mark.parametrize("padding", ["SAME", "CIRCULAR", "VALID"])
def test_finite_conv_padding_matches_the_kernel_map(padding):
    # A Conv with one output channel and a delta filter is a shift: check that the finite
    # module pads where the kernel map does, by comparing E[z z'] of a linear net.
    x = _imgs(2, 1, 5, 4, seed=11)
    net = nl.serial(nl.Conv(4096, (2, 3), padding=padding, w_std=1.0, b_std=0.0))
    model = net.build((1, 5, 4), seed=3)
    z = model(x)                                # (2, 4096, H', W')
    emp = torch.einsum("icp,jcp->ijp", z.flatten(2), z.flatten(2)) / z.shape[1]
    k = net.kernel(x, get="nngp")
    assert emp.shape[2] == math.prod(k.shape[2:])
    torch.testing.assert_close(emp.reshape(k.shape), k, rtol=0, atol=0.1)


# ---------------------------------------------------------------------- bad input
def test_errors_name_the_problem():
    x = _imgs(2, 3, 6, 6)
    with pytest.raises(ValueError, match="Flatten"):
        nl.serial(nl.Conv(4, (3, 3)), nl.Dense(2)).kernel(x)
    with pytest.raises(ValueError, match="Flatten"):
        nl.serial(nl.Conv(4, (3, 3)), nl.Dense(2)).build((3, 6, 6))
    with pytest.raises(ValueError, match="spatial"):
        nl.Conv(4, (3, 3)).kernel(torch.randn(3, 5, dtype=F64))
    with pytest.raises(ValueError, match="2-D window"):
        nl.Conv(4, (3, 3)).kernel(torch.randn(3, 2, 8, dtype=F64))
    with pytest.raises(ValueError, match="smaller than the window"):
        nl.Conv(4, (7, 3)).kernel(x)
    with pytest.raises(ValueError, match="smaller than the window"):
        nl.AvgPool((8, 8)).build((3, 6, 6))
    with pytest.raises(ValueError, match="padding"):
        nl.Conv(4, (3, 3), padding="REFLECT")
    with pytest.raises(ValueError, match="filter_shape"):
        nl.Conv(4, (0, 3))
    with pytest.raises(ValueError, match="strides"):
        nl.Conv(4, (3, 3), strides=(1,))
    with pytest.raises(ValueError, match="1-D, 2-D and 3-D"):
        nl.Conv(4, (3, 3, 3, 3))
    with pytest.raises(TypeError, match="out_channels"):
        nl.Conv(4.0, (3, 3))
    with pytest.raises(ValueError, match="per-example shapes"):
        nl.Conv(4, (3, 3)).kernel(x, _imgs(2, 4, 6, 6))
    with pytest.raises(ValueError, match="NaN"):
        y = x.clone()
        y[1, 2, 3, 4] = float("nan")
        nl.Conv(4, (3, 3)).kernel(y)
    with pytest.raises(ValueError, match="channel axis"):
        nl.LayerNorm(axis=(2, 3)).kernel(x)
    with pytest.raises(ValueError, match="Gaussian"):
        nl.serial(nl.Conv(4, (3, 3)), nl.ReLU(), nl.LayerNorm()).kernel(x)
    with pytest.raises(ValueError, match="same spatial shape"):
        nl.serial(nl.FanOut(2), nl.parallel(nl.Conv(3, (3, 3)), nl.Conv(3, (2, 2))),
                  nl.FanInSum()).kernel(x)
    with pytest.raises(ValueError, match="in_features"):
        nl.Conv(4, (3, 3)).build((3, 0, 6))
    with pytest.raises(ValueError, match="needs spatial"):
        nl.GlobalAvgPool().kernel(torch.randn(3, 5, dtype=F64))


def test_activations_need_gaussian_inputs():
    # φ(ψ(z)) is not the dual of φ applied to ψ's kernel: ψ(z) is not Gaussian. A residual
    # sum whose skip stream comes after an activation is not Gaussian either.
    x = _imgs(2, 2, 5, 5)
    with pytest.raises(ValueError, match="Gaussian pre-activations"):
        nl.serial(nl.Conv(3, (3, 3)), nl.ReLU(), nl.Erf()).kernel(x)
    with pytest.raises(ValueError, match="Gaussian pre-activations"):
        nl.serial(nl.Conv(3, (3, 3)), nl.ReLU(), nl.FanOut(2),
                  nl.parallel(nl.Identity(), nl.Conv(3, (1, 1))), nl.FanInSum(),
                  nl.ReLU()).kernel(x)
    # Identity keeps whatever it gets; raw inputs may go straight into an activation.
    nl.serial(nl.Conv(3, (3, 3)), nl.ReLU(), nl.Identity(), nl.Flatten()).kernel(x)
    nl.serial(nl.ReLU(), nl.Flatten(), nl.Dense(1)).kernel(x)
