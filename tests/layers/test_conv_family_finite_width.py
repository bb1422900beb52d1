"""Finite networks built from the convolution family's specs approach the analytic
kernels as width grows, and settle where neural-tangents is wrong.

Slope test (as in test_conv_finite_width.py): one network's empirical NTK deviates from
the limit by O(width^-1/2) fluctuations plus O(1/width) bias, so the RMS relative error
over a few networks falls with slope ≈ −1/2 in log-log; the band [−0.8, −0.3] allows for
the few samples per width. A wrong kernel map levels off at a constant instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conv_family_archs import ARCHS

import ntkit
from ntkit import layers as nl

F64 = torch.float64
FIXTURE = Path(__file__).parents[1] / "fixtures" / "nt_convfamily.npz"


def _rel(a, b):
    return float(torch.linalg.norm(torch.as_tensor(a) - torch.as_tensor(b))
                 / torch.linalg.norm(torch.as_tensor(b)))


def _decoder(width: int):
    """Conv → ReLU → ConvTranspose (stride 2, upsampling) → ReLU → Flatten → Dense."""
    return nl.serial(nl.Conv(width, (3,), padding="SAME", w_std=1.5, b_std=0.2), nl.ReLU(),
                     nl.ConvTranspose(width, (3,), strides=(2,), padding="SAME", w_std=1.4,
                                      b_std=0.1), nl.ReLU(),
                     nl.Flatten(), nl.Dense(1, w_std=1.2, b_std=0.1))


def test_transposed_conv_decoder_empirical_ntk_slope_is_minus_half():
    x = torch.randn(5, 2, 6, dtype=F64, generator=torch.Generator().manual_seed(0))
    exact = _decoder(1).kernel(x, get="ntk")
    widths, errs = [64, 256, 1024], []
    for w in widths:
        e = [_rel(ntkit.empirical_ntk(_decoder(w).build((2, 6), seed=s), x).detach(), exact)
             for s in range(4)]
        errs.append(float(np.sqrt(np.mean(np.square(e)))))
    slope = np.polyfit(np.log(widths), np.log(errs), 1)[0]
    assert -0.8 < slope < -0.3, (errs, slope)
    assert errs[-1] < 0.1, errs


def _widen(layers, width: int, outputs: int):
    """The architecture with every hidden layer `width` channels wide and `outputs`
    readout units (the 'ntk' parameterization's kernel does not depend on widths)."""
    out = []
    for spec in layers:
        if spec[0] in ("conv", "convT", "convlocal"):
            spec = (spec[0], width) + tuple(spec[2:])
        elif spec[0] == "dense":
            spec = ("dense", outputs) + tuple(spec[2:])
        out.append(spec)
    return out


@pytest.mark.parametrize("name", sorted(n for n, a in ARCHS.items() if a.get("nt_wrong")))
def test_finite_network_agrees_with_ntkit_where_neural_tangents_is_wrong(name):
    """Monte Carlo NNGP of 16 networks × 256 readout units (error ≈ 1/√4096 ≈ 1.6%, plus
    O(1/width) bias at width 512): within 6% of ntkit's kernel, while neural-tangents'
    value is farther from the finite network than ntkit's by at least 3×."""
    from conv_family_archs import to_ntkit

    with np.load(FIXTURE) as data:
        x = torch.from_numpy(data[f"{name}/x1"][:3])
        nt = torch.from_numpy(data[f"{name}/11/nngp"][:3, :3])
    exact = to_ntkit(name).kernel(x, get="nngp")
    wide = to_ntkit(_widen(ARCHS[name]["layers"], 512, 256))
    mc = ntkit.monte_carlo_kernel(wide, x, n_samples=16, get="nngp", seed=0)
    err_ntkit, err_nt = _rel(mc, exact), _rel(mc, nt)
    assert err_ntkit < 0.06, (err_ntkit, err_nt)
    assert err_nt > 3 * err_ntkit, (err_ntkit, err_nt)


@pytest.mark.slow
def test_transposed_conv_decoder_monte_carlo_nngp():
    """8 networks × 256 readout units at width 512: the NNGP estimate's error is about
    1/√2048 ≈ 2% plus an O(1/width) bias; 6% leaves room for neither a missing 1/q nor
    wrong padding (both move the kernel by tens of percent)."""
    x = torch.randn(4, 2, 5, 4, dtype=F64, generator=torch.Generator().manual_seed(3))

    def net(width, outputs):
        return nl.serial(nl.Conv(width, (2, 2), padding="SAME", w_std=1.5, b_std=0.2),
                         nl.ReLU(),
                         nl.ConvTranspose(width, (3, 3), strides=(2, 2), padding="VALID",
                                          w_std=1.3, b_std=0.1), nl.ReLU(),
                         nl.Flatten(), nl.Dense(outputs, w_std=1.1, b_std=0.1))

    exact = net(1, 1).kernel(x, get="nngp")
    mc = ntkit.monte_carlo_kernel(net(512, 256), x, n_samples=8, get="nngp", seed=0)
    assert _rel(mc, exact) < 0.06, _rel(mc, exact)
