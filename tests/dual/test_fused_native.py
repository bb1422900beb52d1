"""The C kernels of the default fused backend (ntkit.dual.native): every layout the
engine hands them (broadcast vectors, strided views, transposed or 3-D covariances),
the threaded split, the eager fallback when the library cannot be built, and the
on-disk cache (a second process loads instead of building)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import ntkit.dual as nd
from ntkit.dual import fused, native

ROOT = Path(__file__).resolve().parents[2]

try:
    native.library()
except RuntimeError as exc:  # no C compiler or no libmvec here: the fallback is tested
    pytest.skip(f"no C kernels on this machine ({exc})", allow_module_level=True)


@pytest.fixture
def fuse_all():
    old = fused.set_min_numel(1)
    with fused.enabled(True):
        yield
    fused.set_min_numel(old)


def _kernel(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g, dtype=torch.float64)
    k = x @ x.T / 8
    return 0.5 * (k + k.T)


def _both(dual, v1, c, v2):
    with fused.enabled(False):
        want = dual(v1, c.clone(), v2, True)
    before = fused.stats()["calls"]
    got = dual(v1, c, v2, True)
    assert fused.stats()["calls"] == before + 1  # the C kernel ran
    return got, want


def _assert_close(got, want):
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert float((a - b).abs().max()) <= 1e-13 * float(b.abs().max())


LAYOUTS = {
    # name: (var1, cov, var2) from a (24, 24) kernel k and its diagonal v
    "2d": lambda k, v: (v[:10, None], k[:10, 10:], v[None, 10:]),
    "transposed cov": lambda k, v: (v[:, None], k.T, v[None, :]),
    "strided var views": lambda k, v: (k.diagonal()[:, None], k, k.diagonal()[None, :]),
    "scalar variances": lambda k, v: (v[3], k[3, :], v[5]),
    "3-d (examples, positions)": lambda k, v: (
        v.reshape(4, 6)[:, :, None], k[:, :6].reshape(4, 6, 6), v[None, None, :6]),
    "full 4-d": lambda k, v: (
        v.reshape(2, 1, 12, 1), k[:2 * 12, :12].reshape(2, 1, 12, 12), v[None, None, None, :12]),
    "same-shape vectors": lambda k, v: (v, k[0], v.flip(0)),
    "column slice": lambda k, v: (v[:, None], k[:, ::2], v[None, ::2]),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_matches_eager(layout, fuse_all):
    k = _kernel(24)
    v1, c, v2 = LAYOUTS[layout](k, k.diagonal().clone())
    for dual in (nd.relu_dual, lambda *a: nd.erf_dual(1.0, 0.8, 0.1, *a),
                 lambda *a: nd.sin_dual(1.2, 0.9, 0.4, *a)):
        _assert_close(*_both(dual, v1, c, v2))


def test_zero_variance_rules_match_eager(fuse_all):
    # A zero example: the θ = π convention, sign(0) = 0, and the LeakyReLU's
    # E[φ'(u)φ'(v)] with φ'(0) = a at zero variance.
    k = _kernel(12)
    k[3], k[:, 3] = 0.0, 0.0
    v = k.diagonal().clone()
    for dual in (nd.relu_dual, nd.sign_dual,
                 lambda *a: nd.abrelu_dual(0.2, 1.0, *a, 0.2),
                 lambda *a: nd.abrelu_dual(-1.0, 1.0, *a, 0.0)):
        got, want = _both(dual, v[:, None], k.clone(), v[None, :])
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a[3], b[3]) and torch.equal(a[:, 3], b[:, 3])
        _assert_close(got, want)


def test_gaussian_outside_its_domain_is_infinite_as_eager(fuse_all):
    k = _kernel(10)
    v = k.diagonal().clone()
    got, want = _both(lambda *a: nd.gaussian_dual(1.0, 0.4, *a), v[:, None], k, v[None, :])
    for a, b in zip(got, want, strict=True):
        inf = torch.isinf(b)
        assert inf.any() and torch.equal(a[inf], b[inf])
        assert float((a - b)[~inf].abs().max()) <= 1e-13 * float(b[~inf].abs().max())


def test_threaded_split_is_bitwise_the_single_threaded_result(fuse_all):
    # From the main thread with several intra-op threads, rows are split over a pool;
    # each entry is computed by the same code either way.
    k = _kernel(300)
    v = k.diagonal().clone()
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = nd.relu_dual(v[:, None], k, v[None, :], True)
        torch.set_num_threads(2)
        two = nd.relu_dual(v[:, None], k, v[None, :], True)
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


def test_failed_build_warns_once_and_runs_eager(fuse_all, tmp_path, monkeypatch):
    monkeypatch.setenv("NTKIT_CACHE_DIR", str(tmp_path))  # empty: a build is needed
    old_cc = native.set_compiler(str(tmp_path / "no-such-compiler"))
    old_backend = fused.set_backend(None)  # forget earlier failures and warnings
    try:
        k = _kernel(20)
        v = k.diagonal().clone()
        with fused.enabled(False):
            want = nd.erf_dual(1.0, 1.0, 0.0, v[:, None], k, v[None, :], True)
        before = fused.stats()["fallbacks"]
        with pytest.warns(RuntimeWarning, match="running the C compiler failed"):
            got = nd.erf_dual(1.0, 1.0, 0.0, v[:, None], k, v[None, :], True)
        assert fused.stats()["fallbacks"] == before + 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no second warning: eager from now on
            again = nd.relu_dual(v[:, None], k, v[None, :], True)
        with fused.enabled(False):
            relu = nd.relu_dual(v[:, None], k, v[None, :], True)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(again, relu, strict=True))
    finally:
        native.set_compiler(old_cc)
        fused.set_backend(old_backend)


def test_cache_directory_is_keyed_and_moved_by_the_environment(tmp_path, monkeypatch):
    here = native.cache_dir()
    assert os.path.basename(here).startswith("native-")
    monkeypatch.setenv("NTKIT_CACHE_DIR", str(tmp_path))
    assert native.cache_dir() == os.path.join(tmp_path, os.path.basename(here))


SECOND_PROCESS = """
import torch, ntkit.dual as nd
from ntkit.dual import fused
fused.set_min_numel(1)
v = torch.linspace(0.5, 2.0, 50, dtype=torch.float64)
c = torch.outer(v, v).sqrt() * 0.3
nd.gelu_dual(v[:, None], c, v[None, :], True)
nd.relu_dual(v[:, None], c, v[None, :], True)
s = fused.stats()
print(s["calls"], s["compiles"], s["cache_hits"], s["cache_misses"])
"""


def test_second_process_loads_instead_of_building(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NTKIT_CACHE_DIR": str(tmp_path)}
    env.pop("NTKIT_FUSED", None)  # the default: on
    runs = [subprocess.run([sys.executable, "-c", SECOND_PROCESS], capture_output=True,
                           text=True, env=env, check=True) for _ in range(2)]
    (calls1, comp1, hits1, miss1), (calls2, comp2, hits2, miss2) = [
        [int(v) for v in r.stdout.split()] for r in runs]
    assert calls1 == calls2 == 2
    assert (comp1, hits1, miss1) == (1, 0, 1)  # cold: built once for both activations
    assert (comp2, hits2, miss2) == (0, 1, 0)  # warm: loaded, nothing compiled
    assert "compiling fused dual kernels" in runs[0].stderr  # the one-line message
    assert "compiling" not in runs[1].stderr


def test_elementwise_floor_is_atan2_of_sqrt():
    x = torch.rand(1000, dtype=torch.float64) + 0.1
    y = torch.randn(1000, dtype=torch.float64)
    out = native.elementwise_floor(x, y, torch.empty_like(x))
    want = torch.tensor([math.atan2(math.sqrt(a), b) for a, b in zip(x.tolist(), y.tolist(),
                                                                   strict=True)],
                        dtype=torch.float64)
    assert float((out - want).abs().max()) <= 4 * torch.finfo(torch.float64).eps * math.pi
    with pytest.raises(ValueError, match="out"):
        native.elementwise_floor(x, y, torch.empty(3, dtype=torch.float64))
