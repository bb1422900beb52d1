"""Empirical NTK from structured derivatives ("Fast Finite Width NTK", Novak et al. 2022).

For a weight W used as ``y = x Wᵀ`` (``F.linear``, ``x @ W.T``, ``x @ W``) or as a
convolution filter (``F.conv1d``/``F.conv2d``), the per-example gradient of output unit
a is a sum over positions p of outer products

    ∂f_a(x)/∂W = s · Σ_p g_a[p] ⊗ u[p],

where u[p] is the layer input at p (for a convolution: the input patch, "im2col"),
g_a[p] = ∂f_a/∂y[p] the output cotangent and s a constant scale (``W * c`` is
understood). The layer's NTK block is then never a contraction of Jacobians:

    Θ_W(x, x')[a, b] = s² Σ_{p, q} (g_a[p] · g'_b[q]) (u[p] · u'[q]),

"gram" route: for a dense layer (one position) this is one product of two small
Gram matrices, O(n1·n2·(c + k·o)) instead of O(n1·n2·k·o·c). When positions are many
(convolutions) the "grad" route forms the per-example weight gradients
s·Σ_p g_a[p] ⊗ u[p] instead (O(n·k·P·o·c), like one backward pass) and contracts them;
the route is picked per weight from the shapes.

How the structure is found (no module types are special-cased): a
``TorchFunctionMode`` watches one forward pass of one example. A selected parameter
is *structured* when every use of it is the weight (or bias) argument of one of those
functions, possibly scaled by a Python number or transposed; any other use (a
parametrization, an elementwise product, ...) sends it to the Jacobian route.
Structured uses then get a zero "delta" added to their outputs, and one reverse pass per
output unit (``vmap`` of a ``vjp`` over the k unit vectors, ``vmap`` over examples)
gives every layer's cotangents g, the recorded layer inputs u, and the per-example
gradients of the remaining parameters, all at once.

Cost for a tile pair of n1 and n2 examples (F: FLOPs of one forward pass per example,
A: entries of the recorded layer inputs/outputs of one example):

- time:   O((n1 + n2) · k · F) for the cotangents (the weight gradients are not
          formed), plus per dense layer O(n1 · n2 · (c + k·o)) (k² instead of k when
          untraced), per convolution min(gram, grad) as above, plus the Jacobian
          contraction for unstructured parameters;
- memory: O((n1 + n2) · k · A) + O(n1 · n2 · k²) + the unstructured parameters'
          Jacobians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import vjp, vmap
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ntkit.empirical.common import FunctionalModel, contract, vmap_examples

__all__ = ["StructuredFeatures", "StructuredMethod", "StructuredPlan", "choose_routes", "discover",
           "route_cost", "route_mem"]

# ---- what the tracer understands --------------------------------------------------------

_DENSE_OPS = {"linear", "matmul", "mm", "__matmul__"}
_CONV_OPS = {"conv1d", "conv2d"}
_SCALE_OPS = {"mul", "__mul__", "__rmul__", "multiply", "div", "__truediv__", "true_divide",
              "divide", "neg", "__neg__", "negative"}
_TRANSPOSE_OPS = {".T", ".mT", "t", "transpose", "swapaxes", "swapdims", "permute"}
_SAME_OPS = {"contiguous", "to"}   # structure-preserving when they return their input
# Metadata only: no value flows out of the parameter.
_META_OPS = {"size", "dim", "numel", "nelement", "is_floating_point", "is_complex",
             "element_size", "__len__", "stride", "is_contiguous", "data_ptr", "get_device",
             "is_inference", "has_names", "__hash__", "__format__", "__repr__", "__bool__",
             ".shape", ".dtype", ".device", ".ndim", ".requires_grad", ".is_cuda", ".layout",
             ".is_sparse", ".is_quantized", ".is_meta", ".names", ".is_leaf", ".grad_fn",
             ".itemsize", ".nbytes", ".is_mps", ".is_nested", ".grad", "requires_grad_"}


def _fname(func) -> str:
    name = getattr(func, "__name__", "")
    if name == "__get__":   # a property such as Tensor.shape or Tensor.T
        return "." + getattr(getattr(func, "__self__", None), "__name__", "")
    return name


def _real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class _Ref:
    """A tensor derived from selected parameter ``name`` as ``scale · W`` (or its transpose)."""
    name: str
    scale: float = 1.0
    transposed: bool = False


@dataclass
class _Use:
    """One call of a structured function on (possibly) structured weight/bias."""
    kind: str                      # "dense", "conv1d", "conv2d"
    op: str
    weight: _Ref | None
    bias: _Ref | None
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()  # (left, right) per spatial dim, innermost last
    dilation: tuple[int, ...] = ()
    groups: int = 1
    kernel: tuple[int, ...] = ()

    @property
    def row_is_out(self) -> bool:
        """Dense only: does the weight's first axis index outputs (as in F.linear)?"""
        return (self.op == "linear") != self.weight.transposed


