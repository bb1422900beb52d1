"""GlobalSelfAttention kernels against neural-tangents 0.6.5 (an independent JAX
implementation), on the architectures of attention_archs.py; the fixture is made by
tests/fixtures/make_nt_attention.py from the same data (inputs channels first here,
transposed there)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from attention_archs import ARCHS, to_ntkit
from conv_archs import degenerate_pairs

FIXTURE = Path(__file__).parents[1] / "fixtures" / "nt_attention.npz"
# Off degenerate pairs both libraries evaluate the same well-conditioned float64 formulas
# (softmax, matrix products over at most 12 positions, arc-cosines at |corr| < 1): they
# agree to accumulated rounding, far below 1e-10 relative to the largest entry.
TOL = 1e-10
# Degenerate pairs (duplicates, scaled, antipodal, zero input, the diagonal): the
# arc-cosine of a ReLU after attention is ill-conditioned at correlation ±1 (an O(eps)
# error becomes O(sqrt(eps))), as in test_conv_reference.py.
DEGENERATE_TOL = 1e-7


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as data:
        return dict(data)


def test_fixture_covers_every_architecture(ref):
    assert {key.split("/")[0] for key in ref} == set(ARCHS) | {"masked"}
    assert len(ARCHS) >= 15


@pytest.mark.parametrize("name", sorted(ARCHS))
@pytest.mark.parametrize("pair", ["11", "12"])
def test_matches_neural_tangents(ref, name, pair):
    x1 = ref[f"{name}/x1"]
    x2 = x1 if pair == "11" else ref[f"{name}/x2"]
    k = to_ntkit(name).kernel(torch.from_numpy(x1),
                              None if pair == "11" else torch.from_numpy(x2),
                              get=("nngp", "ntk"))
    deg = degenerate_pairs(x1, x2)
    for field in ("nngp", "ntk"):
        got, want = getattr(k, field).numpy(), ref[f"{name}/{pair}/{field}"]
        assert got.shape == want.shape and np.isfinite(got).all()
        scale = np.abs(want).max()
        err = np.abs(got - want)[~deg].max() / scale
        assert err < TOL, (name, pair, field, err)
        err = np.abs(got - want)[deg].max() / scale
        assert err < DEGENERATE_TOL, (name, pair, field, "degenerate", err)


@pytest.mark.parametrize("name", ["softmax_1d", "identity_sqrt_concat_val",
                                  "softmax_2d_sum_decay_val", "two_attention_layers"])
def test_tiles_and_x2_copy_match(ref, name):
    """Several tiles (the engine replays each example's covariance chain into them, and
    attention reads its full covariances back from that trace) and x2 given as a copy of
    x1 give the same kernel as one tile."""
    x1 = torch.from_numpy(ref[f"{name}/x1"])
    x2 = torch.from_numpy(ref[f"{name}/x2"])
    net = to_ntkit(name)
    whole = net.kernel(x1, x2, get="ntk")
    tiled = net.kernel(x1, x2, get="ntk", tile=2)
    torch.testing.assert_close(tiled, whole, rtol=1e-12, atol=0)
    sym = net.kernel(x1, None, get="ntk", tile=2)
    np.testing.assert_allclose(sym.numpy(), ref[f"{name}/11/ntk"], rtol=0,
                               atol=1e-7 * np.abs(ref[f"{name}/11/ntk"]).max())
