"""One comparison of two kernels (NNGP/NTK matrices) with a tolerance that follows the
conditioning of each entry, not one platform's rounding.

Import it from any test (``tests/`` is on ``sys.path``: pytest inserts the directory of the
rootdir ``tests/conftest.py``, which has no ``__init__.py``)::

    from kernel_compare import assert_kernels_close
    assert_kernels_close(k_tiled.ntk, k_ref.ntk, identical="diagonal")

Three regimes, per entry (i, j) with scale s_ij = √(K_ii K_jj) (Cauchy–Schwarz: every
|K_ij| ≤ s_ij) and correlation ρ_ij = K_ij / s_ij of the reference kernel:

1. **Known-identical pairs** (``identical``: an example against itself, e.g. the example
   diagonal of K(x, x), or x2[j] equal in value to x1[i]): the engine makes these exact
   (no arc-cosine of a rounded correlation), so they must agree to ``exact_ulps`` units
   of ε·s_ij (default 4; 0: bitwise).

2. **Near correlation ±1: the arc-cosine bound.** Arc-cosine duals (ReLU family, sign,
   step) depend on θ = arccos ρ of their input correlation, and arccos has a square-root
   singularity at ±1. Two routes (tiles vs untiled, diag vs full, x2=None vs x2 given, ...)
   round the covariance c and the variances v1, v2 independently, each by about ε per
   quantity (``ulps`` of them), so the ratio ρ = c/√(v1 v2) of the two routes differs by
   up to η = 4·ulps·ε:  2·ulps·ε from c (ulps·ε per route) and 2·ulps·ε from √(v1 v2)
   (ulps·ε/2 for each of v1, v2, per route). Then, by the mean value theorem on
   arccos' = −1/√(1 − x²), increasing in |x|,

       |Δθ| ≤ η / √(1 − r²),   r = min(1, |ρ| + η)   (far from ±1: ~η/√(1−ρ²)),

   and near ±1, where the substitution 1 − x = t²/2 gives arccos(1 − t²/2) = t(1 + t²/24
   + 3t⁴/640 + ...), a change η ≤ 1 of x moves θ by at most (t² = 2η)

       |Δθ| ≤ √(2η)·(1 + η/6) ≈ √(8·ulps·ε)              (√(8ε) ≈ 4.2e-8 in float64),

   reached when one route rounds ρ to exactly 1 and the other to 1 − η. The bound used
   is the smaller of the two. A layer's Tdot = (π − θ)/(2π) (ReLU; (a−b)²θ/(2π) for ABReLU)
   is linear in θ and multiplies an NTK bounded by the scale, so each arc-cosine layer
   adds at most s_ij·|Δθ|/(2π) to the NTK; its T is flat in θ at θ = 0 (dT/dθ ∝ sin θ),
   so the NNGP errors are O(η) there. With L such layers the total is ≤ L/(2π)·s_ij·|Δθ|;
   ``gain`` = L/(2π) (default 1, L ≤ 6) states that factor. Using the *output*
   correlation is conservative for the ReLU family: its dual maps correlations upwards
   (ρ' ≥ ρ), so every hidden layer's input correlation is at most as close to 1 as the
   output's, and the bound is monotone in 1 − |ρ|.

3. **Elsewhere: tight.** ``rtol`` (default 256·ε) relative to s_ij. Relative to s_ij and
   not to |K_ij|, because an entry near zero correlation is a sum of terms of size s_ij
   and its rounding error is a few ε·s_ij, however small the entry itself.

The total tolerance of an entry is s_ij·(rtol + gain·Δθ(ρ_ij)) outside ``identical``, and
s_ij·exact_ulps·ε on it; ε is the machine epsilon of the less precise of the two inputs.
On failure the message names the worst entry (largest |Δ|/tol): its index, both values,
its scale, its correlation, and each part of its tolerance.

Spatial kernels (n1, n2, *S) or (n1, n2, *S, *S): the per-example scale is the largest
variance over positions, s_i = max_p |K_ii(p, p)|, so s_ij = √(s_i s_j) bounds every
position entry (Cauchy–Schwarz), and ρ is taken per entry against it (a lower bound of
the true per-position correlation; pass ``corr`` to use the exact one).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["angle_error_bound", "assert_kernels_close", "kernel_tolerance"]


def _np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _eps(*arrays) -> float:
    """Machine epsilon of the least precise floating input (float64 for non-floats)."""
    eps = float(np.finfo(np.float64).eps)
    for a in arrays:
        if np.issubdtype(a.dtype, np.floating):
            eps = max(eps, float(np.finfo(a.dtype).eps))
    return eps


def angle_error_bound(rho, eta: float) -> np.ndarray:
    """Largest |arccos(ρ') − arccos(ρ)| over |ρ' − ρ| ≤ η (see the module docstring):
    min(√(2η)(1 + η/6), η/√(1 − r²)) with r = min(1, |ρ| + η) (η ≤ 1). Elementwise, float64.
    """
    rho = np.abs(np.asarray(rho, dtype=np.float64))
    near = math.sqrt(2.0 * eta) * (1.0 + eta / 6.0)
    r = np.minimum(1.0, rho + eta)
    with np.errstate(divide="ignore", invalid="ignore"):
        far = np.where(r < 1.0, eta / np.sqrt(np.maximum(1.0 - r * r, 0.0)), np.inf)
    return np.minimum(near, far)


def _example_diagonal(k: np.ndarray) -> np.ndarray:
    """(n, n, *T) -> (n, *T): K[i, i, ...]."""
    return np.moveaxis(np.diagonal(k, axis1=0, axis2=1), -1, 0)


def _per_example_scale(d: np.ndarray) -> np.ndarray:
    """(n, *T) per-example variances -> (n,) the largest |variance| over positions."""
    d = np.abs(d.astype(np.float64))
    return d.reshape(d.shape[0], -1).max(axis=1) if d.ndim > 1 else d


def _identical_mask(identical, shape2: tuple[int, int]) -> np.ndarray:
    n1, n2 = shape2
    mask = np.zeros((n1, n2), dtype=bool)
    if identical is None:
        return mask
    if isinstance(identical, str):
        if identical != "diagonal":
            raise ValueError(f"identical must be 'diagonal', a (n1, n2) bool mask or a "
                             f"sequence of (i, j) pairs, got {identical!r}")
        if n1 != n2:
            raise ValueError(f"identical='diagonal' needs a square kernel, got {shape2}")
        np.fill_diagonal(mask, True)
        return mask
    arr = _np(identical)
    if arr.dtype == bool:
        if arr.shape != (n1, n2):
            raise ValueError(f"an identical mask must have shape {(n1, n2)}, got {arr.shape}")
        return arr.copy()
    arr = arr.reshape(-1, 2).astype(np.int64)
    mask[arr[:, 0], arr[:, 1]] = True
    return mask


def kernel_tolerance(expected, *, var1=None, var2=None, corr=None,
                     rtol: float | None = None, ulps: float = 1.0, gain: float = 1.0,
                     identical=None, exact_ulps: float = 4.0, eps: float | None = None):
    """Per-entry tolerance for comparing a kernel against ``expected`` (module docstring).

    Args:
      expected: reference kernel (n1, n2, *T), tensor or array.
      var1, var2: the reference kernel's own diagonal values for the rows (n1, *T') and
        columns (n2, *T'), i.e. K(x1_i, x1_i) and K(x2_j, x2_j) of the *same* kernel
        (NNGP: ``Kernel.cov1``/``cov2``). Default: the example diagonal of ``expected``
        when it is square (it must then be K(x, x)); for a cross kernel (n1 ≠ n2), the
        row/column scales √(max_j |K_ij| · max_i |K_ij|) and no arc-cosine relaxation,
        i.e. tight everywhere: right for disjoint batches; a cross kernel with
        correlation-±1 pairs (x2 sharing examples with x1) needs var1/var2.
      corr: (n1, n2, *T) correlation to use for the arc-cosine term instead of
        expected / scale (e.g. the NNGP correlation when comparing NTKs).
      rtol: the tight part, relative to the scale √(K_ii K_jj); default 256·ε.
      ulps: rounding of each route's c, v1, v2, in units of ε (η = 4·ulps·ε).
      gain: L/(2π) for L arc-cosine layers (default 1: up to 6 layers).
      identical: pairs known to be one example against itself: "diagonal", a (n1, n2)
        bool mask, or a sequence of (i, j).
      exact_ulps: tolerance on identical pairs, in units of ε·scale (default 4: the
        routes may round the variance chain differently by an ulp per layer; 0: bitwise).
      eps: machine epsilon; default that of ``expected``'s dtype.

    Returns:
      dict of float64 arrays broadcast to expected's shape: ``tol``, ``scale``, ``rho``,
      ``tight``, ``arccos`` (the two parts outside identical pairs), ``identical`` (bool).
    """
    e = _np(expected).astype(np.float64) if not np.iscomplexobj(_np(expected)) else None
    if e is None or e.ndim < 2:
        raise ValueError("expected must be a real kernel of shape (n1, n2, ...)")
    n1, n2 = e.shape[:2]
    eps = _eps(_np(expected)) if eps is None else float(eps)
    rtol = 256.0 * eps if rtol is None else float(rtol)
    if (var1 is None) != (var2 is None):
        raise ValueError("give both var1 and var2, or neither")
    cross_fallback = var1 is None and n1 != n2
    if cross_fallback:
        # No variances for a cross kernel: the scale of row i and column j from their
        # largest entries, and no arc-cosine relaxation (rho = 0): tight everywhere.
        flat = np.abs(e).reshape(n1, n2, -1).max(axis=2)
        d1, d2 = flat.max(axis=1), flat.max(axis=0)
    elif var1 is None:
        d = _example_diagonal(e)
        d1 = d2 = _per_example_scale(d)
    else:
        d1, d2 = _per_example_scale(_np(var1)), _per_example_scale(_np(var2))
        if d1.shape != (n1,) or d2.shape != (n2,):
            raise ValueError(f"var1/var2 must have {n1}/{n2} examples, got "
                             f"{d1.shape[0]}/{d2.shape[0]}")
    trailing = (1,) * (e.ndim - 2)
    scale = np.sqrt(np.outer(d1, d2)).reshape((n1, n2) + trailing)
    scale = np.broadcast_to(scale, e.shape)
    if cross_fallback:
        rho = np.zeros(e.shape)
    elif corr is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where(scale > 0, np.abs(e) / scale, 0.0)
    else:
        rho = np.broadcast_to(np.abs(_np(corr).astype(np.float64)), e.shape)
    rho = np.nan_to_num(np.minimum(rho, 1.0), nan=1.0)
    tight = np.full(e.shape, rtol) * scale
    arccos = gain * angle_error_bound(rho, 4.0 * ulps * eps) * scale
    ident = np.broadcast_to(_identical_mask(identical, (n1, n2)).reshape((n1, n2) + trailing),
                            e.shape)
    tol = np.where(ident, exact_ulps * eps * scale, tight + arccos)
    return {"tol": tol, "scale": scale, "rho": rho, "tight": tight, "arccos": arccos,
            "identical": ident}


def assert_kernels_close(actual, expected, *, name: str = "kernel", **options) -> float:
    """Assert that kernel ``actual`` equals ``expected`` within the conditioning tolerance.

    Args:
      actual, expected: kernels (n1, n2, *T) (tensors or arrays, same shape).
      name: what is compared, for the message.
      **options: those of `kernel_tolerance` (var1, var2, corr, rtol, ulps, gain,
        identical, exact_ulps, eps).

    Returns:
      max |Δ|/tol (≤ 1 when it passes), so a test may also report its margin.

    Raises:
      AssertionError naming the worst entry: index, values, scale, correlation, tolerance.
    """
    a, b = _np(actual), _np(expected)
    if a.shape != b.shape:
        raise AssertionError(f"{name}: shapes differ: {a.shape} vs expected {b.shape}")
    options.setdefault("eps", _eps(a, b))
    t = kernel_tolerance(b, **options)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    same_nonfinite = (~np.isfinite(b64)) & ((a64 == b64) | (np.isnan(a64) & np.isnan(b64)))
    if np.any(~np.isfinite(a64) & ~same_nonfinite) or np.any(~np.isfinite(b64)
                                                             & ~same_nonfinite):
        bad = np.argwhere(~same_nonfinite & ~(np.isfinite(a64) & np.isfinite(b64)))[0]
        raise AssertionError(f"{name}: non-finite mismatch at {tuple(bad)}: "
                             f"{a64[tuple(bad)]} vs expected {b64[tuple(bad)]}")
    with np.errstate(invalid="ignore"):
        diff = np.where(same_nonfinite, 0.0, np.abs(a64 - b64))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / t["tol"])
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.size else None
    r = float(ratio[worst]) if worst is not None else 0.0
    if r > 1.0:
        w = worst
        kind = ("an identical pair (exact)" if t["identical"][w] else
                f"tight {t['tight'][w]:.3e} + arc-cosine {t['arccos'][w]:.3e}")
        n_bad = int((ratio > 1.0).sum())
        raise AssertionError(
            f"{name}: {n_bad} of {ratio.size} entries outside the conditioning tolerance; "
            f"worst at {tuple(int(i) for i in w)}: got {a64[w]!r}, expected {b64[w]!r}, "
            f"|diff| = {diff[w]:.3e} = {r:.3g} x tol {t['tol'][w]:.3e} ({kind}); "
            f"scale sqrt(K_ii K_jj) = {t['scale'][w]:.6g}, correlation = {t['rho'][w]:.17g}, "
            f"1 - |correlation| = {1.0 - t['rho'][w]:.3e}")
    return r
