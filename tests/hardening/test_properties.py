"""Property-based tests (hypothesis) over generated architectures and inputs.

Each property is one function ``check_*(data)``; it runs twice: a small derandomized
profile by default (the hardening directory stays fast) and a longer random one under
``@pytest.mark.slow``. Architectures come from ``generator.generate`` (closed-form
activations, ``nt=True``, so each call is cheap; the quadrature ones are drawn in the
slow profile); inputs mix Gaussian rows with zero, duplicate, scaled and antipodal rows,
and the homogeneity tests add tiny (1e-100) and huge (1e100) scales.

Tolerances (fixed before measuring) are those of `kernel_compare.assert_kernels_close`:
256·ε relative to √(K_ii K_jj) plus the arc-cosine bound near correlation ±1; ``gain``
is L/(2π) for the L layers of the net. A kernel that overflows must raise
FloatingPointError (counted, never a silent inf).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from generator import (
    MASK,
    call_options,
    count_layers,
    generate,
    mask_inputs,
    output_state,
    to_ntkit,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kernel_compare import assert_kernels_close

from ntkit import layers as nl

FAST = settings(max_examples=6, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
GET = ("nngp", "ntk")


# ---- strategies ---------------------------------------------------------------------------
ROW = st.one_of(
    st.tuples(st.just("normal"), st.integers(0, 2**31)),
    st.tuples(st.just("zero")),
    st.tuples(st.just("dup"), st.integers(0, 10)),
    st.tuples(st.just("scale"), st.integers(0, 10), st.sampled_from([0.1, 0.5, 3.0, 10.0])),
    st.tuples(st.just("neg"), st.integers(0, 10)),
)


def make_rows(spec, shape) -> np.ndarray:
    """Rows from their description; references to earlier rows wrap around."""
    rows: list[np.ndarray] = []
    for item in spec:
        kind = item[0]
        if kind == "normal" or not rows and kind != "zero":
            seed = item[1] if kind == "normal" else 0
            rows.append(np.random.default_rng(seed).standard_normal(shape))
        elif kind == "zero":
            rows.append(np.zeros(shape))
        elif kind == "dup":
            rows.append(rows[item[1] % len(rows)].copy())
        elif kind == "scale":
            rows.append(item[2] * rows[item[1] % len(rows)])
        else:
            rows.append(-rows[item[1] % len(rows)])
    return np.stack(rows)


def inputs(n_min=2, n_max=6):
    return st.lists(ROW, min_size=n_min, max_size=n_max)


def seeds():
    return st.integers(0, 10**6)


def kernel(net, x1, x2=None, **kw):
    """net.kernel, with an overflow accepted only as the clear FloatingPointError."""
    try:
        return net.kernel(torch.as_tensor(x1), None if x2 is None else torch.as_tensor(x2),
                          get=GET, **kw)
    except FloatingPointError as e:
        assert "overflow" in str(e)
        assume(False)


def identical_mask(x1, x2) -> np.ndarray:
    a, b = x1.reshape(len(x1), -1), x2.reshape(len(x2), -1)
    return (a[:, None, :] == b[None, :, :]).all(-1)


def gain(arch) -> float:
    return max(1.0, count_layers(arch) / (2 * math.pi))


ARCCOS = {"relu", "leaky_relu", "abrelu", "abs", "sign", "rect_monomial"}


def _ops(layers):
    for node in layers:
        yield node["op"]
        for br in node.get("branches", ()):
            yield from _ops(br)


def tol(arch, **kw) -> dict:
    """assert_kernels_close options for ``arch``: gain L/(2π); with an arc-cosine
    activation, the arc-cosine bound at correlation ±1 everywhere (corr=1). A hidden
    layer's correlation may be ±1 while the output's is not: e.g. one input channel
    through a global pool gives every pair correlation ±1 there, and ReLU maps -1 to 0;
    there the angle's rounding is O(√ε) whatever the output shows (measured: 1.3e-8
    relative NTK change under x -> 1e-100·x, ConvTranspose + GAP + ABReLU)."""
    kw.setdefault("gain", gain(arch))
    if ARCCOS & set(_ops(arch["layers"])):
        kw["corr"] = 1.0
    return kw


def _net(seed, **kw):
    arch = generate(seed, nt=kw.pop("nt", True), **kw)
    return arch, to_ntkit(arch)


# ---- properties -----------------------------------------------------------------------------
def check_symmetric_psd_finite_exact(seed, rows):
    arch, net = _net(seed)
    x = make_rows(rows, tuple(arch["input"]))
    k = kernel(net, x)
    for field in GET:
        m = getattr(k, field).numpy()
        assert np.isfinite(m).all()
        assert np.array_equal(m, m.T), "K(x, x) must be exactly symmetric"
        w = np.linalg.eigvalsh(m)
        assert w.min() >= -1e-10 * max(w.max(), 0.0) - 1e-300, (field, w.min(), w.max())
        assert (np.diag(m) >= 0).all()


def check_duplicates_exact(seed, rows):
    """Identical examples in K(x, None): their entries equal the diagonal (4 ulps)."""
    arch, net = _net(seed)
    x = make_rows(rows, tuple(arch["input"]))
    k = kernel(net, x)
    same = identical_mask(x, x)
    for field in GET:
        m = getattr(k, field).numpy()
        d = np.diag(m)
        i, j = np.nonzero(same)
        np.testing.assert_allclose(m[i, j], d[i], rtol=4 * np.finfo(float).eps, atol=0)


def check_transpose(seed, rows1, rows2):
    arch, net = _net(seed)
    shape = tuple(arch["input"])
    x1, x2 = make_rows(rows1, shape), make_rows(rows2 + rows1[:1], shape)
    k12, k21 = kernel(net, x1, x2), kernel(net, x2, x1)
    d1, d2 = kernel(net, x1), kernel(net, x2)
    for field in GET:
        a, b = getattr(k12, field).numpy(), getattr(k21, field).numpy().T
        assert_kernels_close(a, b, var1=np.diag(getattr(d1, field).numpy()),
                             var2=np.diag(getattr(d2, field).numpy()),
                             identical=identical_mask(x1, x2), **tol(arch), name=field)


def check_permutation(seed, rows, perm_seed):
    arch, net = _net(seed)
    x = make_rows(rows, tuple(arch["input"]))
    p = np.random.default_rng(perm_seed).permutation(len(x))
    k, kp = kernel(net, x), kernel(net, x[p])
    for field in GET:
        a = getattr(k, field).numpy()[np.ix_(p, p)]
        assert_kernels_close(getattr(kp, field).numpy(), a, identical=identical_mask(x, x)[
            np.ix_(p, p)], **tol(arch), name=field)


def check_tiles(seed, rows, tile, budget):
    arch, net = _net(seed)
    x = make_rows(rows, tuple(arch["input"]))
    ref = kernel(net, x)
    got = kernel(net, x, tile=tile, memory_budget=budget)
    for field in GET:
        assert_kernels_close(getattr(got, field), getattr(ref, field), identical="diagonal",
                             **tol(arch), name=f"{field} tile={tile}")


def check_diag_vs_full(seed, rows):
    arch, net = _net(seed, readout=False, ndim=2)
    x = make_rows(rows, tuple(arch["input"]))
    d = len(output_state(arch).spatial)
    diag = kernel(net, x)
    assume(diag.ntk.dim() == 2 + d and d > 0)  # the net's own storage is diagonal
    full = kernel(nl.serial(net, nl.AvgPool((1,) * d)), x)  # a window of 1 needs full
    n, size = len(x), math.prod(output_state(arch).spatial)
    for field in GET:
        f = getattr(full, field).reshape(n, n, size, size)
        f = torch.diagonal(f, dim1=2, dim2=3).reshape(getattr(diag, field).shape)
        assert_kernels_close(f, getattr(diag, field), **tol(arch), name=field)


def check_float32(seed, rows):
    arch, net = _net(seed)
    x = make_rows(rows, tuple(arch["input"]))
    k64 = kernel(net, x)
    k32 = kernel(net, x, dtype=torch.float32)
    layers = count_layers(arch)
    for field in GET:
        got = getattr(k32, field)
        assert got.dtype == torch.float32
        # float32: each layer rounds once more, and the input itself is rounded to ε32
        assert_kernels_close(got, getattr(k64, field), rtol=64 * layers * 2.0**-23,
                             ulps=layers, **tol(arch), identical="diagonal",
                             exact_ulps=64 * layers, name=field)


def check_homogeneous(seed, rows, c, which):
    arch, net = _net(seed, bias=False)
    shape = tuple(arch["input"])
    x1 = make_rows(rows, shape)
    x2 = make_rows(rows[::-1], shape)
    ref = kernel(net, x1, x2)
    args = (c * x1, x2) if which == 1 else (x1, c * x2)
    got = kernel(net, *args)
    v1, v2 = kernel(net, x1), kernel(net, x2)
    for field in GET:
        assert_kernels_close(getattr(got, field) / c, getattr(ref, field), **tol(arch),
                             var1=np.diag(getattr(v1, field).numpy()),
                             var2=np.diag(getattr(v2, field).numpy()),
                             name=f"{field}, x{which} scaled by {c}")


def check_shift_invariant(seed, rows, shift):
    arch, net = _net(seed, circular=True, ndim=2)
    shape = tuple(arch["input"])
    x1 = make_rows(rows, shape)
    x2 = make_rows(rows[::-1], shape)
    ref = kernel(net, x1, x2)
    got = kernel(net, np.roll(x1, shift, axis=(2, 3)), x2)
    v1, v2 = kernel(net, x1), kernel(net, x2)
    for field in GET:
        assert_kernels_close(getattr(got, field), getattr(ref, field), **tol(arch),
                             var1=np.diag(getattr(v1, field).numpy()),
                             var2=np.diag(getattr(v2, field).numpy()),
                             name=f"{field}, shift {shift}")


def check_disk(seed, rows, tile):
    """memmap and zarr outputs equal the in-memory result bitwise (the same tiles)."""
    import tempfile

    zarr = pytest.importorskip("zarr")
    from ntkit.engine.storage import create_kernel_array

    arch, net = _net(seed)
    x = make_rows(rows, tuple(arch["input"]))
    try:
        ref = net.kernel(torch.as_tensor(x), get="ntk", tile=tile).numpy()
    except FloatingPointError:
        assume(False)
    n = len(x)
    with tempfile.TemporaryDirectory() as d:
        mm = np.lib.format.open_memmap(f"{d}/K.npy", mode="w+", dtype=np.float64,
                                       shape=ref.shape)
        net.kernel(torch.as_tensor(x), get="ntk", tile=tile, out=mm)
        assert np.asarray(mm).tobytes() == ref.tobytes()
        z = create_kernel_array(f"{d}/K.zarr", n, tile=tile, pair_shape=ref.shape[2:])
        net.kernel(torch.as_tensor(x), get="ntk", out=z)
        assert zarr.open_array(f"{d}/K.zarr")[:].tobytes() == ref.tobytes()


def check_graph_and_masks(seed, rows1, rows2, tile, mode):
    """Graph nets (`Aggregate`, per-example patterns) and masked inputs
    (``mask_constant``): K(x, x) exactly symmetric, PSD and finite; K(x1, x2) equals
    K(x2, x1)ᵀ; tiling changes nothing beyond rounding; a fully masked example has
    kernel exactly 0."""
    arch = generate(seed, nt=True, graph="graph" in mode, masked="mask" in mode)
    net = to_ntkit(arch)
    shape = tuple(arch["input"])
    x1, x2 = make_rows(rows1, shape), make_rows(rows2 + rows1[:1], shape)
    if "mask" in arch:
        x1, x2 = mask_inputs(arch, x1), mask_inputs(arch, x2)
    k11 = kernel(net, x1, **call_options(arch, x1))
    k22 = kernel(net, x2, **call_options(arch, x2))
    k12 = kernel(net, x1, x2, **call_options(arch, x1, x2))
    k21 = kernel(net, x2, x1, **call_options(arch, x2, x1))
    tiled = kernel(net, x1, tile=tile, **call_options(arch, x1))
    absent = ((x1 == MASK).reshape(len(x1), -1).all(1) if "mask" in arch
              else np.zeros(len(x1), bool))
    for field in GET:
        m = getattr(k11, field).numpy()
        assert np.isfinite(m).all() and np.array_equal(m, m.T), field
        w = np.linalg.eigvalsh(m)
        assert w.min() >= -1e-10 * max(w.max(), 0.0) - 1e-300, (field, w.min(), w.max())
        assert (m[absent] == 0).all(), "a fully masked example must have kernel 0"
        assert_kernels_close(getattr(k12, field).numpy(), getattr(k21, field).numpy().T,
                             var1=np.diag(m), var2=np.diag(getattr(k22, field).numpy()),
                             identical=identical_mask(x1, x2), **tol(arch), name=field)
        assert_kernels_close(getattr(tiled, field), getattr(k11, field),
                             identical="diagonal", **tol(arch), name=f"{field} tile={tile}")


# ---- the tests: a fast derandomized profile, a long one under the slow marker ----------------
PROPS = {
    "symmetric_psd_finite_exact": (check_symmetric_psd_finite_exact, dict(rows=inputs())),
    "duplicates_exact": (check_duplicates_exact, dict(rows=inputs())),
    "transpose": (check_transpose, dict(rows1=inputs(1, 4), rows2=inputs(1, 4))),
    "permutation": (check_permutation, dict(rows=inputs(), perm_seed=st.integers(0, 99))),
    "tiles": (check_tiles, dict(rows=inputs(3, 7), tile=st.integers(1, 5),
                                budget=st.sampled_from([None, 2**16, 2**20]))),
    "diag_vs_full": (check_diag_vs_full, dict(rows=inputs(2, 4))),
    "float32": (check_float32, dict(rows=inputs())),
    "homogeneous": (check_homogeneous,
                    dict(rows=inputs(), c=st.sampled_from([1e-100, 0.37, 3.0, 1e100]),
                         which=st.sampled_from([1, 2]))),
    "disk": (check_disk, dict(rows=inputs(2, 6), tile=st.integers(1, 4))),
    "graph_and_masks": (check_graph_and_masks,
                        dict(rows1=inputs(2, 5), rows2=inputs(1, 3), tile=st.integers(1, 4),
                             mode=st.sampled_from(["graph", "mask", "graph+mask"]))),
    "shift_invariant": (check_shift_invariant,
                        dict(rows=inputs(2, 4), shift=st.tuples(st.integers(-3, 3),
                                                                st.integers(-3, 3)))),
}


# Open findings (falsifying examples found by hypothesis, not yet resolved): kept out of
# the default profile and expected to fail in the long one until they are settled. None
# now: "duplicates_exact" (seed 130, rows [a, a]) and "permutation" (seed 2526: a repeated
# row of K(x, None) 7e-10 off its diagonal) were fixed by pinning repeated rows on the
# symmetric path (ntkit.kernel.pin_twins; test_regressions.py keeps both cases).
OPEN: dict[str, str] = {}


def _test(name, profile):
    fn, strategies = PROPS[name]
    return profile(given(seed=seeds(), **strategies)(fn))


@pytest.mark.parametrize("name", sorted(set(PROPS) - set(OPEN)))
def test_property(name):
    _test(name, FAST)()


# Open findings are not run (a test that may pass or fail proves nothing).
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(PROPS) - set(OPEN)))
def test_property_long(name):
    _test(name, SLOW)()
