"""Attention architectures as plain data, shared by tests/layers/test_attention_reference.py
and the neural-tangents fixture script tests/fixtures/make_nt_attention.py.

Imports nothing at module level (the reference venv has no torch). Layer tuples are those
of conv_archs.py plus

    ("attn", {kwargs})   # GlobalSelfAttention; ntkit's argument names; "decay" names a
                         # positional decay function from DECAYS instead of a callable.

Decay functions (given the distance d = Σ|Δ|^p): "exp4": exp(-d/4), "inv": 1/(1+d).
"""

from __future__ import annotations

SQ2 = 2.0**0.5
DECAYS = ("exp4", "inv")


def decay_fn(name, lib):
    """The decay function ``name`` written with ``lib`` (torch or jax.numpy)."""
    if name is None:
        return None
    if name == "exp4":
        return lambda d: lib.exp(-d / 4.0)
    if name == "inv":
        return lambda d: 1.0 / (1.0 + d)
    raise ValueError(name)


def _conv1(o=4, w=1.5, b=0.1):
    return ("conv", o, (3,), None, "SAME", w, b, "ntk")


def _conv2(o=4, w=1.5, b=0.1):
    return ("conv", o, (2, 2), None, "SAME", w, b, "ntk")


_TAIL = [("relu",), ("gap",), ("dense", 1, 1.0, 0.1, "ntk")]


def _a(**kw):
    base = dict(n_chan_out=4, n_chan_key=4, n_chan_val=4, n_heads=2)
    base.update(kw)
    return ("attn", base)


