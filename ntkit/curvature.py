"""Curvature of a loss in the parameters: Hessian-vector products, top eigenvalues,
spectral density (stochastic Lanczos quadrature) and the Gauss–Newton part.

Every function takes a loss in torch.func style, ``loss_fn(params) -> scalar`` with
``params`` a dict of tensors, and the point ``params`` at which to evaluate. An
``nn.Module`` can stand for ``params`` (its parameters with ``requires_grad``, detached);
`module_loss` builds ``(loss_fn, params)`` from a module, inputs, targets and a loss.

Vectors in parameter space are either dicts shaped like ``params`` or flat 1-D tensors of
length P = Σ numel (concatenated in the dict's order). Everything runs in the dtype of the
parameters; float64 is what the tests check to 1e-8.

The Hessian of L(θ) = ℓ(f(θ)) splits as H = G + Σ_o (∂ℓ/∂f_o) ∇²f_o, where
G = Jᵀ (∇²_f ℓ) J is the Gauss–Newton matrix (J the output Jacobian). Its nonzero
eigenvalues are those of the small "NTK-side" matrix A^{1/2} J Jᵀ A^{1/2}, A = ∇²_f ℓ
(bulk + outliers: Sagun et al. 2017, "Empirical analysis of the Hessian of
over-parametrized neural networks"; Papyan 2020, "Traces of class/cross-class structure
pervade deep learning spectra").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev

LossFn = Callable[[dict[str, Tensor]], Tensor]

__all__ = [
    "GaussNewton", "SpectralDensity", "flatten", "gauss_newton", "hessian_matrix",
    "hessian_spectral_density", "hessian_top_eigenvalues", "hvp", "module_loss", "unflatten",
]


# ---------------------------------------------------------------------------- plumbing
def _as_params(params: Mapping[str, Tensor] | nn.Module) -> dict[str, Tensor]:
    """A dict of detached floating tensors from a dict or a module; clear errors otherwise."""
    if isinstance(params, nn.Module):
        params = {k: p for k, p in params.named_parameters() if p.requires_grad}
        if not params:
            raise ValueError("the module has no parameter with requires_grad=True")
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of tensors or an nn.Module, got "
                        f"{type(params).__name__}")
    if not params:
        raise ValueError("params is empty")
    out = {}
    for k, v in params.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(v)
        if not isinstance(v, Tensor):
            raise TypeError(f"params[{k!r}] must be a tensor, got {type(v).__name__}")
        if not v.dtype.is_floating_point:
            raise TypeError(f"params[{k!r}] has dtype {v.dtype}; curvature needs floating "
                            "parameters")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"params[{k!r}] contains NaN or inf")
        out[str(k)] = v.detach()
    dtypes = {v.dtype for v in out.values()}
    if len(dtypes) > 1:
        raise TypeError(f"params mix dtypes {sorted(map(str, dtypes))}; use one dtype")
    return out


def _check_loss_fn(loss_fn) -> None:
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (params dict -> scalar), got "
                        f"{type(loss_fn).__name__}")


def flatten(tree: Mapping[str, Tensor]) -> Tensor:
    """Concatenate a dict of tensors into one flat vector (the dict's order)."""
    return torch.cat([t.reshape(-1) for t in tree.values()])


def unflatten(vec: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Split a flat vector into a dict shaped like ``like`` (inverse of `flatten`)."""
    n = sum(t.numel() for t in like.values())
    if vec.ndim != 1 or vec.numel() != n:
        raise ValueError(f"expected a flat vector of length {n}, got shape {tuple(vec.shape)}")
    out, i = {}, 0
    for k, t in like.items():
        out[k] = vec[i:i + t.numel()].reshape(t.shape)
        i += t.numel()
    return out


def _as_direction(v, params: dict[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
    """(v as a dict like params, whether it came in flat)."""
    ref = next(iter(params.values()))
    if isinstance(v, np.ndarray):
        v = torch.from_numpy(v)
    if isinstance(v, Tensor):
        if not v.dtype.is_floating_point:
            raise TypeError(f"v has dtype {v.dtype}; expected floating")
        return unflatten(v.to(ref.dtype), params), True
    if not isinstance(v, Mapping):
        raise TypeError(f"v must be a flat tensor or a dict like params, got {type(v).__name__}")
    if set(v) != set(params):
        raise ValueError(f"v's keys {sorted(v)} differ from params' {sorted(params)}")
    out = {}
    for k, p in params.items():
        t = torch.as_tensor(v[k]).to(p.dtype)
        if t.shape != p.shape:
            raise ValueError(f"v[{k!r}] has shape {tuple(t.shape)}, params[{k!r}] "
                             f"{tuple(p.shape)}")
        out[k] = t
    return out, False


def module_loss(model: nn.Module, x: Tensor, y: Tensor | None = None,
                loss: str | Callable[[Tensor, Tensor], Tensor] = "mse"
                ) -> tuple[LossFn, dict[str, Tensor]]:
    """``(loss_fn, params)`` for a module on a batch: ``loss_fn(p) = loss(model_p(x), y)``.

    ``loss``: "mse" (0.5·mean((f − y)²) over all entries, ntkit's convention),
    "cross_entropy" (mean over examples; ``y`` integer labels (n,)), or a callable
    ``(outputs, y) -> scalar``. Frozen parameters and buffers are held constant; the
    module runs as it is (call ``model.eval()`` first if it has dropout or batch norm).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    params = _as_params(model)
    consts = {k: v.detach() for k, v in model.named_parameters() if k not in params}
    consts.update(dict(model.named_buffers()))
    lfn = _output_loss(loss)

    def loss_fn(p: dict[str, Tensor]) -> Tensor:
        return lfn(functional_call(model, {**consts, **p}, (x,)), y)

    return loss_fn, params


def _output_loss(loss) -> Callable[[Tensor, Tensor | None], Tensor]:
    if callable(loss):
        return loss
    if loss == "mse":
        def mse(out, y):
            if y is None:
                raise ValueError("loss 'mse' needs targets y")
            return 0.5 * ((out - y.reshape(out.shape)) ** 2).mean()
        return mse
    if loss == "cross_entropy":
        def ce(out, y):
            if y is None:
                raise ValueError("loss 'cross_entropy' needs labels y")
            return torch.nn.functional.cross_entropy(out, y)
        return ce
    raise ValueError(f"unknown loss {loss!r}; use 'mse', 'cross_entropy' or a callable")


# ---------------------------------------------------------------------------- HVP
def _hvp_flat(loss_fn: LossFn, params: dict[str, Tensor]) -> Callable[[Tensor], Tensor]:
    """v ↦ H v on flat vectors by double backward.

    The gradient's graph is built once and reused for every product (``retain_graph``):
    measured ~7× faster than torch.func's forward-over-reverse ``jvp(grad(...))`` on a small
    MLP, which matters for Lanczos (tens of products per eigenvalue).
    """
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        loss = loss_fn(leaves)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True,
                                    allow_unused=True)
    gflat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                       for g, p in zip(grads, leaves.values(), strict=True)])
    ref = next(iter(params.values()))

    def mv(v: Tensor) -> Tensor:
        if not gflat.requires_grad:          # loss linear in θ: H = 0
            return torch.zeros_like(gflat).detach()
        with torch.enable_grad():
            hv = torch.autograd.grad(gflat @ v.to(ref.dtype), list(leaves.values()),
                                     retain_graph=True, allow_unused=True)
        return torch.cat([(h if h is not None else torch.zeros_like(p)).reshape(-1)
                          for h, p in zip(hv, leaves.values(), strict=True)]).detach()

    return mv


