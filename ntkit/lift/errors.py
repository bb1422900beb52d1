"""`LiftError`: an operation of a module that has no exact infinite-width kernel map."""

from __future__ import annotations

#: What to use for a module that cannot be lifted: both work on any ``nn.Module``.
ALTERNATIVES = ("its kernels can still be estimated from finite networks with "
                "ntkit.monte_carlo_kernel (averaged over re-initializations) or "
                "ntkit.empirical_ntk (one network), which work on any nn.Module")


class LiftError(ValueError):
    """An operation of a ``torch.nn.Module`` that `ntkit.lift` cannot map exactly.

    The message names the operation and its place in the module (``features.3:
    MaxPool2d``), says why, and points to `ntkit.monte_carlo_kernel` and
    `ntkit.empirical_ntk`, which work on any module. A `ValueError`, so code that
    catches bad arguments catches it too.

    Attributes:
      place: where in the module (a dotted module path, or the traced node's name).
      op: the operation (a module type or a function's name).
    """

    def __init__(self, place: str, op: str, why: str, *, hint: bool = True):
        self.place, self.op = place, op
        where = ": ".join(s for s in (place, op) if s)
        tail = f"; {ALTERNATIVES}" if hint else ""
        super().__init__(f"{where}: {why}{tail}")
