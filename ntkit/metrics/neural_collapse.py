"""Neural collapse metrics NC1–NC4 (Papyan, Han & Donoho 2020, "Prevalence of neural
collapse during the terminal phase of deep learning training").

For last-layer features h_{ic} (example i of class c), with global mean μ_G, class means
μ_c, between-class covariance Σ_B = Avg_c (μ_c − μ_G)(μ_c − μ_G)ᵀ and within-class
covariance Σ_W = Avg_{i,c} (h_{ic} − μ_c)(h_{ic} − μ_c)ᵀ:

- NC1 (variability collapse): tr(Σ_W Σ_B⁺)/C → 0.
- NC2 (simplex ETF): the centered means M_c = μ_c − μ_G become equinorm (coefficient of
  variation std_c ‖M_c‖ / avg_c ‖M_c‖ → 0) and equiangular (std over c ≠ c' of
  cos(M_c, M_c') → 0) at the maximal angle (avg |cos + 1/(C−1)| → 0). The same for the
  classifier rows w_c.
- NC3 (self-duality): ‖W/‖W‖_F − M/‖M‖_F‖²_F → 0 (W the C × p classifier matrix).
- NC4 (nearest class center): fraction of examples where the network's decision
  argmax_c (w_cᵀh + b_c) differs from argmin_c ‖h − μ_c‖ → 0.

μ_G is the mean over all examples (Papyan et al.'s definition; for balanced classes it is
the average of the class means).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["neural_collapse"]


def _as_array(a, name: str, ndim: int) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) \
            or np.iscomplexobj(arr):
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _classifier(classifier, p: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(W (C, p), b (C,)) from an nn.Linear, a (W, b) pair or a bare W."""
    if isinstance(classifier, nn.Linear):
        w = classifier.weight
        b = classifier.bias if classifier.bias is not None else torch.zeros(w.shape[0])
    elif isinstance(classifier, (tuple, list)) and len(classifier) == 2:
        w, b = classifier
    else:
        w, b = classifier, None
    w = _as_array(w, "classifier weight", 2).astype(np.float64)
    b = np.zeros(w.shape[0]) if b is None else _as_array(b, "classifier bias", 1)
    if w.shape != (n_classes, p) or b.shape != (n_classes,):
        raise ValueError(f"classifier must be (C={n_classes}, p={p}) with bias (C,), got "
                         f"{w.shape} and {b.shape}")
    return w, b.astype(np.float64)


def _cosines(rows: np.ndarray) -> np.ndarray:
    u = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    g = u @ u.T
    return g[~np.eye(g.shape[0], dtype=bool)]


def neural_collapse(features, labels, classifier=None) -> dict[str, float]:
    """NC1–NC4 of features and (optionally) a linear classifier.

    Args:
      features: (n, p) last-layer features (numpy or torch).
      labels: (n,) integer class labels; the C classes are the distinct values (C ≥ 2,
        each with at least one example).
      classifier: None, an ``nn.Linear`` (p → C), a (W, b) pair or a bare W of shape (C, p),
        rows ordered like the sorted distinct labels.

    Returns:
      dict with "nc1", "nc2_equinorm", "nc2_equiangular", "nc2_maxangle" (class means),
      "nc2_equinorm_w", "nc2_equiangular_w", "nc2_maxangle_w" (classifier rows), "nc3",
      "nc4". Classifier-dependent entries are NaN when no classifier is given.
    """
    h = _as_array(features, "features", 2).astype(np.float64)
    lab = _as_array(labels, "labels", 1)
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(lab == np.round(lab)):
            raise TypeError(f"labels must be integers, got dtype {lab.dtype}")
        lab = lab.astype(np.int64)
    if lab.shape[0] != h.shape[0]:
        raise ValueError(f"features has {h.shape[0]} rows but labels has {lab.shape[0]}")
    classes, idx = np.unique(lab, return_inverse=True)
    c = classes.size
    if c < 2:
        raise ValueError(f"need at least 2 classes, got {c}")
    n, p = h.shape
    clf = None if classifier is None else _classifier(classifier, p, c)
    mu_g = h.mean(0)
    mu = np.stack([h[idx == k].mean(0) for k in range(c)])
    m = mu - mu_g
    within = h - mu[idx]
    sigma_w = within.T @ within / n
    sigma_b = m.T @ m / c
    # pseudo-inverse of the rank ≤ C−1 between-class covariance, cut at its own scale
    nc1 = float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True))) / c
    norms = np.linalg.norm(m, axis=1)
    if not np.all(norms > 0):
        raise ValueError("some class means coincide with the global mean (no between-class "
                         "spread): NC2/NC3 are undefined")
    cos = _cosines(m)
    out = {
        "nc1": nc1,
        "nc2_equinorm": float(norms.std() / norms.mean()),
        "nc2_equiangular": float(cos.std()),
        "nc2_maxangle": float(np.abs(cos + 1.0 / (c - 1)).mean()),
        "nc2_equinorm_w": math.nan, "nc2_equiangular_w": math.nan,
        "nc2_maxangle_w": math.nan, "nc3": math.nan, "nc4": math.nan,
    }
    if clf is not None:
        w, b = clf
        wn = np.linalg.norm(w, axis=1)
        wcos = _cosines(w)
        out["nc2_equinorm_w"] = float(wn.std() / wn.mean())
        out["nc2_equiangular_w"] = float(wcos.std())
        out["nc2_maxangle_w"] = float(np.abs(wcos + 1.0 / (c - 1)).mean())
        out["nc3"] = float(np.linalg.norm(w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2)
        net = np.argmax(h @ w.T + b, axis=1)
        d2 = ((h[:, None, :] - mu[None]) ** 2).sum(-1)
        ncc = np.argmin(d2, axis=1)
        out["nc4"] = float(np.mean(net != ncc))
    return out
