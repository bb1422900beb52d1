"""The infinite-width kernel of your own ``torch.nn.Module``: `lift`.

    spec = ntkit.lift(model, input_shape=(3, 16, 16))    # an ntkit layer spec
    k = spec.kernel(x1, x2, get=("nngp", "ntk"))          # every engine option works
    print(spec)                                           # one layer per line, with places

Modules: `trace` (torch.fx tracing and the series-parallel rewrite), `ops` (one exact
ntkit layer per operation), `init` (variances), `spec` (`LiftedSpec`), `errors`
(`LiftError`). This package sits on `ntkit.layers`; it never imports the engine.
"""

from __future__ import annotations

from torch import nn

from ntkit.lift.errors import LiftError
from ntkit.lift.spec import LiftedSpec
from ntkit.lift.trace import lift as _lift


def lift(module: nn.Module, input_shape: int | tuple[int, ...] | None = None, *,
         init: str = "torch", parameterization: str = "standard",
         overrides: dict | None = None) -> LiftedSpec:
    """The ntkit spec of a torch module: its exact infinite-width NNGP and NTK.

    The module is traced with ``torch.fx``; every operation becomes the ntkit layer with
    the same meaning, and residual additions, concatenations along channels and
    products of streams become ``FanOut``/``parallel``/``FanIn*``. Each layer keeps the
    module's actual widths and its weight and bias variances; the kernel is the limit
    in which every layer's pre-activations are replaced by Gaussians with those
    variances (neural-tangents' standard parameterization): the NNGP is the limit of
    the output covariance, the NTK the expected NTK of the module's own parameters.

    Supported: ``nn.Linear``, ``nn.Conv1d/2d/3d`` (stride; padding 0/"valid", "same"
    or the integer padding that equals it, zeros or circular; no groups, dilation only
    for 1-wide filters), ``nn.ConvTranspose1d/2d/3d`` (paddings equal to ntkit's VALID or
    SAME), ``nn.AvgPool1d/2d/3d``, ``nn.AdaptiveAvgPool*d`` (to 1, or to sizes that divide
    the input), ``nn.Flatten``/``torch.flatten``/``view``/``reshape`` to (n, features),
    ``mean``/``sum`` over all positions, ``nn.LayerNorm`` (affine γ, β at their initial
    1, 0 lift to ``LayerNorm(affine=True)``; directly followed by an activation only if
    that is ReLU or LeakyReLU),
    ``nn.Identity``, dropout (module or functional; lifted as in eval mode: the
    identity), the activations ReLU, LeakyReLU, GELU (exact and tanh-approximated),
    Tanh, Sigmoid, SiLU, Softplus (module, ``torch.nn.functional``, ``torch.*`` and
    tensor-method forms, in place or not), ``x + y``, ``x - y``, ``torch.cat`` on
    channels, ``x * y`` of streams, multiplication or division by a number,
    ``nn.Sequential``, nested custom modules, and the modules of built ntkit specs
    (``spec.build(...)``; they lift back to the same spec).

    Anything else raises `LiftError` naming the operation and its place
    (``features.3: MaxPool2d``): max pooling, batch norm, softmax, ELU (no exact dual),
    ``nn.MultiheadAttention`` (fixed head count: no Gaussian limit), an activation other
    than ReLU/LeakyReLU right after an affine LayerNorm, affine LayerNorm with
    init="module" and γ ≠ 1 or β ≠ 0,
    grouped convolutions, weight sharing (a layer called twice), graphs that are not
    series-parallel, untraceable control flow. So does whatever the spec API refuses,
    e.g. a sum of correlated streams (``x + x``, or ``relu(x) + x`` with no fresh layer
    in either branch) or an activation of non-Gaussian inputs (two activations in a row).

    Args:
      module: the ``torch.nn.Module`` (one tensor in, one tensor out). It is not
        changed (the shape probe runs in eval mode without gradients and restores the
        modules' training flags).
      input_shape: per-example input shape, channels first, e.g. ``(3, 32, 32)``; may be
        omitted when the module starts with a Linear layer.
      init: "torch": PyTorch's default initialization of each layer, with the variances
        derived exactly (``nn.Linear``/``nn.Conv*d``: U(±1/√fan_in) weights and biases, so
        ``w_std² = 1/3`` and ``b_std² = 1/(3·fan_in)``; see `ntkit.lift.init`); modules
        an ntkit spec built keep their spec's values. A torch layer subclass with its
        own ``reset_parameters`` is refused: use "module". "module": estimated from the
        current parameters (``w_std² = fan_in·mean(W²)``, ``b_std² = mean(b²)``), so a
        custom initialization is respected. A zero bias counts as a parameter with
        variance 0 (it adds to the NTK); ``bias=False`` means none.
      parameterization: "standard" (default): the module's own parameterization, whose
        NTK depends on the widths. "ntk": the NTK-parameterized twin (same NNGP; the NTK
        neural-tangents' default gives). Layers from built ntkit specs keep their own.
      overrides: ``{module path: {"w_std": ..., "b_std": ...}}`` for the Linear/Conv
        layers whose variances you know better (b_std None: no bias).

    Returns:
      A `LiftedSpec` (a ``serial`` spec: ``kernel``, ``kernel_map``, ``build`` as for
      any layer); ``print(spec)`` shows each layer with its place in the module.

    Raises:
      LiftError: an operation without an exact kernel map (a ValueError; the message
        points to `ntkit.monte_carlo_kernel` and `ntkit.empirical_ntk`).
      ValueError, TypeError: bad arguments (e.g. an input_shape the module rejects).

    The refusals of the spec API are found by evaluating the lifted kernel map on one
    example; for inputs of more than ``ntkit.lift.trace.PROBE_POSITIONS`` (1024)
    positions that probe is skipped (its full position-position storage would be large)
    and they surface as ValueError when the kernel is evaluated.

    Example:
      >>> import torch, ntkit
      >>> from torch import nn
      >>> model = nn.Sequential(nn.Linear(4, 256), nn.ReLU(), nn.Linear(256, 1))
      >>> spec = ntkit.lift(model)
      >>> spec.kernel(torch.randn(3, 4, dtype=torch.float64), get="nngp").shape
      torch.Size([3, 3])
    """
    return _lift(module, input_shape, init=init, parameterization=parameterization,
                 overrides=overrides)


__all__ = ["LiftError", "LiftedSpec", "lift"]
