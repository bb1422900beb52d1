"""Empirical NTK by Jacobian contraction (the reference method).

Θ(x1, x2) = J(x1) J(x2)ᵀ, with J(x) the per-example Jacobian (k, P) of the k output
units with respect to the P selected parameter entries, computed by reverse mode
(``vmap`` over examples of ``jacrev``), then contracted parameter by parameter.

Cost for a tile pair of n1 and n2 examples (F: FLOPs of one forward pass per example):

- time:   O((n1 + n2) · k · F)  for the Jacobians (k backward passes per example)
          + O(n1 · n2 · k · P) to contract them (k² instead of k when untraced);
- memory: O((n1 + n2) · k · P) for the two Jacobians. When that exceeds the memory
          budget even for one example, parameters are taken in groups and each group's
          Jacobians are recomputed per tile pair (time × number of groups, memory
          O((n1 + n2) · k · P_group)).

Simple and robust; the method of choice for small P, or as the ground truth in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from torch.func import jacrev

from ntkit.empirical.common import FunctionalModel, contract, vmap_examples

__all__ = [
    "JacobianFeatures",
    "JacobianMethod",
]


@dataclass
class JacobianFeatures:
    x: Tensor
    out: Tensor                     # (n, k) per-example outputs
    jac: dict[str, Tensor] | None   # name -> (n, k, m); None: recomputed per group


class JacobianMethod:
    """Jacobian contraction. See the module docstring for costs."""

    name = "jacobian"

    def __init__(self, fm: FunctionalModel, traced: bool, tile: int, budget: int):
        self.fm, self.traced = fm, traced
        k, item = fm.k, fm.sel[fm.names[0]].element_size()
        # Group parameters so that one group's Jacobians for a tile pair fit the budget.
        limit = max(budget // max(2 * tile * k * item, 1), 1)
        self.groups: list[list[str]] = []
        size = 0
        for n in fm.names:
            m = fm.sel[n].numel()
            if self.groups and size + m <= limit:
                self.groups[-1].append(n)
                size += m
            else:
                self.groups.append([n])
                size = m

    def jacobians(self, names: list[str], x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Per-example Jacobians {name: (n, k, m)} for ``names``, and the outputs (n, k)."""
        fm = self.fm
        rest = {n: t for n, t in fm.sel.items() if n not in names}
        wrt = {n: fm.sel[n] for n in names}

        def f(xi: Tensor, p: dict[str, Tensor]):
            o = fm.single({**rest, **p}, xi)
            return o, o

        jac, out = vmap_examples(jacrev(f, argnums=1, has_aux=True), x, wrt)
        n, k = out.shape
        return {name: j.reshape(n, k, -1) for name, j in jac.items()}, out

    def features(self, x: Tensor) -> JacobianFeatures:
        if len(self.groups) == 1:
            jac, out = self.jacobians(self.groups[0], x)
            return JacobianFeatures(x, out, jac)
        return JacobianFeatures(x, self.fm.per_example(x), None)

    def contract(self, f1: JacobianFeatures, f2: JacobianFeatures) -> Tensor:
        if f1.jac is not None and f2.jac is not None:
            return _sum_contract(f1.jac, f2.jac, self.traced)
        total = None
        for names in self.groups:
            j1, _ = self.jacobians(names, f1.x)
            j2 = j1 if f2 is f1 else self.jacobians(names, f2.x)[0]
            block = _sum_contract(j1, j2, self.traced)
            total = block if total is None else total + block
            del j1, j2
        return total


def _sum_contract(j1: dict[str, Tensor], j2: dict[str, Tensor], traced: bool) -> Tensor:
    total = None
    for name, a in j1.items():
        block = contract(a, j2[name], traced)
        total = block if total is None else total + block
    return total
