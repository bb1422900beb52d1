"""`lift`: trace a ``torch.nn.Module`` with torch.fx and rebuild it as an ntkit spec.

Steps: trace (leaf modules: torch's own layers and the modules an ntkit spec builds),
propagate shapes on one random input (in eval mode, without gradients), turn every
operation into an ntkit layer (`ntkit.lift.ops`) or a merge of streams (sum,
concatenation, product), then write the graph as ``serial``/``FanOut``/``parallel``/
``FanIn*``: each merge fans out at its immediate dominator (the last operation that every
path from the input to it passes through). Finally the spec's kernel map runs on one
example, so that what the spec API refuses (a sum of correlated streams, an activation
of non-Gaussian inputs) is refused here, with the place of the operation.
"""

from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ntkit import layers as nl
from ntkit.layers.dense import PARAMETERIZATIONS, DenseModule
from ntkit.lift import ops
from ntkit.lift.errors import LiftError
from ntkit.lift.init import NTKIT_TYPES, check_init, check_overrides
from ntkit.lift.spec import LiftedSpec

_SUMS = {operator.add, operator.iadd, torch.add}
_SUBS = {operator.sub, operator.isub, torch.sub}
_CATS = {torch.cat, torch.concat, torch.concatenate}
_MEANS = {torch.mean: False, torch.sum: True}
#: tensor methods that join streams, as the functions that do the same
_METHOD_MERGES = {"add": torch.add, "add_": torch.add, "__add__": torch.add,
                  "sub": torch.sub, "sub_": torch.sub, "__sub__": torch.sub}
_FLATTENS = {torch.flatten}
_IDENTITY_FUNCTIONS = {torch.nn.functional.dropout, torch.nn.functional.dropout1d,
                       torch.nn.functional.dropout2d, torch.nn.functional.dropout3d,
                       torch.nn.functional.alpha_dropout}
_IDENTITY_METHODS = {"contiguous", "clone", "detach", "float", "double", "to", "type_as"}
_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
           nn.ConvTranspose2d, nn.ConvTranspose3d, *NTKIT_TYPES)


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with the modules of built ntkit specs kept whole."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (*ops.NTKIT_LEAVES, *ops.TORCH_LEAVES)):
            return True
        return super().is_leaf_module(m, qualname)


@dataclass
class _Node:
    """A tensor-valued operation: a unary layer (``layer`` None: the identity) on
    ``args[0]``, or a merge (``merge`` in "sum", "concat", "prod") of ``args``, with
    ``extra[i]`` appended to branch i (a sign flip for subtraction)."""

    args: tuple
    layer: nl.Layer | None = None
    merge: str | None = None
    extra: dict = field(default_factory=dict)
    nt_spatial: int = 0
    place: str = ""


def _place(node: fx.Node, gm: fx.GraphModule) -> tuple[str, str]:
    """(place, op name) of a traced node, as the error messages print them."""
    if node.op == "call_module":
        return _strip(str(node.target)), type(gm.get_submodule(node.target)).__name__
    stack = node.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()), None) if stack else None
    owner_path = _strip(owner[0]) if isinstance(owner, tuple) else ""
    owner_path = "" if owner_path == "lifted_root" else owner_path
    if node.op == "call_method":
        what = f"Tensor.{node.target}"
    elif node.op == "get_attr":
        what = f"parameter {node.target}"
    else:
        target = node.target
        mod = getattr(target, "__module__", None) or ""
        name = getattr(target, "__name__", str(target))
        prefix = {"_operator": "operator", "torch._C._nn": "torch.nn.functional",
                  "torch.nn.functional": "torch.nn.functional"}.get(mod, "torch")
        what = f"{prefix}.{name}"
    where = f"{owner_path} ({node.name})" if owner_path else node.name
    return where, what


