"""attention_kernels in quick mode: transformer kernels vs CNN-GAP/FC kernels vs a trained
transformer on MNIST-1D tokens and digit patches; the helpers' exact properties."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ntkit.lab.experiments.attention_kernels import (
    digit_patches,
    masking_available,
    mnist1d_tokens,
    permute_tokens,
    random_crops,
    transformer_spec,
)

F64 = torch.float64
# The quick run (tests taking `result`) is marked slow to keep the default suite
# under its time limit; the library code it exercises is tested directly in
# tests/models/test_transformer_unet.py, tests/layers/test_attention*.py and this file's
# helper tests.
EXPERIMENT = "attention_kernels"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors run fastest single-threaded (thread sync dominates on 2 busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _acc(result, dataset, model):
    t = result.tables["accuracies"]
    rows = [i for i, (d, m) in enumerate(zip(t["dataset"], t["model"], strict=True))
            if d == dataset and m == model]
    assert len(rows) == 1, (dataset, model)
    return t["test_accuracy"][rows[0]]


@pytest.mark.slow
def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert doc["figures"] == ["accuracies.png"]
    assert (result.run_dir / "report.html").is_file()
    acc = result.tables["accuracies"]["test_accuracy"]
    masked = masking_available()
    assert len(acc) == 14 + 2 * masked and all(0.0 <= a <= 1.0 for a in acc)
    assert len(result.claims) == 6 + 2 * masked
    assert all(math.isfinite(c.measured) for c in result.claims)


@pytest.mark.slow
def test_robust_consequences(result):
    # The symmetry claim is exact whatever the data: it must hold.
    sym = [c for c in result.claims if c.name.startswith("no positional embedding")]
    assert len(sym) == 1 and sym[0].holds and sym[0].measured <= 1e-12
    # Far above chance (0.1) on 100 sequences; the CNN-GAP kernel above the FC one (as in
    # cnn_kernels). Measured 0.40 / 0.63 / 0.28 (transformer / CNN-GAP / FC NTK).
    tr = _acc(result, "MNIST-1D", "transformer NTK kernel")
    assert tr > 0.25
    assert _acc(result, "MNIST-1D", "CNN-GAP NTK kernel") > _acc(result, "MNIST-1D",
                                                                 "FC NTK kernel")
    assert _acc(result, "digits", "transformer NTK kernel") > 0.3


def test_tokens_and_patches_keep_every_value_in_place():
    x = torch.arange(2 * 40, dtype=F64).reshape(2, 1, 40)
    t = mnist1d_tokens(x)
    assert t.shape == (2, 2, 20)
    assert torch.equal(t[1, :, 7], x[1, 0, 14:16])
    d = torch.arange(3 * 64, dtype=F64).reshape(3, 64)
    p = digit_patches(d)
    img = d.reshape(3, 8, 8)
    assert p.shape == (3, 4, 4, 4)
    # token (row 2, col 1) of image 2 is pixels rows 4-5, cols 2-3, (dy, dx) row-major
    assert torch.equal(p[2, :, 2, 1], img[2, 4:6, 2:4].reshape(4))
    with pytest.raises(ValueError, match="divisible"):
        mnist1d_tokens(torch.zeros(2, 1, 39))


def test_permutation_symmetry_only_without_positions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 6, dtype=F64, generator=g)
    xp = permute_tokens(x, g)
    assert torch.equal(torch.sort(xp, dim=-1).values, torch.sort(x, dim=-1).values)
    k = transformer_spec(8, pos=False).kernel(x, get="ntk")
    kp = transformer_spec(8, pos=False).kernel(xp, get="ntk")
    assert float((k - kp).abs().max() / k.abs().max()) < 1e-12
    k = transformer_spec(8).kernel(x, get="ntk")
    kp = transformer_spec(8).kernel(xp, get="ntk")
    assert float((k - kp).abs().max() / k.abs().max()) > 1e-3


def test_random_crops():
    g = torch.Generator().manual_seed(1)
    x = torch.arange(4 * 2 * 10, dtype=F64).reshape(4, 2, 10) + 1
    out, lengths = random_crops(x, 3, g, -5.0)
    for i in range(4):
        ln = int(lengths[i])
        assert 3 <= ln <= 10
        assert torch.all(out[i, :, ln:] == -5.0)
        start = int(out[i, 0, 0] - x[i, 0, 0])  # x rows are arange: the offset
        assert torch.equal(out[i, :, :ln], x[i, :, start:start + ln])


@pytest.mark.slow
@pytest.mark.skipif(not masking_available(), reason="ntkit's kernels take no mask_constant")
def test_masked_claims_hold(result):
    ident = [c for c in result.claims if c.name.startswith("masked padding")]
    assert len(ident) == 1 and ident[0].holds
