"""ntkit's convolutional kernels (Conv, AvgPool, GlobalAvgPool, Flatten, LayerNorm, residual
blocks) against neural-tangents 0.6.5, an independent implementation in JAX.

The architectures are data in conv_archs.py; the fixture is made from the same data by
tests/fixtures/make_nt_conv_kernels.py in the reference environment, with the inputs
stored channels first (ntkit's layout) and transposed there for neural-tangents.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from conv_archs import ARCHS, degenerate_pairs, to_ntkit

FIXTURE = Path(__file__).parents[1] / "fixtures" / "nt_conv_kernels.npz"
if not FIXTURE.exists():
    pytest.skip(f"{FIXTURE} missing: run tests/fixtures/make_nt_conv_kernels.py with the "
                "neural-tangents venv (benchmarks/setup_reference.sh)", allow_module_level=True)

# Off the degenerate pairs both libraries evaluate well-conditioned float64 formulas, so
# they agree to accumulated rounding: 1e-10 relative to the largest reference entry (the
# fixture's entries are O(1)–O(100), sums of at most a few thousand position pairs).
TOL = 1e-10
# Degenerate pairs (duplicate, scaled or antipodal images, the diagonal, the zero image):
# every position pair (p, p) has correlation ±1, where an arc-cosine kernel is
# ill-conditioned (an O(eps) error in v1·v2 − c² becomes O(sqrt(eps)) ≈ 1e-8 in the
# angle). neural-tangents takes arccos there; ntkit keeps correlation-1 pairs exact (see
# tests/layers/test_edge_cases.py). The NTK's derivative factor (π − θ)/(2π) moves by
# ~1e-8/(2π) per layer, so the comparison there is at sqrt(eps) level, as in
# tests/layers/test_reference.py.
DEGENERATE_TOL = 1e-7


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as data:
        return dict(data)


def test_fixture_covers_every_architecture(ref):
    """A stale fixture (an architecture added or its input changed) fails here."""
    stored = {key.split("/")[0] for key in ref}
    assert stored == set(ARCHS)
    for name, arch in ARCHS.items():
        x1, x2 = ref[f"{name}/x1"], ref[f"{name}/x2"]
        assert x1.shape[1:] == x2.shape[1:] == tuple(arch["input"]), name
        n1, n2 = len(x1), len(x2)
        for field in ("nngp", "ntk"):
            assert ref[f"{name}/11/{field}"].shape == (n1, n1)
            assert ref[f"{name}/12/{field}"].shape == (n1, n2)


def test_fixture_has_special_images(ref):
    """x1 holds a zero image, a duplicate, a scaled and an antipodal copy (unless NT gave
    NaN for a row, which the fixture script records in NAME/dropped)."""
    for name in ARCHS:
        x1 = ref[f"{name}/x1"].reshape(len(ref[f"{name}/x1"]), -1)
        if len(ref[f"{name}/dropped"]):
            continue
        assert not x1[2].any(), name
        np.testing.assert_array_equal(x1[3], x1[0])
        np.testing.assert_allclose(x1[4], 3.0 * x1[1], rtol=1e-15)
        np.testing.assert_array_equal(x1[5], -x1[0])


def _compare(name, got, expected, degenerate, pair, field):
    assert got.shape == expected.shape, (name, pair, field, got.shape)
    assert np.isfinite(got).all(), (name, pair, field)
    scale = np.abs(expected).max()
    ok = ~degenerate
    err = np.abs(got[ok] - expected[ok]).max(initial=0.0) / scale
    assert err < TOL, (name, pair, field, err)
    err = np.abs(got[degenerate] - expected[degenerate]).max(initial=0.0) / scale
    assert err < DEGENERATE_TOL, (name, pair, field, "degenerate", err)


@pytest.mark.parametrize("name", sorted(ARCHS))
@pytest.mark.parametrize("pair", ["11", "12"])
def test_matches_neural_tangents(ref, name, pair):
    x1 = ref[f"{name}/x1"]
    x2 = x1 if pair == "11" else ref[f"{name}/x2"]
    net = to_ntkit(name)
    k = net.kernel(torch.from_numpy(x1), None if pair == "11" else torch.from_numpy(x2),
                   get=("nngp", "ntk"))
    degenerate = degenerate_pairs(x1, x2)
    for field in ("nngp", "ntk"):
        got = getattr(k, field)
        assert got.dtype == torch.float64
        _compare(name, got.numpy(), ref[f"{name}/{pair}/{field}"], degenerate, pair, field)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_x2_given_equal_to_x1(ref, name):
    """kernel(x1, x1) (two inputs, no symmetry shortcut) matches the same reference."""
    x1 = ref[f"{name}/x1"]
    k = to_ntkit(name).kernel(torch.from_numpy(x1), torch.from_numpy(x1.copy()),
                              get=("nngp", "ntk"))
    degenerate = degenerate_pairs(x1, x1)
    for field in ("nngp", "ntk"):
        _compare(name, getattr(k, field).numpy(), ref[f"{name}/11/{field}"], degenerate,
                 "11-given", field)
