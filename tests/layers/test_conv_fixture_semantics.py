"""The neural-tangents conv fixture's padding and pooling semantics, pinned by an
independent exact computation on linear nets.

A linear CNN's NNGP and NTK are inner products of explicit feature maps: with features
Φ (n, D, *spatial) and K(x1, x2)[p, p'] = <Φ1[:, p], Φ2[:, p']>, a conv (ntk
parameterization) maps Φ to its padded input patches times w/√q (q = filter size) plus a
constant bias feature b; AvgPool averages padded windows; GlobalAvgPool averages
positions; Flatten concatenates them over √P; Dense gives [wΦ, b]. NTK features Ψ follow
ntk' = w²·conv(ntk) + nngp', i.e. Ψ' = [patches(Ψ)·w/√q, Φ']. Padding here is spelled
out by index, so the test states the semantics the fixture (and so ntkit) follows:

- "SAME"/"CIRCULAR": output ceil(L/s); total padding max((out−1)s + q − L, 0), the odd
  extra element at the END (bottom/right), as lax.padtype_to_pads;
- "CIRCULAR" wraps around with those amounts;
- AvgPool counts zero padding in the average, and strides=None means stride 1.

Each alternative reading (extra padding at the start, padding excluded from the average,
torch's default pooling stride = window) is shown to disagree with the fixture, so the
test can fail. Needs only the fixture, not ntkit's conv layers.
"""

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conv_archs import ARCHS

FIXTURE = Path(__file__).parents[1] / "fixtures" / "nt_conv_kernels.npz"
if not FIXTURE.exists():
    pytest.skip(f"{FIXTURE} missing: run tests/fixtures/make_nt_conv_kernels.py",
                allow_module_level=True)

LINEAR = sorted(name for name in ARCHS if name.startswith("linear"))
DEFAULT = dict(extra_at_end=True, pool_counts_padding=True, pool_stride_none_is_one=True)


def _pads(size, q, s, padding, extra_at_end):
    if padding == "VALID":
        return 0, 0
    out = -(-size // s)
    total = max((out - 1) * s + q - size, 0)
    small, big = total // 2, total - total // 2
    return (small, big) if extra_at_end else (big, small)


def _pad(t, filt, strides, padding, extra_at_end):
    """Pad the spatial axes of t (n, D, *spatial): zeros, or wrap-around for CIRCULAR."""
    for ax, (q, s) in enumerate(zip(filt, strides, strict=True)):
        dim = 2 + ax
        size = t.shape[dim]
        lo, hi = _pads(size, q, s, padding, extra_at_end)
        idx = torch.arange(-lo, size + hi)
        if padding == "CIRCULAR":
            t = t.index_select(dim, idx % size)
        else:
            shape = list(t.shape)
            shape[dim] = lo + size + hi
            out = t.new_zeros(shape)
            out.narrow(dim, lo, size).copy_(t)
            t = out
    return t


def _patches(t, filt, strides):
    """(n, D, *padded) -> (n, taps, D, *out): every filter tap's strided view (VALID)."""
    outs = [(t.shape[2 + a] - q) // s + 1 for a, (q, s) in enumerate(zip(filt, strides,
                                                                        strict=True))]
    views = []
    for tap in itertools.product(*(range(q) for q in filt)):
        index = [slice(None), slice(None)]
        index += [slice(o, o + s * (m - 1) + 1, s)
                  for o, s, m in zip(tap, strides, outs, strict=True)]
        views.append(t[tuple(index)])
    return torch.stack(views, dim=1)


def _conv(t, filt, strides, padding, opts):
    p = _patches(_pad(t, filt, strides, padding, opts["extra_at_end"]), filt, strides)
    return p.flatten(1, 2) / math.sqrt(math.prod(filt))


