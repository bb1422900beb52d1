"""Exact identities, finite networks and errors of Dropout, FanInProd, repeat, Aggregate,
DotGeneral, ExpNormalized and Gabor (neural-tangents comparisons:
test_misc_layers_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from misc_archs import ARCHS, to_ntkit

from ntkit import layers as nl
from ntkit.kernel import Storage, input_kernel

F64 = torch.float64


def _x(*shape, seed=0):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _graph_k(net, x1, x2, p1, p2=None):
    full = net.requires_full(Storage()).any_full
    k0 = input_kernel(x1, x2, track_ntk=True, full=full)
    return net.kernel_map(nl.with_pattern(k0, p1, p2))


# ---- Dropout ------------------------------------------------------------------------
def _fc(dropout=None):
    mid = [] if dropout is None else [dropout]
    return nl.serial(nl.Dense(8, w_std=1.4, b_std=0.1), nl.ReLU(), *mid)


def test_dropout_test_mode_is_identity():
    x1, x2 = _x(5, 4), _x(3, 4, seed=1)
    for args in ((x1, None), (x1, x2)):
        a = nl.serial(_fc(nl.Dropout(0.3, mode="test")), nl.Dense(1)).kernel(*args)
        b = nl.serial(_fc(), nl.Dense(1)).kernel(*args)
        assert torch.equal(a.nngp, b.nngp) and torch.equal(a.ntk, b.ntk)
    m = nl.Dropout(0.3, mode="test").build(4)
    assert torch.equal(m(x1), x1)


def test_dropout_train_scales_only_the_example_diagonal():
    p = 0.3
    x1 = _x(5, 4)
    x2 = torch.cat([x1[:2], _x(3, 4, seed=1)])  # two examples repeated in another batch
    a = _fc(nl.Dropout(p)).kernel(x1, x2)
    b = _fc().kernel(x1, x2)
    # Another batch: independent masks (also for repeated examples), covariance unchanged.
    assert torch.equal(a.nngp, b.nngp) and torch.equal(a.ntk, b.ntk)
    a, b = _fc(nl.Dropout(p)).kernel(x1), _fc().kernel(x1)
    off = ~torch.eye(5, dtype=torch.bool)
    assert torch.equal(a.nngp[off], b.nngp[off]) and torch.equal(a.ntk[off], b.ntk[off])
    torch.testing.assert_close(a.nngp.diagonal(), b.nngp.diagonal() / (1 - p), rtol=1e-15,
                               atol=0)
    torch.testing.assert_close(a.ntk.diagonal(), b.ntk.diagonal() / (1 - p), rtol=1e-15,
                               atol=0)


def test_dropout_train_full_storage_scales_equal_positions_only():
    p = 0.4
    x = _x(3, 2, 5)
    net = nl.serial(nl.Conv(4, (3,), padding="SAME"), nl.ReLU())
    k0 = input_kernel(x, None, track_ntk=True, full=True)
    b = net.map_planned(k0, Storage(full=True))
    assert b.full
    a = nl.Dropout(p).kernel_map(b)
    scale = torch.ones(3, 3, 5, 5, dtype=F64)
    for i in range(3):
        scale[i, i].diagonal().fill_(1 / (1 - p))
    torch.testing.assert_close(a.nngp, b.nngp * scale, rtol=1e-15, atol=0)
    torch.testing.assert_close(a.cov1, b.cov1 * scale[0, 0], rtol=1e-15, atol=0)


def test_dropout_module_second_moments():
    """Averaged over masks, a unit's square grows by 1/(1-p); two evaluations (two
    examples) get independent masks, so their product keeps its mean."""
    p, n = 0.25, 200_000
    torch.manual_seed(0)
    m = nl.Dropout(p).build(1)
    h = torch.full((n, 1), 2.0, dtype=F64)
    y1, y2 = m(h), m(h)
    # Bernoulli counts: relative standard error sqrt(p/(1-p)/n) ≈ 0.0013; 5 sigma.
    assert abs(float((y1 * y1).mean()) / (4 / (1 - p)) - 1) < 0.0065
    assert abs(float((y1 * y2).mean()) / 4 - 1) < 0.0065
    m.eval()
    assert torch.equal(m(h), h)


# ---- FanInProd and repeat -----------------------------------------------------------
def test_fan_in_prod_with_a_constant_branch():
    """A branch Dense(w_std=0, b_std=1) is the constant 1 with ntk 1: the product keeps
    the other branch's nngp and adds it to its ntk."""
    x1, x2 = _x(5, 4), _x(3, 4, seed=1)
    body = nl.serial(nl.Dense(6, w_std=1.3, b_std=0.1), nl.ReLU(), nl.Dense(6, w_std=1.2))
    net = nl.serial(nl.FanOut(2), nl.parallel(body, nl.Dense(6, w_std=0.0, b_std=1.0)),
                    nl.FanInProd())
    for args in ((x1, None), (x1, x2)):
        a, b = net.kernel(*args), body.kernel(*args)
        torch.testing.assert_close(a.nngp, b.nngp, rtol=1e-15, atol=0)
        torch.testing.assert_close(a.ntk, b.ntk + b.nngp, rtol=1e-15, atol=0)
    # Finite network: the body's output times the constant branch (its random biases).
    model = net.build(4)
    body_m, const_m = model.layers[1].branches
    c = const_m(x1)
    assert torch.equal(c, c[:1].expand_as(c))
    torch.testing.assert_close(model(x1), body_m(x1) * c, rtol=0, atol=0)


