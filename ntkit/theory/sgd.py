"""SGD's noise: the exact second moment of a minibatch gradient, and batch-means errors.

Notation (Yaida 2018, "Fluctuation-dissipation relations for stochastic gradient descent"). A loss
L(θ) = (1/n) Σ_i ℓ_i(θ) + R(θ) is minimized by θ ← θ − η g_B with the minibatch gradient
g_B = (1/b) Σ_{i∈B} ∇ℓ_i + ∇R, an unbiased estimate of ∇L. Its second moment over the
draw of B is C̃ = E_B[g_B g_Bᵀ] = ∇L ∇Lᵀ + Cov_B(g_B). For plain SGD (no momentum) in a
stationary state, Yaida's first fluctuation-dissipation relation (FDR1) is the exact identity

    ⟨θ·∇L(θ)⟩ = (η/2) ⟨tr C̃(θ)⟩,

from E|θ_{t+1}|² = E|θ_t|², and stationarity of the mean gives ⟨∇L⟩ = 0 (from
E θ_{t+1} = E θ_t).
`minibatch_second_moment_trace` gives tr C̃(θ) exactly from the n per-example gradients
for three sampling schemes; `batch_means` gives the mean of an autocorrelated series
with a standard error that accounts for the autocorrelation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

SAMPLINGS = ("without_replacement", "with_replacement", "bernoulli")

__all__ = ["BatchMeans", "SAMPLINGS", "batch_means", "minibatch_second_moment_trace"]


def _as_tensor(x, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def minibatch_second_moment_trace(per_example_grads, batch_size: int,
                                  sampling: str = "without_replacement",
                                  shared_grad=None) -> Tensor:
    """tr C̃ = E_B ‖g_B‖² for g_B = (1/b) Σ_{i∈B} g_i + s, exactly (no sampling).

    Args:
      per_example_grads: (n, P) gradients g_i of the per-example losses ℓ_i (numpy or torch).
      batch_size: b, 1 ≤ b ≤ n (for "bernoulli", b is the expected batch size, 0 < b ≤ n).
      sampling: how B is drawn each step —
        "without_replacement": a uniform random subset of size b;
        "with_replacement": b indices drawn uniformly and independently;
        "bernoulli": each i enters B independently with probability p = b/n, and the sum is
          still divided by b (the expected batch size, so that g_B stays unbiased).
      shared_grad: optional (P,) gradient s added to every minibatch gradient (e.g. of an L2
        term R), which is not resampled.

    Returns:
      A 0-d tensor: ‖ḡ + s‖² + tr Cov_B(g_B), with ḡ = mean_i g_i and
        without_replacement: tr Cov = (n − b)/(b (n − 1)) · (1/n) Σ_i ‖g_i − ḡ‖²  (0 if n = 1)
        with_replacement:    tr Cov = (1/b) · (1/n) Σ_i ‖g_i − ḡ‖²
        bernoulli:           tr Cov = (1 − p)/(b n) · Σ_i ‖g_i‖²
    """
    g = _as_tensor(per_example_grads, "per_example_grads")
    if g.ndim != 2 or g.shape[0] < 1:
        raise ValueError(f"per_example_grads must have shape (n, P) with n ≥ 1, got "
                         f"{tuple(g.shape)}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; use one of {SAMPLINGS}")
    n = g.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    b = int(batch_size)
    if not 1 <= b <= n:
        raise ValueError(f"batch_size must be in [1, n = {n}], got {b}")
    mean = g.mean(dim=0)
    full = mean
    if shared_grad is not None:
        s = _as_tensor(shared_grad, "shared_grad").to(g.dtype)
        if s.shape != mean.shape:
            raise ValueError(f"shared_grad must have shape {tuple(mean.shape)}, got "
                             f"{tuple(s.shape)}")
        full = mean + s
    spread = ((g - mean) ** 2).sum(dim=1).mean()          # (1/n) Σ ‖g_i − ḡ‖²
    if sampling == "without_replacement":
        cov = spread * (n - b) / (b * (n - 1)) if n > 1 else spread * 0
    elif sampling == "with_replacement":
        cov = spread / b
    else:
        p = b / n
        cov = (1 - p) / (b * n) * (g ** 2).sum()
    return full @ full + cov


@dataclass(frozen=True)
class BatchMeans:
    """Mean of a stationary series and its standard error by non-overlapping batch means.

    Attributes:
      mean: the sample mean (a float, or an array for a (T, k) series).
      stderr: std of the batch means / √n_batches (same shape as mean). Valid when each
        batch is much longer than the series' autocorrelation time.
      n_batches: number of batches used.
      batch_length: samples per batch (the last T mod n_batches samples are dropped).
      tau: the integrated autocorrelation time implied, ≈ (stderr² · T) / var(series)
        (1 for an uncorrelated series; same shape as mean).
    """

    mean: float | np.ndarray
    stderr: float | np.ndarray
    n_batches: int
    batch_length: int
    tau: float | np.ndarray


def batch_means(series, n_batches: int = 20) -> BatchMeans:
    """Batch-means estimate of the mean of an autocorrelated stationary series.

    Args:
      series: (T,) or (T, k) samples in time order (numpy or torch); T ≥ 2·n_batches.
      n_batches: number of contiguous batches (≥ 2). With B batches the stderr itself has a
        relative uncertainty of about 1/√(2(B − 1)) (≈ 16% for 20).

    Returns:
      `BatchMeans`. The mean is over the first n_batches·(T // n_batches) samples.
    """
    if isinstance(series, Tensor):
        series = series.detach().cpu().numpy()
    x = np.asarray(series)
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"series must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if x.ndim not in (1, 2):
        raise ValueError(f"series must have shape (T,) or (T, k), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("series contains NaN or inf")
    if isinstance(n_batches, bool) or not isinstance(n_batches, (int, np.integer)) \
            or n_batches < 2:
        raise ValueError(f"n_batches must be an int ≥ 2, got {n_batches!r}")
    t = x.shape[0]
    length = t // int(n_batches)
    if length < 2:
        raise ValueError(f"series of length {t} is too short for {n_batches} batches "
                         "(need at least 2 samples per batch)")
    used = x[: length * n_batches]
    means = used.reshape(n_batches, length, *x.shape[1:]).mean(axis=1)
    mean = used.mean(axis=0)
    se = means.std(axis=0, ddof=1) / math.sqrt(n_batches)
    var = used.var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.where(var > 0, se ** 2 * used.shape[0] / np.where(var > 0, var, 1), np.nan)
    if x.ndim == 1:
        return BatchMeans(float(mean), float(se), int(n_batches), length, float(tau))
    return BatchMeans(mean, se, int(n_batches), length, tau)
