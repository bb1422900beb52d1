"""Architectures of the convolution family (ConvTranspose, ConvLocal, 3-D Conv, SumPool,
GlobalSumPool, AvgPool(normalize_edges), ImageResize, Index) as plain data, shared by
tests/layers/test_conv_family_reference.py and the neural-tangents fixture script
tests/fixtures/make_nt_conv_family.py (which loads this file by path, without torch).

Layer tuples, torch's channels-first layout (as in ntkit); those of conv_archs.py plus:

    ("conv", out, filter_shape, strides_or_None, padding, w_std, b_std_or_None, param)
    ("convT", out, filter_shape, strides_or_None, padding, w_std, b_std_or_None, param)
    ("convlocal", out, filter_shape, strides_or_None, padding, w_std, b_std_or_None, param)
    ("relu",)  ("erf",)  ("sign",)  ("gap",)  ("gsp",)  ("flatten",)
    ("dense", out, w_std, b_std_or_None, param)
    ("avgpool", window_shape, strides_or_None, padding[, normalize_edges])
    ("sumpool", window_shape, strides_or_None, padding)
    ("resize", shape (n, C, *S) with -1 kept, method)
    ("index", idx)   # a numpy index of the (n, C, *S) batch; ':' on n and C

``nt_wrong``: neural-tangents 0.6.5 computes this architecture wrongly. After an odd
number of shared-weight convolutions on full storage its kernel keeps the spatial axes
in reversed order (``is_reversed``), which its ImageResize ignores (it resizes the
swapped axes) and so does its ConvLocal (it applies the transposed filter shape). Its
``Sign`` on full spatial storage sets every entry of an example's position-position
covariance to 1 (only the same-position entries are 1: E[sign(u)sign(v)] =
(2/π)·arcsin(ρ) elsewhere), so an example's variance after a global pool is 1 and a
later nonlinearity, which normalizes by it, is wrong. The
fixture stores its value; the test checks that ntkit differs from it and agrees with
the finite network instead.
"""

from __future__ import annotations

S = slice
ALL = slice(None)

