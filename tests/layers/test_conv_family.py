"""Exact identities, finite modules and input checks of the convolution family:
ConvTranspose, ConvLocal, 3-D Conv, SumPool, GlobalSumPool, AvgPool(normalize_edges),
ImageResize and Index. (Against neural-tangents: test_conv_family_reference.py; against
finite networks at growing width: test_conv_family_finite_width.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ntkit import layers as nl

F64 = torch.float64


def _x(*shape, seed=0):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _close(a, b, tol=1e-12):
    a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = b.abs().max().clamp_min(1e-300)
    err = float((a - b).abs().max() / scale)
    assert err <= tol, err


def _head(width=3):
    return [nl.Conv(width, (2, 2), padding="SAME", w_std=1.3, b_std=0.1), nl.ReLU()]


# ---- ConvTranspose ------------------------------------------------------------------------

@pytest.mark.parametrize("tail", ["gap", "flatten"])
@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_conv_transpose_stride1_valid_is_conv_on_zero_padded_input(tail, param):
    """Stride 1, VALID: out[o] = Σ_k W[k] x[o + k − (q − 1)], a Conv with 'full' padding
    q − 1 on each side (and the filter flipped, which leaves the kernel unchanged)."""
    x = _x(4, 2, 5, 4)
    q = (3, 2)
    end = [nl.ReLU(), nl.GlobalAvgPool() if tail == "gap" else nl.Flatten(), nl.Dense(1)]
    t = nl.serial(nl.ConvTranspose(3, q, padding="VALID", w_std=1.4, b_std=0.2,
                                   parameterization=param), *end)
    c = nl.serial(nl.Conv(3, q, padding="VALID", w_std=1.4, b_std=0.2,
                          parameterization=param), *end)
    padded = F.pad(x, (q[1] - 1, q[1] - 1, q[0] - 1, q[0] - 1))
    kt = t.kernel(x, get=("nngp", "ntk"))
    kc = c.kernel(padded, get=("nngp", "ntk"))
    _close(kt.nngp, kc.nngp)
    _close(kt.ntk, kc.ntk)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv_transpose_module_is_torch_conv_transpose(stride):
    """The finite layer (dilate, pad, correlate) equals torch's conv_transpose with the
    filter flipped (lax.conv_transpose does not flip), VALID, for q ≥ s."""
    x = _x(3, 2, 6, seed=1)
    layer = nl.ConvTranspose(4, (3,), strides=(stride,), padding="VALID", b_std=0.3)
    model = layer.build((2, 6), seed=2)
    mod = model[0] if isinstance(model, torch.nn.Sequential) else model
    w = mod.weight * mod.w_scale
    ref = F.conv_transpose1d(x, w.flip(-1).transpose(0, 1), mod.bias * mod.b_scale,
                             stride=stride)
    _close(model(x), ref)
    assert model(x).shape[-1] == 6 * stride + max(3 - stride, 0)


def test_conv_transpose_output_shapes():
    for pad, expect in (("SAME", (8, 15)), ("CIRCULAR", (8, 15)), ("VALID", (9, 15))):
        net = nl.ConvTranspose(2, (3, 2), strides=(2, 3), padding=pad)
        assert net.build((1, 4, 5))(_x(2, 1, 4, 5)).shape == (2, 2, *expect)
        k = net.kernel(_x(2, 1, 4, 5), get="nngp")
        assert k.shape == (2, 2, *expect)


# ---- SumPool / GlobalSumPool / normalize_edges ------------------------------------------------

@pytest.mark.parametrize("padding", ["VALID", "SAME", "CIRCULAR"])
def test_sum_pool_is_window_size_times_avg_pool(padding):
    """Kernels scale by window_size² (NNGP and NTK); the finite layer by window_size."""
    x = _x(3, 2, 5, 6, seed=3)
    window, strides = (2, 3), (1, 2)
    s = nl.serial(*_head(), nl.SumPool(window, strides, padding))
    a = nl.serial(*_head(), nl.AvgPool(window, strides, padding))
    ks, ka = s.kernel(x, get=("nngp", "ntk")), a.kernel(x, get=("nngp", "ntk"))
    _close(ks.nngp, 36.0 * ka.nngp)
    _close(ks.ntk, 36.0 * ka.ntk)
    ms, ma = s.build((2, 5, 6), seed=4), a.build((2, 5, 6), seed=4)
    _close(ms(x), 6.0 * ma(x))


def test_global_sum_pool_is_positions_times_global_avg_pool():
    x = _x(3, 2, 4, 5, seed=5)
    s = nl.serial(*_head(), nl.GlobalSumPool(), nl.Dense(1))
    a = nl.serial(*_head(), nl.GlobalAvgPool(), nl.Dense(1))
    ks, ka = s.kernel(x, get=("nngp", "ntk")), a.kernel(x, get=("nngp", "ntk"))
    # Dense(1) with b_std=0 is linear in its input kernel: 20² positions → 400×.
    _close(ks.nngp, 400.0 * ka.nngp)
    _close(ks.ntk, 400.0 * ka.ntk)
    _close(nl.serial(*_head(), nl.GlobalSumPool()).build((2, 4, 5), seed=1)(x),
           20.0 * nl.serial(*_head(), nl.GlobalAvgPool()).build((2, 4, 5), seed=1)(x))


def test_normalize_edges_finite_is_torch_count_include_pad_false():
    x = _x(2, 3, 5, 6, seed=6)
    m = nl.AvgPool((3, 3), (2, 1), "SAME", normalize_edges=True).build((3, 5, 6))
    ref = F.avg_pool2d(x, 3, (2, 1), padding=1, count_include_pad=False)
    _close(m(x), ref)


@pytest.mark.parametrize("padding", ["VALID", "CIRCULAR"])
def test_normalize_edges_only_acts_on_same_padding(padding):
    x = _x(3, 2, 5, 6, seed=7)
    a = nl.serial(*_head(), nl.AvgPool((2, 3), None, padding, normalize_edges=True),
                  nl.GlobalAvgPool())
    b = nl.serial(*_head(), nl.AvgPool((2, 3), None, padding), nl.GlobalAvgPool())
    _close(a.kernel(x, get="ntk"), b.kernel(x, get="ntk"))


# ---- ConvLocal ----------------------------------------------------------------------------

def test_conv_local_equals_conv_on_diagonal_storage_and_differs_on_full():
    """Unshared weights zero the covariance of different positions: invisible to Flatten
    (which reads only same-position pairs), visible to pooling."""
    x = _x(4, 2, 5, 6, seed=8)

    def net(cls, tail):
        return nl.serial(cls(3, (2, 3), padding="SAME", w_std=1.4, b_std=0.1), nl.ReLU(),
                         cls(3, (2, 2), strides=(1, 2), w_std=1.2, b_std=0.2), nl.ReLU(),
                         tail, nl.Dense(1))

    kl = net(nl.ConvLocal, nl.Flatten()).kernel(x, get=("nngp", "ntk"))
    kc = net(nl.Conv, nl.Flatten()).kernel(x, get=("nngp", "ntk"))
    _close(kl.nngp, kc.nngp)
    _close(kl.ntk, kc.ntk)
    gl = net(nl.ConvLocal, nl.GlobalAvgPool()).kernel(x, get="nngp")
    gc = net(nl.Conv, nl.GlobalAvgPool()).kernel(x, get="nngp")
    assert float((gl - gc).norm() / gc.norm()) > 0.05


def test_conv_local_full_kernel_is_zero_between_positions():
    x = _x(3, 2, 6, seed=9)
    k = nl.serial(nl.ConvLocal(3, (3,), padding="SAME"), nl.AvgPool((1,))).kernel(
        x, get="nngp")
    assert k.shape == (3, 3, 6, 6)
    off = ~torch.eye(6, dtype=torch.bool)
    assert (k[..., off] == 0).all()


def test_conv_local_module_has_unshared_weights():
    x = _x(2, 2, 5, seed=10)
    m = nl.ConvLocal(3, (2,), b_std=0.5).build((2, 5), seed=0)
    mod = m[0] if isinstance(m, torch.nn.Sequential) else m
    y = m(x)
    # Position p uses its own weights W[p]: recompute by hand.
    w, b = mod.weight * mod.w_scale, mod.bias * mod.b_scale
    for p in range(4):
        patch = x[:, :, p:p + 2].reshape(2, -1)
        _close(y[:, :, p], patch @ w[p].reshape(3, -1).T + b[:, p])


# ---- 3-D ----------------------------------------------------------------------------------

@pytest.mark.parametrize("tail", ["gap", "flatten"])
def test_conv3d_with_unit_depth_is_conv2d(tail):
    x = _x(3, 2, 4, 5, seed=11)

    def net(filt, pool):
        return nl.serial(nl.Conv(3, filt, padding="SAME", w_std=1.3, b_std=0.1), nl.ReLU(),
                         nl.AvgPool(pool, padding="SAME") if tail == "gap" else nl.Identity(),
                         nl.GlobalAvgPool() if tail == "gap" else nl.Flatten(), nl.Dense(1))

    k3 = net((1, 3, 2), (1, 2, 2)).kernel(x.unsqueeze(2), get=("nngp", "ntk"))
    k2 = net((3, 2), (2, 2)).kernel(x, get=("nngp", "ntk"))
    _close(k3.nngp, k2.nngp)
    _close(k3.ntk, k2.ntk)
    m = nl.Conv(3, (2, 2, 2)).build((2, 3, 4, 5))
    assert m(_x(2, 2, 3, 4, 5)).shape == (2, 3, 2, 3, 4)


# ---- ImageResize --------------------------------------------------------------------------

def test_resize_finite_matches_torch_interpolate():
    """jax.image.resize 'linear' upsampling is half-pixel bilinear (torch's
    align_corners=False); 'nearest' picks ⌊(i + ½)·in/out⌋ (torch's 'nearest-exact')."""
    x = _x(2, 3, 4, 5, seed=12)
    up = nl.ImageResize((-1, -1, 7, 9), "linear").build((3, 4, 5))(x)
    _close(up, F.interpolate(x, size=(7, 9), mode="bilinear", align_corners=False))
    for size in ((7, 9), (3, 2), (4, 11)):
        near = nl.ImageResize((-1, -1, *size), "nearest").build((3, 4, 5))(x)
        _close(near, F.interpolate(x, size=size, mode="nearest-exact"), tol=0)


@pytest.mark.parametrize("method", ["linear", "nearest"])
def test_resize_kernel_is_the_linear_map_of_the_positions(method):
    """Resizing is out = R x per axis, so the full kernel maps to R K Rᵀ per axis pair."""
    x = _x(3, 2, 4, 5, seed=13)
    full = nl.serial(*_head(), nl.AvgPool((1, 1))).kernel(x, get="nngp")  # (n, n, H, W, H, W)
    mod = nl.ImageResize((-1, -1, 3, 7), method).build((3, 4, 5))
    r_h, r_w = mod.mats[0], mod.mats[1]
    expect = torch.einsum("ah,bw,ijhwHW,cH,dW->ijabcd", r_h, r_w, full, r_h, r_w)
    got = nl.serial(*_head(), nl.ImageResize((-1, -1, 3, 7), method),
                    nl.AvgPool((1, 1))).kernel(x, get="nngp")
    _close(got, expect)


# ---- Index --------------------------------------------------------------------------------

IDX = [
    (slice(None), slice(None), slice(None, None, -1), slice(1, 5)),
    (Ellipsis, slice(4, 0, -2)),
    (Ellipsis, 2, slice(None)),
    (slice(None), slice(None), -1, slice(None, None, -3)),
    (Ellipsis, 1, 3),
]


@pytest.mark.parametrize("idx", IDX, ids=range(len(IDX)))
def test_index_finite_is_numpy_indexing_and_kernel_selects_positions(idx):
    x = _x(3, 2, 4, 6, seed=14)
    got = nl.Index(idx).build((2, 4, 6))(x)
    np.testing.assert_array_equal(got.numpy(), x.numpy()[idx])
    full = nl.serial(*_head(), nl.AvgPool((1, 1))).kernel(x, get=None)
    k = nl.Index(idx).kernel_map(full)
    # Selecting positions of the full kernel: the same index on both position axes of
    # each pair, numpy's own indexing, highest axes first.
    sp = idx[2:] if idx[0] is not Ellipsis else (slice(None),) * (3 - len(idx)) + idx[1:]
    sp = tuple(sp) + (slice(None),) * (2 - len(sp))
    arr = full.nngp.numpy()
    for ax, e in ((5, sp[1]), (4, sp[0]), (3, sp[1]), (2, sp[0])):
        sel = [slice(None)] * arr.ndim
        sel[ax] = e
        arr = arr[tuple(sel)]
    np.testing.assert_array_equal(k.nngp.numpy(), arr)
    assert k.spatial == got.shape[2:]


# ---- errors -------------------------------------------------------------------------------

def test_bad_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="batch axis"):
        nl.Index((slice(1, None),))
    with pytest.raises(ValueError, match="channel axis"):
        nl.Index((slice(None), 0))
    with pytest.raises(TypeError, match="ints, slices or Ellipsis"):
        nl.Index((slice(None), slice(None), [0, 1]))
    with pytest.raises(ValueError, match="selects no position"):
        nl.Index((Ellipsis, slice(3, 3))).kernel(_x(2, 1, 5), get="nngp")
    with pytest.raises(ValueError, match="method"):
        nl.ImageResize((-1, -1, 4), "cubic")
    with pytest.raises(ValueError, match="batch axis"):
        nl.ImageResize((2, -1, 4), "linear")
    with pytest.raises(ValueError, match="channel axis"):
        nl.ImageResize((-1, 3, 4), "linear")
    with pytest.raises(ValueError, match="spatial entries"):
        nl.ImageResize((-1, -1, 4), "linear").kernel(_x(2, 1, 3, 3), get="nngp")
    with pytest.raises(ValueError, match="spatial inputs"):
        nl.ConvTranspose(2, (3,)).kernel(_x(2, 4), get="nngp")
    with pytest.raises(ValueError, match="padding"):
        nl.ConvTranspose(2, (3,), padding="FULL")
    with pytest.raises(ValueError, match="1-D, 2-D and 3-D"):
        nl.ConvLocal(2, (1, 1, 1, 1))
    with pytest.raises(TypeError, match="out_channels"):
        nl.ConvLocal(2.0, (3,))
    with pytest.raises(TypeError, match="normalize_edges"):
        nl.AvgPool((2,), normalize_edges="yes")
    with pytest.raises(ValueError, match="parameterization"):
        nl.ConvTranspose(2, (3,), parameterization="mup")


