"""Training-free architecture scores: the NTK spectrum / condition number (TE-NAS) and the
NASWOT score (log-determinant of the Hamming kernel of ReLU activation patterns).

- TE-NAS (Chen, Gong & Wang, ICLR 2021) scores a network at initialization by the
  condition number κ = λ_max/λ_min of its empirical NTK on a batch, and reports that κ is
  *negatively* correlated with the accuracy reached after training. Their code builds the
  NTK from the gradient of the *sum of the logits* of each example,
  Θ_ij = ∇_θ Σ_u f_u(x_i) · ∇_θ Σ_v f_v(x_j) (n×n), over the conv/linear weights; that is
  ``outputs="sum"`` here (``params=`` can restrict to weights). ``outputs="mean"`` is
  ntkit's traced NTK (1/k) Σ_u J_u J_uᵀ, ``"full"`` the (n·k)×(n·k) NTK of all output
  units.
- NASWOT (Mellor, Turner, Storkey & Crowley, ICML 2021): for each example the binary code
  c ∈ {0,1}^{N_A} of which ReLU units are active (pre-activation > 0), over all ReLUs of
  the network; the kernel K_H[i, j] = N_A − d_H(c_i, c_j) (d_H the Hamming distance) and
  the score log|det K_H|. Mellor et al. report a *positive* correlation with accuracy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ntkit.empirical import empirical_ntk
from ntkit.empirical.common import ParamSelection, as_model_input, eval_mode, flatten_output

__all__ = ["ntk_spectrum", "ntk_condition_number", "naswot_score", "relu_codes", "OUTPUTS"]

OUTPUTS = ("sum", "mean", "full")


class _Summed(nn.Module):
    """``model`` with its (flattened, concatenated) outputs summed per example: (n, 1)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model

    def forward(self, x):
        return flatten_output(self.inner(x), x.shape[0]).sum(1, keepdim=True)


def _inner_selection(params: ParamSelection) -> ParamSelection:
    """The same selection for the parameters of ``_Summed(model)`` (names gain "inner.")."""
    if params is None:
        return None
    if callable(params) and not isinstance(params, (str, Tensor)):
        return lambda name, p: params(name.removeprefix("inner."), p)
    items = [params] if isinstance(params, (str, Tensor)) else list(params)
    return [f"inner.{i}" if isinstance(i, str) else i for i in items]


