"""Architectures of tests/layers/test_misc_layers_reference.py (Dropout, FanInProd, repeat,
Aggregate, DotGeneral, ExpNormalized, Gabor), as data.

Read by tests/fixtures/make_nt_misclayers.py in the neural-tangents venv (loaded by path,
so this module imports neither torch nor ntkit at import time) and translated to ntkit by
`to_ntkit`. Axes are ntkit's (channels first: 0 batch, 1 channels, 2.. spatial).

Layer entries:
  ("dense", out, w_std, b_std)          ("conv", out, filter, padding, w_std, b_std)
  ("relu",) ("erf",) ("gap",) ("flatten",) ("gabor",)
  ("dropout", p, mode)                  p = drop probability (NT: rate = 1 - p)
  ("prod", [branch, ...])               FanOut(n), parallel(*branches), FanInProd()
  ("repeat", [layers], n)
  ("expnorm", gamma, shift, do_clip)
  ("agg", aggregate_axis, implementation, to_dense)   to_dense: None or "double" (2·p)
  ("dot", "lhs"|"rhs", constant (nested lists or a number), dimension_numbers)

"pattern" (graph nets): ("dense", density) a random 0/1 adjacency over the nodes with
node 0 isolated (no arcs in or out) in every example, or ("sparse", n_edges) random arcs
with node 0 isolated and the last two arcs of each example padding (-1).
"""

ARCHS = {
    # ---- Dropout -------------------------------------------------------------------
    "dropout_fc_train": {"input": (5,), "layers": [
        ("dense", 7, 1.5, 0.1), ("relu",), ("dropout", 0.3, "train"), ("dense", 1, 1.2, 0.2)]},
    "dropout_fc_train_before_relu": {"input": (5,), "layers": [
        ("dense", 7, 1.5, 0.1), ("dropout", 0.5, "train"), ("dense", 7, 1.1, 0.0), ("relu",),
        ("dense", 1, 1.0, 0.1)]},
    "dropout_fc_test": {"input": (5,), "layers": [
        ("dense", 7, 1.5, 0.1), ("relu",), ("dropout", 0.3, "test"), ("dense", 1, 1.2, 0.2)]},
    "dropout_conv_gap_train": {"input": (3, 6), "layers": [
        ("conv", 4, (3,), "SAME", 1.3, 0.1), ("relu",), ("dropout", 0.25, "train"),
        ("conv", 4, (2,), "VALID", 1.0, 0.0), ("gap",), ("dense", 1, 1.0, 0.0)]},
    "dropout_conv_flatten_train": {"input": (3, 6), "layers": [
        ("conv", 4, (3,), "SAME", 1.3, 0.1), ("relu",), ("dropout", 0.4, "train"),
        ("flatten",), ("dense", 1, 1.0, 0.1)]},
    # ---- FanInProd and repeat ------------------------------------------------------
    "prod_fc_two": {"input": (5,), "layers": [
        ("prod", [[("dense", 6, 1.4, 0.1), ("relu",), ("dense", 6, 1.1, 0.2)],
                  [("dense", 6, 0.9, 0.3)]]),
        ("dense", 1, 1.0, 0.0)]},
    "prod_fc_three_erf": {"input": (5,), "layers": [
        ("dense", 6, 1.2, 0.0), ("erf",),
        ("prod", [[("dense", 6, 1.0, 0.1)], [("dense", 6, 1.5, 0.0)],
                  [("dense", 6, 0.7, 0.4), ("relu",), ("dense", 6, 1.3, 0.0)]]),
        ("dense", 1, 1.0, 0.05)]},
    "prod_conv_gap": {"input": (3, 6), "layers": [
        ("prod", [[("conv", 4, (3,), "SAME", 1.2, 0.1)],
                  [("conv", 4, (3,), "SAME", 1.0, 0.0), ("relu",),
                   ("conv", 4, (1,), "VALID", 1.1, 0.2)]]),
        ("gap",), ("dense", 1, 1.0, 0.0)]},
    "repeat_fc": {"input": (5,), "layers": [
        ("dense", 6, 1.0, 0.0), ("relu",), ("repeat", [("dense", 6, 1.4, 0.1), ("relu",)], 4),
        ("dense", 1, 1.0, 0.0)]},
    "repeat_conv": {"input": (3, 6), "layers": [
        ("conv", 4, (1,), "VALID", 1.0, 0.0), ("relu",),
        ("repeat", [("conv", 4, (3,), "SAME", 1.3, 0.05), ("relu",),
                    ("conv", 4, (2,), "SAME", 0.9, 0.1), ("relu",)], 2),
        ("gap",), ("dense", 1, 1.0, 0.0)]},
    # ---- ExpNormalized and Gabor ---------------------------------------------------
    "expnorm_fc_default": {"input": (5,), "layers": [
        ("dense", 6, 1.3, 0.1), ("expnorm", 1.0, -1.0, False), ("dense", 1, 1.0, 0.0)]},
    "expnorm_fc_clip": {"input": (5,), "layers": [
        ("dense", 6, 1.3, 0.1), ("expnorm", 2.5, -0.5, True), ("dense", 6, 1.0, 0.0),
        ("relu",), ("dense", 1, 1.0, 0.0)]},
    "expnorm_conv_gap": {"input": (3, 6), "layers": [
        ("conv", 4, (3,), "SAME", 1.2, 0.1), ("expnorm", 0.7, -1.0, False), ("gap",),
        ("dense", 1, 1.0, 0.0)]},
    "gabor_fc": {"input": (5,), "layers": [
        ("dense", 6, 1.3, 0.1), ("gabor",), ("dense", 6, 1.5, 0.0), ("gabor",),
        ("dense", 1, 1.0, 0.0)]},
    "gabor_conv_gap": {"input": (3, 6), "layers": [
        ("conv", 4, (3,), "SAME", 1.2, 0.1), ("gabor",), ("gap",), ("dense", 1, 1.0, 0.0)]},
    # ---- Aggregate (graphs: nodes on the spatial axis) -----------------------------
    "graph_dense": {"input": (3, 5), "pattern": ("dense", 0.4), "layers": [
        ("conv", 6, (1,), "VALID", 1.2, 0.1), ("agg", None, "dense", None), ("relu",),
        ("conv", 6, (1,), "VALID", 1.1, 0.0), ("agg", None, "dense", None), ("gap",),
        ("dense", 1, 1.0, 0.0)]},
    "graph_dense_to_dense_flatten": {"input": (3, 5), "pattern": ("dense", 0.5), "layers": [
        ("conv", 6, (1,), "VALID", 1.2, 0.1), ("agg", 2, "dense", "double"), ("erf",),
        ("conv", 6, (1,), "VALID", 1.1, 0.0), ("agg", -1, "dense", "double"), ("flatten",),
        ("dense", 1, 1.0, 0.0)]},
    "graph_sparse": {"input": (3, 5), "pattern": ("sparse", 7), "layers": [
        ("conv", 6, (1,), "VALID", 1.2, 0.1), ("agg", None, "sparse", None), ("relu",),
        ("conv", 6, (1,), "VALID", 1.1, 0.0), ("agg", None, "sparse", None), ("gap",),
        ("dense", 1, 1.0, 0.0)]},
    "graph_2d_both_axes": {"input": (2, 2, 3), "pattern": ("dense", 0.4), "layers": [
        ("conv", 5, (1, 1), "VALID", 1.2, 0.1), ("agg", (2, 3), "dense", None), ("relu",),
        ("gap",), ("dense", 1, 1.0, 0.0)]},
    # (neural-tangents' sparse implementation fails on non-aggregated axes: dense here.)
    "graph_2d_last_axis": {"input": (2, 2, 4), "pattern": ("dense", 0.5), "layers": [
        ("conv", 5, (1, 1), "VALID", 1.2, 0.1), ("agg", 3, "dense", None), ("relu",),
        ("conv", 5, (2, 1), "VALID", 1.0, 0.0), ("agg", 3, "dense", None), ("flatten",),
        ("dense", 1, 1.0, 0.0)]},
    # ---- DotGeneral ----------------------------------------------------------------
    "dot_scalar": {"input": (5,), "layers": [
        ("dense", 6, 1.2, 0.1), ("relu",), ("dot", "rhs", 2.0, (((), ()), ((), ()))),
        ("dense", 1, 1.0, 0.0)]},
    "dot_rhs_contract_stack": {"input": (3, 2, 5), "layers": [
        ("conv", 4, (1, 3), "SAME", 1.2, 0.1), ("relu",),
        ("dot", "rhs", [1.0, -1.0], (((2,), (0,)), ((), ()))), ("gap",),
        ("dense", 1, 1.0, 0.0)]},
    "dot_rhs_matrix_new_axis": {"input": (3, 5), "layers": [
        ("conv", 4, (3,), "SAME", 1.2, 0.1), ("relu",),
        ("dot", "rhs", [[0.5, -1.0], [1.0, 0.0], [0.0, 2.0], [1.5, 0.3], [-0.4, 0.8]],
         (((2,), (0,)), ((), ()))),
        ("flatten",), ("dense", 1, 1.0, 0.0)]},
    # (with lhs free axes neural-tangents moves the batch axis, and its Flatten/pooling
    # then refuse; those are tested against the finite network instead.)
    "dot_lhs_vector": {"input": (3, 2, 4), "layers": [
        ("conv", 4, (1, 3), "SAME", 1.2, 0.1), ("relu",),
        ("dot", "lhs", [0.7, -1.3], (((0,), (2,)), ((), ()))), ("gap",),
        ("dense", 1, 1.0, 0.0)]},
}


