"""Builders of generated architectures (generator.py): `to_ntkit` (ntkit layer spec,
channels first) and `to_stax` (neural-tangents' stax, channels last). Importing this
module imports neither torch nor ntkit (`to_ntkit` imports ntkit when called).
"""

from __future__ import annotations

from gen_layers import ACTIVATIONS


def _act_ntkit(nl, node):
    op = node["op"]
    kw = {k: v for k, v in node.items() if k != "op"}
    cls = {"relu": nl.ReLU, "leaky_relu": nl.LeakyReLU, "abrelu": nl.ABReLU, "abs": nl.Abs,
           "sign": nl.Sign, "rect_monomial": nl.RectifiedMonomial, "erf": nl.Erf,
           "gelu": nl.GELU, "sin": nl.Sin, "cos": nl.Cos, "rbf": nl.Rbf, "exp": nl.Exp,
           "gaussian": nl.Gaussian, "polynomial": nl.Polynomial, "monomial": nl.Monomial,
           "hermite": nl.Hermite, "tanh": nl.Tanh, "sigmoid": nl.Sigmoid,
           "softplus": nl.Softplus, "silu": nl.SiLU}[op]
    return cls(**kw)


def _ntkit_layers(nl, layers, ndim_spatial):
    out = []
    d = ndim_spatial
    for node in layers:
        op = node["op"]
        if op == "dense":
            out.append(nl.Dense(node["out"], node["w_std"], node["b_std"], node["param"]))
            d = 0
        elif op in ("conv", "conv_transpose", "conv_local"):
            cls = {"conv": nl.Conv, "conv_transpose": nl.ConvTranspose,
                   "conv_local": nl.ConvLocal}[op]
            out.append(cls(node["out"], tuple(node["filter"]), tuple(node["strides"]),
                           node["padding"], node["w_std"], node["b_std"], node["param"]))
        elif op in ACTIVATIONS:
            out.append(_act_ntkit(nl, node))
        elif op == "avg_pool":
            out.append(nl.AvgPool(tuple(node["window"]), tuple(node["strides"]),
                                  node["padding"], node.get("normalize_edges", False)))
        elif op == "sum_pool":
            out.append(nl.SumPool(tuple(node["window"]), tuple(node["strides"]),
                                  node["padding"]))
        elif op == "aggregate":
            out.append(nl.Aggregate())
        elif op == "global_avg_pool":
            out.append(nl.GlobalAvgPool())
            d = 0
        elif op == "global_sum_pool":
            out.append(nl.GlobalSumPool())
            d = 0
        elif op == "flatten":
            out.append(nl.Flatten())
            d = 0
        elif op == "layer_norm":
            axis = 1 if node["axis"] == "channel" else tuple(range(1, d + 2))
            out.append(nl.LayerNorm(axis=axis))
        elif op == "attention":
            kw = {k: v for k, v in node.items() if k != "op"}
            out.append(nl.GlobalSelfAttention(**kw))
        elif op == "resize":
            out.append(nl.ImageResize((-1, -1, *node["shape"]), node["method"]))
        elif op in ("residual", "concat", "prod"):
            brs = [nl.serial(*_ntkit_layers(nl, b, d)) if b else nl.Identity()
                   for b in node["branches"]]
            fan_in = {"residual": nl.FanInSum, "concat": nl.FanInConcat,
                      "prod": nl.FanInProd}[op]
            out.append(nl.serial(nl.FanOut(len(brs)), nl.parallel(*brs), fan_in()))
        else:
            raise ValueError(f"unknown op {op!r}")
    return out


def to_ntkit(arch: dict):
    """The ntkit layer spec of ``arch`` (channels first)."""
    from ntkit import layers as nl

    return nl.serial(*_ntkit_layers(nl, arch["layers"], len(arch["input"]) - 1))


def _stax_layers(stax, layers, d):
    out = []
    for node in layers:
        op = node["op"]
        if op == "dense":
            out.append(stax.Dense(node["out"], W_std=node["w_std"], b_std=node["b_std"],
                                  parameterization=node["param"]))
            d = 0
        elif op in ("conv", "conv_transpose", "conv_local"):
            cls = {"conv": stax.Conv, "conv_transpose": stax.ConvTranspose,
                   "conv_local": stax.ConvLocal}[op]
            out.append(cls(node["out"], tuple(node["filter"]), tuple(node["strides"]),
                           node["padding"], W_std=node["w_std"], b_std=node["b_std"],
                           parameterization=node["param"]))
        elif op in ACTIVATIONS:
            kw = {k: v for k, v in node.items() if k != "op"}
            fn = {"relu": stax.Relu, "leaky_relu": stax.LeakyRelu, "abrelu": stax.ABRelu,
                  "abs": stax.Abs, "sign": stax.Sign, "rect_monomial": stax.RectifiedMonomial,
                  "erf": stax.Erf, "gelu": stax.Gelu, "sin": stax.Sin, "cos": stax.Cos,
                  "rbf": stax.Rbf, "exp": stax.Exp, "gaussian": stax.Gaussian,
                  "polynomial": stax.Polynomial, "monomial": stax.Monomial,
                  "hermite": stax.Hermite}.get(op)
            if fn is None:
                raise ValueError(f"{op} has no exact neural-tangents counterpart")
            out.append(fn(**kw))
        elif op == "avg_pool":
            out.append(stax.AvgPool(tuple(node["window"]), tuple(node["strides"]),
                                    node["padding"],
                                    normalize_edges=node.get("normalize_edges", False)))
        elif op == "sum_pool":
            out.append(stax.SumPool(tuple(node["window"]), tuple(node["strides"]),
                                    node["padding"]))
        elif op == "aggregate":
            out.append(stax.Aggregate())
        elif op == "global_avg_pool":
            out.append(stax.GlobalAvgPool())
            d = 0
        elif op == "global_sum_pool":
            out.append(stax.GlobalSumPool())
            d = 0
        elif op == "flatten":
            out.append(stax.Flatten())
            d = 0
        elif op == "layer_norm":
            axis = -1 if node["axis"] == "channel" else tuple(range(1, d + 2))
            out.append(stax.LayerNorm(axis=axis))
        elif op == "attention":
            kw = {k: v for k, v in node.items() if k != "op"}
            names = {"w_key_std": "W_key_std", "w_value_std": "W_value_std",
                     "w_query_std": "W_query_std", "w_out_std": "W_out_std"}
            kw = {names.get(k, k): v for k, v in kw.items()}
            kw["attention_mechanism"] = kw["attention_mechanism"].upper()
            out.append(stax.GlobalSelfAttention(**kw))
        elif op == "resize":
            out.append(stax.ImageResize((-1, *node["shape"], -1), node["method"]))
        elif op in ("residual", "concat", "prod"):
            brs = [stax.serial(*_stax_layers(stax, b, d)) if b else stax.Identity()
                   for b in node["branches"]]
            fan_in = {"residual": stax.FanInSum, "concat": stax.FanInConcat,
                      "prod": stax.FanInProd}[op]
            out.append(stax.serial(stax.FanOut(len(brs)), stax.parallel(*brs), fan_in()))
        else:
            raise ValueError(f"unknown op {op!r}")
    return out


def to_stax(arch: dict, stax):
    """neural-tangents' ``stax.serial(...)`` of ``arch`` (channels last)."""
    return stax.serial(*_stax_layers(stax, arch["layers"], len(arch["input"]) - 1))
