"""Differential test: ntkit against neural-tangents 0.6.5 on random architectures.

The architectures are ``generator.generate(seed, nt=True)`` for the seeds stored in
tests/fixtures/nt_random.npz (made by tests/fixtures/make_nt_random.py in the reference
venv). Tolerance, fixed before measuring: 1e-10 relative to the conditioning scale
√(K_ii K_jj) off the degenerate pairs (well-conditioned float64 sums on both sides), and
1e-7 on them (duplicate, scaled, antipodal and zero rows: neural-tangents takes the
arc-cosine of a rounded correlation there, an O(√ε) error), via
`kernel_compare.assert_kernels_close`.

Where the two disagree beyond that, the case is listed in ``NT_WRONG`` (neural-tangents
is wrong, shown against a third method in ``test_nt_wrong_cases_against_monte_carlo``)
with its reason; an ntkit bug would be fixed in ntkit and the seed kept here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from generator import count_layers, generate, to_ntkit
from kernel_compare import assert_kernels_close

FIXTURE = Path(__file__).parents[1] / "fixtures" / "nt_random.npz"
TOL = 1e-10
DEGENERATE_TOL = 1e-7

# seed -> why neural-tangents' value is wrong (filled from measurements, see module doc)
NT_WRONG: dict[int, str] = {}


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as data:
        return dict(data)


def _seeds(ref) -> list[int]:
    """Seeds with a neural-tangents value (it refuses a few: see test_refusals)."""
    return sorted({int(k.split("/")[0]) for k in ref if k.endswith("/arch")
                   and f"{k.split('/')[0]}/11/nngp" in ref})


def degenerate_pairs(x1, x2) -> np.ndarray:
    """Pairs of parallel/antiparallel rows, or with a zero row (correlation ±1 or 0/0)."""
    a = np.asarray(x1, np.float64).reshape(len(x1), -1)
    b = np.asarray(x2, np.float64).reshape(len(x2), -1)
    norms = np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))
    cos = (a @ b.T) / np.maximum(norms, 1e-300)
    return (np.abs(np.abs(cos) - 1) < 1e-12) | (norms == 0)


def compare(got: np.ndarray, expected: np.ndarray, degenerate: np.ndarray, name: str,
            var1=None, var2=None) -> float:
    """Both tolerances; returns the largest error relative to the scale, off degenerate."""
    kw = {} if var1 is None else {"var1": var1, "var2": var2}
    deg = degenerate.reshape(degenerate.shape + (1,) * (got.ndim - 2))
    deg = np.broadcast_to(deg, got.shape)
    off = np.where(deg, expected, got)
    assert_kernels_close(off, expected, name=name + " (off degenerate pairs)", rtol=TOL,
                         ulps=0.0, **kw)
    assert_kernels_close(got, expected, name=name + " (degenerate pairs)",
                         rtol=DEGENERATE_TOL, ulps=0.0, **kw)
    from kernel_compare import kernel_tolerance

    scale = kernel_tolerance(expected, **kw)["scale"]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scale > 0, np.abs(off - expected) / scale, 0.0)
    return float(rel.max(initial=0.0))


def test_fixture_is_big_and_the_generator_still_draws_it(ref):
    seeds = _seeds(ref)
    assert len(seeds) >= 200
    for seed in sorted({int(k.split("/")[0]) for k in ref}):
        arch = generate(seed, nt=True)
        assert json.dumps(arch, sort_keys=True) == str(ref[f"{seed}/arch"]), seed


def test_matches_neural_tangents(ref):
    """All stored architectures, both pairs (x1, None) and (x1, x2), NNGP and NTK."""
    worst, failures, checked, layers, nt_nan = 0.0, [], 0, 0, 0
    for seed in _seeds(ref):
        if seed in NT_WRONG:
            continue
        arch = json.loads(str(ref[f"{seed}/arch"]))
        net = to_ntkit(arch)
        layers += count_layers(arch)
        x1 = ref[f"{seed}/x1"]
        for pair in ("11", "12"):
            x2 = x1 if pair == "11" else ref[f"{seed}/x2"]
            try:
                k = net.kernel(torch.from_numpy(x1),
                               None if pair == "11" else torch.from_numpy(x2),
                               get=("nngp", "ntk"))
            except (ValueError, FloatingPointError) as e:
                failures.append(f"seed {seed} {pair}: ntkit raised {e}")
                continue
            degenerate = degenerate_pairs(x1, x2)
            for field in ("nngp", "ntk"):
                got = getattr(k, field)
                assert got.dtype == torch.float64 and torch.isfinite(got).all(), \
                    (seed, pair, field)
                expected = ref[f"{seed}/{pair}/{field}"].copy()
                # neural-tangents gives NaN at some zero/collinear rows (0/0 in its
                # arccos, 1/0 in its LayerNorm): ntkit is finite there (asserted above);
                # those entries are not compared, and counted
                nan = ~np.isfinite(expected)
                nt_nan += int(nan.sum())
                expected[nan] = got.numpy()[nan]
                try:
                    worst = max(worst, compare(got.numpy(), expected, degenerate,
                                               f"seed {seed} {pair} {field}"))
                    checked += 1
                except AssertionError as e:
                    failures.append(f"seed {seed}: {e}")
    print(f"neural-tangents differential: {checked} kernels, {layers} layers, "
          f"worst relative error off degenerate pairs {worst:.2e}; neural-tangents "
          f"non-finite entries skipped: {nt_nan}")
    assert not failures, "\n".join(failures[:10]) + f"\n({len(failures)} in all)"


def test_refusals(ref):
    """Where neural-tangents refuses an architecture, ntkit computes it (finite, PSD):
    neural-tangents' LayerNorm needs Gaussian inputs by its own bookkeeping (a residual
    sum of an activation and a fresh layer is not, to it), ntkit's `LayerNorm` rule is
    the same test on the sum's flags, which are Gaussian-or-not per stream."""
    refused = sorted(int(k.split("/")[0]) for k in ref if k.endswith("/error"))
    assert len(refused) <= 5, refused
    for seed in refused:
        arch = json.loads(str(ref[f"{seed}/arch"]))
        x1 = ref[f"{seed}/x1"]
        try:
            k = to_ntkit(arch).kernel(torch.from_numpy(x1), get="ntk").numpy()
        except ValueError as e:  # refused too, with a clear message
            assert "LayerNorm" in str(e), (seed, e)
            continue
        assert np.isfinite(k).all()
        assert np.linalg.eigvalsh(k).min() >= -1e-10 * np.abs(k).max()