def test_fan_in_prod_refuses_dependent_streams():
    net = nl.serial(nl.Dense(6), nl.FanOut(2), nl.parallel(nl.ReLU(), nl.Identity()),
                    nl.FanInProd())
    with pytest.raises(ValueError, match="FanInProd: streams 0 and 1 are dependent"):
        net.kernel(_x(3, 4))
    with pytest.raises(ValueError, match="equal width"):
        nl.serial(nl.FanOut(2), nl.parallel(nl.Dense(3), nl.Dense(4)), nl.FanInProd()).kernel(
            _x(3, 4))


def test_repeat_is_serial_and_loops():
    x = _x(4, 5)
    block = nl.serial(nl.Dense(5, w_std=1.3, b_std=0.1), nl.ReLU())
    a = nl.repeat(block, 3).kernel(x)
    b = nl.serial(block, block, block).kernel(x)
    assert torch.equal(a.nngp, b.nngp) and torch.equal(a.ntk, b.ntk)
    torch.testing.assert_close(nl.repeat(block, 0).kernel(x).nngp, x @ x.T / 5, rtol=1e-14,
                               atol=0)
    # Deep: a loop, not recursion (Python's limit is ~1000 frames).
    deep = nl.repeat(nl.serial(nl.Dense(5, w_std=1.0), nl.Erf()), 3000).kernel(x, get="nngp")
    assert torch.isfinite(deep).all()
    model = nl.repeat(block, 3).build(5)
    ws = [m.layers[0].weight for m in model.layers]
    assert len(ws) == 3 and not torch.equal(ws[0], ws[1])  # fresh parameters each time
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        nl.repeat(block, -1)


# ---- Aggregate ----------------------------------------------------------------------
GRAPH = nl.serial(nl.Conv(6, (1,), w_std=1.2, b_std=0.1))


def test_aggregate_identity_pattern_is_a_no_op():
    x1, x2 = _x(4, 3, 5), _x(2, 3, 5, seed=1)
    eye1, eye2 = torch.eye(5, dtype=F64).expand(4, 5, 5), torch.eye(5, dtype=F64).expand(2, 5, 5)
    net = nl.serial(GRAPH, nl.Aggregate(), nl.ReLU(), nl.GlobalAvgPool())
    ref = nl.serial(GRAPH, nl.ReLU(), nl.GlobalAvgPool())
    a = _graph_k(net, x1, x2, eye1, eye2)
    b = ref.kernel(x1, x2)
    torch.testing.assert_close(a.nngp, b.nngp, rtol=1e-14, atol=0)
    torch.testing.assert_close(a.ntk, b.ntk, rtol=1e-14, atol=0)
    m = nl.Aggregate().build((3, 5))
    assert torch.equal(m(x1, pattern=eye1), x1)


