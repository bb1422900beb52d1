"""Combinators: `serial`, `parallel`, `repeat`, `FanOut`, `FanInSum`, `FanInConcat`,
`FanInProd` (stax's rules).

Parallel streams travel as tuples: of `Kernel` objects in kernel maps, of tensors in the
finite modules, and of widths in ``make_module``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ntkit.kernel import Kernel, Storage
from ntkit.layers.base import Activation, ExampleShape, Layer, is_streams
from ntkit.layers.fc_fusion import dense_activation
from ntkit.layers.masking import masked_call, masked_input


def _check_layers(name: str, layers) -> tuple[Layer, ...]:
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
        layers = tuple(layers[0])
    if not layers:
        raise ValueError(f"{name}() needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"{name}(): argument {i} is {type(layer).__name__}, not an ntkit "
                            "layer (e.g. Dense(...), ReLU(), serial(...))")
    return tuple(layers)


def call_with_inputs(module: nn.Module, x, inputs: dict):
    """``module(x)``, passing the per-example side inputs (e.g. a graph's ``pattern``)
    to modules that take them (``takes_inputs = True``: the containers and Aggregate)."""
    if inputs and getattr(module, "takes_inputs", False):
        return module(x, **inputs)
    return module(x)


class SerialModule(nn.Module):
    takes_inputs = True

    def __init__(self, modules):
        super().__init__()
        self.layers = nn.ModuleList(modules)

    def forward(self, x, mask_constant=None, **inputs):
        """``inputs``: per-example side inputs for the layers that use them (``pattern=``
        for `Aggregate`). ``mask_constant``: None, or the value marking absent positions
        (as ``net.kernel(..., mask_constant=)``; see `ntkit.layers.masking`): entries
        equal to it are zeroed, and positions whose channels all equal it are absent."""
        if mask_constant is not None:
            x, mask = masked_input(x, mask_constant)
            return self.masked_forward(x, mask, **inputs)[0]
        for layer in self.layers:
            x = call_with_inputs(layer, x, inputs)
        return x

    def masked_forward(self, x, mask, **inputs):
        for layer in self.layers:
            x, mask = masked_call(layer, x, mask, inputs)
        return x, mask


class ParallelModule(nn.Module):
    takes_inputs = True

    def __init__(self, modules):
        super().__init__()
        self.branches = nn.ModuleList(modules)

    def forward(self, xs, **inputs):
        if not isinstance(xs, tuple) or len(xs) != len(self.branches):
            raise ValueError(f"parallel expects a tuple of {len(self.branches)} inputs")
        return tuple(call_with_inputs(b, x, inputs)
                     for b, x in zip(self.branches, xs, strict=True))

    def masked_forward(self, xs, masks, **inputs):
        if not isinstance(xs, tuple) or len(xs) != len(self.branches):
            raise ValueError(f"parallel expects a tuple of {len(self.branches)} inputs")
        outs = [masked_call(b, x, m, inputs)
                for b, x, m in zip(self.branches, xs, masks, strict=True)]
        return tuple(y for y, _ in outs), tuple(m for _, m in outs)


def kernel_order(layers: tuple[Layer, ...]) -> tuple[Layer, ...]:
    """The layers in the order their kernel maps run: each `Flatten` moves behind the
    activations that directly follow it.

    The network is the same (an elementwise function commutes with a reshape), but the
    activations then act per position, where their dual is exact, instead of on the
    flattened mean (see ``mixed_channels`` in `ntkit.kernel`).
    """
    out = list(layers)
    i = 0
    while i < len(out):
        j = i + 1
        if getattr(out[i], "reshapes_only", False):
            while j < len(out) and isinstance(out[j], Activation):
                j += 1
            out[i:j] = out[i + 1:j] + [out[i]]
        i = j
    return tuple(out)


class Serial(Layer):
    """Layers applied one after the other."""

    def __init__(self, *layers: Layer):
        self.layers = _check_layers("serial", layers)
        self._order = kernel_order(self.layers)

    def kernel_map(self, k):
        return self.map_planned(k, False)

    def _needs(self, full_after) -> list[Storage]:
        """needs[i]: the storage of the i-th mapped layer's input (needs[-1]: the
        output's)."""
        needs = [Storage.of(full_after)]
        for layer in reversed(self._order):
            needs.append(layer.requires_full(needs[-1]))
        return needs[::-1]

    def requires_full(self, full_after):
        return self._needs(full_after)[0]

    def map_planned(self, k, full_after):
        needs = self._needs(full_after)
        order, i = self._order, 0
        while i < len(order):
            k = needs[i].conform(k)
            if i + 1 < len(order) and isinstance(order[i + 1], Activation):
                # Dense → activation on a fully connected kernel: one fused pass
                # (ntkit.layers.fc_fusion), or None to map them one after the other.
                fused = dense_activation(order[i], order[i + 1], k)
                if fused is not None:
                    k, i = fused, i + 2
                    continue
            k = order[i].map_planned(k, needs[i + 1])
            i += 1
        return k

    def make_module(self, in_features, generator, dtype):
        modules = []
        for layer in self.layers:
            m, in_features = layer.make_module(in_features, generator, dtype)
            modules.append(m)
        return SerialModule(modules), in_features

    def __repr__(self) -> str:
        return "serial(" + ", ".join(map(repr, self.layers)) + ")"


class Parallel(Layer):
    """Applies the i-th layer to the i-th of as many parallel streams."""

    def __init__(self, *layers: Layer):
        self.layers = _check_layers("parallel", layers)

    def _check_streams(self, streams) -> None:
        if not is_streams(streams) or len(streams) != len(self.layers):
            got = len(streams) if is_streams(streams) else 1
            raise ValueError(f"parallel of {len(self.layers)} layers got {got} stream(s); "
                             f"put FanOut({len(self.layers)}) before it")

    def kernel_map(self, ks):
        return self.map_planned(ks, False)

    def _per_branch(self, full_after) -> tuple[Storage, ...]:
        return Storage.of(full_after).per_stream(len(self.layers))

    def requires_full(self, full_after):
        return Storage(streams=tuple(layer.requires_full(f) for layer, f in
                                     zip(self.layers, self._per_branch(full_after),
                                         strict=True)))

    def map_planned(self, ks, full_after):
        self._check_streams(ks)
        outs, n_dense = [], max(k.n_dense for k in ks)
        for layer, k, f in zip(self.layers, ks, self._per_branch(full_after), strict=True):
            # Thread the Dense count through the branches so each Dense gets its own number.
            k = layer.map_planned(layer.requires_full(f).conform(k.replace(n_dense=n_dense)),
                                  f)
            n_dense = max(x.n_dense for x in k) if isinstance(k, tuple) else k.n_dense
            outs.append(k)
        return tuple(outs)

    def make_module(self, in_features, generator, dtype):
        self._check_streams(in_features)
        pairs = [layer.make_module(w, generator, dtype)
                 for layer, w in zip(self.layers, in_features, strict=True)]
        return ParallelModule([m for m, _ in pairs]), tuple(w for _, w in pairs)

    def __repr__(self) -> str:
        return "parallel(" + ", ".join(map(repr, self.layers)) + ")"


def serial(*layers: Layer) -> Serial:
    """Compose layers: ``serial(Dense(512), ReLU(), Dense(1))``."""
    return Serial(*layers)


class Repeat(Serial):
    """``layer`` composed ``n`` times (see `repeat`)."""

    def __init__(self, layer: Layer, n: int):
        if not isinstance(layer, Layer):
            raise TypeError(f"repeat(): layer is {type(layer).__name__}, not an ntkit layer")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"repeat(): n must be an int >= 0, got {n!r}")
        self.layer, self.n = layer, n
        self.layers = (layer,) * n
        self._order = kernel_order(self.layers)

    def __repr__(self) -> str:
        return f"repeat({self.layer!r}, {self.n})"


