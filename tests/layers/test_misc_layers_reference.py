"""Dropout, FanInProd, repeat, Aggregate, DotGeneral, ExpNormalized and Gabor against
neural-tangents 0.6.5 (an independent implementation in JAX).

The architectures are data in misc_archs.py; the fixture is made from the same data by
tests/fixtures/make_nt_misclayers.py in the reference environment (inputs stored channels
first, transposed there). Graph networks get their patterns through the Kernel
(`with_pattern`), the others go through ``net.kernel``.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from conv_archs import degenerate_pairs
from misc_archs import ARCHS, to_ntkit

from ntkit.kernel import Storage, input_kernel
from ntkit.layers import with_pattern

FIXTURE = Path(__file__).parents[1] / "fixtures" / "nt_misclayers.npz"

# Off degenerate pairs both libraries evaluate well-conditioned float64 formulas: they
# agree to accumulated rounding, 1e-10 relative to the largest reference entry. On the
# degenerate pairs (duplicates, scaled/antipodal copies, the diagonal, the zero input)
# the arc-cosine is ill-conditioned (O(eps) -> O(sqrt(eps))) and neural-tangents takes
# arccos there: sqrt(eps)-level agreement, as in test_conv_reference.py.
TOL = 1e-10
DEGENERATE_TOL = 1e-7


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as data:
        return dict(data)


def test_fixture_covers_every_architecture(ref):
    stored = {key.split("/")[0] for key in ref}
    assert stored == set(ARCHS)
    assert len(ARCHS) >= 15
    for name, arch in ARCHS.items():
        x1 = ref[f"{name}/x1"]
        assert x1.shape[1:] == tuple(arch["input"]), name
        assert ("pattern" in arch) == (f"{name}/p1" in ref), name


def _kernel(name, x1, x2, p1, p2):
    net = to_ntkit(name)
    t1 = torch.from_numpy(x1)
    t2 = None if x2 is None else torch.from_numpy(x2)
    if p1 is None:
        return net.kernel(t1, t2, get=("nngp", "ntk"))
    full = net.requires_full(Storage()).any_full
    k0 = input_kernel(t1, t2, track_ntk=True, full=full)
    k = net.kernel_map(with_pattern(k0, torch.from_numpy(p1),
                                    None if p2 is None else torch.from_numpy(p2)))
    return k


def _compare(name, got, expected, degenerate, pair, field):
    assert got.shape == expected.shape, (name, pair, field, got.shape)
    assert np.isfinite(got).all(), (name, pair, field)
    scale = np.abs(expected).max()
    err = np.abs(got[~degenerate] - expected[~degenerate]).max(initial=0.0) / scale
    assert err < TOL, (name, pair, field, err)
    err = np.abs(got[degenerate] - expected[degenerate]).max(initial=0.0) / scale
    assert err < DEGENERATE_TOL, (name, pair, field, "degenerate", err)


@pytest.mark.parametrize("name", sorted(ARCHS))
@pytest.mark.parametrize("pair", ["11", "12"])
def test_matches_neural_tangents(ref, name, pair):
    x1 = ref[f"{name}/x1"]
    x2 = None if pair == "11" else ref[f"{name}/x2"]
    p1, p2 = ref.get(f"{name}/p1"), ref.get(f"{name}/p2")
    k = _kernel(name, x1, x2, p1, None if pair == "11" else p2)
    degenerate = degenerate_pairs(x1, x1 if x2 is None else x2)
    for field in ("nngp", "ntk"):
        got = getattr(k, field)
        assert got.dtype == torch.float64
        _compare(name, got.numpy(), ref[f"{name}/{pair}/{field}"], degenerate, pair, field)


@pytest.mark.parametrize("name", sorted(n for n in ARCHS if "pattern" not in ARCHS[n]))
def test_x2_given_equal_to_x1(ref, name):
    """kernel(x1, x1) is the x2=None call (Dropout scales the same diagonal)."""
    x1 = ref[f"{name}/x1"]
    k = to_ntkit(name).kernel(torch.from_numpy(x1), torch.from_numpy(x1.copy()),
                              get=("nngp", "ntk"))
    degenerate = degenerate_pairs(x1, x1)
    for field in ("nngp", "ntk"):
        _compare(name, getattr(k, field).numpy(), ref[f"{name}/11/{field}"], degenerate,
                 "11-given", field)