def test_aggregate_all_ones_is_the_sum_over_nodes():
    V = 5
    x1, x2 = _x(4, 3, V), _x(2, 3, V, seed=1)
    ones1, ones2 = torch.ones(4, V, V, dtype=F64), torch.ones(2, V, V, dtype=F64)
    k = _graph_k(nl.serial(GRAPH, nl.Aggregate()), x1, x2, ones1, ones2)
    pooled = nl.serial(GRAPH, nl.GlobalAvgPool()).kernel(x1, x2)
    for q in range(V):
        for r in range(V):
            torch.testing.assert_close(k.nngp[:, :, q, r], V * V * pooled.nngp, rtol=1e-13,
                                       atol=0)
            torch.testing.assert_close(k.ntk[:, :, q, r], V * V * pooled.ntk, rtol=1e-13,
                                       atol=0)
    y = nl.Aggregate().build((3, V))(x1, pattern=ones1)
    torch.testing.assert_close(y, x1.sum(2, keepdim=True).expand_as(x1), rtol=1e-14, atol=0)


def _sparse_and_dense(n, V, n_edges, seed):
    g = torch.Generator().manual_seed(seed)
    arcs = torch.randint(1, V, (n, n_edges, 2), generator=g)  # node 0 isolated
    arcs[:, -1] = -1  # padding
    arcs[:, 0] = arcs[:, 1]  # a repeated arc: weight 2
    dense = torch.zeros(n, V, V, dtype=F64)
    for i in range(n):
        for s, r in arcs[i, :-1].tolist():
            dense[i, s, r] += 1
    return arcs, dense


def test_aggregate_sparse_equals_dense():
    V = 6
    x1, x2 = _x(4, 3, V), _x(3, 3, V, seed=1)
    s1, d1 = _sparse_and_dense(4, V, 8, 0)
    s2, d2 = _sparse_and_dense(3, V, 8, 1)
    body = [GRAPH, None, nl.ReLU(), nl.Conv(6, (1,)), None, nl.GlobalAvgPool()]

    def net(impl):
        return nl.serial(*[nl.Aggregate(implementation=impl) if b is None else b
                           for b in body])

    a = _graph_k(net("sparse"), x1, x2, s1, s2)
    b = _graph_k(net("dense"), x1, x2, d1, d2)
    torch.testing.assert_close(a.nngp, b.nngp, rtol=1e-13, atol=0)
    torch.testing.assert_close(a.ntk, b.ntk, rtol=1e-13, atol=0)
    ms, md = net("sparse").build((3, V), seed=3), net("dense").build((3, V), seed=3)
    torch.testing.assert_close(ms(x1, pattern=s1), md(x1, pattern=d1), rtol=1e-13, atol=0)
    # The module is x @ A per example: node 0 (isolated) gets 0.
    y = nl.Aggregate().build((3, V))(x1, pattern=d1)
    torch.testing.assert_close(y, torch.einsum("ncu,nuv->ncv", x1, d1), rtol=1e-15, atol=0)
    assert not y[:, :, 0].any()


