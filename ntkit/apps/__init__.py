"""Applications built on ntkit's kernels.

- `ntkit.apps.kip`: KIP dataset distillation (Nguyen, Chen & Lee 2021), learning a small
  support set whose kernel ridge regression predicts the training data.
"""

from __future__ import annotations

__all__ = ["kip"]


def __getattr__(name: str):
    # `ntkit.apps.kip` without an explicit submodule import, as for ntkit's other packages.
    if name in __all__:
        import importlib

        return importlib.import_module(f"ntkit.apps.{name}")
    raise AttributeError(f"module 'ntkit.apps' has no attribute {name!r}")