ARCHS: dict[str, dict] = {
    "softmax_1d": {"input": (3, 6), "why": "softmax, linear scaling, bias, GAP",
                   "layers": [_conv1(), _a(b_std=0.1, w_key_std=1.3, w_query_std=0.8,
                                           w_value_std=1.2, w_out_std=0.9)] + _TAIL},
    "identity_linear_1d": {"input": (3, 5), "why": "identity mechanism, linear scaling",
                           "layers": [_conv1(), _a(attention_mechanism="identity")] + _TAIL},
    "abs_linear_1d": {"input": (2, 5), "why": "abs mechanism, attention on raw inputs",
                      "layers": [_a(attention_mechanism="abs", b_std=0.2)] + _TAIL},
    "relu_linear_1d": {"input": (3, 5), "why": "relu mechanism, Flatten head",
                       "layers": [_conv1(), _a(attention_mechanism="relu", w_key_std=2.0),
                                  ("relu",), ("flatten",), ("dense", 1, 1.0, 0.0, "ntk")]},
    "identity_sqrt_none": {"input": (3, 5), "why": "square-root scaling (identity), no PE",
                           "layers": [_conv1(), _a(linear_scaling=False,
                                                   attention_mechanism="identity",
                                                   b_std=0.1)] + _TAIL},
    "identity_sqrt_sum": {"input": (3, 5), "why": "square-root scaling, sum PE",
                          "layers": [_conv1(), _a(linear_scaling=False,
                                                  attention_mechanism="identity",
                                                  pos_emb_type="sum",
                                                  w_pos_emb_std=0.7)] + _TAIL},
    "identity_sqrt_concat_val": {"input": (3, 5), "why": "square-root scaling, concat PE in "
                                 "values, exp decay",
                                 "layers": [_conv1(), _a(linear_scaling=False,
                                                         attention_mechanism="identity",
                                                         pos_emb_type="concat",
                                                         n_chan_pos_emb=2, val_pos_emb=True,
                                                         decay="exp4")] + _TAIL},
    "softmax_sum_onehot": {"input": (3, 6), "why": "sum PE, one-hot (no decay)",
                           "layers": [_conv1(), _a(pos_emb_type="sum", w_pos_emb_std=0.8)]
                           + _TAIL},
    "softmax_concat_chan": {"input": (3, 6), "why": "concat PE with n_chan_pos_emb",
                            "layers": [_conv1(), _a(pos_emb_type="concat", n_chan_pos_emb=3,
                                                    w_pos_emb_std=1.3, b_std=0.05)] + _TAIL},
    "softmax_sum_exp_p1": {"input": (3, 6), "why": "sum PE, exp decay, p = 1",
                           "layers": [_conv1(), _a(pos_emb_type="sum", decay="exp4",
                                                   pos_emb_p_norm=1)] + _TAIL},
    "relu_concat_inv_val": {"input": (3, 6), "why": "concat PE, 1/(1+d) decay, val_pos_emb",
                            "layers": [_conv1(), _a(attention_mechanism="relu",
                                                    pos_emb_type="concat", decay="inv",
                                                    val_pos_emb=True)] + _TAIL},
    "softmax_sum_val_p2": {"input": (3, 6), "why": "sum PE in values, exp decay p = 2",
                           "layers": [_conv1(), _a(pos_emb_type="sum", decay="exp4",
                                                   val_pos_emb=True, b_std=0.1)] + _TAIL},
    "softmax_2d": {"input": (2, 3, 3), "why": "2-D input, softmax, 3 heads",
                   "layers": [_conv2(), _a(n_heads=3, b_std=0.1)] + _TAIL},
    "softmax_2d_sum_decay_val": {"input": (2, 3, 4), "why": "2-D, sum PE, decay, val PE",
                                 "layers": [_conv2(), _a(pos_emb_type="sum", decay="exp4",
                                                         val_pos_emb=True)] + _TAIL},
    "identity_sqrt_2d_concat": {"input": (2, 3, 3), "why": "2-D, square-root scaling, concat",
                                "layers": [_conv2(), _a(linear_scaling=False,
                                                        attention_mechanism="identity",
                                                        pos_emb_type="concat",
                                                        b_std=0.1)] + _TAIL},
    "attn_residual_layernorm": {"input": (3, 5), "why": "residual attention block, LayerNorm",
                                "layers": [_conv1(),
                                           ("residual", [_a(b_std=0.1)]),
                                           ("layernorm", 1),
                                           ("residual", [_conv1(), ("relu",), _conv1()]),
                                           ("layernorm", 1)] + _TAIL},
    "two_attention_layers": {"input": (3, 5), "why": "attention after attention, abs then "
                             "softmax, Flatten",
                             "layers": [_conv1(), _a(attention_mechanism="abs"), ("relu",),
                                        _conv1(), _a(pos_emb_type="sum"), ("erf",),
                                        ("flatten",), ("dense", 1, 1.0, 0.1, "ntk")]},
    "dense_attention": {"input": (4,), "why": "fully-connected input (one position)",
                        "layers": [("dense", 5, 1.4, 0.1, "ntk"), _a(b_std=0.1), ("relu",),
                                   ("dense", 1, 1.0, 0.0, "ntk")]},
}


def attn_kwargs(kw: dict, lib) -> dict:
    """ntkit keyword arguments of an "attn" tuple (the decay name turned into a function)."""
    kw = dict(kw)
    kw["pos_emb_decay_fn"] = decay_fn(kw.pop("decay", None), lib)
    return kw


def to_ntkit(arch):
    """The ntkit spec of an architecture name or entry."""
    import torch
    from conv_archs import to_ntkit as conv_to_ntkit

    from ntkit import layers as nl

    if isinstance(arch, str):
        arch = ARCHS[arch]
    out = []
    for spec in arch["layers"]:
        if spec[0] == "attn":
            out.append(nl.GlobalSelfAttention(**attn_kwargs(spec[1], torch)))
        elif spec[0] == "residual":
            inner = to_ntkit({"layers": spec[1]})
            out.append(nl.serial(nl.FanOut(2), nl.parallel(nl.Identity(), inner),
                                 nl.FanInSum()))
        else:
            out.append(conv_to_ntkit([spec]))
    return nl.serial(*out)
