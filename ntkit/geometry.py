"""Linear regions of ReLU networks: exact counting along segments, 2-D slices, Telgarsky's
sawtooth (Telgarsky 2016, "Benefits of depth in neural networks") and Zaslavsky's bound
(Zaslavsky 1975, "Facing up to arrangements: face-count formulas for partitions of space by
hyperplanes"); see also Hanin & Rolnick 2019, "Complexity of linear regions in deep networks".

A ReLU net is continuous and piecewise linear; its **activation regions** are the sets of
inputs sharing one on/off pattern of all neurons (each a convex polytope: on it every
pre-activation is affine in x with a fixed sign, an intersection of half-spaces). Along a
segment x(t) = start + t·(end − start), t ∈ [0, 1], the pre-activations of the first layer are
affine in t; each ReLU adds breakpoints where an input pre-activation changes sign, and after
it every later pre-activation is affine between consecutive breakpoints. `count_linear_regions`
follows this layer by layer: it keeps the sorted breakpoints and the layer's values at them
(exact up to float64 rounding, since values are affine in between), so the count is exact, not
sampled.

Supported modules: containers (``nn.Sequential``, ntkit's serial modules: anything whose
``forward`` just chains its children) of affine layers — ``nn.Linear``, ``nn.Conv1d/2d/3d``,
``nn.AvgPool1d/2d``, ``nn.Flatten``, ``nn.Identity``, ``ntkit.layers.dense.DenseModule`` — and
activations with a single kink at 0 — ``nn.ReLU``, ``nn.LeakyReLU``, and ntkit's
``ActivationModule`` of ``ReLU``, ``LeakyReLU``, ``ABReLU``, ``Abs``, ``Identity``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ntkit.layers.base import ActivationModule
from ntkit.layers.branching import SerialModule
from ntkit.layers.dense import DenseModule

__all__ = ["Regions1D", "Regions2D", "activation_patterns", "count_linear_regions",
           "linear_regions_2d", "sawtooth", "tent_power", "zaslavsky_bound"]

_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.AvgPool1d, nn.AvgPool2d,
           nn.Flatten, nn.Identity)
_KINKED_SPECS = ("ReLU", "LeakyReLU", "ABReLU", "Abs")


def _container_children(m: nn.Module) -> list[nn.Module] | None:
    """Children in call order if ``m`` only chains them, else None."""
    if isinstance(m, nn.Sequential):
        return list(m)
    if isinstance(m, SerialModule):
        return list(m.layers)
    return None


def _flatten(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model as a chain of ('affine' | 'kink', module), checked for support."""
    out: list[tuple[str, nn.Module]] = []

    def visit(m: nn.Module) -> None:
        kids = _container_children(m)
        if kids is not None:
            for k in kids:
                visit(k)
        elif isinstance(m, (*_AFFINE, DenseModule)):
            out.append(("affine", m))
        elif isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            out.append(("kink", m))
        elif isinstance(m, ActivationModule):
            name = type(m.spec).__name__
            if name == "Identity":
                out.append(("affine", m))
            elif name in _KINKED_SPECS:
                out.append(("kink", m))
            else:
                raise TypeError(f"activation {name} is not piecewise linear with a single "
                                f"kink at 0; supported: {', '.join(_KINKED_SPECS)}")
        else:
            raise TypeError(f"unsupported module {type(m).__name__}: count_linear_regions "
                            "handles chains of Linear/Conv/DenseModule and ReLU-family "
                            "activations")

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    visit(model)
    return out


def _param_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        return p.dtype
    return torch.float64


def _check_point(name: str, x, dtype: torch.dtype) -> Tensor:
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x, dtype=dtype)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be a tensor, got {type(x).__name__}") from e
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x.to(dtype)


@dataclass
class Regions1D:
    """Linear regions of a network along a segment.

    Attributes:
      count: number of activation regions met on [0, 1] (= len(breakpoints) + 1).
      breakpoints: (m,) sorted t ∈ (0, 1) where some neuron's pre-activation changes sign
        (float64 tensor); the segment point is start + t·(end − start).
      length: ‖end − start‖ (so count/length is regions per unit length).
      n_pieces: number of maximal intervals on which the output is affine (≤ count: a
        neuron may switch without bending the output, e.g. a zero outgoing weight).
      knots: (K,) t of the final points (0, breakpoints, 1) and values (K, *out_shape) the
        network output there: the output is the linear interpolation of them.
    """

    count: int
    breakpoints: Tensor
    length: float
    n_pieces: int
    knots: Tensor
    values: Tensor


