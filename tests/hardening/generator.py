"""A seeded, deterministic generator of random ntkit architectures, as plain data.

    from generator import generate, to_ntkit
    arch = generate(seed=3)              # a dict: JSON-able, the same for the same seed
    net = to_ntkit(arch)                 # ntkit layer spec, channels first
    x1 = example_inputs(arch, seed=0)    # numpy rows a, b, 0, a, 3b, -a (channels first)

and in the neural-tangents venv (no torch needed; this module imports nothing heavy)::

    init_fn, apply_fn, kernel_fn = to_stax(arch, stax)   # channels last

An architecture is ``{"seed", "input": [C, *S], "layers": [node, ...], "nt": bool,
"bias": bool}``; a node is a dict with an ``"op"`` key and that op's arguments, or a
block ``{"op": "residual" | "concat" | "prod", "branches": [[node, ...], ...]}`` meaning
``serial(FanOut(k), parallel(*branches), FanInSum() | FanInConcat() | FanInProd())``.

Validity follows ntkit's rules (`ntkit.kernel.Kernel` flags), tracked here in `State`:

- an activation needs Gaussian, unmixed channels (right after a Dense/Conv/attention
  layer or a linear map of one; never after Flatten or FanInConcat);
- LayerNorm needs Gaussian channels;
- FanInSum/FanInProd need every pair of streams uncorrelated: one of the two carries a
  fresh layer's ``source`` that is not among the other's ``roots`` (see `ntkit.kernel`);
  so every branch but at most one ends with its own Dense/Conv (a linear map after it
  keeps its source);
- shapes fit (VALID windows no larger than the input, equal branch shapes).

``nt=True`` restricts to what neural-tangents 0.6.5 computes exactly and as ntkit does
(the differential fixture): closed-form activations only (no quadrature ones), Sign only
on fully-connected streams (neural-tangents' Sign is wrong on spatial ones), Hermite only
right after LayerNorm (neural-tangents assumes unit variances), ConvLocal/ImageResize only
where neural-tangents' reversed-axes bookkeeping cannot matter (square shapes, filters and
strides; its ImageResize/ConvLocal act on swapped axes after an odd number of convs).
``bias=False`` makes every layer bias-free and every activation positively 1-homogeneous
(ReLU, LeakyReLU, ABReLU, Abs): the network is then 1-homogeneous in each input.

The module is split in three: gen_layers.py (the activations drawn and `State`, the
validity rules), gen_build.py (`to_ntkit`, `to_stax`) and this one (the draws). To add a
layer: a sampler in `_Gen` here (or an activation in ``gen_layers.ACTIVATIONS``), its
shape/flag rule in ``State.apply``, and one branch in each of `to_ntkit` and `to_stax`.
New kinds of draw go behind an argument of `generate` that is off by default, so that
the stored seeds (tests/fixtures/nt_random.npz) keep their architectures.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace

from gen_build import to_ntkit, to_stax
from gen_layers import ACTIVATIONS, PADDINGS, State, out_spatial, transpose_size, uncorrelated

__all__ = ["MASK", "PADDINGS", "call_options", "check_independence", "count_layers",
           "example_inputs", "generate", "graph_patterns", "mask_inputs", "output_state",
           "to_ntkit", "to_stax", "widen"]

#: The mask constant of ``masked`` architectures: an input position whose channels all
#: equal it is absent (Gaussian rows never hit it).
MASK = -7.0


class _Gen:
    def __init__(self, seed: int, nt: bool, bias: bool, max_layers: int, readout: bool,
                 circular: bool, ndim: int | None, graph: bool = False,
                 masked: bool = False):
        self.r = random.Random(seed)
        self.graph, self.masked = graph, masked
        self.nt = nt
        self.bias = bias
        self.max_layers = max_layers
        self.readout = readout
        self.circular = circular
        self.ndim = ndim

    # ---- parameters ----------------------------------------------------------------
    def wb(self) -> dict:
        r = self.r
        w = r.choice([0.8, 1.0, 1.3, 1.5])
        b = r.choice([0.0, 0.1, 0.3, None]) if self.bias else None
        return {"w_std": w, "b_std": b,
                "param": "standard" if r.random() < 0.2 else "ntk"}

    def activation(self, st: State) -> dict | None:
        names = [n for n, (_, exact, homog) in ACTIVATIONS.items()
                 if (exact or not self.nt) and (homog or self.bias)]
        if self.nt and st.spatial:
            names = [n for n in names if n != "sign"]
        if self.nt and not st.normalized:
            names = [n for n in names if n != "hermite"]
        name = self.r.choice(names)
        return {"op": name, **ACTIVATIONS[name][0](self.r)}

    def can_activate(self, st: State) -> bool:
        return st.gaussian is True and not st.mixed

    # ---- spatial layers ---------------------------------------------------------------
    def conv_like(self, st: State, op: str, keep_shape: bool = False) -> dict:
        r = self.r
        d = len(st.spatial)
        square = op == "conv_local" and self.nt
        if self.circular:
            keep_shape = True
        for _ in range(20):
            filt = [r.choice([1, 2, 3]) for _ in range(d)]
            strides = [1] * d if keep_shape else [r.choice([1, 1, 2]) for _ in range(d)]
            pad = "SAME" if keep_shape and r.random() < 0.5 and not self.circular else (
                "CIRCULAR" if keep_shape else r.choice(PADDINGS))
            if square:
                filt = [filt[0]] * d
                strides = [strides[0]] * d
            node = {"op": op, "out": r.choice([1, 2, 3]), "filter": filt,
                    "strides": strides, "padding": pad, **self.wb()}
            if op == "conv_transpose":
                if keep_shape:
                    continue
                sp = [transpose_size(n, q, s, pad) for n, q, s in
                      zip(st.spatial, filt, strides, strict=True)]
                if math.prod(sp) > 16 or max(sp) > 8:
                    continue
                return node
            if pad == "VALID" and any(n < q for n, q in zip(st.spatial, filt, strict=True)):
                continue
            if keep_shape and out_spatial(st.spatial, node) != st.spatial:
                continue
            return node
        filt = [1] * d
        return {"op": "conv" if op != "conv_local" else op, "out": 2, "filter": filt,
                "strides": [1] * d, "padding": "SAME", **self.wb()}

    def pool(self, st: State) -> dict | None:
        r = self.r
        d = len(st.spatial)
        for _ in range(10):
            win = [r.choice([1, 2, 3]) for _ in range(d)]
            strides = [r.choice([1, 2]) for _ in range(d)]
            pad = r.choice(PADDINGS)
            if self.circular:
                strides, pad = [1] * d, "CIRCULAR"
            op = r.choice(["avg_pool", "sum_pool"])
            node = {"op": op, "window": win, "strides": strides, "padding": pad}
            if op == "avg_pool" and pad == "SAME" and r.random() < 0.5:
                node["normalize_edges"] = True
            if pad == "VALID" and any(n < q for n, q in zip(st.spatial, win, strict=True)):
                continue
            return node
        return None

    def attention(self, st: State) -> dict:
        r = self.r
        heads = r.choice([1, 2])
        node = {"op": "attention", "n_chan_out": r.choice([2, 3]),
                "n_chan_key": r.choice([2, 3]), "n_chan_val": r.choice([2, 3]),
                "n_heads": heads,
                "linear_scaling": r.random() < 0.7,
                "w_key_std": r.choice([0.8, 1.0, 1.3]),
                "w_query_std": r.choice([0.8, 1.0]),
                "w_value_std": r.choice([1.0, 1.2]),
                "w_out_std": r.choice([0.9, 1.0]),
                "b_std": r.choice([None, 0.1]) if self.bias else None,
                "attention_mechanism": r.choice(["softmax", "identity", "abs", "relu"])}
        if not node["linear_scaling"]:  # the only closed form with 1/sqrt(d) scaling
            node["attention_mechanism"] = "identity"
        return node

    def resize(self, st: State) -> dict | None:
        r = self.r
        if self.nt and (len(set(st.spatial)) > 1):
            return None
        new = [r.choice([2, 3, 4]) for _ in st.spatial]
        if self.nt:
            new = [new[0]] * len(new)
        return {"op": "resize", "shape": new, "method": r.choice(["linear", "nearest"])}

    # ---- blocks -------------------------------------------------------------------------
    def residual(self, st: State, spatial: bool) -> dict:
        r = self.r
        k = r.choice([2, 2, 3])
        branches = []
        identity_used = False
        for _ in range(k):
            # neural-tangents sums Gaussian streams only (NotImplementedError otherwise)
            if not identity_used and r.random() < 0.5 and (st.gaussian or not self.nt):
                branches.append([])  # Identity: correlated with everything but fresh ones
                identity_used = True
                continue
            br = []
            s = st
            if r.random() < 0.6:
                node = self.conv_like(s, "conv", keep_shape=True) if spatial else \
                    {"op": "dense", "out": r.choice([2, 3]), **self.wb()}
                br.append(node)
                s = s.apply(node)
                if self.can_activate(s):
                    act = self.activation(s)
                    br.append(act)
                    s = s.apply(act)
            out = st.channels
            last = ({**self.conv_like(s, "conv", keep_shape=True), "out": out}
                    if spatial else {"op": "dense", "out": out, **self.wb()})
            br.append(last)
            branches.append(br)
        return {"op": "residual", "branches": branches}

    def concat(self, st: State, spatial: bool) -> dict:
        r = self.r
        branches = []
        for _ in range(r.choice([2, 3])):
            if r.random() < 0.3:
                branches.append([])
                continue
            node = self.conv_like(st, "conv", keep_shape=True) if spatial else \
                {"op": "dense", "out": r.choice([1, 2, 3]), **self.wb()}
            br = [node]
            s = st.apply(node)
            if r.random() < 0.5:
                act = self.activation(s)
                br.append(act)
            branches.append(br)
        return {"op": "concat", "branches": branches}

    def prod(self, st: State, spatial: bool) -> dict:
        branches = []
        for _ in range(2):
            node = self.conv_like(st, "conv", keep_shape=True) if spatial else \
                {"op": "dense", "out": st.channels, **self.wb()}
            branches.append([{**node, "out": st.channels}])
        return {"op": "prod", "branches": branches}

    # ---- the network ----------------------------------------------------------------------
    def network(self) -> dict:
        r = self.r
        ndim = r.choice([0, 1, 1, 2, 2]) if self.ndim is None else self.ndim
        if ndim == 0:
            shape = [r.choice([2, 3, 4])]
        elif ndim == 1:
            shape = [r.choice([1, 2, 3]), r.choice([3, 4, 5, 6])]
        else:
            shape = [r.choice([1, 2])] + [r.choice([2, 3, 4]) for _ in range(2)]
        st = State(channels=shape[0], spatial=tuple(shape[1:]))
        layers: list[dict] = []

        def push(node):
            nonlocal st
            layers.append(node)
            st = st.apply(node)

        # first a fresh affine layer, so that activations see Gaussian channels
        first = ["conv"] if self.circular else ["conv", "conv", "conv_transpose", "conv_local"]
        push(self.conv_like(st, r.choice(first), keep_shape=self.graph)
             if st.spatial else {"op": "dense", "out": r.choice([2, 3, 4]), **self.wb()})
        if self.graph and st.spatial == tuple(shape[1:]) and r.random() < 0.6:
            push({"op": "aggregate"})  # most graph nets aggregate, some only later
        for _ in range(r.randint(1, self.max_layers)):
            if st.spatial:
                choices = ["act", "conv", "conv", "pool", "residual", "concat", "norm",
                           "attention", "conv_transpose", "conv_local", "resize", "prod"]
            else:
                choices = ["act", "dense", "residual", "concat", "norm", "prod"]
            if self.circular:  # shift-equivariant layers only
                choices = [c for c in choices if c not in ("conv_transpose", "conv_local",
                                                           "resize")]
            if self.masked:  # ImageResize has no mask rule (ntkit and neural-tangents)
                choices = [c for c in choices if c != "resize"]
            if self.graph and st.spatial == tuple(shape[1:]):  # the patterns' node count
                choices += ["aggregate", "aggregate"]
            kind = r.choice(choices)
            if kind == "act":
                if not self.can_activate(st):
                    continue
                push(self.activation(st))
            elif kind in ("conv", "conv_transpose", "conv_local"):
                push(self.conv_like(st, kind))
            elif kind == "dense":
                push({"op": "dense", "out": r.choice([2, 3, 4]), **self.wb()})
            elif kind == "pool":
                node = self.pool(st)
                if node:
                    push(node)
            elif kind == "residual":
                push(self.residual(st, bool(st.spatial)))
            elif kind == "concat":
                push(self.concat(st, bool(st.spatial)))
            elif kind == "prod":
                if not self.bias:
                    continue
                push(self.prod(st, bool(st.spatial)))
            elif kind == "norm":
                if st.gaussian is not True or not self.bias:  # LayerNorm: 0-homogeneous
                    continue
                push({"op": "layer_norm", "axis": "channel" if st.spatial and
                      r.random() < 0.6 else "all"})
                if self.nt and self.can_activate(st) and r.random() < 0.5:
                    push({"op": "hermite", "degree": r.choice([1, 2, 3])})
            elif kind == "attention":
                if not self.bias or math.prod(st.spatial) > 9:
                    continue
                push(self.attention(st))
            elif kind == "aggregate":
                push({"op": "aggregate"})
            elif kind == "resize":
                node = self.resize(st)
                if node and self.bias:
                    push(node)
        if not self.readout:
            return {"input": shape, "layers": layers}
        # the readout
        if st.spatial:
            push({"op": r.choice(["global_avg_pool", "global_sum_pool"] if self.circular
                                 else ["flatten", "global_avg_pool", "global_sum_pool"])})
        if r.random() < 0.5 and self.can_activate(st):
            push(self.activation(st))
        push({"op": "dense", "out": r.choice([1, 2]), **self.wb()})
        return {"input": shape, "layers": layers}


def generate(seed: int, *, nt: bool = False, bias: bool = True, max_layers: int = 5,
             readout: bool = True, circular: bool = False, ndim: int | None = None,
             graph: bool = False, masked: bool = False) -> dict:
    """A random valid architecture (plain data), the same for the same arguments.

    Args:
      seed: the draw.
      nt: only what neural-tangents computes exactly (module docstring).
      bias: False: bias-free, positively 1-homogeneous activations only.
      max_layers: blocks drawn after the first layer (1..max_layers).
      readout: end with Flatten/global pooling and Dense; False: the output may be
        spatial (and is when the input is).
      circular: shift-equivariant layers only (stride-1 CIRCULAR convolutions and pools,
        no ConvLocal/ConvTranspose/ImageResize, global pooling readout).
      ndim: spatial dimensions of the input (0, 1 or 2); None: drawn.
      graph: graph networks: 1-D inputs (C, N) whose N positions are the nodes, and
        `Aggregate` layers (all spatial axes, dense patterns) drawn wherever the stream
        still has N positions; the arch gets ``"graph": True`` and the kernel call
        needs ``pattern=`` (`graph_patterns`). Off: the draws are those of before.
      masked: inputs with absent positions (``mask_constant``): no ImageResize; the
        arch gets ``"mask": MASK`` (`mask_inputs` marks positions). Off: as before.
    """
    if graph:
        if ndim not in (None, 1):
            raise ValueError("graph=True draws 1-D inputs (the nodes): leave ndim None")
        ndim = 1
    g = _Gen(seed, nt, bias, max_layers, readout, circular, ndim, graph, masked)
    arch = g.network()
    arch.update(seed=seed, nt=nt, bias=bias)
    if graph:
        arch["graph"] = True
    if masked:
        arch["mask"] = MASK
    return json.loads(json.dumps(arch))  # plain JSON data: lists, not tuples


def check_independence(arch: dict) -> None:
    """Raise if a residual/prod block of ``arch`` has correlated streams (by State)."""
    st = State(channels=arch["input"][0], spatial=tuple(arch["input"][1:]))

    def walk(layers, st):
        for node in layers:
            if node["op"] in ("residual", "prod"):
                outs, s0 = [], st
                for br in node["branches"]:
                    b = s0
                    for sub in br:
                        b = b.apply(sub)
                    outs.append(b)
                    s0 = replace(s0, n_dense=b.n_dense)
                for i, a in enumerate(outs):
                    for b in outs[i + 1:]:
                        if not uncorrelated(a, b):
                            raise ValueError(f"correlated streams in {node}")
            st = st.apply(node)
        return st

    walk(arch["layers"], st)


def output_state(arch: dict) -> State:
    st = State(channels=arch["input"][0], spatial=tuple(arch["input"][1:]))
    for node in arch["layers"]:
        st = st.apply(node)
    return st


def count_layers(arch: dict) -> int:
    def c(layers):
        return sum(1 + (sum(c(b) for b in n["branches"]) if "branches" in n else 0)
                   for n in layers)
    return c(arch["layers"])


# ---- inputs ---------------------------------------------------------------------------------
def example_inputs(arch: dict, seed: int = 0, np=None):
    """(x1, x2) numpy float64, channels first: x1 rows a, b, 0, a, 3b, -a; x2 rows c, d/2,
    -b, 3a (duplicate, scaled, antipodal and zero rows, as the other fixtures)."""
    if np is None:
        import numpy as np
    rng = np.random.default_rng(seed)
    shape = tuple(arch["input"])
    a, b, c, d = rng.standard_normal((4, *shape))
    x1 = np.stack([a, b, np.zeros(shape), a, 3.0 * b, -a])
    x2 = np.stack([c, 0.5 * d, -b, 3.0 * a])
    return x1, x2


def graph_patterns(arch: dict, x, np=None):
    """Dense adjacencies (n, N, N) for the rows x (n, C, N) of a ``graph`` architecture,
    a function of each row alone (identical rows get identical patterns, permuting the
    rows permutes them): arc u -> v of weight w(u, v) in (0.5, 1.5] when channel 0 has the
    same sign at u and v (so a zero row has none, and scaling a row by c > 0 or -1 keeps
    its pattern); the weights depend on (u, v) and the arch's seed only."""
    if np is None:
        import numpy as np
    x = np.asarray(x, np.float64)
    s = np.sign(x[:, 0, :])
    nodes = x.shape[-1]
    u, v = np.meshgrid(np.arange(nodes), np.arange(nodes), indexing="ij")
    w = 0.5 + ((7 * u + 3 * v + arch["seed"]) % 5 + 1) / 5.0
    return (s[:, :, None] * s[:, None, :] > 0) * w[None]


