"""neural-tangents' spellings, accepted where they mean the same thing, and a map for the
rest.

``stax.Relu()``, ``stax.Gelu()``, ``stax.LeakyRelu(alpha)`` and ``stax.ABRelu(a, b)`` work
as written (they return ntkit's `ReLU`, `GELU`, `LeakyReLU`, `ABReLU`); ``W_std=`` is
accepted by `Dense` and `Conv` (`resolve_w_std`). Other neural-tangents names either
have another ntkit name or no counterpart; `NT_NAMES` says which, and
``ntkit.layers.<name>`` raises an AttributeError quoting it.

    >>> from ntkit import layers as nl
    >>> nl.Relu()
    ReLU()
"""

from __future__ import annotations

from ntkit.layers.activations import GELU, ABReLU, LeakyReLU, ReLU

__all__ = ["ABRelu", "Gelu", "LeakyRelu", "NT_NAMES", "Relu", "W_STD_DEFAULT",
           "resolve_w_std"]


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def Relu(do_stabilize: bool = False) -> ReLU:
    """neural-tangents' ``stax.Relu``: ntkit's `ReLU`. ``do_stabilize`` (a rescaling
    neural-tangents uses in deep nets) is accepted and unneeded: ntkit's arc-cosine
    kernels stay finite and accurate at any depth."""
    _flag("do_stabilize", do_stabilize)
    return ReLU()


def LeakyRelu(alpha: float, do_stabilize: bool = False) -> LeakyReLU:
    """neural-tangents' ``stax.LeakyRelu(alpha)``: ntkit's `LeakyReLU` (see `Relu` for
    ``do_stabilize``)."""
    _flag("do_stabilize", do_stabilize)
    return LeakyReLU(alpha)


def ABRelu(a: float, b: float, do_stabilize: bool = False) -> ABReLU:
    """neural-tangents' ``stax.ABRelu(a, b)``, φ(x) = a·min(x, 0) + b·max(x, 0): ntkit's
    `ABReLU` (closed-form arc-cosine dual; see `Relu` for ``do_stabilize``)."""
    _flag("do_stabilize", do_stabilize)
    return ABReLU(a, b)


def Gelu(approximate: bool = False) -> GELU:
    """neural-tangents' ``stax.Gelu()``: ntkit's `GELU` (exact, x·Φ(x)).

    ``approximate=True`` (neural-tangents' tanh approximation in the finite network only,
    with the exact GELU's kernel) is refused: the finite network would no longer be the
    one whose kernel is computed.
    """
    if _flag("approximate", approximate):
        raise ValueError("Gelu(approximate=True) is refused: ntkit's finite GELU is the "
                         "exact x·Φ(x), the function whose kernel it computes; use Gelu() "
                         "or GELU()")
    return GELU()


#: neural-tangents names that ntkit spells differently or does not have -> what to use.
NT_NAMES = {
    "ElementwiseNumerical": "Elementwise(fn, fn_deriv=df, deg=...) (2-D quadrature; "
                            "Elementwise(nngp_fn=...) takes a closed form)",
    "Sigmoid_like": "Erf(a=0.5, b=1/2.4020563531719796, c=0.5), the same function "
                    "(Sigmoid is the exact logistic function, by quadrature)",
    "SliceFanInConcat": None,
}


class _DefaultStd(float):
    """The float 1.0 that marks "w_std not given" (so W_std= can be refused next to an
    explicit w_std, even w_std=1.0)."""

    def __repr__(self) -> str:
        return "1.0"


#: Default of ``w_std`` in `Dense` and `Conv`: 1.0, recognizable as "not given".
W_STD_DEFAULT = _DefaultStd(1.0)


def resolve_w_std(layer: str, w_std, W_std):
    """``w_std``, or neural-tangents' spelling ``W_std`` when given instead.

    Raises:
      TypeError: both were given.
    """
    if W_std is None:
        return w_std
    if w_std is not W_STD_DEFAULT:
        raise TypeError(f"{layer} got both w_std={w_std!r} and W_std={W_std!r} "
                        "(neural-tangents' spelling of the same argument): give one")
    return W_std
