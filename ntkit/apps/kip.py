"""KIP: dataset distillation by kernel inducing points (Nguyen, Chen & Lee, ICLR 2021,
"Dataset Meta-Learning from Kernel Ridge-Regression").

KIP learns a small support set (X_s, y_s) of n_s points whose kernel ridge regression
predicts real training data. For a target batch (X_t, y_t) drawn from the training set,

    pred = K_ts (K_ss + λ·tr(K_ss)/n_s · I)⁻¹ y_s,        L = ½·mean((pred − y_t)²),

with K the infinite-width NTK or NNGP of a network, K_ss = K(X_s, X_s), K_ts = K(X_t, X_s).
Adam minimizes L over the support images X_s (and the support targets y_s with
``learn_labels=True``), with a fresh random target batch at every step. As in the authors'
code: integer labels become centred one-hot targets e_c − 1/C; the initial support set is a
class-balanced random sample of the real examples; λ is relative to the mean diagonal of
K_ss (so predictions do not depend on the kernel's overall scale); λ = 1e-6 by default.

**The differentiable kernel** (`kernel_function`). The support set starts as real
examples, so at step 0 targets coincide with support points, and K_ss has its diagonal:
pairs at correlation 1, where the arc-cosine's derivative is singular. ntkit's duals
(`ntkit.dual.autodiff`) give finite gradients there (``jitter=0``: the exact derivative
for the NNGP, the minimum-norm subgradient 0 for the NTK's arc-cosine kink). By default
KIP instead smooths the kink: the kernel maps see per-example variances inflated by a
relative ``jitter`` (1e-10), so every pair has v1·v2 − c² ≥ 2·jitter·v1·v2 > 0 beyond
rounding and the loss is differentiable in the ordinary sense (finite differences agree
with autograd, tested); each activation maps an example's own variance at
T((1+jitter)v, v, (1+jitter)v). This moves NNGP-type values by O(jitter) and the ReLU
NTK's derivative factor by O(√jitter) ≈ 1e-5 relative, only at (near-)parallel pairs
(tested against ``net.kernel``). The returned support set is evaluated with the exact
kernel (`predict`, through ``net.kernel``). KIP computes in float64 (inputs are converted).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ntkit.engine.plan import plan
from ntkit.layers.base import Activation
from ntkit.layers.branching import Parallel, Serial

F64 = torch.float64
KINDS = ("ntk", "nngp")
#: Relative inflation of the per-example input variances that keeps gradients finite at
#: parallel input pairs (see the module docstring).
DEFAULT_JITTER = 1e-10

KernelFn = Callable[[Tensor, Tensor], Tensor]


# ------------------------------------------------------------------------- validation
def _check_kind(kind) -> str:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kernel must be one of {KINDS}, got {kind!r}")
    return kind


def _check_net(net) -> None:
    if not callable(getattr(net, "kernel_map", None)) or not callable(
            getattr(net, "kernel", None)):
        raise TypeError("net must be an ntkit layer spec (e.g. ntkit.layers.serial(...)), "
                        f"got {type(net).__name__}")


def _as_inputs(x, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biufc":
            raise TypeError(f"{name} must be a numeric array, got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))  # negative strides: torch refuses
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point (images as floats), got {x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0 or any(s == 0 for s in x.shape[1:]):
        raise ValueError(f"{name} must have shape (n, d) or (n, C, *S) with n, d ≥ 1, "
                         f"got {tuple(x.shape)}")
    x = x.detach().to(F64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _as_targets(y, n: int, name: str, classes: Tensor | None = None,
                k: int | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(targets (n, k) float64, classes or None, integer labels or None)."""
    if isinstance(y, np.ndarray):
        if y.dtype.kind not in "biufc":
            raise TypeError(f"{name} must be a numeric array, got dtype {y.dtype}")
        y = torch.from_numpy(np.ascontiguousarray(y))
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{name} must be integer labels (n,) or real targets (n, k), "
                        f"got dtype {y.dtype}")
    if y.ndim == 0 or y.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows (one per example), got shape "
                         f"{tuple(y.shape)}")
    if not y.dtype.is_floating_point:
        if y.ndim != 1:
            raise ValueError(f"integer labels {name} must have shape (n,), got {tuple(y.shape)}")
        if classes is None:
            classes = torch.unique(y)
            if classes.numel() < 2:
                raise ValueError(f"{name} has a single class; KIP needs at least two")
        pos = torch.searchsorted(classes, y).clamp_max(classes.numel() - 1)
        if not bool((classes[pos] == y).all()):
            raise ValueError(f"{name} has labels not among the training classes "
                             f"{classes.tolist()}")
        return centered_one_hot(pos, classes.numel()), classes, pos
    if y.ndim != 2:
        raise ValueError(f"real targets {name} must have shape (n, k); for one output use "
                         f"y.reshape(-1, 1), got {tuple(y.shape)}")
    if classes is not None:
        raise TypeError(f"{name} must be integer labels, as the training labels are")
    if k is not None and y.shape[1] != k:
        raise ValueError(f"{name} has {y.shape[1]} columns, the training targets {k}")
    y = y.detach().to(F64)
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return y, None, None


