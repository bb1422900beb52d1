"""Empirical kernels of models whose forward takes per-example side inputs.

Graph networks (`ntkit.layers.graph.Aggregate`) take each example's graph as
``model(x, pattern=p)``; `ntkit.empirical.empirical_ntk` and
`ntkit.empirical.empirical_nngp` forward ``pattern=(pattern1, pattern2)`` here, where
x1's rows run with pattern1's rows and x2's with pattern2's. Masked inputs
(``mask_constant=c``, neural-tangents' padding value) run as ``model(x, mask_constant=c)``:
the masks are functions of each example's own entries, so nothing is sliced. The kernel
is the plain
Jacobian contraction Θ(x1, x2) = J(x1) J(x2)ᵀ (one backward per example and output
unit), the reference method: exact, and cheap for the small graphs this serves.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ntkit.kernel import check_mask_constant


def _rows(p, n: int, name: str):
    if p is None:
        return None
    t = torch.as_tensor(p)
    if t.ndim < 1 or t.shape[0] != n:
        raise ValueError(f"pattern: {name} has shape {tuple(t.shape)}, but its leading axis "
                         f"must be the {n} examples of x{name[-1]} (one graph per example)")
    return t


def check_side(x1: Tensor, x2: Tensor | None, pattern) -> tuple:
    """Validate ``pattern=(pattern1, pattern2)`` against x1 and x2 (pattern2 None when x2
    is None: pattern1 serves both); None: (None, None)."""
    if pattern is None:
        return None, None
    if not (isinstance(pattern, (tuple, list)) and len(pattern) == 2):
        raise ValueError("pattern must be a pair (pattern1, pattern2) of per-example graph "
                         f"patterns for x1 and x2, got {type(pattern).__name__}")
    p1 = _rows(pattern[0], x1.shape[0], "pattern1")
    if x2 is None:
        if pattern[1] is not None:
            raise ValueError("pattern2 is given but x2 is None: pass (pattern1, None)")
        return p1, p1
    return p1, _rows(pattern[1], x2.shape[0], "pattern2")


def _outputs(model: nn.Module, x: Tensor, p, i: int, extra: dict | None = None) -> Tensor:
    kw = {} if p is None else {"pattern": p[i:i + 1]}
    out = model(x[i:i + 1], **kw, **(extra or {}))
    if not isinstance(out, Tensor):
        raise TypeError("pattern=/mask_constant= need a model returning one tensor")
    return out.reshape(-1)


def side_kwargs(mask_constant) -> dict:
    """The constant keyword arguments of every forward: ``mask_constant`` (validated)."""
    return {} if mask_constant is None else {"mask_constant": check_mask_constant(
        mask_constant)}


def side_jacobians(model: nn.Module, x: Tensor, p, extra: dict | None = None) -> Tensor:
    """(n, k, P): each example's Jacobian of its k outputs with respect to the model's
    trainable parameters, the example run alone with its own pattern rows (and the
    keyword arguments ``extra``, e.g. ``mask_constant``)."""
    params = [q for q in model.parameters() if q.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    rows = []
    for i in range(x.shape[0]):
        out = _outputs(model, x, p, i, extra)
        jac = []
        for o in range(out.numel()):
            g = torch.autograd.grad(out[o], params, retain_graph=o + 1 < out.numel(),
                                    allow_unused=True)
            jac.append(torch.cat([(torch.zeros_like(q) if gi is None else gi).reshape(-1)
                                  for q, gi in zip(params, g, strict=True)]))
        rows.append(torch.stack(jac))
    return torch.stack(rows)


def side_ntk(model: nn.Module, x1: Tensor, x2: Tensor | None, pattern,
             trace_outputs: bool = True, mask_constant=None) -> Tensor:
    """Empirical NTK with per-example patterns (or None) and masked inputs
    (``mask_constant``, or None): (n1, n2) = tr J(x1) J(x2)ᵀ / k traced, else
    (n1, n2, k, k)."""
    p1, p2 = check_side(x1, x2, pattern)
    extra = side_kwargs(mask_constant)
    with torch.enable_grad():
        j1 = side_jacobians(model, x1, p1, extra)
        j2 = j1 if x2 is None else side_jacobians(model, x2, p2, extra)
    k = torch.einsum("iap,jbp->ijab", j1, j2)
    if trace_outputs:
        return k.diagonal(0, 2, 3).sum(-1) / j1.shape[1]
    return k


def side_nngp(model: nn.Module, x1: Tensor, x2: Tensor | None, pattern,
              trace_outputs: bool = True, mask_constant=None) -> Tensor:
    """Empirical NNGP with per-example patterns (or None) and masked inputs
    (``mask_constant``, or None): f(x1)·f(x2) / k traced, else the (n1, n2, k, k) outer
    products."""
    p1, p2 = check_side(x1, x2, pattern)
    extra = side_kwargs(mask_constant)
    with torch.no_grad():
        f1 = torch.stack([_outputs(model, x1, p1, i, extra) for i in range(x1.shape[0])])
        f2 = f1 if x2 is None else torch.stack([_outputs(model, x2, p2, i, extra)
                                                for i in range(x2.shape[0])])
    if trace_outputs:
        return f1 @ f2.T / f1.shape[1]
    return f1[:, None, :, None] * f2[None, :, None, :]
