"""Convolutional architectures as plain data, shared by the ntkit test and the
neural-tangents fixture script (tests/fixtures/make_nt_conv_kernels.py).

This module imports nothing at module level, so the reference environment (JAX +
neural-tangents, no torch) can load it by path. Each architecture is a dict with

- ``input``: the per-example input shape in torch's layout, (C, L) or (C, H, W);
- ``layers``: a list of layer tuples (below);
- ``why``: what the architecture is there to cover.

Layer tuples (axes and shapes in torch's channels-first layout, as in ntkit):

    ("conv", out, filter_shape, strides_or_None, padding, w_std, b_std_or_None, param)
    ("relu",)  ("erf",)                     # ReLU(); Erf() with a=1, b=1, c=0
    ("avgpool", window_shape, strides_or_None, padding)
    ("gap",)  ("flatten",)
    ("dense", out, w_std, b_std_or_None, param)
    ("layernorm", axes)                     # torch layout: 0 is the batch, 1 the channels
    ("residual", [inner layers])            # FanOut(2) -> parallel(Identity, serial(inner))
                                            #   -> FanInSum

Conventions are neural-tangents' stax: ``strides=None`` means stride 1 (also for
AvgPool, unlike torch.nn.AvgPool2d whose default stride is the window); "SAME" pads an
even filter asymmetrically, the extra row/column at the end (bottom/right); AvgPool
counts zero padding in the average (``normalize_edges=False``); the "standard"
parameterization's NTK depends on the widths (the layer's fan-in is C_in × filter size;
after Flatten the fan-in of a Dense is C × positions).
"""

from __future__ import annotations

SQ2 = 2.0**0.5


def myrtle5(size: int) -> list:
    """Myrtle-5 (Shankar et al. 2020) for a size×size image: [conv, relu]×2, pool2, conv,
    relu, pool2, conv, relu, pool2 repeated down to 1×1, Flatten, Dense. 3×3 SAME convs,
    w_std=√2, b_std=0."""
    conv = ("conv", 8, (3, 3), None, "SAME", SQ2, 0.0, "ntk")
    pool = ("avgpool", (2, 2), (2, 2), "VALID")
    layers = [conv, ("relu",), conv, ("relu",), pool, conv, ("relu",), pool, conv, ("relu",)]
    side = size // 4
    while side > 1:
        layers.append(pool)
        side //= 2
    return layers + [("flatten",), ("dense", 1, 1.0, 0.0, "ntk")]