def _bind(names: tuple[str, ...], defaults: tuple, args: tuple, kwargs: dict) -> dict:
    vals = dict(zip(names, defaults, strict=True))
    vals.update(zip(names, args, strict=False))  # args may be fewer
    vals.update(kwargs)
    return vals


_CONV_NAMES = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def _tup(v, d: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * d
    v = tuple(int(a) for a in v)
    return v * d if len(v) == 1 else v


def _conv_padding(padding, kernel: tuple[int, ...], dilation: tuple[int, ...]):
    """(left, right) pads per spatial dim as torch applies them (None: unsupported)."""
    if isinstance(padding, str):
        if padding == "valid":
            return tuple((0, 0) for _ in kernel)
        if padding == "same":   # torch puts the odd extra pad on the right
            tot = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
            return tuple((t // 2, t - t // 2) for t in tot)
        return None
    return tuple((p, p) for p in _tup(padding, len(kernel)))


class _Tracer(TorchFunctionMode):
    """Discovers (mode "discover") or captures (mode "capture") structured uses.

    discover: records `_Use`s and the names of parameters used in any other way.
    capture: adds ``deltas[i]`` to the output of the i-th planned use and records its
    input; the plan comes from discovery, and the calls must come in the same order.
    """

    def __init__(self, tracked: dict[int, _Ref], mode: str, plan: list[_Use] | None = None,
                 deltas: list[Tensor] | None = None):
        super().__init__()
        self.tracked = dict(tracked)
        self.mode = mode
        self.plan, self.deltas = plan, deltas
        self.uses: list[_Use] = []
        self.bad: set[str] = set()
        self.inputs: list[Tensor] = []
        self._keep: list[Tensor] = []   # derived tensors stay alive so ids stay unique

    def _ref(self, v) -> _Ref | None:
        return self.tracked.get(id(v)) if isinstance(v, Tensor) else None

    def _derive(self, out, ref: _Ref) -> None:
        if isinstance(out, Tensor):
            self.tracked[id(out)] = ref
            self._keep.append(out)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves, _ = tree_flatten((args, kwargs))
        refs = [r for r in map(self._ref, leaves) if r is not None]
        if not refs:
            return func(*args, **kwargs)
        name = _fname(func)
        if name in _META_OPS:
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        if name in _SAME_OPS and len(refs) == 1 and isinstance(out, Tensor) and out is args[0]:
            return out
        derived = self._derived(name, args, kwargs, refs)
        if derived is not None:
            self._derive(out, derived)
            return out
        if name in _DENSE_OPS or name in _CONV_OPS:
            use = self._use(name, args, kwargs, out)
            if use is not None:
                return self._record(use, args, kwargs, out)
        self.bad.update(r.name for r in refs)
        return out

    # -- scale / transpose of a tracked tensor: still structured --------------------------
    def _derived(self, name, args, kwargs, refs) -> _Ref | None:
        if len(refs) != 1 or kwargs:
            return None
        ref = refs[0]
        if name in _SCALE_OPS:
            if name in ("neg", "__neg__", "negative") and len(args) == 1:
                return _Ref(ref.name, -ref.scale, ref.transposed)
            if len(args) != 2:
                return None
            a, b = args
            if name.startswith(("div", "__truediv", "true_div")):
                if self._ref(a) is ref and _real(b) and b != 0:
                    return _Ref(ref.name, ref.scale / b, ref.transposed)
                return None
            other = b if self._ref(a) is ref else a
            if _real(other):
                return _Ref(ref.name, ref.scale * other, ref.transposed)
            return None
        if name in _TRANSPOSE_OPS and isinstance(args[0], Tensor) and args[0].ndim == 2:
            if self._ref(args[0]) is not ref:
                return None
            rest = [a for a in args[1:]]
            if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
                rest = list(rest[0])
            dims = [int(r) % 2 for r in rest] if all(isinstance(r, int) for r in rest) else []
            flip = None   # True: a transpose; False: the identity; None: not understood
            if name in (".T", ".mT", "t"):
                flip = True if not rest else None
            elif len(dims) == 2:   # permute(1, 0) / transpose(0, 1) / swapaxes(...) ...
                if name == "permute" and len(set(dims)) == 2:
                    flip = dims == [1, 0]
                elif name != "permute":
                    flip = dims[0] != dims[1]
            if flip is not None:
                return _Ref(ref.name, ref.scale, ref.transposed != flip)
        return None

    # -- a structured call -----------------------------------------------------------------
    def _use(self, name, args, kwargs, out) -> _Use | None:
        if name in _CONV_OPS:
            v = _bind(_CONV_NAMES, (None, None, None, 1, 0, 1, 1), args, kwargs)
        elif name == "linear":
            v = _bind(("input", "weight", "bias"), (None, None, None), args, kwargs)
        else:
            v = _bind(("input", "other"), (None, None), args, kwargs)
            v = {"input": v["input"], "weight": v["other"], "bias": None}
        x, w, b = v["input"], v["weight"], v["bias"]
        if self._ref(x) is not None or not isinstance(x, Tensor) or not isinstance(w, Tensor):
            return None
        wref, bref = self._ref(w), self._ref(b)
        if b is not None and (not isinstance(b, Tensor) or (bref and bref.transposed)):
            return None
        if wref is None and bref is None:
            return None
        if not isinstance(out, Tensor) or w.ndim < 2:
            return None
        if name in _DENSE_OPS:
            if w.ndim != 2 or x.ndim < 1:
                return None
            return _Use("dense", name, wref, bref, tuple(x.shape), tuple(out.shape))
        d = 1 if name == "conv1d" else 2
        if (wref is not None and wref.transposed) or x.ndim not in (d + 1, d + 2):
            return None
        kernel = tuple(w.shape[2:])
        dil = _tup(v["dilation"], d)
        pads = _conv_padding(v["padding"], kernel, dil)
        if pads is None:
            return None
        return _Use(name, name, wref, bref, tuple(x.shape), tuple(out.shape),
                    stride=_tup(v["stride"], d), padding=pads, dilation=dil,
                    groups=int(v["groups"]), kernel=kernel)

    def _record(self, use: _Use, args, kwargs, out):
        if self.mode == "discover":
            self.uses.append(use)
            return out
        i = len(self.inputs)
        planned = self.plan[i] if i < len(self.plan) else None
        if planned is None or (planned.kind, planned.weight and planned.weight.name,
                               planned.bias and planned.bias.name) != (
                use.kind, use.weight and use.weight.name, use.bias and use.bias.name):
            raise RuntimeError("structured: the model's sequence of layer calls differs from "
                               "the one seen on the first example (data-dependent control "
                               "flow?); use method='jacobian'")
        self.inputs.append(args[0] if args else kwargs["input"])
        return out + self.deltas[i]


# ---- planning ----------------------------------------------------------------------------

@dataclass
class _WeightPlan:
    name: str
    uses: list[int]            # indices into the plan's uses
    route: str = "gram"        # "gram" | "grad"
    P: int = 1                 # positions per example (all uses)
    g: int = 1                 # groups
    c: int = 1                 # input entries per position and group (+1 with a bias)
    o: int = 1                 # output entries per position and group
    bias: str | None = None    # a bias used in exactly the same calls, folded in (see below)


@dataclass
class StructuredPlan:
    uses: list[_Use]
    weights: list[_WeightPlan]
    biases: dict[str, list[int]]        # bias name -> uses
    structured: set[str]
    direct: list[str]                   # selected parameters on the Jacobian route
    act_entries: int                    # recorded entries per example (inputs + outputs)
    flops: int                          # FLOPs of the structured calls per example
    notes: dict[str, str] = field(default_factory=dict)   # why a parameter is unstructured


def _positions_and_sizes(u: _Use) -> tuple[int, int, int, int]:
    """(P, g, c, o) of a use's outer-product structure."""
    if u.kind == "dense":
        c, o = u.in_shape[-1], u.out_shape[-1]
        return math.prod(u.in_shape[:-1]), 1, c, o
    d = 1 if u.kind == "conv1d" else 2
    batch = u.in_shape[0] if len(u.in_shape) == d + 2 else 1
    cin = u.in_shape[-d - 1]
    cout = u.out_shape[-d - 1]
    L = math.prod(u.out_shape[-d:])
    g = u.groups
    return batch * L, g, cin // g * math.prod(u.kernel), cout // g


def discover(fm: FunctionalModel, x: Tensor) -> StructuredPlan:
    """Find the structured uses of the selected parameters on one example of ``x``.

    This forward also serves as ``fm.probe`` (it sets ``fm.k``).
    """
    tracked = {id(t): _Ref(n) for n, t in fm.sel.items()}
    tracer = _Tracer(tracked, "discover")
    fm.probe(x, tracer)
    uses = tracer.uses
    notes = {n: "used other than as a weight/bias of linear/matmul/conv" for n in tracer.bad}
    by_w: dict[str, list[int]] = {}
    by_b: dict[str, list[int]] = {}
    for i, u in enumerate(uses):
        if u.weight is not None:
            by_w.setdefault(u.weight.name, []).append(i)
        if u.bias is not None:
            by_b.setdefault(u.bias.name, []).append(i)
    structured: set[str] = set()
    for n in fm.names:
        if n in tracer.bad:
            continue
        if n in by_w and n in by_b:
            notes[n] = "used both as a weight and as a bias"
            continue
        if n in by_w:
            ws = [uses[i] for i in by_w[n]]
            if len({(u.kind, u.groups, u.kernel) for u in ws}) != 1 or (
                    ws[0].kind == "dense" and len({u.row_is_out for u in ws}) != 1):
                notes[n] = "its uses have different layer types or layouts"
                continue
            structured.add(n)
        elif n in by_b:
            structured.add(n)
    # Keep only the references to structured parameters.
    kept: list[_Use] = []
    for u in uses:
        w = u.weight if u.weight is not None and u.weight.name in structured else None
        b = u.bias if u.bias is not None and u.bias.name in structured else None
        u.weight, u.bias = w, b
        kept.append(u)   # the capture pass intercepts by identity; unstructured refs vanish
    weights: dict[str, _WeightPlan] = {}
    biases: dict[str, list[int]] = {}
    act = flops = 0
    plan_uses = []
    for u in kept:
        if u.weight is None and u.bias is None:
            continue
        i = len(plan_uses)
        plan_uses.append(u)
        P, g, c, o = _positions_and_sizes(u)
        act += math.prod(u.in_shape) + math.prod(u.out_shape)
        flops += 2 * P * g * c * o
        if u.weight is not None:
            wp = weights.setdefault(u.weight.name, _WeightPlan(u.weight.name, [], P=0, g=g, c=c,
                                                                o=o))
            wp.uses.append(i)
            wp.P += P
        if u.bias is not None:
            biases.setdefault(u.bias.name, []).append(i)
    # A bias that comes with exactly the weight's calls has the gradient Σ_p g[p] ⊗ 1:
    # append a constant input column and it rides along in the weight's outer product
    # (one contraction instead of two, and no separate bias gradient).
    for wp in weights.values():
        names = {plan_uses[i].bias.name if plan_uses[i].bias else None for i in wp.uses}
        b = names.pop() if len(names) == 1 else None
        if b is not None and biases.get(b) == wp.uses:
            wp.bias = b
            wp.c += 1
            del biases[b]
    direct = [n for n in fm.names if n not in structured]
    return StructuredPlan(plan_uses, list(weights.values()), biases, structured, direct,
                          act, flops, notes)


def choose_routes(plan: StructuredPlan, n1: int, n2: int, k: int, traced: bool,
                  budget_entries: int) -> None:
    """Pick "gram" or "grad" for each structured weight (in place), by FLOPs and memory."""
    kk = k if traced else k * k
    for wp in plan.weights:
        P, g, c, o = wp.P, wp.g, wp.c, wp.o
        gram_flops = n1 * n2 * P * P * g * (c + kk * o)
        gram_mem = n1 * n2 * P * P * g * (1 + (1 if traced or P * g == 1 else kk))
        grad_flops = (n1 + n2) * k * P * g * o * c + n1 * n2 * kk * g * o * c
        grad_mem = (n1 + n2) * k * g * o * c
        fits = gram_mem <= budget_entries
        wp.route = "gram" if (fits and gram_flops <= grad_flops) or (
            not fits and gram_mem <= grad_mem) else "grad"


def route_cost(plan: StructuredPlan, n1: int, n2: int, k: int, traced: bool) -> int:
    """FLOPs of the contractions of the structured weights with their chosen routes."""
    kk = k if traced else k * k
    total = 0
    for wp in plan.weights:
        P, g, c, o = wp.P, wp.g, wp.c, wp.o
        if wp.route == "gram":
            total += n1 * n2 * P * P * g * (c + kk * o)
        else:
            total += (n1 + n2) * k * P * g * o * c + n1 * n2 * kk * g * o * c
    return total


def route_mem(plan: StructuredPlan, n1: int, n2: int, k: int, traced: bool) -> int:
    """Entries held by the structured weights' factors and intermediates, chosen routes."""
    kk = k if traced else k * k
    total = 0
    for wp in plan.weights:
        P, g, c, o = wp.P, wp.g, wp.c, wp.o
        if wp.route == "gram":
            total += n1 * n2 * P * P * g * (1 if traced or P * g == 1 else 1 + kk)
        else:
            total += (n1 + n2) * k * g * o * c
    return total


# ---- capture and contraction --------------------------------------------------------------

@dataclass
class StructuredFeatures:
    x: Tensor
    out: Tensor                          # (n, k)
    direct: list[Tensor]                 # Jacobian-like factors (n, k, m)
    gram: list[tuple[Tensor, Tensor]]    # per gram-route weight: U (n,P,g,c), G (n,k,P,g,o)


def _unfold(u: _Use, inp: Tensor) -> Tensor:
    """Conv input (n, *in_shape) -> patches (n, P, g, c) matching the weight's layout."""
    n = inp.shape[0]
    d = 1 if u.kind == "conv1d" else 2
    x = inp.reshape(-1, *inp.shape[-d - 1:])            # (n·B, cin, *spatial)
    if d == 1:
        x = x.unsqueeze(2)                                # (n·B, cin, 1, L)
        kernel, stride, dil = (1, *u.kernel), (1, *u.stride), (1, *u.dilation)
        pads = (*u.padding[0], 0, 0)
    else:
        kernel, stride, dil = u.kernel, u.stride, u.dilation
        pads = (*u.padding[1], *u.padding[0])
    if any(pads):
        x = F.pad(x, pads)
    cols = F.unfold(x, kernel, dilation=dil, stride=stride)   # (n·B, cin·kk, L)
    nb, ckk, L = cols.shape
    g = u.groups
    cols = cols.reshape(n, nb // n, g, ckk // g, L).permute(0, 1, 4, 2, 3)
    return cols.reshape(n, -1, g, ckk // g)


def _factors(u: _Use, inp: Tensor, cot: Tensor, with_bias: bool) -> tuple[Tensor, Tensor]:
    """(U (n, P, g, c), G (n, k, P, g, o)) of one use; the weight's scale is folded into U.

    with_bias: append the bias's constant column (its scale) to U.
    """
    n, k = cot.shape[:2]
    scale = u.weight.scale
    if u.kind == "dense":
        c, o = inp.shape[-1], cot.shape[-1]
        U = inp.reshape(n, -1, 1, c)
        G = cot.reshape(n, k, -1, 1, o)
    else:
        d = 1 if u.kind == "conv1d" else 2
        U = _unfold(u, inp)
        g = u.groups
        cout = cot.shape[-d - 1]
        L = math.prod(cot.shape[-d:])
        G = cot.reshape(n, k, -1, g, cout // g, L).permute(0, 1, 2, 5, 3, 4)
        G = G.reshape(n, k, -1, g, cout // g)
        if U.shape[1] != G.shape[2]:
            raise RuntimeError(f"structured: conv patch count {U.shape[1]} != output "
                               f"positions {G.shape[2]} (please report)")
    if scale != 1.0:
        U = U * scale
    if with_bias:
        ones = torch.full((*U.shape[:-1], 1), u.bias.scale, dtype=U.dtype, device=U.device)
        U = torch.cat([U, ones], dim=-1)
    return U, G


def _bias_grad(u: _Use, cot: Tensor) -> Tensor:
    """Per-example bias gradient (n, k, o) of one use: cotangent summed over positions."""
    n, k = cot.shape[:2]
    if u.kind == "dense":
        g = cot.reshape(n, k, -1, cot.shape[-1]).sum(2)
    else:
        d = 1 if u.kind == "conv1d" else 2
        cout = cot.shape[-d - 1]
        g = cot.reshape(n, k, -1, cout, math.prod(cot.shape[-d:])).sum((2, 4))
    return g * u.bias.scale if u.bias.scale != 1.0 else g


class StructuredMethod:
    """Structured derivatives. See the module docstring for the method and its costs."""

    name = "structured"

    def __init__(self, fm: FunctionalModel, traced: bool, plan: StructuredPlan):
        self.fm, self.traced, self.plan = fm, traced, plan

    def capture(self, x: Tensor) -> Any:
        """Per-example outputs, layer inputs, layer-output cotangents, direct gradients."""
        fm, plan = self.fm, self.plan
        consts = {n: fm.sel[n] for n in plan.structured}
        direct0 = {n: fm.sel[n] for n in plan.direct}
        tracked = {id(t): _Ref(n) for n, t in consts.items()}
        basis = torch.eye(fm.k, dtype=fm.dtype, device=fm.device)
        shapes = [u.out_shape for u in plan.uses]

        def per_example(xi: Tensor):
            def f(deltas: list[Tensor], direct: dict[str, Tensor]):
                tracer = _Tracer(tracked, "capture", plan.uses, deltas)
                with tracer:
                    out = fm.call({**consts, **direct}, xi.unsqueeze(0))[0]
                if len(tracer.inputs) != len(plan.uses) or tracer.bad:
                    raise RuntimeError("structured: the model used its parameters differently "
                                       "than on the first example (data-dependent control "
                                       "flow?); use method='jacobian'")
                return out, (out, tracer.inputs)

            deltas = [torch.zeros(s, dtype=fm.dtype, device=fm.device) for s in shapes]
            _, vjp_fn, (out, inputs) = vjp(f, deltas, direct0, has_aux=True)
            cot_d, cot_p = vmap(vjp_fn)(basis)
            return out, inputs, cot_d, cot_p

        return vmap_examples(per_example, x)

    def features(self, x: Tensor) -> StructuredFeatures:
        plan = self.plan
        out, inputs, cot_d, cot_p = self.capture(x)
        n, k = out.shape
        direct = [cot_p[name].reshape(n, k, -1) for name in plan.direct]
        for idx in plan.biases.values():
            direct.append(sum(_bias_grad(plan.uses[i], cot_d[i]) for i in idx))
        gram = []
        for wp in plan.weights:
            parts = [_factors(plan.uses[i], inputs[i], cot_d[i], wp.bias is not None)
                     for i in wp.uses]
            U = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts], 1)
            G = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts], 2)
            if wp.route == "gram":
                gram.append((U, G))
            else:   # per-example weight gradient Σ_p g ⊗ u
                direct.append(torch.einsum("iapgo,ipgc->iagoc", G, U).reshape(n, k, -1))
        return StructuredFeatures(x, out, direct, gram)

    def contract(self, f1: StructuredFeatures, f2: StructuredFeatures) -> Tensor:
        total = None
        for a, b in zip(f1.direct, f2.direct, strict=True):
            block = contract(a, b, self.traced)
            total = block if total is None else total + block
        for (U1, G1), (U2, G2) in zip(f1.gram, f2.gram, strict=True):
            block = _gram_block(U1, G1, U2, G2, self.traced)
            total = block if total is None else total + block
        if total is None:   # every selected parameter unused: Θ = 0
            n1, n2, k = f1.out.shape[0], f2.out.shape[0], self.fm.k
            shape = (n1, n2) if self.traced else (n1, n2, k, k)
            total = torch.zeros(shape, dtype=self.fm.dtype, device=self.fm.device)
        return total


def _gram_block(U1: Tensor, G1: Tensor, U2: Tensor, G2: Tensor, traced: bool) -> Tensor:
    """Σ_{p,q,g} (G1[i,a,p,g]·G2[j,b,q,g]) (U1[i,p,g]·U2[j,q,g]); traced: mean over a=b."""
    n1, k, P1, g, o = G1.shape
    n2, P2 = G2.shape[0], G2.shape[2]
    if P1 == 1 and P2 == 1 and g == 1:   # dense layer: two matmuls and a product
        inner = U1.reshape(n1, -1) @ U2.reshape(n2, -1).T             # (n1, n2)
        if traced:
            cot = G1.reshape(n1, k * o) @ G2.reshape(n2, k * o).T
            return cot * inner / k
        cot = (G1.reshape(n1 * k, o) @ G2.reshape(n2 * k, o).T).reshape(n1, k, n2, k)
        return cot.permute(0, 2, 1, 3) * inner[:, :, None, None]
    inner = torch.einsum("ipgc,jqgc->ijpqg", U1, U2)
    if traced:
        cot = torch.einsum("iapgo,jaqgo->ijpqg", G1, G2)
        return torch.einsum("ijpqg,ijpqg->ij", cot, inner) / k
    cot = torch.einsum("iapgo,jbqgo->ijabpqg", G1, G2)
    return torch.einsum("ijabpqg,ijpqg->ijab", cot, inner)
