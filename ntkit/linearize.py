"""Taylor expansions of a network in its parameters: `linearize`, `taylor_expand`.

For parameters θ around their values θ0 at the time of the call (Δθ = θ − θ0),

    degree 1 (linearize):  f_lin(x; θ)  = f(x; θ0) + J(x) Δθ
    degree 2:              f_quad(x; θ) = f(x; θ0) + J(x) Δθ + ½ Δθᵀ H(x) Δθ
    degree m:              Σ_{j ≤ m} D^j f(x; θ0)[Δθ, …, Δθ] / j!

(H is the Hessian of each output in the parameters: the "quadratic model" of
Dyer & Gur-Ari / Roberts–Yaida.) The result is an ``nn.Module`` whose parameters θ
are trainable copies of the model's, initialized at θ0, so at initialization it outputs
exactly f(x; θ0) and its gradient in θ is the model's Jacobian J(x) (plus H(x)Δθ for
degree 2). Gradient descent on the linearized model follows the dynamics of the
empirical NTK at θ0 exactly (see ``ntkit.empirical.empirical_ntk``).

Directional derivatives are computed with nested forward mode (``torch.func.jvp``),
never forming J or H: a forward costs about 2^m forward passes of the model for degree
m (3 for degree 1 counting the tangent, ~9 for degree 2) and is differentiable in θ by
ordinary autograd.

Which parameters: those with ``requires_grad``; the others and all buffers are frozen
at their current values. The model runs in eval mode (dropout off, running statistics
used), as the empirical NTK does; the original module is not modified.
"""

from __future__ import annotations

import math
from typing import Any

import torch  # noqa: F401 - the docstring examples use it
from torch import Tensor, nn
from torch.func import functional_call, jvp

from ntkit.empirical import eval_mode


def _escape(names: list[str]) -> list[str]:
    keys = [n.replace(".", "__") for n in names]
    if len(set(keys)) != len(keys):   # names that collide once dots are replaced
        keys = [f"p{i}" for i in range(len(names))]
    return keys


class TaylorModel(nn.Module):
    """Degree-m Taylor expansion of ``model`` around its current parameters θ0.

    Attributes:
      model: the original module (not registered: its parameters are not ours).
      degree: m.
      names: parameter names of the model, in the order of ``parameters()``.

    ``forward(*args, **kwargs)`` takes what the model takes.
    """

    def __init__(self, model: nn.Module, degree: int = 1):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise ValueError(f"degree must be an int >= 1, got {degree!r}")
        object.__setattr__(self, "model", model)   # keep it out of our submodules
        self.degree = degree
        named = dict(model.named_parameters())
        self.names = [n for n, p in named.items() if p.requires_grad]
        if not self.names:
            raise ValueError("the model has no parameter with requires_grad=True to expand in")
        for n in self.names:
            if not named[n].dtype.is_floating_point:
                raise TypeError(f"parameter {n!r} has dtype {named[n].dtype}; only floating "
                                "parameters can be expanded in")
        self._keys = _escape(self.names)
        frozen = [n for n in named if n not in self.names]
        buffers = dict(model.named_buffers())
        self._frozen_keys = dict(zip(frozen, _escape(frozen), strict=True))
        self._buffer_keys = dict(zip(buffers, _escape(list(buffers)), strict=True))
        self.params = nn.ParameterDict()
        for n, key in zip(self.names, self._keys, strict=True):
            t = named[n].detach()
            self.params[key] = nn.Parameter(t.clone())
            self.register_buffer("theta0__" + key, t.clone())
        for n, key in self._frozen_keys.items():
            self.register_buffer("frozen__" + key, named[n].detach().clone())
        for n, key in self._buffer_keys.items():
            self.register_buffer("buffer__" + key, buffers[n].detach().clone())

    # ---- parameter views ------------------------------------------------------------------
    def theta0(self) -> dict[str, Tensor]:
        """θ0 by the model's parameter names."""
        return {n: getattr(self, "theta0__" + k) for n, k in zip(self.names, self._keys,
                                                                  strict=True)}

    def theta(self) -> dict[str, Tensor]:
        """Current θ (the trainable parameters) by the model's parameter names."""
        return {n: self.params[k] for n, k in zip(self.names, self._keys, strict=True)}

    def delta(self) -> dict[str, Tensor]:
        """Δθ = θ − θ0."""
        t0 = self.theta0()
        return {n: p - t0[n] for n, p in self.theta().items()}

    def _constants(self) -> dict[str, Tensor]:
        c = {n: getattr(self, "frozen__" + k) for n, k in self._frozen_keys.items()}
        c.update({n: getattr(self, "buffer__" + k) for n, k in self._buffer_keys.items()})
        return c

    # ---- evaluation -------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        consts = self._constants()

        def f(p: dict[str, Tensor]):
            return functional_call(self.model, {**consts, **p}, args, kwargs)

        delta = self.delta()
        with eval_mode(self.model):
            terms = _directional_derivatives(f, self.theta0(), delta, self.degree)
        return _tree_sum(terms, [1.0 / math.factorial(j) for j in range(self.degree + 1)])

    def extra_repr(self) -> str:
        return f"degree={self.degree}, model={type(self.model).__name__}"


