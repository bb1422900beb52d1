"""ntkit.apps.kip: KIP's loss and gradients against independent computations, distill."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from kernel_compare import assert_kernels_close

import ntkit.layers as nl
from ntkit.apps import kip
from ntkit.engine.threads import torch_threads
from ntkit.lab.framework import digits_subset

F64 = torch.float64
W = math.sqrt(2.0)


def _net(depth: int):
    layers = []
    for _ in range(depth):
        layers += [nl.Dense(1, w_std=W, b_std=0.1), nl.ReLU()]
    return nl.serial(*layers, nl.Dense(1, w_std=W, b_std=0.1))


def _erf_net():
    return nl.serial(nl.Dense(1, w_std=1.5, b_std=0.2), nl.Erf(), nl.Dense(1, w_std=1.5,
                                                                          b_std=0.2))


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: one thread avoids OpenMP barriers (10× slower on a busy 2-core machine).
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def digits():
    x, y = digits_subset(300, seed=0)
    return x, y


# ------------------------------------------------------------- kernel and loss values
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("depth", [1, 3])
def test_kernel_function_matches_exact_kernel(kind, depth):
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(7, 5, dtype=F64, generator=g)
    x2 = torch.cat([x1[:3], torch.randn(4, 5, dtype=F64, generator=g)])  # 3 duplicates
    net = _net(depth)
    fn = kip.kernel_function(net, kind)
    for a, b in ((x1, x1), (x1, x2)):
        exact = net.kernel(a, b, get=kind)
        got = fn(a, b)
        # The jitter (1e-10) moves NNGP-type values by O(jitter) and the ReLU NTK's
        # derivative factor (π − θ)/2π by O(√jitter) at parallel pairs (θ ≈ √(2·jitter)):
        # bounds with a factor 10–100 of headroom over those orders.
        tol = (100 * kip.DEFAULT_JITTER if kind == "nngp" else 10 * kip.DEFAULT_JITTER**0.5)
        assert (got - exact).abs().max() <= tol * exact.abs().max()
    # Without the jitter, distinct pairs agree to round-off.
    exact = net.kernel(x1[3:], x2[3:], get=kind)
    got = kip.kernel_function(net, kind, jitter=0.0)(x1[3:], x2[3:])
    assert_kernels_close(got, exact, name="kip kernel, jitter 0")  # disjoint: tight


def test_conv_flatten_kernel_and_gradient():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 1, 5, 5, dtype=F64, generator=g)
    xt = torch.cat([x[:2], torch.randn(2, 1, 5, 5, dtype=F64, generator=g)])
    net = nl.serial(nl.Conv(1, (3, 3), padding="SAME", w_std=W), nl.ReLU(), nl.Flatten(),
                    nl.Dense(1))
    fn = kip.kernel_function(net, "ntk")
    xs = x.clone().requires_grad_(True)
    k_ss, k_ts = fn(xs, xs), fn(xt, xs)
    # O(√jitter) at parallel pairs, as for the FC nets above.
    for got, exact in ((k_ss, net.kernel(x, get="ntk")), (k_ts, net.kernel(xt, x, get="ntk"))):
        assert (got.detach() - exact).abs().max() <= 10 * kip.DEFAULT_JITTER**0.5 * exact.max()
    (grad,) = torch.autograd.grad(k_ss.sum() + k_ts.sum(), xs)
    assert torch.isfinite(grad).all()
    pooled = nl.serial(nl.Conv(1, (3, 3), padding="SAME"), nl.ReLU(), nl.GlobalAvgPool(),
                       nl.Dense(1))
    # Pooled conv nets are differentiable: the gradient is finite and matches a central
    # difference along a random direction (step 1e-5: truncation ~1e-10 relative).
    fn = kip.kernel_function(pooled, "ntk")
    (grad,) = torch.autograd.grad(fn(xs, xs).sum(), xs)
    assert torch.isfinite(grad).all()
    h = torch.randn(xs.shape, generator=torch.Generator().manual_seed(7), dtype=xs.dtype)
    with torch.no_grad():
        e = 1e-5
        fd = (fn(xs + e * h, xs + e * h).sum() - fn(xs - e * h, xs - e * h).sum()) / (2 * e)
    torch.testing.assert_close((grad * h).sum(), fd, rtol=1e-6, atol=0)


def test_kip_loss_matches_numpy_krr():
    g = torch.Generator().manual_seed(2)
    xs, xt = torch.randn(6, 4, dtype=F64, generator=g), torch.randn(9, 4, dtype=F64, generator=g)
    ys, yt = torch.randn(6, 3, dtype=F64, generator=g), torch.randn(9, 3, dtype=F64, generator=g)
    net, reg = _net(2), 0.3
    # The formula alone: exact kernels from the engine (kernel_function's jitter aside).
    loss, pred = kip.kip_loss(lambda a, b: net.kernel(a, b, get="ntk"), xs, ys, xt, yt, reg)
    # Brute force in numpy: explicit inverse, ridge reg · mean diagonal of K_ss.
    kss = net.kernel(xs, None, get="ntk").numpy()
    kts = net.kernel(xt, xs, get="ntk").numpy()
    lam = reg * np.trace(kss) / 6
    p = kts @ np.linalg.inv(kss + lam * np.eye(6)) @ ys.numpy()
    np.testing.assert_allclose(pred.numpy(), p, rtol=1e-10, atol=1e-12)
    assert abs(loss.item() - 0.5 * np.mean((p - yt.numpy()) ** 2)) < 1e-12
    np.testing.assert_allclose(kip.predict(net, xs, ys, xt, "ntk", reg).numpy(), p,
                               rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("net", [_net(2), _erf_net()], ids=["relu-depth2", "erf"])
def test_loss_gradient_matches_finite_differences(kind, net):
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(4, 5, dtype=F64, generator=g)
    ys = torch.randn(4, 2, dtype=F64, generator=g)
    xt, yt = torch.randn(6, 5, dtype=F64, generator=g), torch.randn(6, 2, dtype=F64, generator=g)
    fn = kip.kernel_function(net, kind)

    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return kip.kip_loss(fn, a, b, xt, yt, 1e-2)[0]

    a, b = xs.clone().requires_grad_(True), ys.clone().requires_grad_(True)
    ga, gb = torch.autograd.grad(loss(a, b), (a, b))
    h = 1e-4

    def fd(t: torch.Tensor, which: int) -> torch.Tensor:
        out = torch.zeros_like(t)
        for i in range(t.numel()):
            e = torch.zeros_like(t).flatten()
            e[i] = h
            e = e.reshape(t.shape)
            args_p = (xs + e, ys) if which == 0 else (xs, ys + e)
            args_m = (xs - e, ys) if which == 0 else (xs, ys - e)
            out.view(-1)[i] = (loss(*args_p) - loss(*args_m)) / (2 * h)
        return out

    # Central differences: truncation ~h^2·|f"'| ≈ 1e-8. Rounding: at K_ss's diagonal
    # (parallel pairs, part of every entry) the angle θ ≈ √(2·jitter) turns the inputs'
    # relative rounding eps into an angle error eps/√(2·jitter) ≈ 1e-11, i.e. ~1e-11/h =
    # 1e-7 in a difference quotient. Both well below the 1e-6 relative tolerance.
    with torch.no_grad():
        fa, fb = fd(xs, 0), fd(ys, 1)
    assert torch.isfinite(ga).all()
    torch.testing.assert_close(ga, fa, rtol=1e-6, atol=1e-6 * fa.abs().max().item())
    torch.testing.assert_close(gb, fb, rtol=1e-6, atol=1e-6 * fb.abs().max().item())


def test_gradient_finite_at_duplicate_points():
    # Step 0 of KIP: the support points are real examples, so targets contain them.
    g = torch.Generator().manual_seed(4)
    xt = torch.randn(8, 5, dtype=F64, generator=g)
    yt = torch.randn(8, 2, dtype=F64, generator=g)
    xs = xt[:4].clone().requires_grad_(True)
    for kind in ("nngp", "ntk"):
        loss, _ = kip.kip_loss(kip.kernel_function(_net(3), kind), xs, yt[:4], xt, yt, 1e-6)
        (grad,) = torch.autograd.grad(loss, xs)
        assert torch.isfinite(grad).all() and grad.abs().max() > 0
    # Without the jitter, the duals' own derivatives at correlation 1 (ntkit.dual.autodiff)
    # keep the gradient finite too; the NNGP's is the same derivative up to O(jitter).
    for kind in ("nngp", "ntk"):
        loss, _ = kip.kip_loss(kip.kernel_function(_net(3), kind, jitter=0.0), xs, yt[:4],
                               xt, yt, 1e-6)
        (g0,) = torch.autograd.grad(loss, xs)
        assert torch.isfinite(g0).all()
        if kind == "nngp":
            loss, _ = kip.kip_loss(kip.kernel_function(_net(3), kind), xs, yt[:4], xt, yt,
                                   1e-6)
            (gj,) = torch.autograd.grad(loss, xs)
            torch.testing.assert_close(g0, gj, rtol=1e-5, atol=1e-5 * float(gj.abs().max()))


# ------------------------------------------------------------- distill
def _full_batch_loss(net, kind, xs, ys, x, t, reg):
    with torch.no_grad():
        return kip.kip_loss(kip.kernel_function(net, kind), xs, ys, x, t, reg)[0].item()


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_distill_reduces_training_loss(digits, kind):
    x, y = digits
    net = _net(1)
    res = kip.distill(net, x, y, n_support=20, steps=15, kernel=kind, batch_size=300, lr=0.02,
                      seed=1)
    t = kip.centered_one_hot(y, 10)
    before = _full_batch_loss(net, kind, res.x_init, res.y_init, x, t, res.reg)
    after = _full_batch_loss(net, kind, res.x_support, res.y_support, x, t, res.reg)
    # Measured: 0.024 → 0.015 (NNGP) after 25 steps; 15 steps must cut it by a fifth.
    assert after < 0.8 * before, (before, after)
    # history: one loss per step; the full batch makes the first entry the initial loss.
    assert res.history["step"] == list(range(15))
    assert res.history["loss"][0] == pytest.approx(before, rel=1e-6)
    assert res.history["loss"][-1] < res.history["loss"][0]
    assert len(res.history["accuracy"]) == 15


def test_support_is_class_balanced_and_real(digits):
    x, y = digits
    res = kip.distill(_net(1), x, y, n_support=30, steps=0, seed=5)
    counts = torch.bincount(y[res.init_indices], minlength=10)
    assert counts.tolist() == [3] * 10
    assert len(set(res.init_indices.tolist())) == 30
    torch.testing.assert_close(res.x_init, x[res.init_indices], rtol=0, atol=0)
    torch.testing.assert_close(res.y_init, kip.centered_one_hot(y[res.init_indices], 10))
    assert res.y_support.shape == (30, 10) and res.x_support.shape == (30, 64)
    assert torch.equal(res.classes, torch.arange(10))
    # steps = 0: nothing learned.
    assert torch.equal(res.x_support, res.x_init)


def test_labels_change_only_when_learned(digits):
    x, y = digits
    kw = dict(n_support=20, steps=5, batch_size=100, seed=2)
    fixed = kip.distill(_net(1), x, y, learn_labels=False, **kw)
    learned = kip.distill(_net(1), x, y, learn_labels=True, **kw)
    assert torch.equal(fixed.y_support, fixed.y_init)
    assert (learned.y_support - learned.y_init).abs().max() > 1e-3
    # Same seed: same initial support and target batches.
    assert torch.equal(fixed.init_indices, learned.init_indices)
    assert (fixed.x_support - fixed.x_init).abs().max() > 1e-3


def test_real_targets_eval_and_reproducible(digits):
    x, y = digits
    t = torch.randn(300, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    a = kip.distill(_net(1), x, t, n_support=7, steps=3, batch_size=50, seed=3,
                    eval_data=(x[:40], t[:40]), eval_every=2)
    b = kip.distill(_net(1), x, t, n_support=7, steps=3, batch_size=50, seed=3)
    assert torch.equal(a.x_support, b.x_support)
    assert a.classes is None and a.y_support.shape == (7, 2)
    assert a.history["eval_step"] == [0, 2, 3]
    assert "accuracy" not in a.history and "eval_accuracy" not in a.history
    with pytest.raises(ValueError, match="integer labels"):
        a.accuracy(_net(1), x, y)
    pred = a.predict(_net(1), x[:40])
    assert pred.shape == (40, 2)
    assert a.history["eval_loss"][-1] == pytest.approx(0.5 * ((pred - t[:40]) ** 2).mean().item())


# ------------------------------------------------------------- bad input
def _bad_cases(x, y):
    yield "ntk_typo", dict(kernel="ntkk"), ValueError, "kernel must be one of"
    yield "nan_x", dict(x=torch.where(torch.arange(64) == 3, torch.nan, x)), ValueError, "NaN"
    yield "int_x", dict(x=x.long()), TypeError, "floating"
    yield "x_1d", dict(x=x[:, 0]), ValueError, "shape"
    yield "y_len", dict(y=y[:-1]), ValueError, "rows"
    yield "y_float_1d", dict(y=y.double()), ValueError, "reshape"
    yield "y_bool", dict(y=y > 4), TypeError, "integer labels"
    yield "y_nan", dict(y=torch.full((300, 2), torch.nan, dtype=F64)), ValueError, "NaN"
    yield "not_divisible", dict(n_support=15), ValueError, "not divisible"
    yield "too_many", dict(n_support=400), ValueError, "exceeds"
    yield "class_short", dict(n_support=10 * 40), ValueError, "exceeds"
    yield "steps_neg", dict(steps=-1), ValueError, "steps"
    yield "steps_float", dict(steps=2.5), ValueError, "steps"
    yield "lr_zero", dict(lr=0.0), ValueError, "lr"
    yield "reg_nan", dict(reg=float("nan")), ValueError, "reg"
    yield "batch_big", dict(batch_size=301), ValueError, "batch_size"
    yield "learn_labels", dict(learn_labels="yes"), TypeError, "learn_labels"
    yield "net", dict(net="relu"), TypeError, "layer spec"
    yield "eval_shape", dict(eval_data=(x[:5, :10], y[:5])), ValueError, "per-example shape"
    yield "eval_labels", dict(eval_data=(x[:5], y[:5] + 20)), ValueError, "not among"
    yield "eval_pair", dict(eval_data=x[:5]), TypeError, "pair"


@pytest.mark.parametrize("case", range(21))
def test_bad_inputs_raise(digits, case):
    x, y = digits
    name, change, err, match = list(_bad_cases(x, y))[case]
    kw = dict(net=_net(1), x=x, y=y, n_support=20, steps=1)
    kw.update(change)
    with pytest.raises(err, match=match):
        kip.distill(**kw)


def test_class_with_too_few_examples():
    x = torch.randn(12, 3, dtype=F64)
    y = torch.tensor([0] * 10 + [1] * 2)
    with pytest.raises(ValueError, match="class 1 has 2 examples"):
        kip.distill(_net(1), x, y, n_support=6, steps=1)
