"""trace_axes / diagonal_axes: the flat shorthand, projections, symmetry and bad input.

Agreement with neural-tangents is in test_output_axes_nt.py.
"""

import pytest
import torch
from torch import nn

from ntkit.empirical import empirical_nngp, empirical_ntk


@pytest.fixture
def conv():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 6, 3, padding=1), nn.Tanh(), nn.Conv1d(6, 3, 2)).double()


@pytest.fixture
def xs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 2, 7, generator=g, dtype=torch.float64), \
        torch.randn(3, 2, 7, generator=g, dtype=torch.float64)


def test_flat_forms_are_the_shorthand_bitwise(xs):
    """Axes that amount to a flat form give exactly the trace_outputs numbers."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 9), nn.Tanh(), nn.Linear(9, 3)).double()
    x1, x2 = torch.randn(6, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    for method in ("jacobian", "ntk_vp", "structured"):
        traced = empirical_ntk(mlp, x1, x2, method=method)
        assert torch.equal(empirical_ntk(mlp, x1, x2, method=method, trace_axes=(-1,)), traced)
        assert torch.equal(empirical_ntk(mlp, x1, x2, method=method, trace_outputs=True), traced)
        full = empirical_ntk(mlp, x1, x2, method=method, trace_outputs=False)
        assert torch.equal(empirical_ntk(mlp, x1, x2, method=method, trace_axes=()), full)
    assert torch.equal(empirical_nngp(mlp, x1, x2, trace_axes=(1,)), empirical_nngp(mlp, x1, x2))


def test_default_traces_every_output_axis(conv, xs):
    x1, x2 = xs
    legacy = empirical_ntk(conv, x1, x2, method="jacobian")
    assert legacy.shape == (5, 3)
    assert torch.equal(empirical_ntk(conv, x1, x2, method="jacobian", trace_axes=(1, 2)), legacy)
    # (-1,) on (n, C, L) outputs keeps the channel pairs; their trace / C is the flat trace
    per_channel = empirical_ntk(conv, x1, x2, method="jacobian", trace_axes=(-1,))
    assert per_channel.shape == (5, 3, 3, 3)
    torch.testing.assert_close(torch.einsum("ijcc->ij", per_channel) / 3, legacy,
                               rtol=1e-12, atol=0)


def test_symmetric_path_mirrors_blocks(conv, xs):
    """x2=None computes only upper tile pairs: the mirrored ones must equal a direct call."""
    x1, _ = xs
    for trace, diag in [((), ()), ((), (1,)), ((2,), ()), ((1,), (2,))]:
        for method in ("jacobian", "structured"):
            sym = empirical_ntk(conv, x1, method=method, trace_axes=trace, diagonal_axes=diag,
                                batch_size=2)
            direct = empirical_ntk(conv, x1, x1.clone(), method=method, trace_axes=trace,
                                   diagonal_axes=diag, batch_size=2)
            torch.testing.assert_close(sym, direct, rtol=1e-12, atol=1e-14)


def test_projected_reduces_like_the_flat_projection(conv, xs):
    """The projected estimate with axes = the same projection's flat block, reduced."""
    x1, x2 = xs
    flat = empirical_ntk(conv, x1, x2, projection_dim=64, seed=3, trace_outputs=False)
    full = flat.reshape(5, 3, 3, 6, 3, 6)
    got = empirical_ntk(conv, x1, x2, projection_dim=64, seed=3, trace_axes=(),
                        diagonal_axes=(1,))
    want = torch.stack([full[:, :, c, :, c, :] for c in range(3)], 2)   # (n1, n2, C, L, L)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    got = empirical_ntk(conv, x1, x2, projection_dim=64, seed=3, trace_axes=(-1,))
    want = torch.einsum("ijalbl->ijab", full) / 6
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kw,match", [
    (dict(trace_axes=(0,)), "same number of examples"),
    (dict(diagonal_axes=(-3,)), "same number of examples"),
    (dict(trace_axes=(3,)), "out of range"),
    (dict(trace_axes=(1,), diagonal_axes=(1,)), "both trace_axes and diagonal_axes"),
    (dict(trace_axes=(-1,), trace_outputs=False), "not both"),
])
def test_bad_axes(conv, xs, kw, match):
    x1, x2 = xs
    with pytest.raises(ValueError, match=match):
        empirical_ntk(conv, x1, x2, **kw)
    with pytest.raises(ValueError, match=match):
        empirical_nngp(conv, x1, x2, **kw)


def test_batch_axis_is_the_diagonal_of_the_full_kernel(conv, xs):
    """diagonal_axes/trace_axes with axis 0 = the (i, i) pairs of the kernel without it."""
    x1, _ = xs
    x2 = x1.flip(0) + 0.1
    for method in ("jacobian", "ntk_vp", "structured"):
        full = empirical_ntk(conv, x1, x2, method=method, trace_axes=(), diagonal_axes=(1,))
        pairs = torch.stack([full[i, i] for i in range(5)])            # (n, C, L, L)
        got = empirical_ntk(conv, x1, x2, method=method, trace_axes=(), diagonal_axes=(0, 1),
                            batch_size=2)
        torch.testing.assert_close(got, pairs, rtol=1e-12, atol=1e-14)
        got = empirical_ntk(conv, x1, x2, method=method, trace_axes=(0,), diagonal_axes=(1,),
                            batch_size=2)
        torch.testing.assert_close(got, pairs.mean(0), rtol=1e-12, atol=1e-14)
    got = empirical_ntk(conv, x1, projection_dim=32, trace_axes=(0,), diagonal_axes=(1,))
    full = empirical_ntk(conv, x1, projection_dim=32, trace_axes=(), diagonal_axes=(1,))
    torch.testing.assert_close(got, torch.stack([full[i, i] for i in range(5)]).mean(0),
                               rtol=1e-12, atol=1e-14)


def test_axes_types_and_tuple_outputs(conv, xs):
    x1, x2 = xs
    with pytest.raises(TypeError, match="trace_axes"):
        empirical_ntk(conv, x1, x2, trace_axes="-1")

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2).double()

        def forward(self, x):
            return self.lin(x), self.lin(x) ** 2

    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="returns one tensor"):
        empirical_ntk(Two(), x, trace_axes=(-1,))
    assert empirical_ntk(Two(), x).shape == (4, 4)   # the flat shorthand still applies
