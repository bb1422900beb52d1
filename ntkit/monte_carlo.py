"""Monte Carlo kernels: empirical NNGP/NTK averaged over random finite networks.

For a layer spec ``net`` (anything with ``net.build(in_features=d, seed=s)`` returning an
``nn.Module`` that maps (n, d) to (n, k)), sample s = 1..N draws a network with its own
seed and contributes its empirical kernels, traced over the k output units:

    nngp_s(x1, x2) = f_s(x1)·f_s(x2) / k,     ntk_s(x1, x2) = mean_u J_u(x1)·J_u(x2).

Their averages converge to ``net.kernel(x1, x2)`` as width w and N grow: one network's
NTK fluctuates by O(w^(-1/2)) and its NNGP estimate f·f'/k by O(k^(-1/2)); averaging N
networks divides those by √N, leaving a finite-width bias O(1/w).

Cost: N network builds, N forward passes (nngp) and N empirical NTKs (see
`ntkit.empirical.empirical_ntk` for their costs); memory: two (n1, n2) accumulators
plus one empirical kernel.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
from torch import Tensor

from ntkit.empirical import empirical_nngp, empirical_ntk
from ntkit.engine.memory import check_memory_budget

GETS = ("nngp", "ntk")


@cache
def _result_type(names: tuple[str, ...]):
    return namedtuple("Kernels", names)


def _check_get(get) -> tuple[tuple[str, ...], bool]:
    single = isinstance(get, str)
    names = (get,) if single else tuple(get)
    if not names:
        raise ValueError(f"get must name at least one of {GETS}")
    for g in names:
        if g not in GETS:
            raise ValueError(f"unknown kernel {g!r} in get; expected names from {GETS}")
    if len(set(names)) != len(names):
        raise ValueError(f"get has repeated names: {names}")
    return names, single


def _check_n_samples(n_samples) -> tuple[list[int], bool]:
    single = not isinstance(n_samples, (Sequence, np.ndarray)) or isinstance(n_samples, str)
    counts = [n_samples] if single else list(n_samples)
    if not counts:
        raise ValueError("n_samples is an empty list")
    for c in counts:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or c < 1:
            raise ValueError(f"n_samples must be a positive int or a list of them, got {c!r}")
    counts = [int(c) for c in counts]
    if any(b <= a for a, b in zip(counts, counts[1:], strict=False)):
        raise ValueError(f"n_samples checkpoints must be strictly increasing, got {counts}")
    return counts, single


def sample_seeds(seed: int, n: int) -> list[int]:
    """Seeds of the first n networks: a prefix-stable stream derived from ``seed``.

    Distinct ``seed`` values give independent, non-overlapping streams (unlike seed + s).
    """
    ss = np.random.SeedSequence(int(seed))
    return [int(s) for s in ss.generate_state(n, dtype=np.uint32)]


def monte_carlo_kernel(net, x1, x2=None, *, n_samples: int | Sequence[int] = 64,
                       get: str | Sequence[str] = ("nngp", "ntk"), seed: int = 0,
                       progress: bool = False, memory_budget: int | None = None,
                       pattern=None, mask_constant=None):
    """Kernels of ``net`` averaged over ``n_samples`` random finite networks.

    Args:
      net: a layer spec (e.g. ``serial(Dense(512), ReLU(), Dense(1))``): anything with
        ``build(in_features, seed) -> nn.Module``.
      x1: (n1, d) inputs (d = ``x1.shape[1]`` is passed to ``build``), or channels-first
        (n1, C, *S) inputs for convolutional specs (``build`` gets (C, *S)).
      x2: inputs of the same per-example shape, or None (x2 = x1).
      n_samples: number of networks, or an increasing list of checkpoints such as
        ``[8, 64, 512]``; the networks are shared, so the estimate at 64 is the average
        of the first 64 networks (convergence plots cost max(n_samples) networks).
      get: "nngp", "ntk", or a tuple of them.
      seed: base seed; sample s uses the s-th seed of `sample_seeds` (seed, ...).
      progress: tqdm progress bar over networks.
      memory_budget: bytes each network's empirical kernels may use for their tiles
        (None: `ntkit.engine.memory.default_memory_budget` of the inputs' device); see
        `ntkit.empirical.empirical_ntk`. The estimate does not depend on it.
      pattern: (pattern1, pattern2) per-example graph patterns for graph networks, passed
        to each network's forward as `ntkit.empirical.empirical_ntk` does (as
        ``net.kernel(x1, x2, pattern=...)`` takes them).
      mask_constant: the padding value of masked inputs, passed to each network's
        forward (``model(x, mask_constant=c)``), as ``net.kernel(x1, x2,
        mask_constant=c)`` takes it.

    Returns:
      For one ``get`` name a (n1, n2) tensor, else a namedtuple with those fields; for a
      list ``n_samples`` a list of those, one per checkpoint.
    """
    names, single_get = _check_get(get)
    counts, single_n = _check_n_samples(n_samples)
    if not callable(getattr(net, "build", None)):
        raise TypeError(f"net must be a layer spec with a build(in_features, seed) method, got "
                        f"{type(net).__name__}")
    if not isinstance(x1, Tensor):
        if isinstance(x1, np.ndarray) and any(st < 0 for st in x1.strides):
            x1 = x1.copy()  # torch.as_tensor refuses negative strides
        try:
            x1 = torch.as_tensor(x1)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"x1 must be a numeric tensor or array, got "
                            f"{type(x1).__name__}") from e
    if x1.ndim < 2:
        raise ValueError(f"x1 must be (n, d) inputs, got shape {tuple(x1.shape)}")
    # The per-example shape: an int for (n, d) rows, (C, *S) for images and sequences.
    d = int(x1.shape[1]) if x1.ndim == 2 else tuple(int(s) for s in x1.shape[1:])
    budget = check_memory_budget(memory_budget, x1.device)
    seeds = sample_seeds(seed, counts[-1])

    sums: dict[str, Tensor | None] = dict.fromkeys(names)
    out_type = _result_type(names)
    results = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=counts[-1], desc="monte_carlo_kernel")
    checkpoints = iter(counts)
    target = next(checkpoints)
    for s in range(counts[-1]):
        model = net.build(in_features=d, seed=seeds[s])
        for g in names:
            if g == "nngp":
                k = empirical_nngp(model, x1, x2, memory_budget=budget, pattern=pattern,
                                   mask_constant=mask_constant)
            else:
                k = empirical_ntk(model, x1, x2, memory_budget=budget, pattern=pattern,
                                  mask_constant=mask_constant)
            sums[g] = k if sums[g] is None else sums[g] + k
        if bar is not None:
            bar.update(1)
        if s + 1 == target:
            est = out_type(*(sums[g] / target for g in names))
            results.append(est[0] if single_get else est)
            target = next(checkpoints, None)
    if bar is not None:
        bar.close()
    return results[0] if single_n else results