def test_aggregate_bad_patterns():
    x = _x(4, 3, 5)
    net = nl.serial(GRAPH, nl.Aggregate())
    with pytest.raises(ValueError, match=r"pattern has shape \(4, 5, 4\)"):
        _graph_k(net, x, None, torch.ones(4, 5, 4, dtype=F64))
    with pytest.raises(ValueError, match="sparse pattern has shape"):
        _graph_k(nl.serial(GRAPH, nl.Aggregate(implementation="sparse")), x, None,
                 torch.zeros(3, 7, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        _graph_k(nl.serial(GRAPH, nl.Aggregate(implementation="sparse")), x, None,
                 torch.full((4, 7, 2), 5, dtype=torch.long))
    with pytest.raises(ValueError, match="implementation"):
        nl.Aggregate(implementation="csr")
    with pytest.raises(ValueError, match="channels first"):
        nl.Aggregate(channel_axis=-1)
    with pytest.raises(ValueError, match="aggregate_axis"):
        nl.Aggregate(aggregate_axis=1)
    with pytest.raises(ValueError, match="fully-connected"):
        nl.serial(nl.Dense(3), nl.Aggregate()).kernel(_x(3, 4))


@pytest.mark.parametrize("impl", ["dense", "sparse"])
def test_graph_network_empirical_ntk_converges(impl):
    """Conv1x1 (Dense per node) → Aggregate → ReLU → Aggregate → GlobalAvgPool → Dense,
    built at growing width: the empirical NTK's relative error falls with slope ≈ −½
    (band [−0.8, −0.3], as in test_conv_finite_width.py; a wrong map levels off)."""
    V, n = 6, 5
    x = _x(n, 3, V, seed=2)
    arcs, dense = _sparse_and_dense(n, V, 9, 4)
    pattern = arcs if impl == "sparse" else dense

    def spec(w):
        return nl.serial(nl.Conv(w, (1,), w_std=1.5, b_std=0.2),
                         nl.Aggregate(implementation=impl), nl.ReLU(),
                         nl.Aggregate(implementation=impl), nl.GlobalAvgPool(),
                         nl.Dense(1, w_std=1.2, b_std=0.1))

    exact = _graph_k(spec(1), x, None, pattern).ntk
    widths, errs = [256, 1024, 4096], []
    for w in widths:
        e = []
        for seed in range(6):
            model = spec(w).build((3, V), seed=seed)
            params = [p for p in model.parameters()]
            out = model(x, pattern=pattern)[:, 0]
            rows = []
            for i in range(n):
                g = torch.autograd.grad(out[i], params, retain_graph=True)
                rows.append(torch.cat([t.reshape(-1) for t in g]))
            J = torch.stack(rows)
            emp = J @ J.T
            e.append(float(torch.linalg.norm(emp - exact) / torch.linalg.norm(exact)))
        errs.append(float(np.sqrt(np.mean(np.square(e)))))
    slope = np.polyfit(np.log(widths), np.log(errs), 1)[0]
    print(f"graph net ({impl}): errors {errs}, slope {slope:.3f}")
    assert -0.8 < slope < -0.3, (errs, slope)
    assert errs[-1] < 0.1, errs


# ---- DotGeneral ---------------------------------------------------------------------
def test_dot_general_lhs_with_free_axes_matches_the_finite_map():
    """lhs free axes come before the input's positions; a permutation lhs flips them, so
    the kernel is the input kernel with positions permuted (exact)."""
    x1, x2 = _x(4, 3, 2, 5), _x(2, 3, 2, 5, seed=1)
    flip = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    layer = nl.DotGeneral(lhs=flip, dimension_numbers=(((1,), (2,)), ((), ())))
    y = layer.build((3, 2, 5))(x1)
    assert y.shape == x1.shape
    torch.testing.assert_close(y, x1.flip(2), rtol=0, atol=0)
    k0 = input_kernel(x1, x2, track_ntk=True, full=True)
    k = nl.serial(nl.Conv(4, (1, 1)), layer).kernel_map(k0)
    ref = nl.Conv(4, (1, 1)).kernel_map(k0)
    torch.testing.assert_close(k.nngp, ref.nngp.flip(2, 4), rtol=1e-15, atol=0)


def test_dot_general_bad_input():
    with pytest.raises(ValueError, match="at most one of lhs and rhs"):
        nl.DotGeneral(lhs=1.0, rhs=2.0)
    with pytest.raises(ValueError, match="batch dimensions"):
        nl.DotGeneral(rhs=torch.ones(2), dimension_numbers=(((2,), (0,)), ((0,), (0,))))
    with pytest.raises(ValueError, match="only spatial axes"):
        nl.serial(nl.Conv(3, (1,)), nl.DotGeneral(
            rhs=torch.ones(3), dimension_numbers=(((1,), (0,)), ((), ())))).kernel(_x(2, 3, 4))


# ---- Gabor, ExpNormalized, Dropout arguments ------------------------------------------
def test_gabor_dual_against_quadrature():
    """E[φ(u)φ(v)] and E[φ'(u)φ'(v)] by 2-D Gauss-Hermite quadrature (an independent
    method), at a few covariances."""
    t, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / w.sum()
    phi = lambda z: np.exp(-z * z) * np.sin(z)  # noqa: E731
    dphi = lambda z: np.exp(-z * z) * (np.cos(z) - 2 * z * np.sin(z))  # noqa: E731
    g = nl.Gabor()
    for v1, c, v2 in [(1.0, 0.3, 0.5), (2.0, -1.1, 0.9), (0.4, 0.4, 0.4)]:
        a = np.sqrt(v1)
        b = c / a
        u = a * t[:, None] + 0 * t[None, :]
        v = b * t[:, None] + np.sqrt(max(v2 - b * b, 0.0)) * t[None, :]
        W = w[:, None] * w[None, :]
        T, Td = g.dual(*(torch.tensor(v, dtype=F64) for v in (v1, c, v2)), True)
        assert abs(float(T) - (W * phi(u) * phi(v)).sum()) < 1e-12
        assert abs(float(Td) - (W * dphi(u) * dphi(v)).sum()) < 1e-12


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"drop probability and must be in \[0, 1\)"):
        nl.Dropout(1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        nl.Dropout(-0.1)
    with pytest.raises(ValueError, match="mode"):
        nl.Dropout(0.1, mode="eval")
    with pytest.raises(ValueError, match="raw inputs"):
        nl.Dropout(0.1).kernel(_x(3, 4))
    with pytest.raises(TypeError, match="gamma"):
        nl.ExpNormalized(gamma="1")
    with pytest.raises(NotImplementedError, match="kernel-only"):
        nl.serial(nl.Dense(3), nl.ExpNormalized()).build(4)


@pytest.mark.parametrize("name", ["dropout_conv_gap_train", "dropout_conv_flatten_train",
                                  "prod_conv_gap", "repeat_conv", "expnorm_conv_gap",
                                  "gabor_conv_gap", "dot_rhs_matrix_new_axis",
                                  "dot_lhs_vector"])
def test_tiles_and_traces_do_not_change_the_kernel(name):
    """The engine's tiles (with their recorded/replayed per-example covariances) give the
    single-tile kernel: Dropout scales the example diagonal in diagonal tiles only."""
    x1 = _x(7, *ARCHS[name]["input"], seed=5)
    x2 = _x(5, *ARCHS[name]["input"], seed=6)
    net = to_ntkit(name)
    for args in ((x1, None), (x1, x2)):
        one = net.kernel(*args, tile=64)
        tiled = net.kernel(*args, tile=2)
        torch.testing.assert_close(tiled.nngp, one.nngp, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(tiled.ntk, one.ntk, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("which", ["dropout", "prod"])
def test_finite_network_nngp_matches(which):
    """One wide finite network with many outputs: f(x)·f(x')/k estimates the NNGP (each
    forward pass draws its own dropout masks, one per example). Predicted error: about
    sqrt(2/k) + O(1/sqrt(w)) ≈ 3-4% per network, ~2% over 4 networks; tolerance 6%. A
    missing 1/(1 - p) on the diagonal would be a 43% error, a missing product rule
    larger still."""
    w = k_out = 2048
    if which == "dropout":
        net = nl.serial(nl.Dense(w, w_std=1.4, b_std=0.1), nl.ReLU(), nl.Dropout(0.3),
                        nl.Dense(k_out, w_std=1.2, b_std=0.1))
    else:
        net = nl.serial(nl.FanOut(2), nl.parallel(
            nl.serial(nl.Dense(w, w_std=1.3, b_std=0.2), nl.ReLU(), nl.Dense(w, w_std=1.2)),
            nl.Dense(w, w_std=0.9, b_std=0.3)), nl.FanInProd(),
            nl.Dense(k_out, w_std=1.0))
    x = _x(5, 4, seed=7)
    exact = net.kernel(x, get="nngp")
    torch.manual_seed(0)  # dropout masks
    est = torch.zeros(5, 5, dtype=F64)
    with torch.no_grad():
        for seed in range(4):
            f = net.build(4, seed=seed)(x)
            est += f @ f.T / k_out / 4
    err = float(torch.linalg.norm(est - exact) / torch.linalg.norm(exact))
    assert err < 0.06, err


def test_aggregate_identical_inputs_with_different_graphs_are_not_identical():
    """Identical inputs (``same`` pairs) stay pinned to their variances only where their
    patterns agree too; a missing pattern on one side is the identity graph."""
    V = 5
    x1 = _x(3, 3, V)
    x2 = x1[[0, 1]].clone()
    _, d1 = _sparse_and_dense(3, V, 8, 0)
    d2 = d1[[0, 1]].clone()
    d2[1] = torch.eye(V, dtype=F64)  # example 1 of x2: same input, another graph
    same = (torch.tensor([0, 1]), torch.tensor([0, 1]))
    k0 = input_kernel(x1, x2, track_ntk=True, full=True, same=same)
    k = nl.serial(GRAPH, nl.Aggregate()).kernel_map(nl.with_pattern(k0, d1, d2))
    assert k.same is not None and k.same[0].tolist() == [0] and k.same[1].tolist() == [0]
    eye = torch.eye(V, dtype=F64)
    a = _graph_k(nl.serial(GRAPH, nl.Aggregate()), x1, x2, d1, None)
    b = _graph_k(nl.serial(GRAPH, nl.Aggregate()), x1, x2, d1, eye.expand(2, V, V))
    torch.testing.assert_close(a.nngp, b.nngp, rtol=1e-15, atol=0)
