"""The tiling engine: tiles, symmetry, outputs, progress and input validation."""

import numpy as np
import pytest
import torch
from kernel_compare import assert_kernels_close

from ntkit import layers as nl


def relu_net(depth=3):
    layers = []
    for _ in range(depth):
        layers += [nl.Dense(128, 1.4, 0.1), nl.ReLU()]
    return nl.serial(*layers, nl.Dense(1, 1.4, 0.1))


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(0)
    return torch.randn(37, 6, generator=g, dtype=torch.float64)


def test_tile_size_does_not_change_the_result(x):
    net = relu_net()
    ref = net.kernel(x, get=("nngp", "ntk"), tile=37)
    for tile in (1, 5, 16, 36, 100):
        k = net.kernel(x, get=("nngp", "ntk"), tile=tile)
        assert_kernels_close(k.nngp, ref.nngp, name=f"nngp, tile {tile}", identical="diagonal")
        assert_kernels_close(k.ntk, ref.ntk, name=f"ntk, tile {tile}", identical="diagonal")


def test_symmetric_case_matches_explicit_x2_and_is_symmetric(x):
    net = relu_net()
    k_sym = net.kernel(x, get="ntk", tile=8)
    k_two = net.kernel(x, x.clone(), get="ntk", tile=8)
    assert torch.equal(k_sym, k_sym.T)
    assert_kernels_close(k_two, k_sym, name="x2 = x.clone() vs x2 = None")


def test_rectangular_and_transposed(x):
    net = relu_net()
    a, b = x[:10], x[10:]
    k_ab = net.kernel(a, b, get="nngp", tile=4)
    k_ba = net.kernel(b, a, get="nngp", tile=7)
    assert k_ab.shape == (10, 27)
    full = net.kernel(x, get="nngp")
    d = torch.diagonal(full)
    assert_kernels_close(k_ab, k_ba.T, var1=d[:10], var2=d[10:], name="k(a, b) vs k(b, a)ᵀ")
    assert_kernels_close(k_ab, full[:10, 10:], var1=d[:10], var2=d[10:], name="k(a, b)")


def test_get_forms(x):
    net = relu_net()
    both = net.kernel(x, get=("nngp", "ntk"))
    assert both._fields == ("nngp", "ntk")
    assert torch.equal(net.kernel(x, get="ntk"), both.ntk)
    whole = net.kernel(x, x[:5], get=None)
    d = torch.diagonal(both.nngp)
    assert_kernels_close(whole.nngp, both.nngp[:, :5], var1=d, var2=d[:5], name="k(x, x[:5])")
    torch.testing.assert_close(whole.cov1, torch.diagonal(both.nngp), rtol=1e-12, atol=0)
    torch.testing.assert_close(whole.cov2, torch.diagonal(both.nngp)[:5], rtol=1e-12, atol=0)
    assert whole.channels == 1


def test_results_are_float64_by_default_and_float32_on_request(x):
    net = relu_net()
    k64 = net.kernel(x.float(), get="ntk")
    assert k64.dtype == torch.float64
    k32 = net.kernel(x, get="ntk", dtype=torch.float32)
    assert k32.dtype == torch.float32
    err = ((k32.double() - k64).abs().max() / k64.abs().max()).item()
    assert err < 1e-5, err


def test_out_numpy_memmap(tmp_path, x):
    net = relu_net()
    ref = net.kernel(x, get="ntk")
    mm = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64,
                                   shape=(37, 37))
    ret = net.kernel(x, get="ntk", out=mm, tile=10)
    assert ret is mm
    back = np.load(tmp_path / "k.npy")
    assert_kernels_close(back, ref, identical="diagonal", name="memmap out")


