"""Gaussian quadrature for dual activations of arbitrary elementwise functions.

For (u, v) ~ N(0, Σ), Σ = [[var1, cov], [cov, var2]], write (u, v) = L z with
z ~ N(0, I₂) and L the lower Cholesky factor of Σ:

    u = l11 z1,   v = l21 z1 + l22 z2,
    l11 = √var1,  l21 = cov / l11,  l22 = √max(var2 − l21², 0),

and apply a tensor-product rule {x_i, w_i} for the standard normal weight:

    E[f(u) g(v)] ≈ Σ_i Σ_j w_i w_j f(l11 x_i) g(l21 x_i + l22 x_j).

Degenerate covariances need no special case: var1 = 0 gives l11 = l21 = 0 (u ≡ 0),
and |cov| = √(var1 var2) gives l22 = 0 (v a multiple of u), both limits of the rule.

Two 1-D rules (``rule=``):

- ``"hermite"``: the n-point Gauss–Hermite rule, exact when the integrand is a polynomial
  of degree ≤ 2n − 1 in each of z1, z2, and the right choice for fast-growing φ
  (exp, high-degree polynomials). Nodes and weights come from Golub–Welsch in float64
  (eigenvalues of the Jacobi matrix), polished by a Newton step, with weights from the
  Christoffel formula w_i = 1 / (n · h_{n−1}(x_i)²) evaluated with a scaled recurrence.
  They stay accurate (not NaN, as numpy's ``hermegauss`` becomes past ~300 nodes) up to
  thousands of nodes; weights below float64's range underflow to 0, which is harmless.
- ``"trapezoid"``: n equispaced nodes on [−8, 8] with weights ∝ e^{−x²/2} (the Gaussian
  mass beyond ±8 is 1.2e-15; for φ of linear growth the truncation error is ~1e-14).
  For φ analytic in a strip |Im x| < d, the error decays like exp(−2π d / (h √var)) with
  h = 16/(n − 1) (Trefethen & Weideman, SIAM Review 2014). Activations such as tanh,
  sigmoid, softplus and SiLU have poles near the real axis, where Gauss–Hermite spends
  its nodes in the far tails instead: with 64 nodes, at variances in [0.5, 1.5] including
  |ρ| = 1, tanh's T is ~1e-12 and Tdot ~6e-11 (trapezoid) vs ~2e-8 (Gauss–Hermite).
  Its accuracy saturates at the truncation error (~1e-14 for φ of linear growth), and it
  is not for fast-growing φ (exp(x), high powers: the tails matter).

Both converge more slowly as the variance grows (the poles of φ(√var·z) approach the
real axis): raise ``deg`` roughly ∝ √var. Neither is accurate at kinks (ReLU, |x|, sign:
~1e-3), so kinked activations have closed forms instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from ntkit.dual.autodiff import reduce_grad

#: Default number of nodes per dimension. With the default trapezoid rule, 64 nodes reach
#: ~1e-12 (T) and ~6e-11 (Tdot) relative error for tanh, the hardest common case, and
#: ~1e-15 for sigmoid, softplus and SiLU, at variances in [0.5, 1.5]
#: (see tests/dual/test_dual_quadrature.py).
DEFAULT_DEG = 64

#: Default 1-D rule.
DEFAULT_RULE = "trapezoid"

#: Half-width of the trapezoid rule's interval, in standard deviations.
TRAPEZOID_HALF_WIDTH = 8.0

RULES = ("trapezoid", "hermite")

#: Default cap on the number of elements of the (chunk, deg, deg) temporaries.
DEFAULT_MAX_ELEMENTS = 1 << 21


def _scaled_hermite(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal Hermite values h_{n−1}(x), h_n(x) up to a common scale.

    h_k = He_k / √k! satisfies h_{k+1} = (x h_k − √k h_{k−1}) / √(k+1). The values grow
    like e^{x²/4}, so the recurrence rescales whenever they get large and returns
    (h_{n−1}·s, h_n·s, log s⁻¹) with the same scale s for both.
    """
    h_prev = np.zeros_like(x)
    h_cur = np.ones_like(x)
    log_scale = np.zeros_like(x)
    for k in range(n):
        h_next = (x * h_cur - math.sqrt(k) * h_prev) / math.sqrt(k + 1)
        h_prev, h_cur = h_cur, h_next
        big = np.abs(h_cur) > 1e100
        if big.any():
            h_prev = np.where(big, h_prev * 1e-100, h_prev)
            h_cur = np.where(big, h_cur * 1e-100, h_cur)
            log_scale = log_scale + np.where(big, 100 * math.log(10), 0.0)
    return h_prev, h_cur, log_scale