def count_linear_regions(model: nn.Module, start, end, *, tol: float = 1e-9) -> Regions1D:
    """Exact number of linear (activation) regions of ``model`` along [start, end].

    Args:
      model: a chain of affine layers and ReLU-family activations (see module doc),
        mapping a batch (m, *in_shape) to (m, *out_shape).
      start, end: (*in_shape) points (float tensors, finite).
      tol: a pre-activation with |value| ≤ tol·(the layer's largest |value| on the segment)
        at a breakpoint counts as 0 there, so that round-off at an existing breakpoint (e.g.
        the sawtooth's valleys, where a pre-activation touches 0 without changing sign)
        creates no spurious region.

    Returns:
      `Regions1D`. Breakpoints closer than tol (in t) are merged.
    """
    chain = _flatten(model)
    dtype = _param_dtype(model)
    start = _check_point("start", start, dtype)
    end = _check_point("end", end, dtype)
    if start.shape != end.shape:
        raise ValueError(f"start and end shapes differ: {tuple(start.shape)} vs "
                         f"{tuple(end.shape)}")
    if not (isinstance(tol, float) and 0 <= tol < 1e-2):
        raise ValueError(f"tol must be a float in [0, 0.01), got {tol!r}")
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    v = torch.stack([start, end])                  # values of the current layer at t
    with torch.no_grad():
        for kind, m in chain:
            if kind == "affine":
                v = m(v)
                continue
            # New breakpoints: strict sign changes of pre-activations inside a piece.
            flat = v.reshape(v.shape[0], -1)
            scale = flat.abs().max()
            thr = tol * float(scale) if scale > 0 else 0.0
            s = torch.where(flat > thr, 1, torch.where(flat < -thr, -1, 0))
            a, b = flat[:-1], flat[1:]
            cross = (s[:-1] * s[1:]) < 0
            i, j = torch.nonzero(cross, as_tuple=True)
            if i.numel():
                frac = (a[i, j] / (a[i, j] - b[i, j])).to(torch.float64)
                tn = t[i] + frac * (t[i + 1] - t[i])
                tn, _ = torch.sort(tn)
                keep = torch.ones_like(tn, dtype=torch.bool)
                keep[1:] = (tn[1:] - tn[:-1]) > tol
                tn = tn[keep]
                # drop those that coincide with an existing breakpoint
                pos = torch.searchsorted(t, tn)
                near = torch.minimum((tn - t[(pos - 1).clamp(min=0)]).abs(),
                                     (t[pos.clamp(max=t.numel() - 1)] - tn).abs())
                tn = tn[near > tol]
                if tn.numel():
                    # Values at the new points: linear interpolation inside their piece
                    # (exact: the layer is affine in t there).
                    pos = torch.searchsorted(t, tn)
                    t0, t1 = t[pos - 1], t[pos]
                    w = ((tn - t0) / (t1 - t0)).to(v.dtype)
                    w = w.reshape(-1, *([1] * (v.dim() - 1)))
                    vn = v[pos - 1] + w * (v[pos] - v[pos - 1])
                    t_all = torch.cat([t, tn])
                    order = torch.argsort(t_all)
                    t = t_all[order]
                    v = torch.cat([v, vn])[order]
            v = m(v)
    n_bp = t.numel() - 2
    out = v.reshape(v.shape[0], -1)
    slopes = (out[1:] - out[:-1]) / (t[1:] - t[:-1]).to(out.dtype).unsqueeze(1)
    if slopes.shape[0] > 1:
        ds = (slopes[1:] - slopes[:-1]).abs().amax(dim=1)
        sc = slopes.abs().amax(dim=1)
        ref = torch.maximum(sc[1:], sc[:-1]).clamp(min=1e-300)
        n_pieces = 1 + int((ds > 1e3 * tol * ref).sum())
    else:
        n_pieces = 1
    return Regions1D(count=n_bp + 1, breakpoints=t[1:-1].clone(),
                     length=float((end - start).norm()), n_pieces=n_pieces, knots=t,
                     values=v)


@dataclass
class Regions2D:
    """Activation regions of a network on a 2-D slice origin + a·u + b·v, |a|, |b| ≤ extent.

    Attributes:
      count: number of distinct activation patterns seen on the grid. Each activation
        region is convex (an intersection of half-spaces), so its trace on the plane is
        connected: this counts the regions that contain at least one grid point, a lower
        bound on the true count that is exact once the grid resolves every region.
      labels: (resolution, resolution) int64 image; pixel [i, j] is the region (pattern id,
        0 … count−1) at a = grid[j], b = grid[i].
      grid: (resolution,) coordinates along u and v.
      output: (resolution, resolution, *out_shape) network output on the grid.
    """

    count: int
    labels: Tensor
    grid: Tensor
    output: Tensor


def _patterns(chain, x: Tensor) -> tuple[Tensor, Tensor]:
    """Sign patterns (m, total neurons) as bools, and the output, for a batch x."""
    bits = []
    v = x
    with torch.no_grad():
        for kind, m in chain:
            if kind == "kink":
                bits.append((v > 0).reshape(v.shape[0], -1))
            v = m(v)
    pat = torch.cat(bits, dim=1) if bits else torch.zeros(x.shape[0], 0, dtype=torch.bool)
    return pat, v


