"""A dual activation from a user's closed form, as neural-tangents' ``stax.Elementwise``.

``nngp_fn(cov12, var1, var2)`` returns T = E[φ(u)φ(v)] for (u, v) ~ N(0, [[var1, cov12],
[cov12, var2]]), elementwise on tensors (torch operations, broadcasting). Tdot =
E[φ'(u)φ'(v)] is ``d_nngp_fn`` when given, else ∂T/∂cov12 by autograd (Price's theorem:
∂E[φ(u)φ(v)]/∂cov12 = E[φ'(u)φ'(v)]). Used by `ntkit.layers.Elementwise`.

    >>> import math, torch
    >>> def erf_nngp(c, v1, v2):
    ...     return 2 / math.pi * torch.asin(2 * c / torch.sqrt((1 + 2 * v1) * (1 + 2 * v2)))
    >>> t, tdot = closed_form_dual(erf_nngp, None, torch.tensor(1.0), torch.tensor(0.5),
    ...                            torch.tensor(1.0), need_dot=True)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["check_forms", "closed_form_dual", "required_positional"]

NngpFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def required_positional(fn: Callable) -> int | None:
    """How many positional parameters ``fn`` requires (None if it cannot be inspected)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return sum(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               for p in params)


def _result(name: str, t, shape: torch.Size, like: Tensor) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must return a tensor (use torch operations), got "
                        f"{type(t).__name__}")
    if not t.dtype.is_floating_point:
        t = t.to(like.dtype)
    try:
        return t.expand(shape)
    except RuntimeError as e:
        raise ValueError(f"{name} returned shape {tuple(t.shape)}, which does not broadcast to "
                         f"its inputs' shape {tuple(shape)}: it must act elementwise") from e


def closed_form_dual(nngp_fn: NngpFn, d_nngp_fn: NngpFn | None, var1: Tensor, cov: Tensor,
                     var2: Tensor, need_dot: bool) -> tuple[Tensor, Tensor | None]:
    """T = nngp_fn(cov, var1, var2) and Tdot (d_nngp_fn, or ∂T/∂cov by autograd).

    Shapes broadcast; results have the broadcast shape. Under autograd (inputs that
    require grad) both results keep their graphs, so kernels stay differentiable.
    """
    shape = torch.broadcast_shapes(var1.shape, cov.shape, var2.shape)
    if not need_dot or d_nngp_fn is not None:
        t = _result("nngp_fn", nngp_fn(cov, var1, var2), shape, cov)
        dot = None if not need_dot else _result("d_nngp_fn", d_nngp_fn(cov, var1, var2),
                                                shape, cov)
        return t, dot
    graph = torch.is_grad_enabled() and any(x.requires_grad for x in (var1, cov, var2))
    with torch.enable_grad():
        # A tensor of the full shape to differentiate against: T is elementwise in it, so
        # the gradient of T.sum() is ∂T/∂cov entry by entry.
        c = cov.expand(shape) if cov.requires_grad else \
            cov.detach().expand(shape).clone().requires_grad_(True)
        t = _result("nngp_fn", nngp_fn(c, var1, var2), shape, cov)
        if not t.requires_grad:  # T does not depend on cov12: Tdot = 0
            return t, torch.zeros(shape, dtype=t.dtype, device=t.device)
        (dot,) = torch.autograd.grad(t.sum(), c, create_graph=graph)
    if not graph:
        t = t.detach()
    return t, dot


def check_forms(fn, fn_deriv, nngp_fn, d_nngp_fn) -> None:
    """Elementwise's arguments: fn (quadrature) or nngp_fn (closed form), callables."""
    for name, f in (("fn", fn), ("fn_deriv", fn_deriv), ("nngp_fn", nngp_fn),
                    ("d_nngp_fn", d_nngp_fn)):
        if f is not None and not callable(f):
            raise TypeError(f"{name} must be callable or None, got {type(f).__name__}")
    if fn_deriv is not None and (required_positional(fn_deriv) or 1) >= 3:
        raise TypeError("Elementwise's second positional argument is fn_deriv (φ'); this one "
                        "takes 3 arguments, like neural-tangents' nngp_fn(cov12, var1, var2): "
                        "pass it by keyword, Elementwise(fn, nngp_fn=...)")
    if nngp_fn is None and fn is None:
        raise TypeError("Elementwise needs fn (T by quadrature) or nngp_fn= (a closed form)")
    if nngp_fn is None and d_nngp_fn is not None:
        raise TypeError("d_nngp_fn needs nngp_fn (Elementwise(fn, nngp_fn=..., d_nngp_fn=...))")
    if nngp_fn is not None and fn_deriv is not None:
        raise TypeError("fn_deriv is for the quadrature form; with nngp_fn give d_nngp_fn")