def test_out_dict_of_tensors(x):
    net = relu_net()
    outs = {"nngp": torch.empty(37, 37, dtype=torch.float64),
            "ntk": torch.empty(37, 37, dtype=torch.float64)}
    k = net.kernel(x, get=("nngp", "ntk"), out=outs)
    assert k.nngp is outs["nngp"] and k.ntk is outs["ntk"]
    assert_kernels_close(outs["ntk"], net.kernel(x, get="ntk"), identical="diagonal")


def test_progress_bar(x, capsys):
    relu_net().kernel(x, get="ntk", tile=8, progress=True)
    err = capsys.readouterr().err
    assert "kernel tiles" in err


def test_compiled_path_agrees_with_eager():
    pytest.importorskip("torch._inductor")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 4, generator=g, dtype=torch.float64)
    net = nl.serial(nl.Dense(8, 1.3, 0.2), nl.Erf(), nl.Dense(1))
    eager = net.kernel(x, get="ntk", compile=False, tile=8)
    comp = net.kernel(x, get="ntk", compile=True, tile=8)
    assert_kernels_close(comp, eager, name="compiled vs eager")


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((torch.tensor([[1.0, float("nan")]]),), {}, ValueError, "NaN"),
        ((torch.tensor([[1.0, float("inf")]]),), {}, ValueError, "inf"),
        ((torch.ones(3),), {}, ValueError, "2-D"),
        ((torch.ones(0, 3),), {}, ValueError, "empty"),
        ((torch.ones(3, 2, dtype=torch.int64),), {}, TypeError, "floating"),
        ((torch.ones(3, 2), torch.ones(3, 4)), {}, ValueError, "feature dimensions"),
        ((torch.ones(3, 2),), {"get": "ntkk"}, ValueError, "unknown kernel name"),
        ((torch.ones(3, 2),), {"get": ()}, ValueError, "empty"),
        ((torch.ones(3, 2),), {"tile": 0}, ValueError, "tile"),
        ((torch.ones(3, 2),), {"dtype": torch.int32}, TypeError, "dtype"),
        ((torch.ones(3, 2),), {"compile": "yes"}, ValueError, "compile"),
        (("abc",), {}, TypeError, "x1"),
        ((torch.ones(3, 2),), {"get": "ntk", "out": torch.empty(2, 2)}, ValueError, "shape"),
        ((torch.ones(3, 2),), {"out": torch.empty(3, 3)}, TypeError, "dict"),
        ((torch.ones(3, 2),), {"get": "ntk", "out": {"nngp": torch.empty(3, 3)}}, ValueError,
         "not requested"),
    ],
)
def test_bad_input_is_rejected_clearly(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        relu_net().kernel(*args, **kwargs)


def test_numpy_inputs_accepted(x):
    net = relu_net()
    assert_kernels_close(net.kernel(x.numpy(), get="ntk"), net.kernel(x, get="ntk"),
                         identical="diagonal", name="numpy vs tensor input")


def test_overflow_is_reported_not_returned():
    net = nl.serial(nl.Dense(8), nl.Exp(1.0, 1.0), nl.Dense(1))
    with pytest.raises(FloatingPointError, match="overflow"):
        net.kernel(torch.full((2, 3), 1e3, dtype=torch.float64), get="nngp")


def test_errors_in_parallel_tiles_propagate():
    # Several tiles run on worker threads; one overflowing tile must still raise.
    x = torch.ones(6, 3, dtype=torch.float64)
    x[4] = 1e3
    net = nl.serial(nl.Dense(8), nl.Exp(1.0, 1.0), nl.Dense(1))
    with pytest.raises(FloatingPointError, match="overflow"):
        net.kernel(x, get="nngp", tile=2)
    with pytest.raises(FloatingPointError, match="overflow"):
        net.kernel(x, get="nngp", tile=2, progress=True)
    assert torch.get_num_threads() >= 1


def test_parallel_tiles_restore_thread_count(x):
    before = torch.get_num_threads()
    relu_net().kernel(x, get="ntk", tile=5)
    assert torch.get_num_threads() == before