def activation_patterns(model: nn.Module, x: Tensor) -> Tensor:
    """The on/off pattern (pre-activation > 0) of every kinked neuron: (m, total) bools."""
    chain = _flatten(model)
    x = _check_point("x", x, _param_dtype(model))
    return _patterns(chain, x)[0]


def linear_regions_2d(model: nn.Module, origin, u, v, extent: float = 1.0, *,
                      resolution: int = 256, batch: int = 65536) -> Regions2D:
    """Activation regions of ``model`` on a 2-D slice of its input space (see `Regions2D`).

    Args:
      model: as for `count_linear_regions`.
      origin, u, v: (*in_shape) points/directions; the slice is origin + a·u + b·v.
      extent: half-width of the square [−extent, extent]² in (a, b) (> 0).
      resolution: grid points per side (≥ 2).
      batch: grid points per forward pass.
    """
    chain = _flatten(model)
    dtype = _param_dtype(model)
    origin = _check_point("origin", origin, dtype)
    u = _check_point("u", u, dtype)
    v = _check_point("v", v, dtype)
    if not (origin.shape == u.shape == v.shape):
        raise ValueError("origin, u and v must have the same shape")
    if not (isinstance(extent, (int, float)) and math.isfinite(extent) and extent > 0):
        raise ValueError(f"extent must be a positive finite number, got {extent!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an int >= 2, got {resolution!r}")
    grid = torch.linspace(-extent, extent, resolution, dtype=dtype)
    bb, aa = torch.meshgrid(grid, grid, indexing="ij")
    coef = torch.stack([aa.reshape(-1), bb.reshape(-1)], dim=1)
    pats, outs = [], []
    for s in range(0, coef.shape[0], batch):
        c = coef[s:s + batch]
        shape = (-1,) + (1,) * origin.dim()
        x = origin + c[:, 0].reshape(shape) * u + c[:, 1].reshape(shape) * v
        p, o = _patterns(chain, x)
        pats.append(p)
        outs.append(o)
    pat = torch.cat(pats)
    _, inv = torch.unique(pat, dim=0, return_inverse=True)
    labels = inv.reshape(resolution, resolution)
    out = torch.cat(outs).reshape(resolution, resolution, *outs[0].shape[1:])
    return Regions2D(count=int(inv.max()) + 1, labels=labels, grid=grid, output=out)


def sawtooth(k: int, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """Telgarsky's network for Δ^k on [0, 1], Δ(x) = 2·relu(x) − 4·relu(x − ½).

    k hidden layers of 2 ReLUs (relu(y), relu(y − ½) of the previous Δ-value y), the
    output weights (2, −4) of one layer folded into the next layer's input weights, and a
    final Linear(2 → 1). Maps (m, 1) → (m, 1); Δ^k has 2^k linear pieces on [0, 1].
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    mods: list[nn.Module] = []
    for layer in range(k):
        lin = nn.Linear(1 if layer == 0 else 2, 2, dtype=dtype)
        with torch.no_grad():
            w = torch.tensor([[1.0], [1.0]], dtype=dtype)
            if layer > 0:
                w = w @ torch.tensor([[2.0, -4.0]], dtype=dtype)
            lin.weight.copy_(w)
            lin.bias.copy_(torch.tensor([0.0, -0.5], dtype=dtype))
        mods += [lin, nn.ReLU()]
    out = nn.Linear(2, 1, dtype=dtype)
    with torch.no_grad():
        out.weight.copy_(torch.tensor([[2.0, -4.0]], dtype=dtype))
        out.bias.zero_()
    mods.append(out)
    return nn.Sequential(*mods)


def tent_power(x, k: int) -> np.ndarray:
    """Δ^k(x) by direct iteration of the tent map (the reference for `sawtooth`), float64."""
    y = np.asarray(x, dtype=np.float64)
    for _ in range(int(k)):
        y = 2 * np.maximum(y, 0) - 4 * np.maximum(y - 0.5, 0)
    return y


def zaslavsky_bound(n_neurons: int, n_inputs: int) -> int:
    """Maximal number of regions of one ReLU layer: Σ_{i=0}^{n_inputs} C(n_neurons, i).

    Zaslavsky: an arrangement of n hyperplanes in ℝ^d has at most that many cells, with
    equality in general position (2^n when n ≤ d). Exact integer.
    """
    for name, val, lo in (("n_neurons", n_neurons, 0), ("n_inputs", n_inputs, 1)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {val!r}")
        if val < lo:
            raise ValueError(f"{name} must be >= {lo}, got {val}")
    return sum(math.comb(int(n_neurons), i) for i in range(int(n_inputs) + 1))
