"""`Dropout`: the kernel of a network with dropout, averaged over weights and masks.

With drop probability p and keep probability q = 1 − p, dropout multiplies each unit by
an independent Bernoulli(q)/q mask. Masks are independent across channels, positions and
forward passes, so covariances between different examples (or positions) are unchanged,
while a unit's own second moment grows by 1/q: E[(m z)²] = E[z²]/q. The kernel therefore
scales only the example-diagonal entries (the same example, the same position) by 1/q,
as in neural-tangents' ``Dropout(rate=q)`` (whose argument is the *keep* probability).
"""

from __future__ import annotations

from torch import Tensor, nn

from ntkit.kernel import Kernel, example_diagonal
from ntkit.layers.base import Layer, is_streams


def _scale_position_diagonal(t: Tensor, factor: float, batch: int, spatial_ndim: int,
                             full: bool) -> Tensor:
    """``t`` with its equal-position entries times ``factor`` (all entries for diagonal
    storage or fully-connected kernels). ``batch``: leading per-example axes (1 or 2)."""
    if not full or spatial_ndim == 0:
        return t * factor
    out = t.clone()
    lead = out.shape[:batch]
    S = out.shape[batch:batch + spatial_ndim]
    P = 1
    for s in S:
        P *= s
    out.reshape(*lead, P, P).diagonal(0, -2, -1).mul_(factor)
    return out


class _DropoutModule(nn.Module):
    def __init__(self, p: float, train: bool):
        super().__init__()
        self.p, self.train_mode = p, train

    def forward(self, x: Tensor) -> Tensor:
        # Drops in mode="train" while the module is in training mode (torch's default);
        # ``model.eval()`` turns it off, as for torch.nn.Dropout.
        if not (self.train_mode and self.training) or self.p == 0.0:
            return x
        return nn.functional.dropout(x, self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={'train' if self.train_mode else 'test'}"


class Dropout(Layer):
    """Dropout with drop probability ``p`` (as ``torch.nn.Dropout``; neural-tangents'
    ``Dropout(rate)`` takes the keep probability: ``rate = 1 - p``).

    ``mode="train"``: the kernel of the network with random masks, averaged over them:
    entries of an example with itself (the diagonal of ``net.kernel(x)``, or of
    ``net.kernel(x, x)``, which is the same call) at the same position are multiplied by
    1/(1 − p); every other entry is unchanged, including those of a repeated example
    (two evaluations, two independent masks), as in neural-tangents.
    ``mode="test"``: the identity. The output is not Gaussian (a nonlinearity
    needs a Dense/Conv layer in between, as in neural-tangents), and, like
    neural-tangents, dropout on the raw inputs is refused (their channels are finite).

    Example:
      >>> net = serial(Dense(512), ReLU(), Dropout(0.2), Dense(1))
    """

    def __init__(self, p: float, mode: str = "train"):
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"Dropout p (the drop probability) must be a real number, got "
                            f"{type(p).__name__}")
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout p is the drop probability and must be in [0, 1), got "
                             f"{p} (neural-tangents' rate is the keep probability 1 - p)")
        if mode not in ("train", "test"):
            raise ValueError(f'Dropout mode must be "train" or "test", got {mode!r}')
        self.p, self.mode = p, mode

    def kernel_map(self, k: Kernel) -> Kernel:
        if isinstance(k, tuple):
            raise ValueError("Dropout got parallel streams; apply it per stream with "
                             "parallel(...) or merge them first")
        if self.mode == "test":
            return k
        if k.n_dense == 0:
            raise ValueError("Dropout(mode='train') cannot be applied to the raw inputs (their "
                             "channels are finite, so masks do not average out); put it after "
                             "a Dense/Conv layer")
        factor = 1.0 / (1.0 - self.p)
        d = len(k.spatial)
        cov1, cov2 = k.map_covs(
            lambda c: _scale_position_diagonal(c, factor, 1, d, k.full))

        def pairs(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            if k.x1_is_x2:
                out = t.clone()
                diag = example_diagonal(out)  # (*S[, *S], n)
                if k.full and d:
                    diag.copy_(_scale_position_diagonal(diag.movedim(-1, 0), factor, 1, d,
                                                        True).movedim(0, -1))
                else:
                    diag.mul_(factor)
                return out
            return t

        # Identical examples in two batches are two evaluations with independent masks:
        # no longer identical (their entry is not their variance), so ``same`` is dropped.
        return k.replace(nngp=pairs(k.nngp), ntk=pairs(k.ntk), cov1=cov1, cov2=cov2,
                         gaussian=False, same=None)

    def make_module(self, in_features, generator, dtype):
        if is_streams(in_features):
            raise ValueError("Dropout got parallel streams; use parallel(...) or a FanIn "
                             "layer first")
        return _DropoutModule(self.p, self.mode == "train"), in_features


__all__ = ["Dropout"]
