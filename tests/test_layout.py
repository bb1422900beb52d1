"""ntkit.layout and where inputs enter: channels-last batches are transposed on request,
warned about when they look channels last and no layout was given, and built networks
name the shape they expect."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from kernel_compare import assert_kernels_close

from ntkit import layers as nl
from ntkit.layout import looks_channels_last, to_channels_first, warn_if_channels_last

F64 = torch.float64


def _cnn():
    return nl.serial(nl.Conv(4, (3, 3), padding="SAME", w_std=1.4, b_std=0.1), nl.ReLU(),
                     nl.Flatten(), nl.Dense(1))


def _nhwc(n=4, seed=0):
    return torch.randn(n, 8, 8, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("shape, expected", [
    ((4, 8, 8, 3), True),        # NHWC RGB
    ((4, 28, 28, 1), True),      # NHWC grey
    ((4, 40, 2), True),          # NLC
    ((4, 5, 6, 6, 2), True),     # NDHWC
    ((4, 3, 8, 8), False),       # NCHW
    ((4, 3, 8, 5), False),       # last axis 5: not a channel count
    ((4, 2, 8, 3), False),       # last axis not smaller than axis 1
    ((4, 6, 1, 1), False),       # 1×1 images, channels first (square reading)
    ((4, 16), False),            # fully connected
])
def test_looks_channels_last(shape, expected):
    assert looks_channels_last(torch.zeros(shape)) is expected
    assert looks_channels_last(np.zeros(shape)) is expected


def test_to_channels_first_moves_the_last_axis_to_axis_one():
    x = _nhwc()
    y = to_channels_first(x, True)
    assert y.shape == (4, 3, 8, 8) and torch.equal(y[1, 2, 3, 4], x[1, 3, 4, 2])
    assert to_channels_first(x, None) is x and to_channels_first(x, False) is x
    a = np.arange(2 * 5 * 3.0).reshape(2, 5, 3)
    b = to_channels_first(a, True)
    assert b.shape == (2, 3, 5) and b[1, 2, 4] == a[1, 4, 2] and np.shares_memory(a, b)
    fc = torch.zeros(3, 7)
    assert to_channels_first(fc, True) is fc
    with pytest.raises(TypeError, match="channels_last must be"):
        to_channels_first(x, "NHWC")

    class ZarrLike:
        shape = (4, 8, 8, 3)

    with pytest.raises(TypeError, match="channels first"):
        to_channels_first(ZarrLike(), True)


def test_warning_names_the_fix_and_is_silenced_by_an_explicit_layout():
    with pytest.warns(UserWarning, match=r"channels_last=True .*\(4, 3, 8, 8\)"):
        warn_if_channels_last(_nhwc(), None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_channels_last(_nhwc(), False)
        warn_if_channels_last(_nhwc(), True)
        warn_if_channels_last(torch.zeros(4, 3, 8, 8), None)


def test_kernel_channels_last_equals_the_transposed_batch():
    net, x, y = _cnn(), _nhwc(4, 0), _nhwc(3, 1)
    ref = net.kernel(x.movedim(-1, 1).contiguous(), get="ntk")
    got = net.kernel(x, get="ntk", channels_last=True)
    assert_kernels_close(got, ref, identical="diagonal", name="channels_last=True")
    ref12 = net.kernel(x.movedim(-1, 1).contiguous(), y.movedim(-1, 1).contiguous(), get="ntk")
    assert_kernels_close(net.kernel(x, y, get="ntk", channels_last=True), ref12)
    # a numpy (memmap-like) batch too
    got_np = net.kernel(x.numpy(), get="ntk", channels_last=True)
    assert_kernels_close(got_np, ref, identical="diagonal")
    # ...and reading NHWC as NCHW is a different kernel (why the option exists)
    with pytest.warns(UserWarning, match="looks channels last"):
        wrong = net.kernel(x, get="ntk")
    assert float((wrong - ref).abs().max() / ref.abs().max()) > 1e-3


def test_kernel_warns_for_x2_and_not_for_channels_first():
    net = _cnn()
    x = _nhwc().movedim(-1, 1).contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.kernel(x, get="nngp")
        net.kernel(_nhwc(), get="nngp", channels_last=False)  # explicit: no warning
        nl.serial(nl.Dense(3), nl.ReLU()).kernel(torch.randn(5, 2, dtype=F64), get="nngp")
    # x2 alone channels last: warned about (then refused: its shape differs from x1's)
    with pytest.warns(UserWarning, match="x2 has shape"), pytest.raises(ValueError):
        net.kernel(x, _nhwc(2, 3), get="nngp")


def test_built_network_names_the_expected_shape():
    m = nl.serial(nl.Dense(16), nl.ReLU(), nl.Dense(1)).build(8)
    assert m(torch.randn(5, 8, dtype=F64)).shape == (5, 1)
    with pytest.raises(ValueError, match=r"inputs of shape \(n, 8\).*got \(5, 6\)"):
        m(torch.randn(5, 6, dtype=F64))
    cnn = _cnn().build((3, 8, 8))
    assert cnn(_nhwc().movedim(-1, 1)).shape == (4, 1)
    with pytest.raises(ValueError, match=r"\(n, 3, 8, 8\).*looks channels last.*movedim"):
        cnn(_nhwc())
    # the check survives pickling (a module-level callable, not a closure)
    again = pickle.loads(pickle.dumps(cnn))
    with pytest.raises(ValueError, match=r"\(n, 3, 8, 8\)"):
        again(torch.randn(2, 3, 8, 7, dtype=F64))
