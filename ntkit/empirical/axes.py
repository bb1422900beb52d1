"""Output axes of empirical kernels: neural-tangents' ``trace_axes`` / ``diagonal_axes``.

A model with outputs of shape (n, *out) has a full empirical kernel over pairs of output
entries, Θ[i, j, a, b] with a, b ranging over ``out``. neural-tangents reduces it per
output axis (axes counted on (n, *out), so axis 0 is the batch and -1 the last axis):

- an axis in ``trace_axes`` is contracted: only a = b along it, averaged (the sum divided
  by its size, as neural-tangents does);
- an axis in ``diagonal_axes`` is kept once: only a = b along it, not summed;
- every other axis appears twice, the x1 entry then the x2 entry.

The result is (n1, n2, then for each output axis in order: nothing / one axis / two
axes). E.g. outputs (n, C, L): ``trace_axes=(-1,)`` gives (n1, n2, C, C);
``trace_axes=()`` gives (n1, n2, C, C, L, L); ``diagonal_axes=(1,)``, ``trace_axes=()``
gives (n1, n2, C, L, L). The batch axis 0 may be chosen too (x1 and x2 then need the
same number of examples n): in ``diagonal_axes`` only the pairs (x1_i, x2_i) are kept,
(n, ...); in ``trace_axes`` they are averaged over i, (...).
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["OutputAxes", "output_axes"]


@dataclass(frozen=True)
class OutputAxes:
    """The reduction of a kernel over outputs of shape ``out`` (non-batch axes).

    ``trace`` and ``diag`` are sorted 0-based indices into ``out`` (neural-tangents'
    axis a ≥ 1 is index a - 1 here).
    """

    out: tuple[int, ...]
    trace: tuple[int, ...]
    diag: tuple[int, ...]
    batch: str | None = None   # the batch axis: None (both n1, n2), "diag" or "trace"

    @property
    def all_traced(self) -> bool:
        """Every output axis traced: the flat mean over the k output units (n1, n2)."""
        return len(self.trace) == len(self.out) and not self.diag and self.batch is None

    @property
    def flat_untraced(self) -> bool:
        """One output axis, neither traced nor diagonal: the flat (n1, n2, k, k) block."""
        return len(self.out) == 1 and not self.trace and not self.diag and self.batch is None

    @property
    def contract_size(self) -> int:
        return math.prod(self.out[t] for t in self.trace)

    def shape(self, n1: int, n2: int) -> tuple[int, ...]:
        """Result shape for n1 × n2 examples (n1 = n2 when the batch axis is chosen)."""
        s = {None: [n1, n2], "diag": [n1], "trace": []}[self.batch]
        for ax, size in enumerate(self.out):
            if ax in self.trace:
                continue
            s += [size] if ax in self.diag else [size, size]
        return tuple(s)

    def _letters(self) -> tuple[str, str, str]:
        """einsum subscripts (x1 output axes, x2 output axes, result output axes)."""
        first = string.ascii_letters[4:]   # a-d are kept for examples and parameters
        second = first[len(self.out):]
        s1, s2, r = "", "", ""
        for ax in range(len(self.out)):
            a = first[ax]
            b = a if ax in self.trace or ax in self.diag else second[ax]
            s1, s2 = s1 + a, s2 + b
            if ax not in self.trace:
                r += a if ax in self.diag else a + b
        return s1, s2, r

    def pairs(self, block: Tensor) -> Tensor:
        """The (i, i) entries of an (n, n, ...) block as (n, ...) (batch axis chosen)."""
        return block.diagonal(0, 0, 1).movedim(-1, 0)

    def contract(self, a: Tensor, b: Tensor) -> Tensor:
        """Σ_params of Jacobian-like factors a (n1, k, m), b (n2, k, m), reduced over the
        output axes (every (i, j) pair: the batch axis is left to the caller)."""
        s1, s2, r = self._letters()
        a = a.reshape(a.shape[0], *self.out, a.shape[-1])
        b = b.reshape(b.shape[0], *self.out, b.shape[-1])
        out = torch.einsum(f"a{s1}c,b{s2}c->ab{r}", a, b)
        return out / self.contract_size if self.trace else out

    def reduce(self, full: Tensor) -> Tensor:
        """The flat (n1, n2, k, k) block -> the reduced block (`shape`)."""
        s1, s2, r = self._letters()
        full = full.reshape(full.shape[0], full.shape[1], *self.out, *self.out)
        out = torch.einsum(f"ab{s1}{s2}->ab{r}", full)
        return out / self.contract_size if self.trace else out

    def swap(self, block: Tensor) -> Tensor:
        """Θ(x2, x1) from a block Θ(x1, x2): swap the example axes and each pair of
        x1/x2 output axes (diagonal axes are shared, so they stay)."""
        perm, pos = [1, 0], 2
        for ax in range(len(self.out)):
            if ax in self.trace:
                continue
            if ax in self.diag:
                perm.append(pos)
                pos += 1
            else:
                perm += [pos + 1, pos]
                pos += 2
        return block.permute(*perm)


def _canon(axes, ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(axes, bool) or not isinstance(axes, (int, Sequence)) or isinstance(axes, str):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {axes!r}")
    items = [axes] if isinstance(axes, int) else list(axes)
    res = []
    for a in items:
        if isinstance(a, bool) or not isinstance(a, int):
            raise TypeError(f"{name} must contain ints, got {a!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"{name}: axis {a} is out of range for outputs with {ndim} axes "
                             f"(the batch axis 0 included, as in neural-tangents)")
        res.append(a % ndim - 1)   # the batch axis becomes -1
    return tuple(sorted(set(res)))


def output_axes(out_shape: tuple[int, ...] | None, trace_axes, diagonal_axes) -> OutputAxes:
    """Validate neural-tangents-style axes against per-example outputs ``out_shape``.

    ``out_shape`` is None for tuple/dict outputs (concatenated by ntkit, where the
    per-output axes of neural-tangents have no counterpart): then only the flat forms
    apply.
    """
    if out_shape is None:
        raise ValueError("trace_axes/diagonal_axes need a model that returns one tensor; "
                         "for tuple/dict outputs (concatenated into k units) use "
                         "trace_outputs=True or False")
    ndim = len(out_shape) + 1
    t = _canon(trace_axes, ndim, "trace_axes")
    d = _canon(diagonal_axes, ndim, "diagonal_axes")
    both = sorted(set(t) & set(d))
    if both:
        raise ValueError(f"axes {[b + 1 for b in both]} are in both trace_axes and "
                         "diagonal_axes; an axis is either traced or kept as a diagonal")
    batch = "trace" if -1 in t else "diag" if -1 in d else None
    return OutputAxes(tuple(out_shape), tuple(a for a in t if a >= 0),
                      tuple(a for a in d if a >= 0), batch)