def _directional_derivatives(f, p0: dict[str, Tensor], delta: dict[str, Tensor], m: int):
    """[f(p0), Df(p0)[Δ], …, D^m f(p0)[Δ^m]] by nested forward mode."""
    if m == 0:
        return [f(p0)]

    def lower(p: dict[str, Tensor]):
        return _directional_derivatives(f, p, delta, m - 1)

    primal, tangent = jvp(lower, (p0,), (delta,))
    return list(primal) + [tangent[-1]]


def _tree_sum(terms: list, weights: list[float]):
    """Σ_j w_j · terms[j] over matching pytrees of tensors (the model's output structure)."""
    from torch.utils._pytree import tree_flatten, tree_unflatten

    flats = [tree_flatten(t) for t in terms]
    spec = flats[0][1]
    leaves = [sum(w * fl[0][i] if w != 1.0 else fl[0][i] for w, fl in zip(weights, flats,
                                                                          strict=True))
              for i in range(len(flats[0][0]))]
    return tree_unflatten(leaves, spec)


def linearize(model: nn.Module) -> TaylorModel:
    """The model linearized in its parameters: f_lin(x; θ) = f(x; θ0) + J(x)(θ − θ0).

    θ0 are the model's parameters (those with ``requires_grad``) at the time of the
    call; the returned module holds trainable copies θ, initialized at θ0, and frozen
    copies of θ0, of the other parameters and of the buffers. The model itself is not
    modified and not registered as a submodule. Gradient descent on the returned module
    follows the dynamics of the empirical NTK at θ0 exactly (`ntkit.empirical_ntk`;
    `ntkit.predict.gradient_descent_mse` gives them in closed form).

    Its forward computes J(x)(θ − θ0) by forward mode (``torch.func.jvp``), never
    forming J: about three forward passes of the model, differentiable in θ. The model
    runs in eval mode (dropout off, running statistics used), as for the empirical NTK.

    Coming from neural-tangents: ``nt.linearize(apply_fn, params)`` returns a function
    of (params, x); here the parameters live in the returned ``nn.Module``, so train it
    with any torch optimizer.

    Args:
      model: any ``nn.Module`` with at least one floating parameter that requires grad.

    Returns:
      A `TaylorModel` of degree 1 (equal to ``taylor_expand(model, degree=1)``): call it
      as the model, on the same inputs (e.g. (n, d) or (n, C, H, W)), for outputs of the
      model's shape and structure. ``.delta()`` gives θ − θ0 by parameter name.

    Raises:
      TypeError: ``model`` is not an ``nn.Module``, or has a non-floating parameter
        that requires grad.
      ValueError: no parameter requires grad.

    Example:
      >>> model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
      >>> lin = linearize(model)
      >>> x = torch.randn(5, 3)
      >>> torch.allclose(lin(x), model(x))     # equal at θ0
      True
      >>> opt = torch.optim.SGD(lin.parameters(), lr=0.1)
      >>> loss = ((lin(x) - 1.0) ** 2).mean()
      >>> loss.backward(); opt.step()           # trains θ; the model is untouched
      >>> lin(x).shape
      torch.Size([5, 1])
    """
    return TaylorModel(model, degree=1)


def taylor_expand(model: nn.Module, degree: int = 2) -> TaylorModel:
    """Degree-``degree`` Taylor expansion of ``model`` in its parameters around θ0.

    ``Σ_{j ≤ m} D^j f(x; θ0)[Δθ, …, Δθ] / j!`` with Δθ = θ − θ0; degree 2 is the
    quadratic model f0 + J Δθ + ½ Δθᵀ H Δθ (Dyer and Gur-Ari 2020, "Asymptotics of wide
    networks from Feynman diagrams"; Roberts, Yaida and Hanin 2022, "The principles of
    deep learning theory"). Parameters, buffers and eval mode as in `linearize`; a
    forward costs about 2^m forward passes of the model.

    Args:
      model: any ``nn.Module`` with a floating parameter that requires grad.
      degree: m >= 1.

    Returns:
      A `TaylorModel`, called as the model (same inputs, same output structure).

    Example:
      >>> quad = taylor_expand(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)))
      >>> quad(torch.randn(4, 3)).shape
      torch.Size([4, 1])
    """
    return TaylorModel(model, degree=degree)


__all__ = ["linearize", "taylor_expand", "TaylorModel"]