# ---- the engine: tiles replay each example's covariance chain ------------------------------

@pytest.mark.parametrize("name", [
    "convT1d_circular_q5_s2_gap", "convlocal2d_circular_gap_standard",
    "conv3d_circular_pool_gap", "avgpool2d_normalize_edges",
    "resize_linear_up_after_two_convs", "index_int_to_1d_gap", "sumpool2d_circular_gsp"])
def test_tiled_equals_untiled(name):
    """Tiles replay the examples' own covariance maps (a CovTrace) instead of recomputing
    them: the result must not depend on the tile size (rounding only)."""
    from conv_family_archs import ARCHS, to_ntkit

    shape = ARCHS[name]["input"]
    x1, x2 = _x(5, *shape, seed=20), _x(3, *shape, seed=21)
    net = to_ntkit(name)
    for b in (None, x2):
        whole = net.kernel(x1, b, get=("nngp", "ntk"))
        tiled = net.kernel(x1, b, get=("nngp", "ntk"), tile=2)
        _close(tiled.nngp, whole.nngp)
        _close(tiled.ntk, whole.ntk)


@pytest.mark.parametrize("cls", [nl.ConvTranspose, nl.ConvLocal])
def test_tensor_stds_get_gradients(cls):
    """0-d tensor w_std/b_std (learnable) give the same kernel as numbers, and its
    gradient matches a central difference (step 1e-5: truncation ~1e-10, rounding
    ~1e-11 relative)."""
    x = _x(3, 2, 5, seed=30)

    def kernel(w, b):
        net = nl.serial(cls(3, (3,), strides=(2,), padding="SAME", w_std=w, b_std=b),
                        nl.ReLU(), nl.GlobalAvgPool(), nl.Dense(1))
        return net.kernel(x, get="ntk")

    w = torch.tensor(1.3, dtype=F64, requires_grad=True)
    b = torch.tensor(0.2, dtype=F64, requires_grad=True)
    k = kernel(w, b)
    _close(k, kernel(1.3, 0.2), tol=0)
    k.sum().backward()
    h = 1e-5
    cases = ((w, w.grad, lambda v: kernel(v, 0.2)), (b, b.grad, lambda v: kernel(1.3, v)))
    for t, grad, f in cases:
        v = float(t.detach())
        fd = (f(v + h).sum() - f(v - h).sum()) / (2 * h)
        assert abs(float(grad) - float(fd)) < 1e-7 * abs(float(fd)), (float(grad), float(fd))