def hvp(loss_fn: LossFn, params: Mapping[str, Tensor] | nn.Module, v) -> Tensor | dict:
    """Hessian-vector product H v of ``loss_fn`` at ``params``.

    Args:
      loss_fn: ``loss_fn(params) -> scalar tensor`` (pure in ``params``).
      params: dict of tensors (or a module: its trainable parameters).
      v: a dict shaped like ``params`` or a flat tensor of length P (numpy accepted).

    Returns:
      H v in the form of ``v`` (dict, or flat tensor of length P). Exact (autodiff, no
      finite differences): double backward through the gradient.
    """
    _check_loss_fn(loss_fn)
    params = _as_params(params)
    vd, was_flat = _as_direction(v, params)
    if not all(bool(torch.isfinite(t).all()) for t in vd.values()):
        raise ValueError("v contains NaN or inf")
    out = _hvp_flat(loss_fn, params)(flatten(vd))
    return out if was_flat else unflatten(out, params)


def hessian_matrix(loss_fn: LossFn, params: Mapping[str, Tensor] | nn.Module) -> Tensor:
    """The dense P × P Hessian, one HVP per basis vector (for small models and checks)."""
    _check_loss_fn(loss_fn)
    params = _as_params(params)
    mv = _hvp_flat(loss_fn, params)
    ref = next(iter(params.values()))
    n = sum(t.numel() for t in params.values())
    eye = torch.eye(n, dtype=ref.dtype, device=ref.device)
    h = torch.stack([mv(eye[i]) for i in range(n)], dim=1)
    return 0.5 * (h + h.T)