@lru_cache(maxsize=32)
def _gauss_hermite_np(deg: int) -> tuple[np.ndarray, np.ndarray]:
    if deg == 1:
        return np.zeros(1), np.ones(1)
    # Jacobi matrix of the probabilists' Hermite polynomials: zero diagonal, √k off it.
    off = np.sqrt(np.arange(1, deg, dtype=np.float64))
    x = scipy.linalg.eigh_tridiagonal(np.zeros(deg), off, eigvals_only=True)
    x = np.sort(x)
    # One Newton step on h_n (h_n' = √n h_{n−1}); the common scale cancels in the ratio.
    h_nm1, h_n, _ = _scaled_hermite(x, deg)
    x = x - h_n / (math.sqrt(deg) * h_nm1)
    x = 0.5 * (x - x[::-1])  # exact symmetry: odd moments vanish exactly
    h_nm1, _, log_scale = _scaled_hermite(x, deg)
    # w_i = 1 / (n h_{n−1}(x_i)²), with h_{n−1} = h_nm1_scaled · e^{log_scale}.
    log_w = -math.log(deg) - 2.0 * (np.log(np.abs(h_nm1)) + log_scale)
    w = np.exp(log_w)
    w = 0.5 * (w + w[::-1])
    return x, w / w.sum()


