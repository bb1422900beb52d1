"""Fused duals (ntkit.dual.fused): same values as eager, on by default, no recompilation
across n, depth or networks, eager fallback on a failed build or compilation, and
on-disk caches keyed by the CPU. The C kernels' own layouts and cache:
test_fused_native.py."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import ntkit.dual as nd
from ntkit import layers as nl
from ntkit.dual import fused, native

ROOT = Path(__file__).resolve().parents[2]

# (name, dual(var1, cov, var2, need_dot)) for every closed-form family.
DUALS = [
    ("relu", nd.relu_dual),
    ("abs", lambda v1, c, v2, d: nd.abrelu_dual(-1.0, 1.0, v1, c, v2, d)),
    ("leaky", lambda v1, c, v2, d: nd.abrelu_dual(0.1, 1.0, v1, c, v2, d, 0.1)),
    ("sign", nd.sign_dual),
    ("relu^2", lambda v1, c, v2, d: nd.rectified_monomial_dual(2, v1, c, v2, d)),
    ("erf", lambda v1, c, v2, d: nd.erf_dual(1.3, 0.7, 0.2, v1, c, v2, d)),
    ("gelu", nd.gelu_dual),
    ("exp", lambda v1, c, v2, d: nd.exp_dual(1.0, 0.3, v1, c, v2, d)),
    ("gaussian", lambda v1, c, v2, d: nd.gaussian_dual(1.0, -0.5, v1, c, v2, d)),
    ("sin", lambda v1, c, v2, d: nd.sin_dual(1.0, 1.5, 0.3, v1, c, v2, d)),
    ("rbf", lambda v1, c, v2, d: nd.rbf_dual(0.5, v1, c, v2, d)),
    ("polynomial", lambda v1, c, v2, d: nd.polynomial_dual((0.5, 1.0, 0.3), v1, c, v2, d)),
    ("hermite", lambda v1, c, v2, d: nd.hermite_dual(3, v1, c, v2, d)),
]


EXACT_DIAGONAL = {"relu", "abs", "leaky", "sign", "relu^2", "polynomial", "hermite"}
# Duals with a C kernel (ntkit.dual.native); the others run eagerly under fusion, as all
# do where the kernels cannot be built (no C compiler: then only the values are checked).
NATIVE = {"relu", "abs", "leaky", "sign", "erf", "gelu", "exp", "gaussian", "sin", "rbf"}
try:
    native.library()
    HAVE_C = True
except RuntimeError:
    HAVE_C = False


def _inputs(n1, n2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n1 + n2, 16, generator=g, dtype=torch.float64)
    # A zero example (zero variance), and duplicate, antipodal and scaled rows across the
    # two sides (correlation ±1 off the diagonal).
    x[2] = 0.0
    x[n1 + 1], x[n1 + 2], x[n1 + 3] = x[4], -x[5], 3.0 * x[6]
    k = x @ x.T / 16
    v = k.diagonal().clone()
    return v[:n1, None], k[:n1, n1:].clone(), v[None, n1:]


def _sym_inputs(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g, dtype=torch.float64)
    k = x @ x.T / 16
    k = 0.5 * (k + k.T)  # bitwise symmetric, diagonal = the variances
    v = k.diagonal().clone()
    return v[:, None], k, v[None, :]


@pytest.fixture
def fuse_all():
    # Fusion on (the default, unless NTKIT_FUSED=0 is set) for every tile, however small.
    old = fused.set_min_numel(1)
    with fused.enabled(True):
        yield
    fused.set_min_numel(old)


def _rel(a, b):
    """Largest difference relative to the largest entry, over the finite entries of b;
    the non-finite entries must be equal."""
    fin = torch.isfinite(b)
    assert torch.equal(fin, torch.isfinite(a)) and torch.equal(a[~fin], b[~fin])
    if not fin.any():
        return 0.0
    return float((a - b)[fin].abs().max() / b[fin].abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("name, dual", DUALS, ids=[d[0] for d in DUALS])
def test_fused_matches_eager_per_activation(name, dual, fuse_all):
    v1, c, v2 = _inputs(40, 30)
    for need_dot in (True, False):
        with fused.enabled(False):
            t0, d0 = dual(v1, c.clone(), v2, need_dot)
        with fused.enabled(True):
            before = fused.stats()["calls"]
            t1, d1 = dual(v1, c.clone(), v2, need_dot)
            # It really ran a fused kernel (the default backend has C kernels for NATIVE).
            assert fused.stats()["calls"] == before + (HAVE_C and name in NATIVE)
        assert _rel(t1, t0) <= 1e-13
        assert (d1 is None and d0 is None) if not need_dot else _rel(d1, d0) <= 1e-13
    if name not in EXACT_DIAGONAL:
        return
    # Where the diagonal is exact (the arc-cosine angle is exactly 0 there; polynomials
    # have no transcendental), fusion keeps it bitwise what eager gives. Elsewhere the
    # fused exp/atan2/sqrt may differ from ATen's by an ulp (ATen's float64 sqrt is not
    # always correctly rounded): within the 1e-13 above.
    s1, sc, s2 = _sym_inputs(32)
    with fused.enabled(False):
        e_t, e_d = dual(s1, sc.clone(), s2, True)
    with fused.enabled(True):
        f_t, f_d = dual(s1, sc.clone(), s2, True)
    assert torch.equal(f_t.diagonal(), e_t.diagonal())
    assert torch.equal(f_d.diagonal(), e_d.diagonal())


@pytest.mark.parametrize("pool", ["gap", "flatten"])  # full and per-position storage
def test_fused_matches_eager_per_storage(pool, fuse_all):
    tail = [nl.GlobalAvgPool()] if pool == "gap" else [nl.Flatten()]
    net = nl.serial(nl.Conv(8, (3, 3), w_std=1.4, b_std=0.1, padding="SAME"), nl.Erf(),
                    nl.Conv(8, (3, 3), w_std=1.4, b_std=0.1, padding="SAME"), nl.ReLU(),
                    *tail, nl.Dense(1))
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    eager = net.kernel(x, compile=False)
    got = net.kernel(x, compile="fused")
    for a, b in zip(got, eager, strict=True):
        assert _rel(a, b) <= 1e-13


def test_no_recompilation_across_n_depth_and_networks(fuse_all):
    # One library (one kernel per family) serves every n, depth and net.
    def net(depth):
        return nl.serial(*[m for _ in range(depth) for m in (nl.Dense(8, 1.4, 0.1),
                                                             nl.ReLU())], nl.Dense(1))

    x = torch.randn(90, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    net(2).kernel(x[:30], get="ntk")  # compiles (or loads) once
    start = fused.stats()
    for depth, n in [(2, 45), (3, 61), (5, 90), (4, 77)]:
        got = net(depth).kernel(x[:n], x[:n - 7], get="ntk")
        want = net(depth).kernel(x[:n], x[:n - 7], get="ntk", compile=False)
        assert _rel(got, want) <= 1e-13
    end = fused.stats()
    assert end["compiles"] == start["compiles"]
    assert end["calls"] > start["calls"] or not HAVE_C


def test_inductor_compile_failure_warns_once_and_runs_eager(fuse_all):
    def broken(gm, example_inputs):
        raise RuntimeError("simulated compiler failure")

    old = fused.set_backend(broken)
    try:
        v1, c, v2 = _inputs(20, 10)
        with fused.enabled(False):
            want = nd.erf_dual(1.0, 1.0, 0.0, v1, c.clone(), v2, True)
        before = fused.stats()["fallbacks"]
        with pytest.warns(RuntimeWarning, match="simulated compiler failure"):
            got = nd.erf_dual(1.0, 1.0, 0.0, v1, c.clone(), v2, True)
        assert fused.stats()["fallbacks"] == before + 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no second warning: eager from now on
            again = nd.erf_dual(1.0, 1.0, 0.0, v1, c.clone(), v2, True)
        for a, b, w in zip(got, again, want, strict=True):
            assert torch.equal(a, w) and torch.equal(b, w)
    finally:
        fused.set_backend(old)


def test_autograd_path_with_fusion_on(fuse_all):
    # Kernel gradients take the out-of-place path (never fused) and are unchanged.
    x = torch.randn(12, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    grads = []
    for mode in (False, "fused"):
        xr = x.clone().requires_grad_(True)
        nl.serial(nl.Dense(8, 1.4, 0.1), nl.Erf(), nl.Dense(8, 1.4, 0.1), nl.ReLU(),
                  nl.Dense(1)).kernel(xr, get="ntk", compile=mode).sum().backward()
        grads.append(xr.grad)
    assert torch.equal(grads[0], grads[1])


def test_switch_off_by_option_and_environment():
    v1, c, v2 = _inputs(300, 300)  # above the default smallest fused tile
    with fused.enabled(False):
        before = fused.stats()["calls"]
        nd.relu_dual(v1, c.clone(), v2, True)
        assert fused.stats()["calls"] == before
    for value, want in [(None, (True, None)), ("1", (True, None)), ("0", (False, None)),
                        (" Off", (False, None)), ("no", (False, None)),
                        ("inductor", (True, "inductor"))]:
        assert fused.parse_environment(value) == want, value
    # The default, in a fresh process with NTKIT_FUSED unset: on.
    env = {k: v for k, v in os.environ.items() if k != "NTKIT_FUSED"}
    code = "import ntkit.dual.fused as f; print(f.is_enabled())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(ROOT)}, check=True).stdout.strip()
    assert out == "True"


def test_cache_directory_is_keyed_by_cpu_capability():
    assert fused.cache_dir("AVX2") != fused.cache_dir("AVX512")
    assert fused.cache_dir("AVX2") == fused.cache_dir("avx2")
    code = "import ntkit.dual.fused as f; print(f.cache_dir())"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ATEN_CPU_CAPABILITY", None)
    here = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True).stdout.strip()
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("this CPU already runs ATen's DEFAULT capability")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**env, "ATEN_CPU_CAPABILITY": "default"},
                           check=True).stdout.strip()
    assert here == fused.cache_dir() and other != here


SECOND_PROCESS = """
import torch, ntkit.dual as nd
from ntkit.dual import fused
fused.set_backend("inductor")
fused.set_min_numel(1)
v = torch.linspace(0.5, 2.0, 50, dtype=torch.float64)
c = torch.outer(v, v).sqrt() * 0.3
nd.gelu_dual(v[:, None], c, v[None, :], True)
s = fused.stats()
print(s["calls"], s["cache_hits"], s["cache_misses"])
"""


@pytest.mark.slow
def test_second_process_reuses_the_inductor_disk_cache(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NTKIT_CACHE_DIR": str(tmp_path),
           "NTKIT_FUSED": "1"}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    runs = [subprocess.run([sys.executable, "-c", SECOND_PROCESS], capture_output=True,
                           text=True, env=env, check=True).stdout.split()
            for _ in range(2)]
    (calls1, hits1, miss1), (calls2, hits2, miss2) = [[int(v) for v in r] for r in runs]
    assert calls1 == calls2 == 1
    assert miss1 >= 1 and hits1 == 0  # cold: compiled
    assert miss2 == 0 and hits2 >= 1  # warm: loaded from disk, no new compilation