# ---------------------------------------------------------------------------- top eigenpairs
def hessian_top_eigenvalues(loss_fn: LossFn, params: Mapping[str, Tensor] | nn.Module,
                            k: int = 1, tol: float = 1e-10, max_iter: int | None = None,
                            return_eigenvectors: bool = False, seed: int = 0
                            ) -> Tensor | tuple[Tensor, Tensor]:
    """The ``k`` algebraically largest Hessian eigenvalues, in descending order.

    Implicitly restarted Lanczos (ARPACK via ``scipy.sparse.linalg.eigsh``) on exact HVPs;
    for P ≤ max(2k + 1, 20) the Hessian is formed and diagonalized instead.

    Args:
      k: how many (1 ≤ k < P, or k ≤ P for tiny models).
      tol: ARPACK's relative accuracy of the Ritz values (0 means machine precision).
      max_iter: cap on Arnoldi restarts (default ARPACK's, 10·P).
      return_eigenvectors: also return a (P, k) tensor of unit eigenvectors (columns).
      seed: seeds the start vector (results are deterministic).

    Returns:
      eigenvalues (k,) descending, or (eigenvalues, eigenvectors) on request.
    """
    _check_loss_fn(loss_fn)
    params = _as_params(params)
    n = sum(t.numel() for t in params.values())
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k > n:
        raise ValueError(f"k must be an int in [1, P={n}], got {k!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    if max_iter is not None and (not isinstance(max_iter, int) or max_iter < 1):
        raise ValueError(f"max_iter must be a positive int or None, got {max_iter!r}")
    ref = next(iter(params.values()))
    if n <= max(2 * k + 1, 20):
        w, q = torch.linalg.eigh(hessian_matrix(loss_fn, params))
        vals, vecs = w.flip(0)[:k], q.flip(1)[:, :k]
    else:
        from scipy.sparse.linalg import LinearOperator, eigsh

        mv = _hvp_flat(loss_fn, params)

        def np_mv(v: np.ndarray) -> np.ndarray:
            t = torch.as_tensor(np.ascontiguousarray(v).reshape(-1), dtype=ref.dtype,
                                device=ref.device)
            return mv(t).cpu().numpy().astype(np.float64)

        op = LinearOperator((n, n), matvec=np_mv, dtype=np.float64)
        v0 = np.random.default_rng(seed).standard_normal(n)
        w, q = eigsh(op, k=k, which="LA", tol=tol, maxiter=max_iter, v0=v0)
        order = np.argsort(w)[::-1]
        vals = torch.as_tensor(w[order].copy(), dtype=ref.dtype, device=ref.device)
        vecs = torch.as_tensor(q[:, order].copy(), dtype=ref.dtype, device=ref.device)
    return (vals, vecs) if return_eigenvectors else vals


# ---------------------------------------------------------------------------- SLQ
@dataclass
class SpectralDensity:
    """Stochastic Lanczos quadrature of the Hessian spectrum.

    Attributes:
      grid: (G,) eigenvalue grid.
      density: (G,) estimated density on the grid: Σ_probes Σ_j τ_j N(grid; θ_j, σ²) / n_probes,
        which integrates to ≈ 1 (the spectral measure (1/P) Σ_i δ(λ − λ_i), smoothed).
      nodes: (n_probes, n_steps) Ritz values θ_j per probe (NaN-padded if Lanczos stopped early
        because the Krylov space was exhausted).
      weights: (n_probes, n_steps) quadrature weights τ_j = (first Ritz-vector entry)²; each
        row sums to 1.
      sigma: the Gaussian smoothing width.
    """

    grid: Tensor
    density: Tensor
    nodes: Tensor
    weights: Tensor
    sigma: float

    def moment(self, k: int) -> Tensor:
        """Estimated (1/P) tr Hᵏ: the probe average of Σ_j τ_j θ_jᵏ."""
        th = torch.nan_to_num(self.nodes, nan=0.0)
        return ((self.weights * th ** k).sum(1)).mean()


def _lanczos(mv: Callable[[Tensor], Tensor], v0: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """m steps of Lanczos with full reorthogonalization → (alpha, beta) of the tridiagonal."""
    n = v0.numel()
    q = torch.zeros(m, n, dtype=v0.dtype, device=v0.device)
    alpha, beta = [], []
    q[0] = v0 / torch.linalg.norm(v0)
    scale = None
    for j in range(m):
        w = mv(q[j])
        a = torch.dot(q[j], w)
        alpha.append(a)
        # two passes of classical Gram–Schmidt against all previous vectors ("twice is enough")
        for _ in range(2):
            w = w - q[:j + 1].T @ (q[:j + 1] @ w)
        b = torch.linalg.norm(w)
        scale = max(float(scale or 0.0), float(abs(a)), float(b))
        if j == m - 1 or b <= 1e-12 * max(scale, 1e-300):
            break   # done, or the Krylov space is invariant: the quadrature is exact
        beta.append(b)
        q[j + 1] = w / b
    return torch.stack(alpha), (torch.stack(beta) if beta else v0.new_zeros(0))


def hessian_spectral_density(loss_fn: LossFn, params: Mapping[str, Tensor] | nn.Module,
                             n_probes: int = 4, n_steps: int = 60, *,
                             grid: Tensor | int = 500, sigma: float | None = None,
                             probes: Tensor | None = None, seed: int = 0) -> SpectralDensity:
    """Hessian eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al. 2019).

    For each probe v (Rademacher, or the rows of ``probes``), ``n_steps`` Lanczos steps from
    v/‖v‖ give Ritz values θ_j and weights τ_j with Σ_j τ_j f(θ_j) = vᵀ f(H) v/‖v‖² exactly
    for polynomials f of degree < 2·n_steps; E over Rademacher v gives (1/P) tr f(H).

    Args:
      n_probes: number of random probes (≥ 1).
      n_steps: Lanczos steps per probe (capped at P).
      grid: number of grid points (spanning the Ritz values ± 5σ) or an explicit (G,) grid.
      sigma: Gaussian smoothing width (default: 1% of the Ritz-value range).
      probes: optional (n_probes, P) probe vectors (then ``n_probes`` is ignored).
      seed: seeds the Rademacher probes.
    """
    _check_loss_fn(loss_fn)
    params = _as_params(params)
    n = sum(t.numel() for t in params.values())
    ref = next(iter(params.values()))
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    if probes is None:
        if isinstance(n_probes, bool) or not isinstance(n_probes, int) or n_probes < 1:
            raise ValueError(f"n_probes must be a positive int, got {n_probes!r}")
        g = torch.Generator().manual_seed(int(seed))
        probes = (torch.randint(0, 2, (n_probes, n), generator=g) * 2 - 1).to(ref.dtype)
    else:
        probes = torch.as_tensor(probes)
        if probes.ndim != 2 or probes.shape[1] != n:
            raise ValueError(f"probes must have shape (n_probes, P={n}), got "
                             f"{tuple(probes.shape)}")
        if not bool(torch.isfinite(probes).all()) or bool((probes.norm(dim=1) == 0).any()):
            raise ValueError("probes must be finite and nonzero")
        probes = probes.to(ref.dtype)
    m = min(n_steps, n)
    mv = _hvp_flat(loss_fn, params)
    nodes = torch.full((probes.shape[0], m), float("nan"), dtype=ref.dtype)
    weights = torch.zeros((probes.shape[0], m), dtype=ref.dtype)
    for i, v in enumerate(probes):
        a, b = _lanczos(mv, v.to(ref.device), m)
        t = torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1)
        th, s = torch.linalg.eigh(t.cpu())
        nodes[i, :th.numel()] = th
        weights[i, :th.numel()] = s[0] ** 2
    finite = nodes[torch.isfinite(nodes)]
    lo, hi = float(finite.min()), float(finite.max())
    if sigma is None:
        sigma = max(0.01 * (hi - lo), 1e-12 * max(abs(lo), abs(hi), 1.0))
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    if isinstance(grid, int) and not isinstance(grid, bool):
        if grid < 2:
            raise ValueError(f"grid must have at least 2 points, got {grid}")
        grid_t = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, grid, dtype=ref.dtype)
    else:
        grid_t = torch.as_tensor(grid, dtype=ref.dtype).reshape(-1)
    th = torch.nan_to_num(nodes, nan=0.0)
    gauss = torch.exp(-0.5 * ((grid_t[:, None, None] - th[None]) / sigma) ** 2)
    gauss = gauss / (sigma * np.sqrt(2 * np.pi))
    density = (gauss * weights[None]).sum((1, 2)) / probes.shape[0]
    return SpectralDensity(grid_t, density, nodes, weights, float(sigma))