def gauss_hermite(deg: int, dtype: torch.dtype = torch.float64,
                  device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Nodes and weights of the deg-point Gauss rule for the standard normal N(0, 1).

    Σ_i w_i f(x_i) ≈ E[f(z)], z ~ N(0, 1); exact for polynomials of degree ≤ 2·deg − 1.
    Computed in float64 (Golub–Welsch + Newton polish), then cast to ``dtype``.

    Returns:
      (x, w), each of shape (deg,), w summing to 1.
    """
    check_deg(deg)
    x, w = _gauss_hermite_np(deg)
    return (torch.as_tensor(x, dtype=dtype, device=device),
            torch.as_tensor(w, dtype=dtype, device=device))


def check_deg(deg) -> int:
    if isinstance(deg, bool) or not isinstance(deg, int):
        raise TypeError(f"deg must be an int, got {type(deg).__name__}")
    if deg < 1:
        raise ValueError(f"deg must be >= 1, got {deg}")
    return deg


@lru_cache(maxsize=32)
def _trapezoid_np(deg: int) -> tuple[np.ndarray, np.ndarray]:
    if deg == 1:
        return np.zeros(1), np.ones(1)
    x = np.linspace(-TRAPEZOID_HALF_WIDTH, TRAPEZOID_HALF_WIDTH, deg)
    x = 0.5 * (x - x[::-1])
    w = np.exp(-0.5 * x * x)
    return x, w / w.sum()  # normalized: constants are integrated exactly


def trapezoid_rule(deg: int, dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Nodes and weights of the deg-point trapezoid rule for N(0, 1) on [−8, 8].

    Returns:
      (x, w), each of shape (deg,), w ∝ exp(−x²/2) summing to 1.
    """
    check_deg(deg)
    x, w = _trapezoid_np(deg)
    return (torch.as_tensor(x, dtype=dtype, device=device),
            torch.as_tensor(w, dtype=dtype, device=device))


def quadrature_rule(deg: int, rule: str = DEFAULT_RULE, dtype: torch.dtype = torch.float64,
                    device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """The deg-point rule ``rule`` ("trapezoid" or "hermite") for N(0, 1)."""
    if rule == "hermite":
        return gauss_hermite(deg, dtype, device)
    if rule == "trapezoid":
        return trapezoid_rule(deg, dtype, device)
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def derivative(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The elementwise derivative of an elementwise torch function, by autograd.

    Keeps the graph when the caller differentiates (so the result stays differentiable
    with respect to its inputs); otherwise evaluates on a detached copy.
    """

    def fn_deriv(x: Tensor) -> Tensor:
        keep = torch.is_grad_enabled() and x.requires_grad
        with torch.enable_grad():
            xg = x if keep else x.detach().requires_grad_(True)
            y = fn(xg)
            if not y.requires_grad:  # piecewise-constant φ (step, sign): φ' = 0
                return torch.zeros_like(x)
            (g,) = torch.autograd.grad(y, xg, torch.ones_like(y), create_graph=keep,
                                       allow_unused=True)
        return torch.zeros_like(x) if g is None else g

    return fn_deriv


def _cholesky_2x2(var1: Tensor, cov: Tensor, var2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Entries (l11, l21, l22) of the lower Cholesky factor of [[var1, cov], [cov, var2]].

    Clamped so that zero variances and |cov| ≥ √(var1 var2) (exact or from rounding)
    give finite values with finite gradients: l11 = 0 ⇒ l21 = 0, and l22 = 0 at the
    boundary of the PSD cone.
    """
    v1 = var1.clamp_min(0)
    l11 = v1.sqrt()
    pos = l11 > 0
    safe = torch.where(pos, l11, torch.ones_like(l11))  # avoids 0/0 (and NaN gradients)
    l21 = torch.where(pos, cov / safe, torch.zeros_like(cov))
    l22 = (var2 - l21 * l21).clamp_min(0).sqrt()
    return l11, l21, l22


# Graph-break under torch.compile: the work is a few large batched evaluations of a user
# function (nothing to fuse), and tracing would unroll the chunk loop.
@torch.compiler.disable
def quadrature_dual(fn: Callable[[Tensor], Tensor], var1: Tensor, cov: Tensor, var2: Tensor,
                    need_dot: bool, *, fn_deriv: Callable[[Tensor], Tensor] | None = None,
                    deg: int = DEFAULT_DEG, rule: str = DEFAULT_RULE,
                    max_elements: int = DEFAULT_MAX_ELEMENTS) -> tuple[Tensor, Tensor | None]:
    """T = E[φ(u)φ(v)] and Tdot = E[φ'(u)φ'(v)] by 2-D quadrature (see module docstring).

    Args:
      fn: φ, an elementwise torch function.
      var1, cov, var2: broadcastable tensors (e.g. (n1, 1), (n1, n2), (1, n2)).
      need_dot: also return Tdot.
      fn_deriv: φ'; defaults to autograd of ``fn``.
      deg: nodes per dimension (cost deg² evaluations of φ per entry).
      rule: "trapezoid" (default; best for activations analytic near the real axis
        with at most polynomial growth) or "hermite" (Gauss–Hermite; exact for
        polynomials, best for fast-growing φ).
      max_elements: cap on the (chunk, deg, deg) temporary; entries are processed in
        chunks of max(1, max_elements // deg²). Chunking does not change the result.

    Returns:
      (T, Tdot or None), of the broadcast shape, in the inputs' dtype.

    When ``var1``, ``cov`` and ``var2`` are the same tensor (the diagonal call), a 1-D
    rule E[φ(u)²] is used: same result, deg times cheaper.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (var1, cov, var2)):
        # Autograd through the Cholesky factor is 0·∞ at |ρ| = 1 (l22 = 0): differentiate
        # by Price's theorem instead (same forward values; see ntkit.dual.autodiff).
        derivs = Derivatives(fn, fn_deriv)
        opts = {"deg": deg, "rule": rule, "max_elements": max_elements}
        t = gauss_expect(derivs, 0, 0, var1, cov, var2, **opts)
        return t, (gauss_expect(derivs, 1, 1, var1, cov, var2, **opts) if need_dot else None)
    if need_dot and fn_deriv is None:
        fn_deriv = derivative(fn)
    dtype = torch.promote_types(torch.promote_types(var1.dtype, cov.dtype), var2.dtype)
    device = cov.device
    x, w = quadrature_rule(deg, rule, dtype=dtype, device=device)

    if var1 is cov and cov is var2:
        s = var1.clamp_min(0).sqrt().unsqueeze(-1) * x  # (..., deg)
        t = (fn(s).square() * w).sum(-1)
        tdot = (fn_deriv(s).square() * w).sum(-1) if need_dot else None
        return t, tdot

    shape = torch.broadcast_shapes(var1.shape, cov.shape, var2.shape)
    l11, l21, l22 = (t.expand(shape).reshape(-1) for t in _cholesky_2x2(var1, cov, var2))
    m = l11.numel()
    chunk = max(1, max_elements // (deg * deg))
    fns = (fn, fn_deriv) if need_dot else (fn,)
    out: list[list[Tensor]] = [[] for _ in fns]
    for start in range(0, m, chunk):
        sl = slice(start, start + chunk)
        u = l11[sl, None] * x  # (b, deg)
        v = (l21[sl, None] * x)[:, :, None] + (l22[sl, None] * x)[:, None, :]  # (b, i, j)
        for f, acc in zip(fns, out, strict=True):
            # Row-wise weighted sums (not matmuls, whose BLAS kernel and summation order
            # depend on the batch size): results are bitwise independent of the chunking.
            inner = (f(v) * w).sum(-1)  # (b, deg): Σ_j w_j φ(v_ij)
            acc.append((f(u) * inner * w).sum(-1))
    res = [torch.cat(acc).reshape(shape) if acc
           else torch.zeros(shape, dtype=dtype, device=device) for acc in out]
    t = res[0]
    tdot = res[1] if need_dot else None
    return t, tdot


def expect_pair(f: Callable[[Tensor], Tensor], g: Callable[[Tensor], Tensor], var1: Tensor,
                cov: Tensor, var2: Tensor, *, diag: bool = False, deg: int = DEFAULT_DEG,
                rule: str = DEFAULT_RULE, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Tensor:
    """E[f(u) g(v)] for (u, v) ~ N(0, [[var1, cov], [cov, var2]]), by the rule of
    `quadrature_dual` (the same arithmetic: with f = g it gives its T bitwise).

    ``diag``: var1 = cov = var2 (u = v), a 1-D rule. Used by the Price's-theorem
    gradients of `ntkit.dual.autodiff` with f, g derivatives of φ.
    """
    dtype = torch.promote_types(torch.promote_types(var1.dtype, cov.dtype), var2.dtype)
    device = cov.device
    x, w = quadrature_rule(deg, rule, dtype=dtype, device=device)
    if diag:
        s = var1.clamp_min(0).sqrt().unsqueeze(-1) * x
        return ((f(s) * g(s) if f is not g else f(s).square()) * w).sum(-1)
    shape = torch.broadcast_shapes(var1.shape, cov.shape, var2.shape)
    l11, l21, l22 = (t.expand(shape).reshape(-1) for t in _cholesky_2x2(var1, cov, var2))
    chunk = max(1, max_elements // (deg * deg))
    acc = []
    for start in range(0, l11.numel(), chunk):
        sl = slice(start, start + chunk)
        u = l11[sl, None] * x
        v = (l21[sl, None] * x)[:, :, None] + (l22[sl, None] * x)[:, None, :]
        inner = (g(v) * w).sum(-1)
        acc.append((f(u) * inner * w).sum(-1))
    if not acc:
        return torch.zeros(shape, dtype=dtype, device=device)
    return torch.cat(acc).reshape(shape)


# ---- quadrature: Price's theorem to any order ----------------------------------------

class Derivatives:
    """φ, φ', φ'', ... of an elementwise torch function, built lazily by autograd."""

    def __init__(self, fn: Callable[[Tensor], Tensor],
                 fn_deriv: Callable[[Tensor], Tensor] | None = None):
        self._fns = [fn] if fn_deriv is None else [fn, fn_deriv]

    def __getitem__(self, order: int) -> Callable[[Tensor], Tensor]:
        while len(self._fns) <= order:
            self._fns.append(derivative(self._fns[-1]))
        return self._fns[order]


class _GaussExpect(torch.autograd.Function):
    """E[φ⁽ⁱ⁾(u) φ⁽ʲ⁾(v)], (u, v) ~ N(0, [[var1, cov], [cov, var2]]), by quadrature.

    Backward by Price's theorem: ∂/∂cov = E[φ⁽ⁱ⁺¹⁾φ⁽ʲ⁺¹⁾], ∂/∂var1 = ½E[φ⁽ⁱ⁺²⁾φ⁽ʲ⁾],
    ∂/∂var2 = ½E[φ⁽ⁱ⁾φ⁽ʲ⁺²⁾], each again a `_GaussExpect` (so it differentiates again).
    ``diag``: var1, cov and var2 are one tensor (an example's own variance): a 1-D rule.
    """

    @staticmethod
    def forward(ctx, derivs, i, j, diag, opts, var1, cov, var2):
        ctx.derivs, ctx.i, ctx.j, ctx.diag, ctx.opts = derivs, i, j, diag, opts
        ctx.save_for_backward(var1, cov, var2)
        return expect_pair(derivs[i], derivs[j], var1, cov, var2, diag=diag, **opts)

    @staticmethod
    def backward(ctx, g):
        var1, cov, var2 = ctx.saved_tensors
        d, i, j, diag, opts = ctx.derivs, ctx.i, ctx.j, ctx.diag, ctx.opts

        def e(a: int, b: int) -> Tensor:
            return _GaussExpect.apply(d, a, b, diag, opts, var1, cov, var2)

        need = ctx.needs_input_grad
        g1 = reduce_grad(g * 0.5 * e(i + 2, j), var1) if need[5] else None
        gc = reduce_grad(g * e(i + 1, j + 1), cov) if need[6] else None
        g2 = reduce_grad(g * 0.5 * e(i, j + 2), var2) if need[7] else None
        return None, None, None, None, None, g1, gc, g2


def gauss_expect(derivs: Derivatives, i: int, j: int, var1: Tensor, cov: Tensor, var2: Tensor,
                 **opts) -> Tensor:
    """Differentiable E[φ⁽ⁱ⁾(u) φ⁽ʲ⁾(v)] (see `_GaussExpect`); opts: deg, rule, max_elements."""
    diag = var1 is cov and cov is var2
    return _GaussExpect.apply(derivs, i, j, diag, opts, var1, cov, var2)
