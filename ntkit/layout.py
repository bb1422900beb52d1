"""Input layouts: ntkit is channels first, as torch; neural-tangents is channels last.

A convolutional network's inputs are (n, C, L), (n, C, H, W) or (n, C, D, H, W) here, and
(n, L, C), (n, H, W, C) or (n, D, H, W, C) in neural-tangents (and in most image files).
A channels-last batch has the same number of entries, so a conv network accepts it
silently and computes the kernel of other images (14% off on 8×8×3 inputs). These pure
functions convert an explicitly channels-last batch and warn when a batch looks
channels-last while no layout was given:

    >>> import torch
    >>> x = torch.randn(4, 8, 8, 3)              # NHWC, as neural-tangents takes it
    >>> to_channels_first(x, True).shape
    torch.Size([4, 3, 8, 8])

`ntkit.layers.Layer.kernel` calls both on its inputs (``channels_last=`` keyword).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["looks_channels_last", "to_channels_first", "warn_if_channels_last"]

#: Channel counts of common image data (grey, grey+alpha, RGB, RGBA): a last axis of
#: this size, smaller than axis 1, is what a channels-last batch looks like.
_CHANNELS_LAST_MAX = 4


def _shape(x) -> tuple[int, ...] | None:
    shape = getattr(x, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


def looks_channels_last(x) -> bool:
    """Whether a batch (n, a1, ..., ak), k ≥ 2, looks channels last: its last axis has
    1–4 entries (a channel count) and fewer than axis 1 (a spatial size).

    Images whose channels-first reading is square (k ≥ 3 and a2 = ... = ak, e.g. 1×1
    images (n, C, 1, 1)) are taken as channels first: a square image is the likelier
    reading.
    """
    shape = _shape(x)
    if shape is None or len(shape) < 3:
        return False
    if len(shape) >= 4 and len(set(shape[2:])) == 1:
        return False
    return 1 <= shape[-1] <= _CHANNELS_LAST_MAX and shape[-1] < shape[1]


def to_channels_first(x, channels_last: bool | None):
    """``x`` with its channels moved to axis 1 when ``channels_last`` is True.

    Args:
      x: a batch (n, *S, C) (channels last) or (n, C, *S); a tensor or numpy array
        (a ``np.memmap`` stays on disk: the result is a strided view). A fully-connected
        batch (n, d) is returned as is.
      channels_last: True: (n, *S, C) -> (n, C, *S). False or None: unchanged.

    Returns:
      The batch, channels first (a view; nothing is copied).

    Raises:
      TypeError: channels_last is not a bool or None, or x is another array type
        (e.g. zarr; transpose it to channels first before the call).
    """
    if channels_last is not None and not isinstance(channels_last, bool):
        raise TypeError(f"channels_last must be True, False or None, got {channels_last!r}")
    if not channels_last:
        return x
    shape = _shape(x)
    if shape is None or len(shape) < 3:
        return x  # (n, d): no channel axis to move
    if isinstance(x, torch.Tensor):
        return x.movedim(-1, 1)
    if isinstance(x, np.ndarray):
        return np.moveaxis(x, -1, 1)
    raise TypeError(f"channels_last=True needs a torch.Tensor or numpy array, got "
                    f"{type(x).__name__}: store it channels first (n, C, *S) instead")


def warn_if_channels_last(x, channels_last: bool | None, name: str = "x1",
                          stacklevel: int = 3) -> None:
    """Warn (UserWarning) when ``x`` looks channels last and no layout was given.

    Args:
      x: an input batch (see `looks_channels_last`).
      channels_last: the layout the caller gave; only None (not given) can warn, so
        ``channels_last=False`` silences the warning for channels-first data whose last
        axis happens to be small.
      name: the argument's name, for the message.
      stacklevel: passed to ``warnings.warn`` (3: the caller of the function that calls
        this one).
    """
    if channels_last is not None or not looks_channels_last(x):
        return
    shape = _shape(x)
    first = (shape[0], shape[-1], *shape[1:-1])
    warnings.warn(
        f"{name} has shape {shape}, which looks channels last (n, *S, C) as in "
        f"neural-tangents; ntkit takes channels first (n, C, *S). Pass channels_last=True "
        f"to transpose it to {first}, or channels_last=False if it already is channels "
        f"first", UserWarning, stacklevel=stacklevel)
