"""Shared machinery of the empirical-kernel methods.

A `FunctionalModel` wraps an ``nn.Module`` as a pure function of the *selected*
parameters (the ones whose tangent space defines the NTK), with every other parameter
and every buffer held as a constant, through ``torch.func.functional_call``. The
module itself is never modified: parameters are detached, buffers are cloned (so a
forward that writes to a buffer cannot reach the user's module), and eval mode is
set only for the duration of a call.

Conventions used by all methods:

- ``x``: a batch (n, *feature_shape); an example is ``x[i]``, and the model is always
  called on a batch, so a single example goes in as ``x[i:i+1]``.
- outputs: the model may return a tensor or a pytree (tuple/list/dict) of tensors, each
  with the batch on axis 0; per example they are flattened and concatenated into one
  vector of k "output units". Kernels index those units.
- Jacobian-like factors are (n, k, m) tensors: example, output unit, parameter entry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_flatten

ParamSelection = None | Sequence[str] | Sequence[Tensor] | Callable[[str, Tensor], bool]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def select_params(model: nn.Module, params: ParamSelection) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the parameters that count.

    ``params`` is None (every parameter with ``requires_grad``), a sequence of names,
    a sequence of the model's parameter tensors, or a predicate ``(name, param) -> bool``.
    """
    named = dict(model.named_parameters())
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
        if not names:
            raise ValueError("the model has no parameter with requires_grad=True; pass "
                             "params=... to choose which parameters define the NTK")
    elif callable(params) and not isinstance(params, (str, Tensor)):
        names = [n for n, p in named.items() if params(n, p)]
    else:
        if isinstance(params, (str, Tensor)):
            params = [params]
        items = list(params)
        names = []
        for item in items:
            if isinstance(item, str):
                if item not in named:
                    close = ", ".join(list(named)[:8])
                    raise ValueError(f"params: the model has no parameter named {item!r} "
                                     f"(it has: {close}{', ...' if len(named) > 8 else ''})")
                name = item
            elif isinstance(item, Tensor):
                found = [n for n, p in named.items() if p is item]
                if not found:
                    raise ValueError("params: a tensor in the list is not a parameter of the "
                                     f"model (shape {tuple(item.shape)}); pass the module's "
                                     "own parameter objects or their names")
                name = found[0]
            else:
                raise TypeError("params must be None, parameter names, parameter tensors, "
                                f"or a predicate (name, param) -> bool; got {type(item).__name__}")
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError("params selects no parameter: the NTK over an empty parameter set "
                         "is undefined (check the names or the predicate)")
    for n in names:
        if not named[n].dtype.is_floating_point:
            raise TypeError(f"parameter {n!r} has dtype {named[n].dtype}; only floating "
                            "parameters have tangents")
    return names


