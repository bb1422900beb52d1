"""Monte Carlo over generated networks: the average of the empirical NNGP and NTK of
independent finite networks (``ntkit.monte_carlo_kernel`` over ``net.build(...)``)
agrees with ``net.kernel`` within its sampling error (slow marker).

The networks are generated ones (`generator.generate`, few layers) whose every width is
multiplied by WIDEN (the infinite-width kernel depends only on width ratios, which stay
the same; the finite networks' 1/width bias becomes small against the sampling error),
the readout's by 4 (`generator.widen`).
Chosen by fixed rules, before any run: the first two fully-connected and the first two
1-D convolutional seeds of ``generate(seed, nt=True, max_layers=1)``, the first graph
net with an `Aggregate` layer, and the first masked 1-D net. Inputs: the generator's
rows a, b, 0, a, 3b, -a (masked for the masked net).

Tolerance, fixed before measuring: BATCHES batch means of PER_BATCH networks each give
each entry's standard error; every entry of the upper triangle must have
|MC - exact| ≤ Z·SE (Student t with 15 degrees of freedom: P(|t| > 6) ≈ 2e-5 per entry,
under 1 % over all entries), and entries with no spread at all (the zero row of a
bias-free first layer) must agree to 1e-10 relative to the kernel's largest entry.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from generator import call_options, example_inputs, generate, mask_inputs, to_ntkit, widen

import ntkit

WIDEN = 32
BATCHES, PER_BATCH = 16, 4
Z = 6.0


def pick(rule, **kw) -> int:
    return next(s for s in range(10_000) if rule(generate(s, nt=True, max_layers=1, **kw)))


def _cases():
    def fc(a):
        return len(a["input"]) == 1

    def conv1d(a):
        return len(a["input"]) == 2

    first_fc = pick(fc)
    second_fc = pick(lambda a: fc(a) and a["seed"] > first_fc)
    first_conv = pick(conv1d)
    second_conv = pick(lambda a: conv1d(a) and a["seed"] > first_conv)
    graph = pick(lambda a: '"op": "aggregate"' in json.dumps(a), graph=True)
    masked = pick(lambda a: conv1d(a), masked=True)
    return [(first_fc, {}), (second_fc, {}), (first_conv, {}), (second_conv, {}),
            (graph, {"graph": True}), (masked, {"masked": True})]


CASES = _cases()


@pytest.mark.slow
@pytest.mark.parametrize("seed,kw", CASES, ids=[f"{s}{''.join(k)}" for s, k in CASES])
def test_monte_carlo_agrees_within_sampling_error(seed, kw):
    arch = widen(generate(seed, nt=True, max_layers=1, **kw), WIDEN)
    net = to_ntkit(arch)
    x, _ = example_inputs(arch, seed=seed)
    if "mask" in arch:
        x = mask_inputs(arch, x)
    opts = call_options(arch, x)
    if "pattern" in opts:
        opts["pattern"] = tuple(None if p is None else torch.from_numpy(p)
                                for p in opts["pattern"])
    x = torch.from_numpy(x)
    exact = net.kernel(x, get=("nngp", "ntk"), **opts)
    counts = [PER_BATCH * (b + 1) for b in range(BATCHES)]
    means = ntkit.monte_carlo_kernel(net, x, n_samples=counts, seed=seed, **opts)
    iu = np.triu_indices(len(x))
    report = []
    for field in ("nngp", "ntk"):
        cum = np.stack([getattr(m, field).numpy() for m in means])  # (B, n, n) running
        totals = cum * np.array(counts, float)[:, None, None]
        batch = np.diff(totals, axis=0, prepend=0.0) / PER_BATCH      # batch means
        mc, k = cum[-1][iu], getattr(exact, field).numpy()[iu]
        se = batch.std(axis=0, ddof=1)[iu] / np.sqrt(BATCHES)
        scale = np.abs(k).max()
        spread = se > 1e-12 * scale
        z = np.abs(mc - k)[spread] / se[spread]
        report.append(f"{field}: max z {z.max(initial=0):.2f} over {spread.sum()} entries, "
                      f"relative SE {np.median(se[spread] / scale):.1e}")
        assert (z <= Z).all(), (field, report, mc, k, se)
        assert np.all(np.abs(mc - k)[~spread] <= 1e-10 * scale), (field, mc, k)
    print(f"seed {seed} {kw}: " + "; ".join(report))