def repeat(layer: Layer, n: int) -> Serial:
    """``layer`` composed ``n`` times, as stax.repeat: ``serial(*[layer] * n)`` with fresh
    parameters per repetition in the finite network. The kernel map runs as a loop (no
    recursion), so n may be large. ``repeat(layer, 0)`` is the identity.

    Example:
      >>> net = serial(repeat(serial(Dense(512), ReLU()), 10), Dense(1))
    """
    return Repeat(layer, n)


def parallel(*layers: Layer) -> Parallel:
    """Apply layers to parallel streams, one each (after `FanOut`)."""
    return Parallel(*layers)


class _FanOutModule(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: Tensor):
        return (x,) * self.n

    def masked_forward(self, x: Tensor, mask: Tensor):
        return (x,) * self.n, (mask,) * self.n


class FanOut(Layer):
    """Copies one stream into ``n`` parallel streams."""

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"FanOut needs a positive int number of streams, got {n!r}")
        self.n = n

    def kernel_map(self, k):
        if isinstance(k, tuple):
            raise ValueError("FanOut got parallel streams already; merge them first")
        return (k,) * self.n

    def requires_full(self, full_after):
        return Storage.of(full_after).joined()

    def make_module(self, in_features, generator, dtype):
        if is_streams(in_features):
            raise ValueError("FanOut got parallel streams already; merge them first")
        return _FanOutModule(self.n), (in_features,) * self.n


