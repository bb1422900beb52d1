"""The convolution family (ConvTranspose, ConvLocal, 3-D Conv, SumPool, GlobalSumPool,
AvgPool(normalize_edges), ImageResize, Index) against neural-tangents 0.6.5.

Architectures: tests/layers/conv_family_archs.py; fixture: tests/fixtures/
make_nt_convfamily.py (inputs stored channels first, transposed there). Tolerances as
in test_conv_reference.py: 1e-10 relative to the largest entry off the degenerate pairs
(well-conditioned float64 sums), 1e-7 on them (neural-tangents' arccos at correlation
±1 carries an O(√eps) error).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from conv_archs import degenerate_pairs
from conv_family_archs import ARCHS, to_ntkit

FIXTURE = Path(__file__).parents[1] / "fixtures" / "nt_convfamily.npz"
TOL = 1e-10
DEGENERATE_TOL = 1e-7
RIGHT = sorted(n for n, a in ARCHS.items() if not a.get("nt_wrong"))
WRONG = sorted(n for n, a in ARCHS.items() if a.get("nt_wrong"))


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as data:
        return dict(data)


def test_fixture_covers_every_architecture_with_special_rows(ref):
    assert {key.split("/")[0] for key in ref} == set(ARCHS)
    for name, arch in ARCHS.items():
        x1, x2 = ref[f"{name}/x1"], ref[f"{name}/x2"]
        assert x1.shape[1:] == x2.shape[1:] == tuple(arch["input"]), name
        assert len(x1) == 6 and len(x2) == 4, name
        assert not x1[2].any(), name
        np.testing.assert_array_equal(x1[3], x1[0])
        np.testing.assert_allclose(x1[4], 3.0 * x1[1], rtol=1e-15)
        np.testing.assert_array_equal(x1[5], -x1[0])
        for pair, n2 in (("11", 6), ("12", 4)):
            for field in ("nngp", "ntk"):
                assert ref[f"{name}/{pair}/{field}"].shape == (6, n2), name


def _errors(got, expected, degenerate):
    scale = np.abs(expected).max()
    off = np.abs(got[~degenerate] - expected[~degenerate]).max(initial=0.0) / scale
    on = np.abs(got[degenerate] - expected[degenerate]).max(initial=0.0) / scale
    return off, on


@pytest.mark.parametrize("name", RIGHT)
@pytest.mark.parametrize("pair", ["11", "12"])
def test_matches_neural_tangents(ref, name, pair):
    x1 = ref[f"{name}/x1"]
    x2 = x1 if pair == "11" else ref[f"{name}/x2"]
    k = to_ntkit(name).kernel(torch.from_numpy(x1),
                              None if pair == "11" else torch.from_numpy(x2),
                              get=("nngp", "ntk"))
    degenerate = degenerate_pairs(x1, x2)
    for field in ("nngp", "ntk"):
        got = getattr(k, field)
        assert got.dtype == torch.float64 and torch.isfinite(got).all()
        off, on = _errors(got.numpy(), ref[f"{name}/{pair}/{field}"], degenerate)
        assert off < TOL, (name, pair, field, off)
        assert on < DEGENERATE_TOL, (name, pair, field, on)


@pytest.mark.parametrize("name", WRONG)
def test_neural_tangents_is_wrong_here(ref, name):
    """Where neural-tangents keeps its kernel's spatial axes reversed (after an odd number
    of shared-weight convolutions) its ImageResize and ConvLocal act on the swapped axes:
    ntkit differs from it by far more than rounding. That ntkit is the right one is
    shown against the finite network in test_conv_family_finite_width.py."""
    x1 = ref[f"{name}/x1"]
    k = to_ntkit(name).kernel(torch.from_numpy(x1), get="nngp").numpy()
    expected = ref[f"{name}/11/nngp"]
    rel = np.linalg.norm(k - expected) / np.linalg.norm(expected)
    assert rel > 1e-2, (name, rel)


def test_enough_architectures():
    assert len(RIGHT) >= 15 and len(WRONG) == 3