def _positive_int(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an int ≥ {minimum}, got {v!r}")
    return int(v)


def _nonneg_float(v, name: str, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {v!r}")
    v = float(v)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '≥ 0'} and finite, got {v}")
    return v


# ------------------------------------------------------------------------- pure pieces
def centered_one_hot(labels: Tensor, n_classes: int) -> Tensor:
    """Centred one-hot targets e_c − 1/C, (n, C) float64, for class indices (n,) in [0, C)."""
    return torch.nn.functional.one_hot(labels.long(), n_classes).to(F64) - 1.0 / n_classes


def class_balanced_indices(labels: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` distinct indices, n/C from each of the C classes of ``labels`` (n,), sorted by
    class (C must divide n; each class must have n/C examples)."""
    classes = torch.unique(labels)
    per, rem = divmod(int(n), classes.numel())
    if rem:
        raise ValueError(f"n_support = {n} is not divisible by the number of classes "
                         f"{classes.numel()} (KIP's initial support set is class-balanced)")
    out = []
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel() < per:
            raise ValueError(f"class {c.item()} has {idx.numel()} examples, fewer than the "
                             f"{per} per class that n_support = {n} needs")
        out.append(idx[torch.randperm(idx.numel(), generator=generator)[:per]])
    return torch.cat(out)


class _JitteredSelfMap(Activation):
    """An activation whose own-variance map (cov1/cov2 → T(cov, cov, cov)) is evaluated at
    variances inflated by (1 + jitter), i.e. T((1+j)v, v, (1+j)v) = T(v, v, v) + O(j·v·T'):
    at exactly equal arguments the dual's s = √(v·v − v·v) = 0 has an infinite autograd
    derivative (NaN gradients from the second activation on); slightly below correlation 1
    it is finite. Everything else is the wrapped activation's."""

    def __init__(self, inner: Activation, jitter: float):
        self.inner = inner
        self.jitter = jitter
        self.preserves_gaussian = inner.preserves_gaussian

    def fn(self, x: Tensor) -> Tensor:
        return self.inner.fn(x)

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor, need_dot: bool):
        return self.inner.dual(var1, cov, var2, need_dot)

    def _self_map(self, k, cov: Tensor) -> Tensor:
        if k.full or not self.jitter:
            return super()._self_map(k, cov)
        inflated = cov * (1.0 + self.jitter)
        return self.inner.dual(inflated, cov, inflated, need_dot=False)[0]

    def __repr__(self) -> str:
        return repr(self.inner)


def _with_jittered_self_maps(layer, jitter: float):
    """The same network with every activation (inside serial/parallel) wrapped."""
    if isinstance(layer, Activation):
        return _JitteredSelfMap(layer, jitter)
    if isinstance(layer, (Serial, Parallel)):
        return type(layer)(*(_with_jittered_self_maps(c, jitter) for c in layer.layers))
    return layer


def kernel_function(net, kind: str = "ntk", *, jitter: float = DEFAULT_JITTER) -> KernelFn:
    """A differentiable kernel ``fn(x1, x2) -> (n1, n2)`` of ``net``'s infinite-width
    NTK or NNGP, for KIP's gradients with respect to both inputs.

    It runs ``net.kernel_map`` on the input kernel directly (plain torch ops, no tiling),
    with the per-example variances inflated by the relative ``jitter`` so that gradients
    stay finite at parallel input pairs (module docstring; ``jitter=0`` gives the exact
    kernel but NaN gradients on the diagonal of K(x, x)). Inputs must already be float64
    tensors of per-example shape (d,) or (C, *S); the network must reduce each example
    pair to a scalar kernel. Differentiable today: fully connected nets and conv nets
    ending in Flatten; nets with pooling raise NotImplementedError (their kernel maps
    write in place).
    """
    _check_net(net)
    kind = _check_kind(kind)
    jitter = _nonneg_float(jitter, "jitter")
    track_ntk = kind == "ntk"
    net = _with_jittered_self_maps(net, jitter)

    def fn(x1: Tensor, x2: Tensor) -> Tensor:
        try:
            # The engine's plan (validation, storage, probe), with x2 always explicit:
            # the symmetric path, or exact identical pairs, would pin entries to the
            # variances after every layer and undo the jitter (and cut the gradient's
            # path through x2).
            p = plan(net, x1, x2, kind, lazy=False, symmetric=False, find_pairs=False)
            k0 = p.input_kernel(p.x1, p.x2)
            if jitter:
                k0 = k0.replace(cov1=k0.cov1 * (1.0 + jitter), cov2=k0.cov2 * (1.0 + jitter))
            k = net.kernel_map(k0)
        except RuntimeError as e:
            if "automatic differentiation" not in str(e):
                raise
            # Some kernel maps (pooling over full position-position covariances) still
            # write into preallocated outputs, which autograd refuses.
            raise NotImplementedError(
                "this network's kernel map is not differentiable yet (in-place writes, e.g. "
                "pooling layers on full covariances); KIP works with fully connected nets and "
                f"conv nets ending in Flatten: {e}") from e
        if isinstance(k, tuple):
            raise ValueError("the network ends in parallel branches; merge them with "
                             "FanInSum() or FanInConcat()")
        out = k.ntk if track_ntk else k.nngp
        if out.ndim != 2:
            raise ValueError("KIP needs one kernel value per example pair; this network "
                             f"leaves spatial axes {tuple(out.shape[2:])}: end it in "
                             "Flatten() or a global pooling layer")
        return out

    return fn


def krr_predict_from_kernels(k_ss: Tensor, k_ts: Tensor, y_support: Tensor,
                             reg: float) -> Tensor:
    """KRR predictions K_ts (K_ss + reg·tr(K_ss)/n_s·I)⁻¹ y_s: (n_t, k), differentiable.

    k_ss: (n_s, n_s); k_ts: (n_t, n_s); y_support: (n_s, k); reg ≥ 0 relative to the mean
    diagonal of K_ss, as in KIP.
    """
    n = k_ss.shape[0]
    k_ss = 0.5 * (k_ss + k_ss.T)  # exact symmetry; K(x, x) from two matmuls may differ by ulps
    eye = torch.eye(n, dtype=k_ss.dtype, device=k_ss.device)
    k_reg = k_ss + (reg * torch.diagonal(k_ss).sum() / n) * eye
    return k_ts @ torch.linalg.solve(k_reg, y_support)


def kip_loss(kernel_fn: KernelFn, x_support: Tensor, y_support: Tensor, x_target: Tensor,
             y_target: Tensor, reg: float) -> tuple[Tensor, Tensor]:
    """KIP's loss ½·mean((pred − y_t)²) and the predictions ``pred`` (n_t, k).

    pred = K_ts (K_ss + reg·tr(K_ss)/n_s·I)⁻¹ y_s with K = ``kernel_fn`` (e.g. from
    `kernel_function`); differentiable in x_support and y_support.
    """
    k_ss = kernel_fn(x_support, x_support)
    k_ts = kernel_fn(x_target, x_support)
    pred = krr_predict_from_kernels(k_ss, k_ts, y_support, reg)
    return 0.5 * ((pred - y_target) ** 2).mean(), pred


def predict(net, x_support: Tensor, y_support: Tensor, x: Tensor, kernel: str = "ntk",
            reg: float = 1e-6) -> Tensor:
    """KRR predictions (n, k) at ``x`` from the support set, with the exact kernel
    ``net.kernel`` (no jitter, no gradients), regularized as in `kip_loss`."""
    _check_net(net)
    kernel = _check_kind(kernel)
    x_support = _as_inputs(x_support, "x_support")
    x = _as_inputs(x, "x")
    with torch.no_grad():
        k_ss = net.kernel(x_support, None, get=kernel)
        k_ts = net.kernel(x, x_support, get=kernel)
        return krr_predict_from_kernels(k_ss, k_ts, y_support.detach().to(F64),
                                        _nonneg_float(reg, "reg"))


def accuracy(pred: Tensor, y_target: Tensor) -> float:
    """Fraction of rows where argmax(pred) == argmax(y_target)."""
    return float((pred.argmax(1) == y_target.argmax(1)).to(F64).mean())


# ------------------------------------------------------------------------- distill
@dataclass
class KIPResult:
    """What `distill` learned.

    Attributes:
      x_support: (n_support, *x.shape[1:]) learned support inputs, float64.
      y_support: (n_support, k) support targets (learned with ``learn_labels=True``,
        otherwise the initial ones).
      x_init, y_init: the initial support set (real examples ``x[init_indices]``).
      init_indices: (n_support,) indices into the training set of the initial support.
      classes: for integer labels, the class values; target column c is class
        ``classes[c]``. None for real targets.
      history: per optimization step ``step``, ``loss`` (on that step's target batch,
        before the update) and, for integer labels, ``accuracy``; with ``eval_data``,
        ``eval_step`` (updates done), ``eval_loss`` and ``eval_accuracy`` from the exact
        kernel.
      kernel, reg: the kernel kind and relative ridge used.
    """

    x_support: Tensor
    y_support: Tensor
    x_init: Tensor
    y_init: Tensor
    init_indices: Tensor
    classes: Tensor | None
    kernel: str
    reg: float
    history: dict[str, list[float]] = field(default_factory=dict)

    def predict(self, net, x: Tensor) -> Tensor:
        """KRR predictions (n, k) at ``x`` from the learned support set (exact kernel)."""
        return predict(net, self.x_support, self.y_support, x, self.kernel, self.reg)

    def accuracy(self, net, x: Tensor, y: Tensor) -> float:
        """Classification accuracy at (x, y), y integer labels among ``classes``."""
        if self.classes is None:
            raise ValueError("accuracy needs integer labels; this support set has real targets")
        t, _, _ = _as_targets(y, len(x), "y", classes=self.classes)
        return accuracy(self.predict(net, x), t)


def distill(net, x, y, n_support: int, steps: int, kernel: str = "ntk", *,
            learn_labels: bool = False, lr: float = 0.01, reg: float = 1e-6,
            batch_size: int | None = None, seed: int = 0, progress: bool = False,
            eval_data: tuple | None = None, eval_every: int | None = None,
            jitter: float = DEFAULT_JITTER) -> KIPResult:
    """Learn a KIP support set of ``n_support`` points for ``net``'s infinite-width kernel.

    Args:
      net: an ntkit layer spec (e.g. ``nl.serial(nl.Dense(...), nl.ReLU(), ...)``).
      x: (n, d) or (n, C, *S) training inputs, floating (computed in float64).
      y: integer class labels (n,) (turned into centred one-hot targets e_c − 1/C, the
        initial support is class-balanced) or real targets (n, k) (initial support drawn
        uniformly).
      n_support: support size; for labels, a multiple of the number of classes.
      steps: Adam steps (0 returns the initial support set).
      kernel: "ntk" or "nngp".
      learn_labels: also learn the support targets.
      lr: Adam's learning rate (the authors use 0.01 on standardized images).
      reg: ridge relative to the mean diagonal of K_ss (1e-6 as in the paper's code).
      batch_size: target examples per step (default min(n, 1000)), drawn without
        replacement afresh each step.
      seed: seeds the initial support and the target batches.
      progress: show a progress bar.
      eval_data: optional (x_eval, y_eval), same formats, scored with the exact kernel
        every ``eval_every`` steps (default steps // 20) and after the last step.
      jitter: see `kernel_function`.

    Returns:
      `KIPResult`.
    """
    _check_net(net)
    kernel = _check_kind(kernel)
    x = _as_inputs(x, "x")
    n = x.shape[0]
    targets, classes, labels = _as_targets(y, n, "y")
    n_support = _positive_int(n_support, "n_support")
    if n_support > n:
        raise ValueError(f"n_support = {n_support} exceeds the {n} training examples")
    steps = _positive_int(steps, "steps", minimum=0)
    if not isinstance(learn_labels, bool):
        raise TypeError(f"learn_labels must be True or False, got {learn_labels!r}")
    lr = _nonneg_float(lr, "lr", positive=True)
    reg = _nonneg_float(reg, "reg")
    batch = min(n, 1000) if batch_size is None else _positive_int(batch_size, "batch_size")
    if batch > n:
        raise ValueError(f"batch_size = {batch} exceeds the {n} training examples")
    kfn = kernel_function(net, kernel, jitter=jitter)
    x_eval = t_eval = None
    if eval_data is not None:
        if not (isinstance(eval_data, (tuple, list)) and len(eval_data) == 2):
            raise TypeError("eval_data must be a pair (x_eval, y_eval)")
        x_eval = _as_inputs(eval_data[0], "x_eval")
        if x_eval.shape[1:] != x.shape[1:]:
            raise ValueError(f"x_eval has per-example shape {tuple(x_eval.shape[1:])}, "
                             f"x has {tuple(x.shape[1:])}")
        t_eval, _, _ = _as_targets(eval_data[1], x_eval.shape[0], "y_eval", classes=classes,
                                   k=targets.shape[1])
    every = (max(1, steps // 20) if eval_every is None
             else _positive_int(eval_every, "eval_every"))

    gen = torch.Generator().manual_seed(int(seed))
    if labels is not None:
        init = class_balanced_indices(labels, n_support, gen)
    else:
        init = torch.randperm(n, generator=gen)[:n_support]
    xs = x[init].clone().requires_grad_(True)
    ys = targets[init].clone().requires_grad_(learn_labels)
    opt = torch.optim.Adam([xs, ys] if learn_labels else [xs], lr=lr)

    hist: dict[str, list[float]] = {"step": [], "loss": []}
    if labels is not None:
        hist["accuracy"] = []
    if x_eval is not None:
        hist.update(eval_step=[], eval_loss=[])
        if labels is not None:
            hist["eval_accuracy"] = []

    def evaluate(step: int) -> None:
        pred = predict(net, xs.detach(), ys.detach(), x_eval, kernel, reg)
        hist["eval_step"].append(step)
        hist["eval_loss"].append(float(0.5 * ((pred - t_eval) ** 2).mean()))
        if labels is not None:
            hist["eval_accuracy"].append(accuracy(pred, t_eval))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="KIP", unit="step")
    try:
        for step in range(steps):
            if x_eval is not None and step % every == 0:
                evaluate(step)
            b = torch.randperm(n, generator=gen)[:batch]
            loss, pred = kip_loss(kfn, xs, ys, x[b], targets[b], reg)
            if not bool(torch.isfinite(loss)):
                raise FloatingPointError(f"KIP loss is {loss.item()} at step {step} "
                                         "(lower lr, or raise reg)")
            opt.zero_grad()
            loss.backward()
            opt.step()
            hist["step"].append(step)
            hist["loss"].append(float(loss.detach()))
            if labels is not None:
                hist["accuracy"].append(accuracy(pred.detach(), targets[b]))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{hist['loss'][-1]:.4g}")
        if x_eval is not None:
            evaluate(steps)
    finally:
        if bar is not None:
            bar.close()

    return KIPResult(x_support=xs.detach().clone(), y_support=ys.detach().clone(),
                     x_init=x[init].clone(), y_init=targets[init].clone(), init_indices=init,
                     classes=classes, kernel=kernel, reg=reg, history=hist)