def _all_gaussian(ks) -> bool | None:
    """True if every stream is Gaussian, False if any is known not to be, else None."""
    flags = [k.gaussian for k in ks]
    if any(f is False for f in flags):
        return False
    return True if all(flags) else None


def _uncorrelated(a: Kernel, b: Kernel) -> bool:
    """Whether two streams are uncorrelated in the infinite-width limit: one of them is
    odd in a fresh layer's weights (``source``) that the other is not aligned with."""
    return ((a.source is not None and a.source not in b.roots)
            or (b.source is not None and b.source not in a.roots))


def _all_roots(ks) -> frozenset:
    return frozenset().union(*(k.roots for k in ks))


def _check_fan_in(name: str, ks) -> tuple[Kernel, ...]:
    if not isinstance(ks, tuple):
        raise ValueError(f"{name} needs parallel streams (FanOut, parallel) before it")
    shapes = {(k.spatial, k.full) for k in ks}
    if len(shapes) > 1:
        raise ValueError(f"{name} needs streams of the same spatial shape, got "
                         f"{sorted(s for s, _ in shapes)}")
    return ks


def _and_masks(masks) -> Tensor:
    out = masks[0]
    for m in masks[1:]:
        out = out & m
    return out


def joined_masks(ks) -> dict:
    """The masks of a merge of streams (FanInSum/FanInProd/FanInConcat): a position is
    absent only where it is in every stream (neural-tangents' ``_sum_masks``)."""
    if not any(k.masked for k in ks):
        return {}
    m1 = _and_masks([k.mask1 for k in ks])
    m2 = None if ks[0].mask2 is None else _and_masks([k.mask2 for k in ks])
    return {"mask1": m1, "mask2": m2}


class _SumModule(nn.Module):
    def forward(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    def masked_forward(self, xs, masks):
        return self(xs), _and_masks(masks)


class _ConcatModule(nn.Module):
    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, xs):
        return torch.cat(xs, dim=self.dim)

    def masked_forward(self, xs, masks):
        # neural-tangents' _concat_masks: each stream's mask over its own entries.
        return self(xs), torch.cat([m.expand(x.shape) for x, m in zip(xs, masks, strict=True)],
                                   dim=self.dim)


class FanInSum(Layer):
    """Sums parallel streams (they must have equal widths).

    The kernel of a sum is the sum of kernels only when the streams are uncorrelated. In
    the infinite-width limit two streams are when one of them is a fresh Dense/Conv
    output (possibly pooled, flattened or layer-normalized since) whose layer the other
    stream's channels are not aligned with (see ``source`` and ``roots`` in
    `ntkit.kernel`): e.g. a residual block ``parallel(Identity(), serial(..., Dense))``.
    Every pair of streams must be so; otherwise this raises, rather than return a kernel
    that misses cross-covariances (neural-tangents sums regardless).
    """

    def kernel_map(self, ks):
        ks = _check_fan_in("FanInSum", ks)
        widths = {k.channels for k in ks}
        if len(widths) > 1:
            raise ValueError(f"FanInSum needs streams of equal width, got {sorted(widths)}")
        for i, a in enumerate(ks):
            for j in range(i + 1, len(ks)):
                if not _uncorrelated(a, ks[j]):
                    raise ValueError(
                        f"FanInSum: streams {i} and {j} are correlated (they are functions of "
                        "the same layer's channels), and the kernel of their sum needs their "
                        "cross-covariance, which is not tracked; end all but at most one "
                        "stream with its own Dense/Conv layer (e.g. a residual block: "
                        "parallel(Identity(), serial(..., Dense)))")
        out = ks[0]
        for k in ks[1:]:
            out = out.replace(
                nngp=out.nngp + k.nngp,
                ntk=None if out.ntk is None else out.ntk + k.ntk,
                cov1=out.cov1 + k.cov1,
                cov2=None if out.cov2 is None else out.cov2 + k.cov2)
        return out.replace(source=None, n_dense=max(k.n_dense for k in ks),
                           roots=_all_roots(ks),
                           mixed_channels=any(k.mixed_channels for k in ks),
                           ntk_own=any(k.ntk_own for k in ks),
                           gaussian=_all_gaussian(ks), **joined_masks(ks))

    def make_module(self, in_features, generator, dtype):
        if not is_streams(in_features):
            raise ValueError("FanInSum needs parallel streams (FanOut, parallel) before it")
        if len(set(in_features)) > 1:
            raise ValueError(f"FanInSum needs streams of equal width, got {in_features}")
        return _SumModule(), in_features[0]