def to_ntkit(name: str, archs=None):
    """The ntkit network of architecture ``name``."""
    import torch

    import ntkit.layers as nl

    def build(spec):
        kind, args = spec[0], spec[1:]
        if kind == "dense":
            o, w, b = args
            return nl.Dense(o, w_std=w, b_std=b)
        if kind == "conv":
            o, filt, padding, w, b = args
            return nl.Conv(o, filt, padding=padding, w_std=w, b_std=b)
        if kind in ("relu", "erf", "gabor", "gap", "flatten"):
            return {"relu": nl.ReLU, "erf": nl.Erf, "gabor": nl.Gabor, "gap": nl.GlobalAvgPool,
                    "flatten": nl.Flatten}[kind]()
        if kind == "dropout":
            return nl.Dropout(args[0], mode=args[1])
        if kind == "prod":
            branches = [nl.serial(*[build(s) for s in br]) for br in args[0]]
            return nl.serial(nl.FanOut(len(branches)), nl.parallel(*branches), nl.FanInProd())
        if kind == "repeat":
            return nl.repeat(nl.serial(*[build(s) for s in args[0]]), args[1])
        if kind == "expnorm":
            return nl.ExpNormalized(*args)
        if kind == "agg":
            axis, impl, to_dense = args
            return nl.Aggregate(axis, implementation=impl,
                                to_dense=None if to_dense is None else (lambda p: 2 * p))
        if kind == "dot":
            side, const, dn = args
            return nl.DotGeneral(**{side: torch.tensor(const, dtype=torch.float64)},
                                 dimension_numbers=dn)
        raise ValueError(f"unknown layer kind {kind!r}")

    return nl.serial(*[build(s) for s in (archs or ARCHS)[name]["layers"]])