ARCHS: dict[str, dict] = {
    # ---- 1-D -----------------------------------------------------------------------------
    "conv1d_valid_flatten": {
        "input": (2, 10),
        "why": "1-D, VALID with odd and even filters, diagonal-only path (Flatten)",
        "layers": [
            ("conv", 3, (3,), None, "VALID", 1.5, 0.1, "ntk"), ("relu",),
            ("conv", 3, (4,), None, "VALID", 1.3, 0.05, "ntk"), ("relu",),
            ("flatten",), ("dense", 1, 1.2, 0.1, "ntk"),
        ],
    },
    "conv1d_same_even_strided_gap": {
        "input": (3, 9),
        "why": "1-D SAME with even filters (asymmetric padding), stride 2 with SAME, Erf, GAP",
        "layers": [
            ("conv", 4, (4,), None, "SAME", 1.4, 0.1, "ntk"), ("erf",),
            ("conv", 4, (2,), (2,), "SAME", 1.2, 0.2, "ntk"), ("relu",),
            ("gap",), ("dense", 1, 1.0, 0.0, "ntk"),
        ],
    },
    "conv1d_circular_strided_pool": {
        "input": (2, 12),
        "why": "1-D CIRCULAR with stride 2 and with an even filter, AvgPool VALID, Flatten",
        "layers": [
            ("conv", 4, (3,), (2,), "CIRCULAR", 1.5, 0.1, "ntk"), ("relu",),
            ("conv", 4, (4,), None, "CIRCULAR", 1.3, 0.0, "ntk"), ("relu",),
            ("avgpool", (2,), (2,), "VALID"),
            ("flatten",), ("dense", 1, 1.1, 0.05, "ntk"),
        ],
    },
    "avgpool1d_same": {
        "input": (2, 11),
        "why": "1-D AvgPool with SAME padding (zeros counted) and stride None (= 1), "
               "then GAP",
        "layers": [
            ("conv", 3, (3,), None, "SAME", 1.5, 0.1, "ntk"), ("relu",),
            ("avgpool", (3,), (2,), "SAME"),
            ("conv", 3, (2,), None, "VALID", 1.2, 0.1, "ntk"), ("erf",),
            ("avgpool", (2,), None, "VALID"),
            ("gap",), ("dense", 1, 1.0, 0.1, "ntk"),
        ],
    },
    "layernorm1d_whole_gap": {
        "input": (2, 10),
        "why": "LayerNorm over the whole example (1, 2) on the full covariance (GAP after), "
               "no bias before it so the zero image has zero variance",
        "layers": [
            ("conv", 3, (3,), None, "SAME", 1.5, 0.0, "ntk"), ("layernorm", (1, 2)), ("erf",),
            ("conv", 3, (3,), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
            ("gap",), ("dense", 1, 1.0, 0.0, "ntk"),
        ],
    },
    "standard1d_no_bias": {
        "input": (2, 8),
        "why": "standard parameterization with b_std=None (no bias parameter) and CIRCULAR; "
               "the Dense after Flatten has fan-in C × L",
        "layers": [
            ("conv", 5, (3,), None, "SAME", 1.5, None, "standard"), ("relu",),
            ("conv", 6, (2,), None, "CIRCULAR", 1.2, 0.1, "standard"), ("relu",),
            ("flatten",), ("dense", 2, 1.0, None, "standard"),
        ],
    },
    # ---- 2-D -----------------------------------------------------------------------------
    "flatten_input": {
        "input": (2, 3, 4),
        "why": "Flatten on the input kernel, then a fully-connected net",
        "layers": [
            ("flatten",), ("dense", 8, 1.3, 0.1, "ntk"), ("relu",), ("dense", 1, 1.0, 0.0, "ntk"),
        ],
    },
    "conv_full_filter": {
        "input": (2, 4, 5),
        "why": "a filter covering the whole non-square image with VALID (output 1×1): "
               "equals a Dense on the flattened image",
        "layers": [
            ("conv", 4, (4, 5), None, "VALID", 1.5, 0.1, "ntk"), ("relu",),
            ("flatten",), ("dense", 1, 1.2, 0.0, "ntk"),
        ],
    },
    "conv2d_valid_flatten": {
        "input": (3, 6, 6),
        "why": "2-D VALID with odd and even filters, diagonal-only path (Flatten)",
        "layers": [
            ("conv", 4, (3, 3), None, "VALID", 1.5, 0.1, "ntk"), ("relu",),
            ("conv", 4, (2, 2), None, "VALID", 1.3, 0.05, "ntk"), ("relu",),
            ("flatten",), ("dense", 1, 1.2, 0.1, "ntk"),
        ],
    },
    "conv2d_same_odd_gap": {
        "input": (2, 5, 5),
        "why": "2-D SAME with 3×3 filters, ReLU without bias, full covariance (GAP)",
        "layers": [
            ("conv", 4, (3, 3), None, "SAME", SQ2, 0.0, "ntk"), ("relu",),
            ("conv", 4, (3, 3), None, "SAME", SQ2, 0.0, "ntk"), ("relu",),
            ("gap",), ("dense", 1, 1.0, 0.0, "ntk"),
        ],
    },
    "conv2d_same_even_nonsquare_flatten": {
        "input": (2, 5, 7),
        "why": "SAME with even non-square filters, (2, 1) strides, non-square image, Flatten",
        "layers": [
            ("conv", 3, (2, 4), None, "SAME", 1.4, 0.1, "ntk"), ("relu",),
            ("conv", 3, (4, 2), (2, 1), "SAME", 1.3, 0.1, "ntk"), ("erf",),
            ("flatten",), ("dense", 1, 1.1, 0.1, "ntk"),
        ],
    },
    "conv2d_same_even_gap": {
        "input": (2, 6, 5),
        "why": "SAME with even filters on the full covariance (GAP), mixed strides (1, 2)",
        "layers": [
            ("conv", 3, (2, 2), None, "SAME", 1.5, 0.1, "ntk"), ("relu",),
            ("conv", 3, (4, 3), (1, 2), "SAME", 1.3, 0.05, "ntk"), ("relu",),
            ("gap",), ("dense", 1, 1.0, 0.1, "ntk"),
        ],
    },
    "conv2d_circular_gap": {
        "input": (2, 6, 5),
        "why": "2-D CIRCULAR, odd and non-square filters, stride 2, full covariance (GAP)",
        "layers": [
            ("conv", 3, (3, 3), None, "CIRCULAR", 1.5, 0.1, "ntk"), ("relu",),
            ("conv", 3, (2, 3), (2, 2), "CIRCULAR", 1.3, 0.1, "ntk"), ("relu",),
            ("gap",), ("dense", 1, 1.0, 0.0, "ntk"),
        ],
    },
    "conv2d_circular_flatten": {
        "input": (3, 5, 4),
        "why": "2-D CIRCULAR with an even filter, diagonal-only path, Erf",
        "layers": [
            ("conv", 3, (3, 2), None, "CIRCULAR", 1.4, 0.1, "ntk"), ("relu",),
            ("conv", 3, (3, 3), None, "CIRCULAR", 1.2, 0.2, "ntk"), ("erf",),
            ("flatten",), ("dense", 1, 1.0, 0.1, "ntk"),
        ],
    },
    "myrtle5_8x8": {
        "input": (3, 8, 8),
        "why": "Myrtle-5 on 8×8: AvgPool 2×2 stride 2 VALID down to 1×1, Flatten",
        "layers": myrtle5(8),
    },
    "avgpool2d_same": {
        "input": (2, 7, 7),
        "why": "AvgPool SAME (zeros counted) with stride 2 and with an even non-square window "
               "and stride None (= 1), then Flatten",
        "layers": [
            ("conv", 3, (3, 3), None, "SAME", 1.5, 0.1, "ntk"), ("relu",),
            ("avgpool", (3, 3), (2, 2), "SAME"),
            ("conv", 3, (2, 2), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
            ("avgpool", (2, 3), None, "SAME"),
            ("flatten",), ("dense", 1, 1.0, 0.1, "ntk"),
        ],
    },
    "gap_input": {
        "input": (3, 5, 4),
        "why": "AvgPool and GAP directly on the input kernel, then a fully-connected net",
        "layers": [
            ("avgpool", (2, 2), (1, 1), "VALID"), ("gap",),
            ("dense", 6, 1.5, 0.1, "ntk"), ("relu",), ("dense", 1, 1.0, 0.0, "ntk"),
        ],
    },
    "layernorm_channels_gap": {
        "input": (3, 5, 5),
        "why": "LayerNorm over channels (axis 1) after a conv, on the full covariance (GAP)",
        "layers": [
            ("conv", 4, (3, 3), None, "SAME", 1.5, 0.1, "ntk"), ("layernorm", 1), ("relu",),
            ("conv", 4, (3, 3), None, "SAME", 1.2, 0.1, "ntk"), ("layernorm", 1), ("erf",),
            ("gap",), ("dense", 1, 1.0, 0.0, "ntk"),
        ],
    },
    "layernorm_whole_flatten": {
        "input": (2, 6, 6),
        "why": "LayerNorm over the whole example (1, 2, 3) on the diagonal-only path",
        "layers": [
            ("conv", 3, (3, 3), None, "VALID", 1.5, 0.1, "ntk"), ("layernorm", (1, 2, 3)),
            ("relu",),
            ("conv", 3, (2, 2), None, "SAME", 1.3, 0.1, "ntk"), ("relu",),
            ("flatten",), ("dense", 1, 1.0, 0.1, "ntk"),
        ],
    },
    "layernorm_channels_width_gap": {
        "input": (2, 5, 6),
        "why": "LayerNorm over channels and width only (1, 3) on the full covariance",
        "layers": [
            ("conv", 3, (3, 3), None, "SAME", 1.5, 0.1, "ntk"), ("layernorm", (1, 3)),
            ("relu",), ("gap",), ("dense", 1, 1.0, 0.0, "ntk"),
        ],
    },
    "residual_gap": {
        "input": (3, 6, 6),
        "why": "two pre-activation residual blocks whose main branch ends in a fresh Conv "
               "(odd and even SAME filters), full covariance (GAP). The skip branch carries "
               "a Gaussian (a conv output or a sum of them): an activation after a sum with "
               "a non-Gaussian skip (e.g. a ReLU output) has no Gaussian kernel, and NT "
               "raises there",
        "layers": [
            ("conv", 4, (3, 3), None, "SAME", 1.5, 0.1, "ntk"),
            ("residual", [("relu",), ("conv", 4, (3, 3), None, "SAME", 1.2, 0.1, "ntk")]),
            ("residual", [("erf",), ("conv", 4, (2, 2), None, "SAME", 0.9, 0.0, "ntk")]),
            ("relu",), ("gap",), ("dense", 1, 1.0, 0.0, "ntk"),
        ],
    },
    "standard2d_gap": {
        "input": (3, 5, 6),
        "why": "standard parameterization (NTK depends on fan-in C_in × filter size) "
               "on the full covariance",
        "layers": [
            ("conv", 5, (3, 3), None, "SAME", 1.5, 0.1, "standard"), ("relu",),
            ("conv", 7, (2, 3), None, "VALID", 1.3, 0.1, "standard"), ("relu",),
            ("gap",), ("dense", 3, 1.2, 0.1, "standard"),
        ],
    },
    "erf_deep_gap": {
        "input": (2, 6, 6),
        "why": "six [3×3 SAME conv, Erf] layers then GAP",
        "layers": [layer for _ in range(6)
                   for layer in (("conv", 3, (3, 3), None, "SAME", 1.3, 0.05, "ntk"), ("erf",))]
        + [("gap",), ("dense", 1, 1.0, 0.0, "ntk")],
    },
    # ---- linear nets: their kernels are also computed by explicit torch padding, unfold
    # and pooling in test_conv_fixture_semantics.py, which pins the fixture's semantics --
    "linear1d_same_even_pool": {
        "input": (2, 9),
        "why": "linear: SAME with even filters and stride 2, AvgPool SAME with stride None",
        "layers": [
            ("conv", 3, (4,), None, "SAME", 1.3, 0.1, "ntk"),
            ("conv", 3, (2,), (2,), "SAME", 1.1, 0.0, "ntk"),
            ("avgpool", (3,), None, "SAME"),
            ("gap",), ("dense", 1, 1.0, 0.1, "ntk"),
        ],
    },
    "linear2d_circular_strided": {
        "input": (2, 5, 6),
        "why": "linear: CIRCULAR with a non-square even filter and strides (2, 1), "
               "AvgPool SAME with an even window",
        "layers": [
            ("conv", 3, (2, 3), (2, 1), "CIRCULAR", 1.2, 0.1, "ntk"),
            ("avgpool", (2, 2), (1, 1), "SAME"),
            ("flatten",), ("dense", 1, 1.0, 0.0, "ntk"),
        ],
    },
    "linear2d_same_even_avgpool": {
        "input": (2, 6, 5),
        "why": "linear: SAME with an even non-square filter, strided AvgPool SAME, "
               "VALID conv, GAP",
        "layers": [
            ("conv", 3, (2, 4), None, "SAME", 1.4, 0.1, "ntk"),
            ("avgpool", (3, 2), (2, 2), "SAME"),
            ("conv", 3, (2, 2), None, "VALID", 1.1, 0.2, "ntk"),
            ("gap",), ("dense", 1, 1.0, 0.0, "ntk"),
        ],
    },
}


def _layers_to_ntkit(layers: list) -> list:
    from ntkit import layers as nl

    out = []
    for spec in layers:
        kind, args = spec[0], spec[1:]
        if kind == "conv":
            o, filt, strides, padding, w, b, param = args
            out.append(nl.Conv(o, filt, strides=strides, padding=padding, w_std=w, b_std=b,
                               parameterization=param))
        elif kind == "relu":
            out.append(nl.ReLU())
        elif kind == "erf":
            out.append(nl.Erf())
        elif kind == "avgpool":
            window, strides, padding = args
            out.append(nl.AvgPool(window, strides=strides, padding=padding))
        elif kind == "gap":
            out.append(nl.GlobalAvgPool())
        elif kind == "flatten":
            out.append(nl.Flatten())
        elif kind == "dense":
            o, w, b, param = args
            out.append(nl.Dense(o, w, b, parameterization=param))
        elif kind == "layernorm":
            out.append(nl.LayerNorm(axis=args[0], eps=1e-12))
        elif kind == "residual":
            out.append(nl.serial(nl.FanOut(2),
                                 nl.parallel(nl.Identity(), nl.serial(*_layers_to_ntkit(args[0]))),
                                 nl.FanInSum()))
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
    return out


def to_ntkit(arch):
    """The ntkit spec (``nl.serial(...)``) of an architecture: a name in ARCHS, an
    ARCHS entry, or a bare list of layer tuples."""
    from ntkit import layers as nl

    if isinstance(arch, str):
        arch = ARCHS[arch]
    layers = arch["layers"] if isinstance(arch, dict) else arch
    return nl.serial(*_layers_to_ntkit(layers))


def degenerate_pairs(x1, x2):
    """(n1, n2) bool numpy array: pairs of inputs (any layout, one example per row) that are
    parallel or antiparallel (|cos| = 1 over the whole example: duplicates, scaled and
    antipodal copies, the diagonal of a symmetric kernel) or involve a zero input.

    At such pairs every position pair (p, p) has correlation ±1, where an arc-cosine kernel
    is ill-conditioned: an O(eps) error in v1·v2 − c² becomes O(sqrt(eps)) in the angle.
    neural-tangents computes the angle with arccos there, so its values carry that error.
    """
    import numpy as np

    a = np.asarray(x1, dtype=np.float64).reshape(len(x1), -1)
    b = np.asarray(x2, dtype=np.float64).reshape(len(x2), -1)
    n1, n2 = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    norms = np.outer(n1, n2)
    cos = (a @ b.T) / np.maximum(norms, 1e-300)
    return (np.abs(np.abs(cos) - 1) < 1e-12) | (norms == 0)