class FanInConcat(Layer):
    """Concatenates parallel streams along channels (axis 1 for spatial streams).

    Per-channel kernels average, weighted by each stream's width
    (the next Dense layer sees the concatenated channels).
    """

    def kernel_map(self, ks):
        ks = _check_fan_in("FanInConcat", ks)
        total = sum(k.channels for k in ks)

        def mix(field):
            parts = [getattr(k, field) for k in ks]
            if parts[0] is None:
                return None
            acc = parts[0] * (ks[0].channels / total)
            for k, p in zip(ks[1:], parts[1:], strict=True):
                acc = acc + p * (k.channels / total)
            return acc

        return ks[0].replace(nngp=mix("nngp"), ntk=mix("ntk"), cov1=mix("cov1"),
                             cov2=mix("cov2"), channels=total, source=None,
                             n_dense=max(k.n_dense for k in ks), roots=_all_roots(ks),
                             mixed_channels=len(ks) > 1 or ks[0].mixed_channels,
                             ntk_own=any(k.ntk_own for k in ks),
                             gaussian=_all_gaussian(ks), **joined_masks(ks))

    def make_module(self, in_features, generator, dtype):
        if not is_streams(in_features):
            raise ValueError("FanInConcat needs parallel streams (FanOut, parallel) before it")
        if all(isinstance(w, ExampleShape) for w in in_features):
            spatial = {w.spatial for w in in_features}
            if len(spatial) > 1:
                raise ValueError(f"FanInConcat needs streams of the same spatial shape, got "
                                 f"{sorted(spatial)}")
            channels = sum(w.channels for w in in_features)
            return _ConcatModule(dim=1), ExampleShape((channels, *in_features[0].spatial))
        if any(isinstance(w, ExampleShape) for w in in_features):
            raise ValueError(f"FanInConcat got spatial and fully-connected streams: "
                             f"{in_features}")
        return _ConcatModule(), sum(in_features)


class _ProdModule(nn.Module):
    def forward(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out

    def masked_forward(self, xs, masks):
        return self(xs), _and_masks(masks)


class FanInProd(Layer):
    """Multiplies parallel streams elementwise (they must have equal widths and shapes).

    For independent streams the kernel of the product is the product of kernels:
    nngp = ∏ nngp_i, ntk = Σ_i ntk_i ∏_{j≠i} nngp_j (as neural-tangents). Streams are
    independent in the infinite-width limit under the same rule as `FanInSum`'s (one of
    every pair is a fresh Dense/Conv output the other is not aligned with); otherwise this
    raises (neural-tangents multiplies regardless). The product is not Gaussian.

    Example:
      >>> net = serial(FanOut(2), parallel(serial(Dense(512), ReLU(), Dense(512)),
      ...                                  Dense(512)), FanInProd(), Dense(1))
    """

    def kernel_map(self, ks):
        ks = _check_fan_in("FanInProd", ks)
        widths = {k.channels for k in ks}
        if len(widths) > 1:
            raise ValueError(f"FanInProd needs streams of equal width, got {sorted(widths)}")
        for i, a in enumerate(ks):
            for j in range(i + 1, len(ks)):
                if not _uncorrelated(a, ks[j]):
                    raise ValueError(
                        f"FanInProd: streams {i} and {j} are dependent (functions of the same "
                        "layer's channels), so the kernel of their product is not the product "
                        "of their kernels; end all but at most one stream with its own "
                        "Dense/Conv layer")
        nngp, ntk = ks[0].nngp, ks[0].ntk
        cov1, cov2 = ks[0].cov1, ks[0].cov2
        for k in ks[1:]:
            if ntk is not None:
                ntk = ntk * k.nngp + nngp * k.ntk
            nngp = nngp * k.nngp
            cov1 = cov1 * k.cov1
            cov2 = None if cov2 is None else cov2 * k.cov2
        return ks[0].replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, source=None,
                             n_dense=max(k.n_dense for k in ks), roots=_all_roots(ks),
                             mixed_channels=any(k.mixed_channels for k in ks),
                             ntk_own=any(k.ntk_own for k in ks),
                             gaussian=ks[0].gaussian if len(ks) == 1 else False,
                             **joined_masks(ks))

    def make_module(self, in_features, generator, dtype):
        if not is_streams(in_features):
            raise ValueError("FanInProd needs parallel streams (FanOut, parallel) before it")
        if len(set(in_features)) > 1:
            raise ValueError(f"FanInProd needs streams of equal width, got {in_features}")
        return _ProdModule(), in_features[0]
