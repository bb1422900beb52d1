"""A Dense layer and the activation after it, mapped in one fused pass.

In a fully connected network each ``Dense → activation`` pair is, per entry of a tile,
an affine map of (nngp, ntk) followed by the activation's dual. Mapped layer by layer
that is about six passes over (tile, tile) arrays besides the dual; fused
(`ntkit.dual.fused.run_dense`, C loops) it is one pass that reads the Dense layer's input
nngp and NTK and writes the activation's output. `Serial` asks `dense_activation` for
each such pair; it returns None whenever the pair must run layer by layer (fusion off,
autograd, masks, spatial kernels, learnable hyperparameters, duals without a C kernel,
float32), so values never depend on whether it fused beyond an ulp of the Dense map.

What it keeps exact, as the two layers' own maps do:

- the examples' variances go through the two layers' own cov maps (`Kernel.map_covs`,
  so a `CovTrace` records and replays the same steps);
- identical example pairs: the Dense layer's input entries of identical pairs
  (``Kernel.same``) are set from the input variances first, so after the affine map
  they equal the Dense layer's output variances bitwise (the same two roundings), as
  the activation's own map makes them; after the dual the example diagonal (x2 = x1)
  and identical pairs are set from the activation's variances, as in
  `Activation.kernel_map`.
"""

from __future__ import annotations

import math

import ntkit.dual.fused as fused
from ntkit.dual.relu import moderate
from ntkit.kernel import Kernel, set_same
from ntkit.layers.activations import (
    GELU,
    ABReLU,
    Abs,
    Cos,
    Erf,
    Exp,
    Gaussian,
    LeakyReLU,
    Rbf,
    ReLU,
    Sign,
    Sin,
)
from ntkit.layers.base import Activation, Layer, set_example_diagonal
from ntkit.layers.dense import Dense

__all__ = ["dense_activation", "fused_key"]

# The key each activation's dual passes to `ntkit.dual.fused.run` (its C kernel and
# constants); exact types only: a subclass may change the dual.
_KEYS = {
    ReLU: lambda f, nd: ("relu", nd),
    ABReLU: lambda f, nd: ("abrelu", f.a, f.b, nd, f.a),
    LeakyReLU: lambda f, nd: ("abrelu", f.alpha, 1.0, nd, f.alpha),
    Abs: lambda f, nd: ("abrelu", -1.0, 1.0, nd, 0.0),
    Sign: lambda f, nd: ("sign", nd),
    Erf: lambda f, nd: ("erf", f.a, f.b, f.c, nd),
    GELU: lambda f, nd: ("gelu", nd),
    Sin: lambda f, nd: ("sin", f.a, f.b, f.c, nd),
    Cos: lambda f, nd: ("sin", f.a, f.b, f.c + math.pi / 2, nd),
    Rbf: lambda f, nd: ("rbf", f.gamma, nd),
    Exp: lambda f, nd: ("exp", f.a, f.b, nd),
    Gaussian: lambda f, nd: ("gaussian", f.a, f.b, nd),
}
# Arc-cosine duals take the C path only for variances within 2^±480 (ntkit.dual.relu).
_ARC_COSINE = (ReLU, ABReLU, LeakyReLU, Abs, Sign)


def fused_key(act: Activation, need_dot: bool) -> tuple | None:
    """The fused-dual key of ``act`` (as its ``dual`` passes it to
    `ntkit.dual.fused.run`), or None if it has no C kernel.

    Example: ``fused_key(ReLU(), True) == ("relu", True)``.
    """
    make = _KEYS.get(type(act))
    return None if make is None else make(act, need_dot)


def _plain(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def dense_activation(dense: Layer, act: Layer, k: Kernel) -> Kernel | None:
    """``act.kernel_map(dense.kernel_map(k))`` in one fused pass, or None when the pair
    must run layer by layer (see the module docstring).

    k: a fully connected kernel (nngp (n1, n2), cov1 (n1,), cov2 (n2,) or None).
    """
    if type(dense) is not Dense or not isinstance(act, Activation):
        return None
    if (isinstance(k, tuple) or k.is_spatial or k.masked or k.nngp.dim() != 2
            or not (_plain(dense.w_std) and _plain(dense.b_std))):
        return None
    need_dot = k.ntk is not None
    key = fused_key(act, need_dot)
    if key is None or not fused.is_enabled():
        return None
    w2 = float(dense.w_std) ** 2
    b2 = 0.0 if dense.b_std is None else float(dense.b_std) ** 2
    std = dense.parameterization == "standard"
    one = 1.0 if std and dense.b_std is not None else 0.0

    # Pre-check everything the fused call checks before mapping any variances: a
    # recording CovTrace must see each step exactly once, fused or not.
    if not fused.wants(k.cov1.unsqueeze(1), k.nngp, k.var2.unsqueeze(0)):
        return None
    if need_dot and k.ntk.requires_grad:
        return None
    nngp_in = k.nngp
    if k.same is not None:
        nngp_in = set_same(nngp_in.clone(), k.cov1, k.same)
    cov1, cov2 = k.map_covs(dense.affine)
    var2 = cov1 if cov2 is None else cov2
    if isinstance(act, _ARC_COSINE) and not moderate(cov1, var2):
        out = None
    else:
        out = fused.run_dense(key, cov1, nngp_in, var2, k.ntk,
                              (w2, b2, float(std), float(k.channels), one))
    kd = k.fresh_affine(dense.out_features, cov1=cov1, cov2=cov2)
    if out is None:
        # The variances are mapped (and recorded) already: finish the Dense map on the
        # tile arrays here, then the activation's own map.
        nngp = dense.affine(k.nngp)
        return act.kernel_map(kd.replace(nngp=nngp, ntk=dense.ntk_map(k, nngp)))
    nngp, ntk = out
    out_cov1, out_cov2 = kd.map_covs(lambda c: act.dual(c, c, c, need_dot=False)[0], nngp)
    if k.x1_is_x2:
        nngp = set_example_diagonal(nngp, out_cov1, own=True)
    if k.same is not None:
        nngp = set_same(nngp, out_cov1, k.same)
    return kd.replace(nngp=nngp, ntk=ntk, cov1=out_cov1, cov2=out_cov2, source=None,
                      gaussian=False)