def as_model_input(x, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Validate one input batch and move it to the model's dtype/device.

    Floating inputs are cast to the model's dtype; integer inputs (token ids, ...)
    are kept as they are.
    """
    if not isinstance(x, Tensor):
        if type(x).__module__ == "numpy" and hasattr(x, "strides"):
            # negative-stride or non-contiguous views: torch.as_tensor refuses the former
            x = x.copy(order="C") if any(st < 0 for st in x.strides) else x
        try:
            x = torch.as_tensor(x)
        except Exception as e:  # noqa: BLE001 - rewrap any conversion failure
            what = getattr(getattr(x, "dtype", None), "name", None)
            raise TypeError(f"{name} must be a numeric tensor or array (float, or int for "
                            f"token ids), got {type(x).__name__}"
                            + (f" of dtype {what}" if what else "")) from e
    if x.ndim == 0:
        raise ValueError(f"{name} must have a batch axis; got a scalar")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    if x.dtype.is_complex:
        raise TypeError(f"{name} is complex ({x.dtype}); only real inputs are supported")
    if x.dtype.is_floating_point:
        # One reduction: a finite sum implies finite entries (inf/NaN propagate); only
        # when it is not finite (possibly by overflow) look at the entries.
        if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).sum())
            raise ValueError(f"{name} contains NaN or inf values (in {bad} of "
                             f"{x.shape[0]} rows)")
        x = x.to(dtype=dtype)
    return x.to(device=device)


class FunctionalModel:
    """``model`` as a pure function of its selected parameters (see module docstring).

    Attributes:
      names: selected parameter names.
      sel: name -> detached tensor, the selected parameters θ.
      const: every other parameter (detached) and every buffer (cloned).
      dtype, device: those of the selected parameters.
      k: number of output units per example (set by `probe`).
      out_shape: per-example output shape of a single-tensor output, None for tuple/dict
        outputs (set by `probe`).
      n_params: total number of selected parameter entries.
    """

    def __init__(self, model: nn.Module, params: ParamSelection = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.names = select_params(model, params)
        named = dict(model.named_parameters())
        self.sel = {n: named[n].detach() for n in self.names}
        self.const = {n: p.detach() for n, p in named.items() if n not in self.sel}
        self.const.update({n: b.clone() for n, b in model.named_buffers()})
        first = self.sel[self.names[0]]
        self.dtype, self.device = first.dtype, first.device
        self.n_params = sum(t.numel() for t in self.sel.values())
        self.k: int | None = None
        self.out_shape: tuple[int, ...] | None = None

    # ---- calls ------------------------------------------------------------------------
    def call(self, sel: dict[str, Tensor], x: Tensor) -> Tensor:
        """Outputs (b, k) of the model on the batch ``x`` (b, ...) with parameters ``sel``."""
        out = functional_call(self.model, {**self.const, **sel}, (x,))
        return flatten_output(out, x.shape[0])

    def single(self, sel: dict[str, Tensor], xi: Tensor) -> Tensor:
        """Outputs (k,) for one example ``xi`` (feature shape), as a batch of one."""
        return self.call(sel, xi.unsqueeze(0))[0]

    def batched(self, x: Tensor) -> Tensor:
        """Plain batched forward (no autodiff), as the model would see the whole batch."""
        with torch.no_grad(), eval_mode(self.model):
            return self.call(self.sel, x)

    def per_example(self, x: Tensor) -> Tensor:
        """Outputs (n, k), each example evaluated on its own (vmap over examples)."""
        with torch.no_grad(), eval_mode(self.model):
            return vmap_examples(lambda xi: self.single(self.sel, xi), x)

    def probe(self, x: Tensor, mode: contextlib.AbstractContextManager | None = None) -> int:
        """Check the model runs on one example and returns batch-major outputs; set k.

        ``mode``: a context (e.g. a TorchFunctionMode) to run this one forward under.
        """
        with torch.no_grad(), eval_mode(self.model), mode or contextlib.nullcontext():
            out = functional_call(self.model, {**self.const, **self.sel}, (x[:1],))
        leaves, _ = tree_flatten(out)
        for leaf in leaves:
            if not isinstance(leaf, Tensor):
                raise TypeError(f"the model returned a {type(leaf).__name__}; outputs must be "
                                "tensors (or tuples/lists/dicts of tensors)")
            if not leaf.dtype.is_floating_point:
                raise TypeError(f"the model returned a {leaf.dtype} output; outputs must be "
                                "floating")
        self.k = flatten_output(out, 1).shape[1]
        self.out_shape = tuple(leaves[0].shape[1:]) if len(leaves) == 1 else None
        if self.k == 0:
            raise ValueError("the model returns empty outputs")
        return self.k


def flatten_output(out, b: int) -> Tensor:
    """Model output pytree -> (b, k): each leaf (b, ...) flattened per example, concatenated."""
    leaves, _ = tree_flatten(out)
    if not leaves:
        raise ValueError("the model returned no output tensor")
    flat = []
    for leaf in leaves:
        if not isinstance(leaf, Tensor) or leaf.ndim == 0 or leaf.shape[0] != b:
            shape = tuple(leaf.shape) if isinstance(leaf, Tensor) else type(leaf).__name__
            raise ValueError(f"model outputs must have the batch on axis 0: a batch of {b} "
                             f"gave an output of shape {shape}")
        flat.append(leaf.reshape(b, -1))
    return flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)


class NondeterministicModelError(RuntimeError):
    """The model's forward draws random numbers (in eval mode)."""


def vmap_examples(fn: Callable, x: Tensor, *args, chunk_size: int | None = None):
    """``vmap(fn)`` over the examples of ``x``, with readable errors.

    Random operations in the forward (dropout left on, noise layers) and operations
    without batching rules surface here; the error says where they come from.
    """
    try:
        return vmap(fn, in_dims=(0,) + (None,) * len(args), chunk_size=chunk_size)(x, *args)
    except RuntimeError as e:
        msg = str(e)
        if "randomness" in msg:
            raise NondeterministicModelError(
                "the model calls a random operation in eval mode; empirical kernels need a "
                "deterministic forward") from e
        raise


def raise_if_mixing(fm: FunctionalModel, x: Tensor, error: Exception) -> None:
    """After per-example evaluation failed with ``error``: raise the batch-mixing error if
    the model mixes rows (e.g. batch statistics fail on one example), else return."""
    if isinstance(error, NondeterministicModelError):
        return
    try:
        mixing = rows_mix(fm, x)
    except Exception:  # noqa: BLE001 - the original error is the one to show
        return
    if mixing:
        raise ValueError(MIXING_HELP) from error


def rows_mix(fm: FunctionalModel, x: Tensor) -> bool:
    """True when changing one row of ``x`` changes the outputs of *other* rows.

    Used when per-example evaluation itself fails (e.g. batch statistics with one example).
    """
    n = x.shape[0]
    if n < 2:
        return False
    x2 = x.clone()
    if bool((x[0] != x[1]).any()):
        x2[0] = x[1]
    elif x.dtype.is_floating_point:
        x2[0] = 2 * x[0] + 1
    else:
        return False
    y, y2 = fm.batched(x), fm.batched(x2)
    return not torch.allclose(y[1:], y2[1:], rtol=_tol(y.dtype), atol=_tol(y.dtype) * _scale(y))


def _tol(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps) ** 0.5


def _scale(y: Tensor) -> float:
    return float(y.abs().max()) if y.numel() else 0.0


MIXING_HELP = ("the model's output for one example depends on the other examples of the batch "
               "(batch statistics, e.g. BatchNorm with track_running_stats=False, or an "
               "operation across the batch axis), so a per-example Jacobian and hence the "
               "empirical NTK are not defined; use running statistics / LayerNorm, or evaluate "
               "the model one example at a time yourself")


#: Rows of each tile that the batch-mixing check runs on.
CHECK_ROWS = 8


def check_independent(fm: FunctionalModel, x: Tensor, out_single: Tensor) -> None:
    """Raise if the batched forward on ``x`` differs from the per-example outputs.

    Every method computes per-example quantities (vmap over single examples); they
    describe the model only if its rows don't interact. A batched forward on the first
    `CHECK_ROWS` rows of each tile detects the usual culprits (train-mode batch
    statistics, centering over the batch) for a fraction of one forward pass.
    """
    x, out_single = x[:CHECK_ROWS], out_single[:CHECK_ROWS]
    out_batch = fm.batched(x)
    tol = _tol(out_batch.dtype)
    scale = max(_scale(out_batch), _scale(out_single), 1e-300)
    if out_batch.shape != out_single.shape or not torch.allclose(
            out_batch, out_single.to(out_batch.dtype), rtol=tol, atol=tol * scale):
        raise ValueError(MIXING_HELP)


def contract(a: Tensor, b: Tensor, traced) -> Tensor:
    """Sum over entries of a·b for Jacobian-like factors a (n1, k, m), b (n2, k, m).

    traced: True: (n1, n2) mean over output units of a[:, u]·b[:, u]; False: (n1, n2, k, k)
    all pairs of units; an `ntkit.empirical.axes.OutputAxes`: its reduction (trace and
    diagonal axes as in neural-tangents).
    """
    if not isinstance(traced, bool):
        return traced.contract(a, b)
    n1, k, m = a.shape
    n2 = b.shape[0]
    if traced:
        return (a.reshape(n1, k * m) @ b.reshape(n2, k * m).T) / k
    return (a.reshape(n1 * k, m) @ b.reshape(n2 * k, m).T).reshape(n1, k, n2, k).permute(0, 2, 1, 3)


#: Fragments of torch's messages for inputs of the wrong shape (matmul, conv, reshape).
_SHAPE_MESSAGES = ("cannot be multiplied", "shape", "to have", "channels", "size mismatch",
                   "must match the size", "doesn't match")


def _first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first registered leaf module with parameters: (qualified name, module)."""
    for name, mod in model.named_modules():
        if not list(mod.children()) and any(True for _ in mod.parameters(recurse=False)):
            return name or type(model).__name__, mod
    return None


def expected_input(model: nn.Module, shape: tuple[int, ...]) -> str | None:
    """What the model's first layer expects, when it is a Linear or ConvNd that
    ``shape`` (a batch's shape) does not fit; None when that cannot be said."""
    first = _first_layer(model)
    if first is None:
        return None
    name, mod = first
    if isinstance(mod, nn.Linear):
        if shape[-1] == mod.in_features:
            return None
        return (f"the model's first layer {name!r} is Linear(in_features={mod.in_features}): "
                f"it expects inputs of shape (n, ..., {mod.in_features})")
    conv = {nn.Conv1d: ("L",), nn.Conv2d: ("H", "W"), nn.Conv3d: ("D", "H", "W")}
    for cls, axes in conv.items():
        if isinstance(mod, cls):
            c = mod.in_channels
            if len(shape) in (len(axes) + 2,) and shape[1] == c:
                return None
            msg = (f"the model's first layer {name!r} is {cls.__name__}(in_channels={c}): it "
                   f"expects inputs of shape (n, {c}, {', '.join(axes)}), channels first")
            if len(shape) == len(axes) + 2 and shape[-1] == c:
                perm = ", ".join(["0", str(len(shape) - 1)] + [str(i) for i in
                                                               range(1, len(shape) - 1)])
                msg += f" (a channels-last batch needs x.permute({perm}))"
            return msg
    return None


def check_input_shape(fm: FunctionalModel, x: Tensor, name: str) -> None:
    """Run the model on one example of ``x``; if that fails for a shape reason, raise a
    ValueError naming the argument, the shape given and what the first layer expects.

    Other failures (a model that needs several examples, say) are left to the caller's
    own handling, unchanged.
    """
    try:
        fm.probe(x)
    except (RuntimeError, ValueError) as e:
        msg = str(e).split("\n")[0]
        hint = expected_input(fm.model, tuple(x.shape))
        if hint is None and not any(m in msg for m in _SHAPE_MESSAGES):
            return
        head = f"{name} has shape {tuple(x.shape)}, which the model cannot take"
        raise ValueError(f"{head}: {hint}. (torch: {msg})" if hint else
                         f"{head} (torch: {msg})") from e
