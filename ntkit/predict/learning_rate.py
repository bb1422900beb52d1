"""Largest stable learning rate of (momentum) gradient descent on MSE in the NTK regime."""

from __future__ import annotations

from typing import Any

import torch

from ntkit.solvers.checks import check_kernel

__all__ = [
    "max_learning_rate",
]


def max_learning_rate(ntk_train_train: Any, y_train_size: int | None = None,
                      momentum: float = 0.0, eps: float = 1e-12) -> float:
    """Largest learning rate for which discrete gradient descent on MSE converges.

    With the loss 0.5 · mean((f - y)²) over N = y_train_size entries, one full-batch
    step maps the training residual r to ``(I - η Θ / N) r`` (in the linearized,
    infinite-width regime), a contraction iff η < 2 N / λ_max(Θ). With heavy-ball
    momentum μ the bound is 2 (1 + μ) N / λ_max (Goh 2017, "Why momentum really
    works"). This is neural-tangents' ``max_learning_rate``.

    Args:
      ntk_train_train: (n, n) NTK on the training inputs (numpy or torch).
      y_train_size: N = y_train.size, the number of target entries the loss averages
        over. Default: n (a single output). For k outputs sharing the (n, n) kernel,
        pass n · k.
      momentum: μ in [0, 1).
      eps: added to λ_max to avoid dividing by zero.

    Returns:
      The critical learning rate (a float); steps at or above it diverge.
    """
    k = check_kernel(ntk_train_train, "ntk_train_train")
    n = k.shape[0]
    size = n if y_train_size is None else int(y_train_size)
    if size <= 0:
        raise ValueError(f"y_train_size must be a positive integer, got {y_train_size}")
    momentum = float(momentum)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    # On the kernel's device: eigenvalues only (no vectors), which costs the same
    # tridiagonalization as LAPACK's subset driver on a host copy, without the copy.
    lam_max = float(torch.linalg.eigvalsh(k)[-1])
    if lam_max <= 0:
        raise ValueError(f"ntk_train_train has no positive eigenvalue (λ_max = {lam_max:.3g})")
    return 2.0 * (1.0 + momentum) * size / (lam_max + eps)