def _avgpool(t, window, strides, padding, opts):
    if strides is None:
        strides = (1,) * len(window) if opts["pool_stride_none_is_one"] else window
    p = _patches(_pad(t, window, strides, padding, opts["extra_at_end"]), window, strides)
    if opts["pool_counts_padding"]:
        return p.mean(dim=1)
    ones = _pad(torch.ones_like(t[:1, :1]), window, strides, padding, opts["extra_at_end"])
    count = _patches(ones, window, strides).sum(dim=1)
    return p.sum(dim=1) / count


def _bias(t, b):
    return torch.full_like(t[:, :1], float(b))


def linear_features(layers, x, **opts):
    """Exact NNGP features Φ and NTK features Ψ of a linear net (ntk parameterization)
    on x (n, C, *spatial)."""
    opts = {**DEFAULT, **opts}
    x = torch.as_tensor(x, dtype=torch.float64)
    phi, psi = x / math.sqrt(x.shape[1]), None
    for spec in layers:
        kind, args = spec[0], spec[1:]
        if kind == "conv":
            _, filt, strides, padding, w, b, param = args
            assert param == "ntk"
            strides = strides or (1,) * len(filt)
            new_phi = w * _conv(phi, filt, strides, padding, opts)
            new_phi = torch.cat([new_phi, _bias(new_phi, b or 0.0)], dim=1)
            parts = [] if psi is None else [w * _conv(psi, filt, strides, padding, opts)]
            phi, psi = new_phi, torch.cat(parts + [new_phi], dim=1)
        elif kind == "avgpool":
            window, strides, padding = args
            phi = _avgpool(phi, window, strides, padding, opts)
            psi = None if psi is None else _avgpool(psi, window, strides, padding, opts)
        elif kind == "gap":
            phi = phi.flatten(2).mean(dim=2)
            psi = None if psi is None else psi.flatten(2).mean(dim=2)
        elif kind == "flatten":
            positions = math.prod(phi.shape[2:])
            phi = phi.flatten(1) / math.sqrt(positions)
            psi = None if psi is None else psi.flatten(1) / math.sqrt(positions)
        elif kind == "dense":
            _, w, b, param = args
            assert param == "ntk" and phi.dim() == 2
            new_phi = torch.cat([w * phi, _bias(phi, b or 0.0)], dim=1)
            psi = new_phi if psi is None else torch.cat([w * psi, new_phi], dim=1)
            phi = new_phi
        else:
            raise ValueError(f"{kind!r} is not linear")
    return phi, psi


def linear_kernels(layers, x1, x2, **opts):
    p1, s1 = linear_features(layers, x1, **opts)
    p2, s2 = linear_features(layers, x2, **opts)
    return (p1 @ p2.T).numpy(), (s1 @ s2.T).numpy()


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as data:
        return dict(data)


def _max_rel_err(ref, name, **opts):
    layers = ARCHS[name]["layers"]
    x1 = ref[f"{name}/x1"]
    worst = 0.0
    for pair, x2 in (("11", x1), ("12", ref[f"{name}/x2"])):
        nngp, ntk = linear_kernels(layers, x1, x2, **opts)
        for field, got in (("nngp", nngp), ("ntk", ntk)):
            expected = ref[f"{name}/{pair}/{field}"]
            worst = max(worst, np.abs(got - expected).max() / np.abs(expected).max())
    return worst


def test_there_are_linear_archs():
    assert len(LINEAR) >= 3


@pytest.mark.parametrize("name", LINEAR)
def test_fixture_matches_explicit_padding(ref, name):
    # Linear nets: no arc-cosine, both sides are sums of products of O(1) numbers.
    assert _max_rel_err(ref, name) < 1e-12


@pytest.mark.parametrize("alternative", [
    dict(extra_at_end=False),             # SAME's odd extra padding at the start
    dict(pool_counts_padding=False),      # AvgPool averaging only real pixels
    dict(pool_stride_none_is_one=False),  # torch.nn.AvgPool's default stride = window
])
def test_alternative_semantics_disagree(ref, alternative):
    """Each other reading of the conventions changes some linear arch's kernel by > 1%."""
    assert max(_max_rel_err(ref, name, **alternative) for name in LINEAR) > 1e-2
