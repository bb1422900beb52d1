"""The generator's vocabulary and validity rules (see generator.py): the activations it
draws, and `State`, the shape and independence flags of ntkit's Kernel as the generator
tracks them layer by layer. Plain Python: neither torch nor ntkit is imported (the
neural-tangents fixture scripts load it too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

PADDINGS = ("VALID", "SAME", "CIRCULAR")

# name -> (sampler of its parameters, nt exact?, 1-homogeneous?)
ACTIVATIONS = {
    "relu": (lambda r: {}, True, True),
    "leaky_relu": (lambda r: {"alpha": r.choice([0.1, -0.3, 0.5])}, True, True),
    "abrelu": (lambda r: {"a": r.choice([-0.5, 0.2]), "b": r.choice([1.0, 1.5])}, True, True),
    "abs": (lambda r: {}, True, True),
    "sign": (lambda r: {}, True, False),
    "rect_monomial": (lambda r: {"degree": r.choice([0, 1, 2])}, True, False),
    "erf": (lambda r: {"a": r.choice([1.0, 0.7]), "b": r.choice([1.0, 1.3]),
                       "c": r.choice([0.0, 0.2])}, True, False),
    "gelu": (lambda r: {}, True, False),
    "sin": (lambda r: {"a": r.choice([1.0, 0.8]), "b": r.choice([1.0, 1.2]),
                       "c": r.choice([0.0, 0.3])}, True, False),
    "cos": (lambda r: {"a": 1.0, "b": r.choice([1.0, 0.7]), "c": r.choice([0.0, 0.4])},
            True, False),
    "rbf": (lambda r: {"gamma": r.choice([0.5, 1.0])}, True, False),
    "exp": (lambda r: {"a": r.choice([0.5, 1.0]), "b": r.choice([0.5, 0.8])}, True, False),
    "gaussian": (lambda r: {"a": r.choice([1.0, 0.7]), "b": r.choice([-1.0, -0.5])},
                 True, False),
    "polynomial": (lambda r: {"coef": [r.choice([0.0, 0.3]), 1.0, r.choice([0.0, 0.5]),
                                       r.choice([0.0, -0.2])]}, True, False),
    "monomial": (lambda r: {"degree": r.choice([0, 1, 2, 3])}, True, False),
    "hermite": (lambda r: {"degree": r.choice([1, 2, 3])}, True, False),
    "tanh": (lambda r: {}, False, False),
    "sigmoid": (lambda r: {}, False, False),
    "softplus": (lambda r: {}, False, False),
    "silu": (lambda r: {}, False, False),
}


@dataclass(frozen=True)
class State:
    """Shape and the independence flags of ntkit's Kernel, as the generator sees them."""

    channels: int
    spatial: tuple = ()
    gaussian: bool | None = None  # None: raw input
    mixed: bool = False
    source: int | None = None
    roots: frozenset = frozenset()
    n_dense: int = 0
    normalized: bool = False  # right after LayerNorm (unit variances)
    convs: int = 0  # shared-weight convolutions so far (neural-tangents' axis reversal)
    nodes: int = 0  # layers so far (to bound sizes)

    def fresh(self, channels: int, spatial=None, **kw) -> State:
        n = self.n_dense + 1
        return replace(self, channels=channels,
                       spatial=self.spatial if spatial is None else tuple(spatial),
                       gaussian=True, mixed=False, source=n, roots=frozenset((n,)),
                       n_dense=n, normalized=False, nodes=self.nodes + 1, **kw)

    def apply(self, node: dict) -> State:
        op = node["op"]
        if op in ("dense",):
            return self.fresh(node["out"], spatial=())
        if op == "conv":
            return self.fresh(node["out"], out_spatial(self.spatial, node),
                              convs=self.convs + 1)
        if op == "conv_transpose":
            sp = tuple(transpose_size(n, q, s, node["padding"]) for n, q, s in
                       zip(self.spatial, node["filter"], node["strides"], strict=True))
            return self.fresh(node["out"], sp, convs=self.convs + 1)
        if op == "conv_local":
            return self.fresh(node["out"], out_spatial(self.spatial, node))
        if op == "attention":
            return self.fresh(node["n_chan_out"])
        if op in ACTIVATIONS:
            return replace(self, gaussian=False, source=None, normalized=False,
                           nodes=self.nodes + 1)
        if op == "aggregate":  # a linear map over the nodes: like a pool, shape kept
            return replace(self, nodes=self.nodes + 1, normalized=False)
        if op in ("avg_pool", "sum_pool"):
            return replace(self, spatial=out_spatial(self.spatial, node),
                           nodes=self.nodes + 1, normalized=False)
        if op in ("global_avg_pool", "global_sum_pool"):
            return replace(self, spatial=(), nodes=self.nodes + 1, normalized=False)
        if op == "flatten":
            size = math.prod(self.spatial) if self.spatial else 1
            return replace(self, spatial=(), channels=self.channels * size,
                           mixed=self.mixed or bool(self.spatial), nodes=self.nodes + 1,
                           normalized=False)
        if op == "layer_norm":
            return replace(self, normalized=True, nodes=self.nodes + 1)
        if op == "resize":
            return replace(self, spatial=tuple(node["shape"]), nodes=self.nodes + 1,
                           normalized=False)
        if op in ("residual", "concat", "prod"):
            outs = []
            st = self
            for br in node["branches"]:
                b = replace(st, n_dense=st.n_dense)
                for sub in br:
                    b = b.apply(sub)
                outs.append(b)
                st = replace(st, n_dense=b.n_dense)  # numbering threads through branches
            roots = frozenset().union(*(o.roots for o in outs))
            n = max(o.n_dense for o in outs)
            nodes = max(o.nodes for o in outs) + 1
            gauss = (False if any(o.gaussian is False for o in outs) else
                     True if all(o.gaussian for o in outs) else None)
            convs = outs[0].convs
            if op == "concat":
                return replace(outs[0], channels=sum(o.channels for o in outs), source=None,
                               roots=roots, n_dense=n, mixed=True, gaussian=gauss,
                               normalized=False, nodes=nodes, convs=convs)
            if op == "prod":
                gauss = False
            return replace(outs[0], source=None, roots=roots, n_dense=n, gaussian=gauss,
                           mixed=any(o.mixed for o in outs), normalized=False, nodes=nodes,
                           convs=convs)
        raise ValueError(f"unknown op {op!r}")


def out_spatial(spatial, node) -> tuple:
    out = []
    for n, q, s in zip(spatial, node.get("filter") or node["window"], node["strides"],
                       strict=True):
        out.append((n - q) // s + 1 if node["padding"] == "VALID" else -(-n // s))
    return tuple(out)


def transpose_size(n: int, q: int, s: int, padding: str) -> int:
    return n * s if padding in ("SAME", "CIRCULAR") else n * s + max(q - s, 0)


def uncorrelated(a: State, b: State) -> bool:
    return ((a.source is not None and a.source not in b.roots)
            or (b.source is not None and b.source not in a.roots))
