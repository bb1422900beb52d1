"""empirical_ntk checks its inputs against the model first and says what it expected;
projections default to count-sketch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ntkit
from ntkit.empirical import projected_gradients
from ntkit.empirical.projected import DEFAULT_PROJECTION

F64 = torch.float64


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 3)).to(F64)


def test_linear_input_of_the_wrong_width():
    with pytest.raises(ValueError) as e:
        ntkit.empirical_ntk(_mlp(), torch.randn(96, 8, dtype=F64))
    msg = str(e.value)
    assert msg.startswith("x1 has shape (96, 8), which the model cannot take: the model's "
                          "first layer '0' is Linear(in_features=64): it expects inputs of "
                          "shape (n, ..., 64)."), msg
    assert "(torch: mat1 and mat2 shapes cannot be multiplied" in msg


def test_x2_of_another_shape_is_named():
    with pytest.raises(ValueError, match="x1 and x2 must have the same feature shape"):
        ntkit.empirical_ntk(_mlp(), torch.randn(4, 64, dtype=F64), torch.randn(4, 8, dtype=F64))


def test_channels_last_images_get_the_permute_hint():
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 6 * 6, 2)).to(F64)
    with pytest.raises(ValueError) as e:
        ntkit.empirical_ntk(cnn, torch.randn(4, 8, 8, 3, dtype=F64))
    msg = str(e.value)
    assert msg.startswith("x1 has shape (4, 8, 8, 3), which the model cannot take: the "
                          "model's first layer '0' is Conv2d(in_channels=3): it expects "
                          "inputs of shape (n, 3, H, W), channels first (a channels-last "
                          "batch needs x.permute(0, 3, 1, 2))."), msg
    # The permuted batch works, and gives the kernel of the NCHW images.
    x = torch.randn(4, 8, 8, 3, dtype=F64)
    assert ntkit.empirical_ntk(cnn, x.permute(0, 3, 1, 2)).shape == (4, 4)


def test_projected_paths_check_shapes_too():
    with pytest.raises(ValueError, match=r"^x1 has shape \(5, 8\), which the model"):
        ntkit.empirical_ntk(_mlp(), torch.randn(5, 8, dtype=F64), projection_dim=16)
    with pytest.raises(ValueError, match=r"^x has shape \(5, 8\), which the model"):
        projected_gradients(_mlp(), torch.randn(5, 8, dtype=F64), 16)
    with pytest.raises(ValueError, match=r"^x1 has shape \(5, 8\), which the model"):
        ntkit.empirical_nngp(_mlp(), torch.randn(5, 8, dtype=F64))


def test_batch_statistics_still_report_mixing_not_shape():
    mixing = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, track_running_stats=False)).to(F64)
    with pytest.raises(ValueError, match="depends on the other examples"):
        ntkit.empirical_ntk(mixing, torch.randn(6, 5, dtype=F64))


def test_projection_defaults_to_countsketch():
    assert DEFAULT_PROJECTION == "countsketch"
    m, x = _mlp(), torch.randn(6, 64, dtype=F64)
    a = ntkit.empirical_ntk(m, x, projection_dim=32, seed=4)
    b = ntkit.empirical_ntk(m, x, projection_dim=32, seed=4, projection="countsketch")
    assert torch.equal(a, b)
    g = ntkit.empirical_ntk(m, x, projection_dim=32, seed=4, projection="gaussian")
    assert not torch.allclose(a, g)
    with pytest.raises(ValueError, match="only apply with projection_dim"):
        ntkit.empirical_ntk(m, x, projection="gaussian")