# ---------------------------------------------------------------------------- Gauss–Newton
@dataclass
class GaussNewton:
    """The Gauss–Newton part G = Jᵀ A J of a loss Hessian, A = ∇²_f ℓ (outputs' Hessian).

    Attributes:
      eigenvalues: (r,) nonzero-candidate eigenvalues of G, descending: those of the
        (nk × nk) matrix A^{1/2} J Jᵀ A^{1/2} (same nonzero spectrum, far smaller than P × P).
      jacobian: (nk, P) output Jacobian J (row = example-major output unit).
      output_hessian: (nk, nk) A.
      matrix: (P, P) G if ``form_matrix`` was requested, else None.
    """

    eigenvalues: Tensor
    jacobian: Tensor
    output_hessian: Tensor
    matrix: Tensor | None

    def matvec(self, v: Tensor) -> Tensor:
        """G v for a flat v of length P, without forming G."""
        return self.jacobian.T @ (self.output_hessian @ (self.jacobian @ v))


def gauss_newton(model: nn.Module | Callable[[dict[str, Tensor], Tensor], Tensor], x,
                 loss: str | Callable[[Tensor], Tensor] = "mse", *,
                 params: Mapping[str, Tensor] | None = None, k: int | None = None,
                 form_matrix: bool = False) -> GaussNewton:
    """Gauss–Newton matrix G = Jᵀ A J of the loss ℓ(f(θ; x)) and its top eigenvalues.

    Args:
      model: an ``nn.Module`` (its trainable parameters), or a functional
        ``model(params, x) -> outputs`` with ``params=`` given.
      x: (n, ...) inputs (numpy accepted). Outputs f are (n, k) (or (n,), treated as k=1).
      loss: "mse" (0.5·mean((f − y)²) over all n·k entries: A = I/(nk)), "cross_entropy"
        (mean over examples: A = blockdiag(diag p_i − p_i p_iᵀ)/n), or a callable
        ``loss(outputs) -> scalar`` whose output Hessian is taken by autodiff. None of these
        depends on the targets, which is why G needs no labels.
      k: how many top eigenvalues (default all nk).
      form_matrix: also form the P × P matrix.

    The full Hessian differs from G by Σ_o (∂ℓ/∂f_o) ∇²f_o, which vanishes at zero
    residual (MSE) or for models linear in θ.
    """
    x = torch.as_tensor(x)
    if isinstance(model, nn.Module):
        p = _as_params(model if params is None else params)
        consts = {n: t.detach() for n, t in model.named_parameters() if n not in p}
        consts.update(dict(model.named_buffers()))

        def f(pp):
            return functional_call(model, {**consts, **pp}, (x,))
    elif callable(model):
        if params is None:
            raise ValueError("a functional model needs params=")
        p = _as_params(params)

        def f(pp):
            return model(pp, x)
    else:
        raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}")
    if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")
    with torch.no_grad():
        out = f(p)
    out2 = out.reshape(out.shape[0], -1)
    n, kk = out2.shape
    jac = jacrev(lambda pp: f(pp).reshape(-1))(p)
    j = torch.cat([jac[name].reshape(n * kk, -1) for name in p], dim=1).detach()
    if loss == "mse":
        a = torch.eye(n * kk, dtype=j.dtype) / (n * kk)
    elif loss == "cross_entropy":
        if kk < 2:
            raise ValueError("cross_entropy needs at least 2 output units")
        prob = torch.softmax(out2, dim=1)
        blocks = torch.diag_embed(prob) - prob[:, :, None] * prob[:, None, :]
        a = torch.block_diag(*blocks) / n
    elif callable(loss):
        a = torch.autograd.functional.hessian(lambda o: loss(o.reshape(out.shape)),
                                              out.reshape(-1).detach())
        a = 0.5 * (a + a.T)
    else:
        raise ValueError(f"unknown loss {loss!r}; use 'mse', 'cross_entropy' or a callable")
    w, u = torch.linalg.eigh(a)
    root = (u * w.clamp_min(0).sqrt()) @ u.T              # A^{1/2} (A is PSD for these losses)
    small = root @ (j @ j.T) @ root
    ev = torch.linalg.eigvalsh(0.5 * (small + small.T)).flip(0)
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= ev.numel():
            raise ValueError(f"k must be an int in [1, {ev.numel()}], got {k!r}")
        ev = ev[:k]
    g = j.T @ a @ j if form_matrix else None
    return GaussNewton(ev, j, a, g)