def _ntk_matrix(model: nn.Module, x, outputs: str, params: ParamSelection) -> Tensor:
    if outputs not in OUTPUTS:
        raise ValueError(f"unknown outputs convention {outputs!r}; expected one of "
                         f"{', '.join(OUTPUTS)}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if outputs == "sum":   # one output unit: k times cheaper than the untraced NTK
        return empirical_ntk(_Summed(model), x, params=_inner_selection(params))
    if outputs == "mean":
        return empirical_ntk(model, x, params=params)
    k4 = empirical_ntk(model, x, trace_outputs=False, params=params)   # (n, n, k, k)
    n, _, k, _ = k4.shape
    return k4.permute(0, 2, 1, 3).reshape(n * k, n * k)


def ntk_spectrum(model: nn.Module, x, *, outputs: str = "sum",
                 params: ParamSelection = None) -> Tensor:
    """Eigenvalues of the empirical NTK of ``model`` on the batch ``x``, in descending order.

    Args:
      model: an ``nn.Module`` whose rows do not interact (evaluated in eval mode, as in
        `ntkit.empirical_ntk`).
      x: (n, ...) inputs.
      outputs: how k output units enter (see module docstring): "sum" (TE-NAS: gradients of
        the summed outputs, n×n; default), "mean" (ntkit's traced NTK, n×n) or "full"
        ((n·k)×(n·k)).
      params: which parameters count (None: all with requires_grad; TE-NAS used the
        weights only, e.g. ``params=lambda name, p: name.endswith("weight")``).

    Returns:
      (n,) or (n·k,) eigenvalues in the parameters' dtype (round-off may leave tiny
      negative ones when the NTK is singular, e.g. n > P).
    """
    theta = _ntk_matrix(model, x, outputs, params)
    return torch.linalg.eigvalsh(theta).flip(0)


def ntk_condition_number(model: nn.Module, x, *, outputs: str = "sum",
                         params: ParamSelection = None) -> float:
    """TE-NAS' κ = λ_max / λ_min of the empirical NTK (`ntk_spectrum`, same arguments).

    Returns ``inf`` when the NTK is singular to working precision, λ_min ≤ m·ε·λ_max for
    an m×m NTK and the dtype's ε (more examples than parameters, duplicate inputs): there
    the computed λ_min is round-off and the ratio would be meaningless.
    """
    ev = ntk_spectrum(model, x, outputs=outputs, params=params)
    lmax, lmin = float(ev[0]), float(ev[-1])
    if not lmin > ev.numel() * torch.finfo(ev.dtype).eps * lmax:
        return math.inf
    return lmax / lmin


# ------------------------------------------------------------------------- NASWOT
#: The calls recorded as ReLUs: nn.ReLU (it calls F.relu), F.relu / F.relu_, torch.relu /
#: torch.relu_ and Tensor.relu / Tensor.relu_. Not recorded: clamp(min=0), LeakyReLU,
#: ReLU6, Hardtanh, or a ReLU written as x * (x > 0).
_RELUS = {F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_}


class _ReluRecorder(TorchFunctionMode):
    """Records (input > 0) of every ReLU call, per example (batch on axis 0)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.codes: list[Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELUS:
            inp = args[0] if args else kwargs["input"]
            if inp.ndim == 0 or inp.shape[0] != self.n:
                raise ValueError(f"a ReLU input of shape {tuple(inp.shape)} has no batch axis "
                                 f"of size {self.n}; NASWOT needs per-example activations")
            # before the call: an in-place ReLU overwrites its input
            self.codes.append((inp > 0).reshape(self.n, -1))
        return func(*args, **kwargs)


def relu_codes(model: nn.Module, x) -> Tensor:
    """Binary activation codes (n, N_A) of all ReLU units (pre-activation > 0).

    One forward pass of ``x`` (no gradients, eval mode, restored after); the units of
    every recorded ReLU call (see ``_RELUS``: nn.ReLU, functional and tensor-method relu),
    flattened per example and concatenated in call order. A ReLU applied twice counts
    twice.

    Raises:
      ValueError: no ReLU was called, NaN/inf inputs, empty batch.
      TypeError: ``model`` is not an ``nn.Module``; non-tensor input.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ref = next((p for p in model.parameters() if p.dtype.is_floating_point), None)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else torch.device("cpu")
    x = as_model_input(x, "x", dtype, device)
    rec = _ReluRecorder(x.shape[0])
    with torch.no_grad(), eval_mode(model), rec:
        model(x)
    if not rec.codes:
        raise ValueError("the model called no ReLU (nn.ReLU, F.relu, torch.relu, "
                         "Tensor.relu); NASWOT's codes are ReLU activation patterns")
    return torch.cat(rec.codes, dim=1)


def naswot_score(model: nn.Module, x) -> float:
    """NASWOT score log|det K_H| (Mellor et al. 2021) of ``model`` on the batch ``x``.

    K_H[i, j] = N_A − d_H(c_i, c_j) for the codes c = `relu_codes` (model, x), computed as
    c cᵀ + (1 − c)(1 − c)ᵀ (agreements) in float64. K_H is a PSD Gram matrix of rank at
    most N_A + 1 (its columns lie in the span of c's columns and the ones vector), so for
    n > N_A + 1 examples, or two examples with equal codes, it is singular: the score is
    then −inf (det K_H = 0), where ``slogdet`` would return a round-off value. Singular to
    working precision means λ_min ≤ n·ε·λ_max; otherwise the score is Σ log λ_i.

    Args:
      model: an ``nn.Module`` using ReLUs (see `relu_codes` for which calls count).
      x: (n, ...) inputs; n ≥ 2.
    """
    codes = relu_codes(model, x)
    n, n_a = codes.shape
    if n < 2:
        raise ValueError("naswot_score needs a batch of at least 2 examples")
    if n > n_a + 1:
        return -math.inf
    c = codes.to(torch.float64)
    k = c @ c.T + (1 - c) @ (1 - c).T
    ev = torch.linalg.eigvalsh(k)
    if not float(ev[0]) > n * torch.finfo(torch.float64).eps * float(ev[-1]):
        return -math.inf
    return float(torch.log(ev).sum())