def mask_inputs(arch: dict, x, np=None):
    """A copy of rows x (channels first) with trailing positions absent (every channel
    set to MASK): row i loses k_i of its P positions (P = 1 for (n, d) rows: the whole
    example), k_i a function of the row's values alone (identical rows, identical
    masks; a zero row none), so that some rows are fully masked."""
    if np is None:
        import numpy as np
    x = np.array(x, np.float64)
    flat = x.reshape(len(x), x.shape[1], -1)  # (n, C, P); a view
    positions = flat.shape[-1]
    for i in range(len(x)):
        k = int(np.abs(x[i]).sum() * 1e3) % (positions + 1)
        if k:
            flat[i, :, positions - k:] = arch["mask"]
    return x


def call_options(arch: dict, x1, x2=None, np=None) -> dict:
    """The keyword arguments a kernel call of ``arch`` on (x1, x2) needs beyond the inputs:
    ``pattern`` for graph nets (`graph_patterns`), ``mask_constant`` for masked ones.
    x1 and x2 must already be masked (`mask_inputs`)."""
    kw: dict = {}
    if arch.get("graph"):
        kw["pattern"] = (graph_patterns(arch, x1, np),
                         None if x2 is None else graph_patterns(arch, x2, np))
    if "mask" in arch:
        kw["mask_constant"] = arch["mask"]
    return kw


def widen(arch: dict, factor: int, readout: int = 4) -> dict:
    """``arch`` with every width (channels, attention channels) times ``factor``, the
    readout's outputs (the last layer's) times ``readout`` (the kernel is the same for
    each output; more outputs average the per-network estimate over more of them)."""
    arch = json.loads(json.dumps(arch))

    def walk(layers):
        for node in layers:
            for k in ("out", "n_chan_out", "n_chan_key", "n_chan_val"):
                if k in node:
                    node[k] *= factor
            for br in node.get("branches", ()):
                walk(br)

    walk(arch["layers"])
    arch["layers"][-1]["out"] = arch["layers"][-1]["out"] // factor * readout
    return arch