def _shape(node) -> tuple | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape)[1:] if isinstance(meta, TensorMetadata) else None


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    out = []

    def visit(a):
        if isinstance(a, fx.Node) and (_shape(a) is not None or a.op == "get_attr"):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            for b in a:
                visit(b)
        elif isinstance(a, dict):
            for b in a.values():
                visit(b)

    visit(node.args)
    visit(node.kwargs)
    return out


def _arg(node: fx.Node, i: int, name: str, default=None):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _input_shape(module: nn.Module, graph: fx.Graph, gm: fx.GraphModule, input_shape):
    if input_shape is not None:
        shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                                for s in shape):
            raise ValueError(f"input_shape must be the per-example shape, a tuple of positive "
                             f"ints such as (3, 32, 32) (channels first), got {input_shape!r}")
        return shape
    for node in graph.nodes:
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if isinstance(m, (nn.Linear, DenseModule)):
                return (m.in_features,)
            if isinstance(m, _AFFINE):
                break
    raise ValueError("lift needs input_shape=, the per-example input shape (channels "
                     "first, e.g. (3, 32, 32)): it is only inferred when the module starts "
                     "with a Linear layer")


class _Root(nn.Module):
    """Calls a module whose forward takes ``*args``/``**kwargs`` (the containers of built
    ntkit specs take side inputs) with one tensor, so that those stay empty."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.lifted_root = module

    def forward(self, x):
        return self.lifted_root.forward(x)  # as fx traces a root: without its hooks


_ROOT_PREFIX = "lifted_root."


def _strip(path: str) -> str:
    return path[len(_ROOT_PREFIX):] if path.startswith(_ROOT_PREFIX) else path


def _trace(module: nn.Module) -> fx.GraphModule:
    tracer = _Tracer()
    kinds = {p.kind for p in inspect.signature(module.forward).parameters.values()}
    if kinds & {inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL}:
        module = _Root(module)
    try:
        graph = tracer.trace(module)
    except Exception as e:  # torch.fx raises TraceError, TypeError, RuntimeError, ...
        raise LiftError("", f"{type(module).__name__}.forward",
                        f"torch.fx cannot trace it ({type(e).__name__}: {e}); data-dependent "
                        "control flow and other untraceable Python have no fixed "
                        "architecture to lift") from e
    return fx.GraphModule(tracer.root, graph)


def _propagate(gm: fx.GraphModule, module: nn.Module, shape: tuple) -> None:
    """Shapes of every node, from one random input, in eval mode without gradients (no
    running statistics or other state of the module changes)."""
    p = next(module.parameters(), None)
    dtype = p.dtype if p is not None and p.dtype.is_floating_point else torch.float32
    x = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0), dtype=dtype)
    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        gm.eval()
        with torch.no_grad():
            ShapeProp(gm).propagate(x)
    except Exception as e:
        raise ValueError(f"the module fails on an input of per-example shape {shape} "
                         f"({type(e).__name__}: {e}); check input_shape (channels first)") from e
    finally:
        for m, mode in modes.items():
            m.train(mode)


def _layer_of(node: fx.Node, gm: fx.GraphModule, site: ops.Site, nodes: dict):
    """A unary operation's ntkit layer (None: identity); "merge" nodes are handled by the
    caller."""
    if node.op == "call_module":
        return ops.module_layer(site, gm.get_submodule(node.target))
    fn = node.target
    if node.op == "call_method":
        if fn in ops.ACTIVATION_METHODS:
            return ops.activation(site, ops.ACTIVATION_METHODS[fn], dict(node.kwargs))
        if fn in _IDENTITY_METHODS:
            return None
        if fn in ("view", "reshape"):
            return ops.reshape(site)
        if fn == "flatten":
            return ops.flatten(site, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
        if fn in ("mean", "sum"):
            return ops.mean_or_sum(site, _arg(node, 1, "dim"), _arg(node, 2, "keepdim", False),
                                   fn == "sum")
        if fn in ("mul", "div", "neg", "__mul__", "__truediv__"):
            return _scalar(node, site, {"mul": "mul", "__mul__": "mul", "div": "div",
                                        "__truediv__": "div", "neg": "neg"}[fn])
        raise site.fail("ntkit has no exact infinite-width map for it")
    if fn in ops.ACTIVATION_FUNCTIONS:
        name = ops.ACTIVATION_FUNCTIONS[fn]
        kwargs = dict(node.kwargs)
        for key, value in zip(ops.ACTIVATION_POSITIONAL.get(name, ()), node.args[1:], strict=False):
            kwargs[key] = value
        return ops.activation(site, name, kwargs)
    if fn in _IDENTITY_FUNCTIONS:
        return None
    if fn in _FLATTENS:
        return ops.flatten(site, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
    if fn in _MEANS:
        return ops.mean_or_sum(site, _arg(node, 1, "dim"), _arg(node, 2, "keepdim", False),
                               _MEANS[fn])
    if fn in ops.SCALAR_OPS:
        return _scalar(node, site, ops.SCALAR_OPS[fn])
    F = torch.nn.functional
    pools = {F.avg_pool1d: nn.AvgPool1d, F.avg_pool2d: nn.AvgPool2d, F.avg_pool3d: nn.AvgPool3d}
    if fn in pools:
        return ops.avg_pool(site, pools[fn](*node.args[1:], **node.kwargs))
    if fn in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d):
        return ops.adaptive_avg_pool(site, _arg(node, 1, "output_size"))
    if fn is F.layer_norm:
        if any(_arg(node, i, k) is not None for i, k in ((2, "weight"), (3, "bias"))):
            raise site.fail("F.layer_norm with weight/bias tensors: ntkit cannot tell whether "
                            "they are trained parameters at γ = 1, β = 0; use "
                            "nn.LayerNorm(...), which lifts to LayerNorm(affine=True)")
        return ops.layer_norm(site, _arg(node, 1, "normalized_shape"),
                              _arg(node, 4, "eps", 1e-5))
    raise site.fail("ntkit has no exact infinite-width map for it")


def _scalar(node: fx.Node, site: ops.Site, kind: str):
    if kind == "neg":
        return ops.scale(-1.0)
    other = [a for a in node.args if not isinstance(a, fx.Node)]
    if len(other) != 1 or isinstance(other[0], bool) or not isinstance(other[0], (int, float)):
        raise site.fail("only multiplication or division by a constant number has an exact "
                        "kernel map here")
    if kind == "div" and not isinstance(node.args[1], (int, float)):
        raise site.fail("division of a number by a tensor is not linear")
    a = float(other[0])
    return ops.scale(a if kind == "mul" else 1.0 / a)


def _convert(gm: fx.GraphModule, site_args: dict) -> tuple[fx.Node, dict, fx.Node]:
    """Every tensor node as a `_Node`; returns (input node, nodes, output node)."""
    nodes: dict[fx.Node, _Node] = {}
    source = None
    out = None
    seen_modules: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if source is not None:
                if node.users:
                    raise LiftError(node.name, "forward argument", "lift takes modules with "
                                    "one tensor input", hint=False)
                continue
            source = node
            nodes[node] = _Node(args=(), nt_spatial=len(_shape(node)) - 1)
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node) or out not in nodes:
                raise LiftError("output", "return value", "lift needs a module that returns "
                                "one tensor (not a tuple or dict)", hint=False)
            continue
        meta = node.meta.get("tensor_meta")
        multi = isinstance(meta, (tuple, list)) and not isinstance(meta, TensorMetadata)
        if node.op == "get_attr" or (_shape(node) is None and not multi):
            continue                            # parameters, sizes, shapes: used by others
        place, what = _place(node, gm)
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), _AFFINE):
            if node.target in seen_modules:  # (the raw target: unique per module)
                raise LiftError(place, what, "this layer is called more than once: shared "
                                "weights make streams correlated in ways ntkit's specs do "
                                "not track")
            seen_modules[node.target] = place
        targs = _tensor_args(node)
        for a in targs:
            if a.op == "get_attr":
                raise LiftError(place, what, f"it uses the parameter or buffer {a.target!r} "
                                "directly; lift maps parameters only inside nn.Linear/nn.Conv* "
                                "layers")
        if any(a not in nodes for a in targs):
            raise LiftError(place, what, "it uses a value that is not a tensor of the forward "
                            "pass", hint=False)
        nt = nodes[targs[0]].nt_spatial if targs else 0
        fn = _METHOD_MERGES.get(node.target) if node.op == "call_method" else node.target
        if node.op == "call_method" and fn is not None:
            node_op = "call_function"
        else:
            fn, node_op = node.target, node.op
        if node_op == "call_function" and (fn in _SUMS or fn in _SUBS) and len(targs) == 1:
            raise LiftError(place, what, "adding a constant gives the outputs a nonzero mean, "
                            "which ntkit's kernels (second moments of zero-mean Gaussians) "
                            "do not track")
        if node_op == "call_function" and (fn in _SUMS or fn in _SUBS or fn in _CATS or (
                fn in (operator.mul, torch.mul) and len(targs) == 2)):
            nodes[node] = _merge(node, fn, targs, nodes, place, what)
            continue
        if len(targs) != 1:
            raise LiftError(place, what, f"it takes {len(targs)} tensors; lift supports sums, "
                            "concatenations along channels and products of streams only")
        if multi and not (node.op == "call_module" and isinstance(
                gm.get_submodule(node.target), nn.MultiheadAttention)):
            raise LiftError(place, what, "it returns several tensors; ntkit has no exact "
                            "infinite-width map for it")
        site = ops.Site(place, what, _shape(targs[0]), _shape(node) or (), nt, **site_args)
        layer = _layer_of(node, gm, site, nodes)
        nodes[node] = _Node(args=(targs[0],), layer=layer, place=f"{place}: {what}",
                            nt_spatial=_nt_after(layer, nt, _shape(node)))
    return source, nodes, out


def _nt_after(layer, nt: int, out_shape: tuple) -> int:
    if isinstance(layer, (nl.GlobalAvgPool, nl.GlobalSumPool, nl.Flatten)):
        return 0
    if isinstance(layer, (nl.Dense,)):
        return 0
    if isinstance(layer, (nl.Conv, nl.ConvTranspose, nl.AvgPool)):
        return len(out_shape) - 1
    return nt


def _merge(node, fn, targs, nodes, place, what) -> _Node:
    shapes = {_shape(a) for a in targs}
    nts = {nodes[a].nt_spatial for a in targs}
    if fn in _CATS:
        dim = _arg(node, 1, "dim", 0)
        ndim = len(_shape(targs[0])) + 1
        if dim % ndim != 1:
            raise LiftError(place, what, f"a concatenation along axis {dim}; only one along "
                            "channels (axis 1) is a layer ntkit has (FanInConcat)")
        kind, extra = "concat", {}
    else:
        if len(shapes) > 1:
            raise LiftError(place, what, f"it broadcasts tensors of shapes {sorted(shapes)}; "
                            "lift supports sums of streams of equal shapes")
        if fn in _SUMS or fn in _SUBS:
            if "alpha" in node.kwargs:
                raise LiftError(place, what, "torch.add/sub with alpha= is not supported; "
                                "write alpha * y")
            kind = "sum"
            extra = {1: ops.scale(-1.0)} if fn in _SUBS else {}
        else:
            kind, extra = "prod", {}
    if len(nts) > 1:
        raise LiftError(place, what, "it joins a globally pooled stream with a spatial one")
    return _Node(args=tuple(targs), merge=kind, extra=extra, nt_spatial=nts.pop(),
                 place=f"{place}: {what}")


class _Writer:
    """Writes the graph as serial/FanOut/parallel/FanIn layers (module docstring)."""

    def __init__(self, source, nodes):
        self.source, self.nodes = source, nodes
        self.chains: dict = {}
        self.emitted: set = set()
        self.places: dict[int, str] = {}

    def domchain(self, node) -> list:
        if node in self.chains:
            return self.chains[node]
        info = self.nodes[node]
        if node is self.source:
            chain = [node]
        elif info.merge is None:
            chain = [node, *self.domchain(info.args[0])]
        else:
            chain = [node, *self.domchain(self.idom(node))]
        self.chains[node] = chain
        return chain

    def idom(self, node):
        chains = [self.domchain(a) for a in self.nodes[node].args]
        common = set(chains[0]).intersection(*map(set, chains[1:]))
        return next(n for n in chains[0] if n in common)

    def layers(self, node, base) -> list:
        if node is base:
            return []
        if node is self.source:
            raise LiftError(self.nodes[base].place, "", "the module's graph is not "
                            "series-parallel, which ntkit's combinators need", hint=True)
        info = self.nodes[node]
        if node in self.emitted:
            raise LiftError(info.place, "", "its output feeds streams that join at different "
                            "places, so the graph is not series-parallel and ntkit's "
                            "combinators would copy its weights")
        self.emitted.add(node)
        if info.merge is None:
            chain = self.layers(info.args[0], base)
            if info.layer is not None:
                self.places[id(info.layer)] = info.place
                chain.append(info.layer)
            return chain
        d = self.idom(node)
        chain = self.layers(d, base)
        branches = []
        for i, a in enumerate(info.args):
            b = self.layers(a, d) + ([info.extra[i]] if i in info.extra else [])
            branches.append(b[0] if len(b) == 1 else nl.serial(*b) if b else nl.Identity())
        fan_in = {"sum": nl.FanInSum, "concat": nl.FanInConcat, "prod": nl.FanInProd}
        join = fan_in[info.merge]()
        self.places[id(join)] = info.place
        chain += [nl.FanOut(len(branches)), nl.parallel(*branches), join]
        return chain


#: Largest number of positions for which the probe runs (its full position-position
#: storage holds positions² entries per field).
PROBE_POSITIONS = 1024


def _probe(spec: nl.Layer, shape: tuple) -> None:
    if math.prod(shape[1:]) > PROBE_POSITIONS:
        return   # the spec API's refusals then surface when the kernel is evaluated
    x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    spec.kernel(x, get=None)


def lift(module: nn.Module, input_shape=None, *, init: str = "torch",
         parameterization: str = "standard", overrides: dict | None = None) -> LiftedSpec:
    """(Documented in ntkit/lift/__init__.py, which re-exports it.)"""
    if not isinstance(module, nn.Module):
        raise TypeError(f"lift takes a torch.nn.Module, got {type(module).__name__}")
    init = check_init(init)
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got "
                         f"{parameterization!r}")
    gm = _trace(module)
    shape = _input_shape(module, gm.graph, gm, input_shape)
    _propagate(gm, module, shape)
    affine = {name for name, m in module.named_modules() if isinstance(m, _AFFINE)}
    site_args = dict(init=init, parameterization=parameterization,
                     overrides=check_overrides(overrides, affine))
    source, nodes, out = _convert(gm, site_args)
    writer = _Writer(source, nodes)
    spec = LiftedSpec(writer.layers(out, source), writer.places, shape)
    try:
        _probe(spec, shape)
    except ValueError as e:
        raise _locate(e, source, nodes, shape) from e
    return spec


def _locate(error: ValueError, source, nodes, shape) -> LiftError:
    """The first operation whose lifted prefix the spec API refuses, with its message."""
    for node in nodes:
        if node is source:
            continue
        writer = _Writer(source, nodes)
        try:
            prefix = LiftedSpec(writer.layers(node, source), {}, shape)
            _probe(prefix, shape)
        except LiftError:
            continue
        except ValueError as e:
            return LiftError(nodes[node].place, "", f"the spec API refuses it: {e}")
    return LiftError("", "", f"the lifted spec is refused: {error}")