ARCHS: dict[str, dict] = {
    # ---- ConvTranspose ---------------------------------------------------------------
    "convT1d_valid_s1_flatten": {
        "input": (2, 7),
        "layers": [("conv", 3, (3,), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
                   ("convT", 3, (3,), None, "VALID", 1.4, 0.1, "ntk"), ("relu",),
                   ("flatten",), ("dense", 1, 1.1, 0.05, "ntk")],
    },
    "convT1d_same_s2_gap": {
        "input": (2, 6),
        "layers": [("convT", 3, (4,), (2,), "SAME", 1.2, 0.2, "ntk"), ("relu",),
                   ("conv", 3, (3,), None, "VALID", 1.5, None, "ntk"), ("relu",),
                   ("gap",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "convT1d_circular_q5_s2_gap": {
        "input": (2, 5),
        "layers": [("conv", 3, (2,), None, "SAME", 1.0, 0.1, "ntk"), ("relu",),
                   ("convT", 3, (5,), (2,), "CIRCULAR", 1.3, 0.1, "ntk"), ("erf",),
                   ("gap",), ("dense", 1, 1.0, 0.1, "ntk")],
    },
    "convT1d_circular_q2_s3_flatten_standard": {
        "input": (3, 4),
        "layers": [("convT", 5, (2,), (3,), "CIRCULAR", 1.1, 0.2, "standard"), ("relu",),
                   ("flatten",), ("dense", 2, 1.2, 0.1, "standard")],
    },
    "convT2d_valid_s21_gap": {
        "input": (2, 4, 5),
        "layers": [("conv", 3, (2, 2), None, "SAME", 1.4, 0.1, "ntk"), ("relu",),
                   ("convT", 3, (3, 2), (2, 1), "VALID", 1.3, 0.05, "ntk"), ("relu",),
                   ("gap",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "convT2d_same_s2_flatten_standard": {
        "input": (2, 3, 4),
        "layers": [("convT", 4, (3, 3), (2, 2), "SAME", 1.5, 0.1, "standard"), ("relu",),
                   ("convT", 3, (2, 2), None, "VALID", 1.2, None, "standard"), ("relu",),
                   ("flatten",), ("dense", 1, 1.0, 0.1, "standard")],
    },
    "convT2d_circular_s2_gap": {
        "input": (2, 3, 4),
        "layers": [("conv", 3, (3, 3), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
                   ("convT", 3, (3, 3), (2, 2), "CIRCULAR", 1.2, 0.1, "ntk"), ("relu",),
                   ("gap",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "convT2d_circular_s32_flatten": {
        "input": (2, 3, 3),
        "layers": [("convT", 3, (4, 3), (3, 2), "CIRCULAR", 1.4, 0.2, "ntk"), ("relu",),
                   ("flatten",), ("dense", 1, 1.0, 0.1, "ntk")],
    },
    # ---- ConvLocal ---------------------------------------------------------------------
    "convlocal1d_flatten": {
        "input": (2, 8),
        "layers": [("convlocal", 3, (3,), None, "SAME", 1.4, 0.1, "ntk"), ("relu",),
                   ("convlocal", 3, (2,), (2,), "VALID", 1.2, 0.2, "ntk"), ("relu",),
                   ("flatten",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "convlocal2d_circular_gap_standard": {
        "input": (2, 4, 4),
        "layers": [("convlocal", 4, (3, 2), None, "CIRCULAR", 1.5, 0.1, "standard"),
                   ("relu",), ("avgpool", (2, 2), (2, 2), "VALID"),
                   ("conv", 3, (2, 2), None, "SAME", 1.3, 0.1, "standard"), ("relu",),
                   ("gap",), ("dense", 1, 1.0, 0.1, "standard")],
    },
    "convlocal2d_square_after_one_conv_gap": {
        "input": (2, 4, 4),
        "layers": [("conv", 3, (2, 3), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
                   ("convlocal", 3, (2, 2), (2, 2), "SAME", 1.4, 0.1, "ntk"), ("relu",),
                   ("gap",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "convlocal2d_nonsquare_after_one_conv": {
        "input": (1, 4, 6),
        "nt_wrong": True,
        "layers": [("conv", 3, (1, 1), None, "SAME", 1.0, 0.0, "ntk"), ("relu",),
                   ("convlocal", 3, (4, 1), None, "VALID", 1.0, 0.0, "ntk"), ("relu",),
                   ("gap",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    # ---- 3-D convolutions --------------------------------------------------------------
    "conv3d_flatten": {
        "input": (2, 3, 4, 3),
        "layers": [("conv", 3, (2, 2, 2), None, "SAME", 1.4, 0.1, "ntk"), ("relu",),
                   ("conv", 3, (2, 1, 2), (1, 2, 1), "VALID", 1.2, 0.05, "ntk"), ("relu",),
                   ("flatten",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "conv3d_circular_pool_gap": {
        "input": (1, 3, 4, 3),
        "layers": [("conv", 3, (3, 3, 2), None, "CIRCULAR", 1.3, 0.1, "ntk"), ("relu",),
                   ("avgpool", (2, 2, 2), (1, 2, 1), "SAME"),
                   ("conv", 3, (2, 2, 2), (2, 1, 1), "SAME", 1.2, None, "standard"),
                   ("relu",), ("gap",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    # ---- sum pools, normalize_edges ----------------------------------------------------
    "sumpool1d_same_strided_gap": {
        "input": (2, 9),
        "layers": [("conv", 3, (3,), None, "SAME", 1.4, 0.1, "ntk"), ("relu",),
                   ("sumpool", (3,), (2,), "SAME"),
                   ("conv", 3, (2,), None, "VALID", 1.0, 0.1, "ntk"), ("relu",),
                   ("gap",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "sumpool2d_circular_gsp": {
        "input": (2, 4, 5),
        "layers": [("conv", 3, (2, 3), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
                   ("sumpool", (2, 2), (1, 2), "CIRCULAR"),
                   ("conv", 3, (2, 2), None, "VALID", 1.0, 0.1, "standard"), ("relu",),
                   ("gsp",), ("dense", 1, 1.0, 0.1, "ntk")],
    },
    "gsp1d": {
        "input": (2, 6),
        "layers": [("conv", 3, (3,), None, "VALID", 1.5, 0.1, "ntk"), ("erf",),
                   ("gsp",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "avgpool2d_normalize_edges": {
        "input": (2, 5, 6),
        "layers": [("conv", 3, (3, 3), None, "SAME", 1.4, 0.1, "ntk"), ("relu",),
                   ("avgpool", (3, 3), (2, 2), "SAME", True),
                   ("conv", 3, (2, 2), None, "VALID", 1.2, 0.0, "ntk"), ("relu",),
                   ("flatten",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "avgpool1d_even_normalize_edges_gap": {
        "input": (2, 7),
        "layers": [("conv", 3, (2,), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
                   ("avgpool", (4,), None, "SAME", True), ("gap",),
                   ("dense", 1, 1.0, 0.1, "ntk")],
    },
    # ---- ImageResize -------------------------------------------------------------------
    "resize_linear_up_after_two_convs": {
        "input": (2, 4, 5),
        "layers": [("conv", 3, (2, 2), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
                   ("conv", 3, (3, 2), None, "SAME", 1.2, 0.1, "ntk"), ("relu",),
                   ("resize", (-1, -1, 7, 9), "linear"),
                   ("conv", 3, (2, 2), None, "VALID", 1.1, 0.0, "ntk"), ("relu",),
                   ("flatten",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "resize_linear_down_input_gap": {
        "input": (1, 6, 8),
        "layers": [("resize", (-1, -1, 3, 5), "bilinear"),
                   ("conv", 3, (2, 2), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
                   ("gap",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "resize_nearest_after_two_convs": {
        "input": (2, 4, 4),
        "layers": [("conv", 3, (3, 3), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
                   ("conv", 3, (2, 2), None, "VALID", 1.2, 0.1, "ntk"), ("relu",),
                   ("resize", (-1, -1, 5, 2), "nearest"), ("flatten",),
                   ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "resize_1d_linear": {
        "input": (2, 5),
        "layers": [("conv", 3, (2,), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
                   ("resize", (-1, -1, 11), "linear"),
                   ("conv", 3, (3,), (2,), "VALID", 1.2, 0.0, "ntk"), ("relu",),
                   ("flatten",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "resize_square_after_one_conv": {
        "input": (2, 4, 4),
        "layers": [("conv", 3, (2, 3), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
                   ("resize", (-1, -1, 6, 6), "linear"), ("flatten",),
                   ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "resize_nonsquare_after_one_conv": {
        "input": (1, 4, 6),
        "nt_wrong": True,
        "layers": [("conv", 3, (3, 3), None, "SAME", 1.0, 0.0, "ntk"), ("relu",),
                   ("resize", (-1, -1, 3, 8), "linear"), ("flatten",),
                   ("dense", 1, 1.0, 0.0, "ntk")],
    },
    # ---- Index -------------------------------------------------------------------------
    "index_reverse_crop_flatten": {
        "input": (2, 5, 6),
        "layers": [("conv", 3, (2, 2), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
                   ("index", (ALL, ALL, S(None, None, -1), S(1, 5))),
                   ("conv", 3, (2, 2), None, "VALID", 1.2, 0.1, "ntk"), ("relu",),
                   ("flatten",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    "index_int_to_1d_gap": {
        "input": (2, 4, 6),
        "layers": [("conv", 3, (3, 3), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
                   ("conv", 3, (2, 2), None, "SAME", 1.2, 0.1, "ntk"), ("relu",),
                   ("index", (Ellipsis, 2, S(5, None, -2))),
                   ("conv", 3, (2,), None, "VALID", 1.1, 0.0, "ntk"), ("relu",),
                   ("gap",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    # ---- Sign on full spatial storage ----------------------------------------------------
    "sign_conv_gap": {
        "input": (2, 5),
        "nt_wrong": True,
        "layers": [("conv", 3, (3,), None, "SAME", 1.2, 0.1, "ntk"), ("sign",),
                   ("gap",), ("dense", 3, 1.3, 0.1, "ntk"), ("relu",),
                   ("dense", 1, 1.0, 0.0, "ntk")],
    },
}


def _layers(layers: list) -> list:
    from ntkit import layers as nl

    out = []
    for spec in layers:
        kind, args = spec[0], spec[1:]
        if kind in ("conv", "convT", "convlocal"):
            o, filt, strides, padding, w, b, param = args
            cls = {"conv": nl.Conv, "convT": nl.ConvTranspose, "convlocal": nl.ConvLocal}[kind]
            out.append(cls(o, filt, strides=strides, padding=padding, w_std=w, b_std=b,
                           parameterization=param))
        elif kind == "relu":
            out.append(nl.ReLU())
        elif kind == "erf":
            out.append(nl.Erf())
        elif kind == "sign":
            out.append(nl.Sign())
        elif kind == "avgpool":
            window, strides, padding, *ne = args
            out.append(nl.AvgPool(window, strides=strides, padding=padding,
                                  normalize_edges=bool(ne and ne[0])))
        elif kind == "sumpool":
            window, strides, padding = args
            out.append(nl.SumPool(window, strides=strides, padding=padding))
        elif kind == "gap":
            out.append(nl.GlobalAvgPool())
        elif kind == "gsp":
            out.append(nl.GlobalSumPool())
        elif kind == "flatten":
            out.append(nl.Flatten())
        elif kind == "dense":
            o, w, b, param = args
            out.append(nl.Dense(o, w, b, parameterization=param))
        elif kind == "resize":
            out.append(nl.ImageResize(args[0], args[1]))
        elif kind == "index":
            out.append(nl.Index(args[0]))
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
    return out


def to_ntkit(arch):
    """The ntkit spec of an architecture: a name in ARCHS, an entry, or a layer list."""
    from ntkit import layers as nl

    if isinstance(arch, str):
        arch = ARCHS[arch]
    layers = arch["layers"] if isinstance(arch, dict) else arch
    return nl.serial(*_layers(layers))
