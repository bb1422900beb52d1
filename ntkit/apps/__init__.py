"""Applications built on ntkit's kernels.

- `ntkit.apps.kip`: KIP dataset distillation (Nguyen, Chen & Lee 2021), learning a small
  support set whose kernel ridge regression predicts the training data.
"""

from __future__ import annotations

__all__ = ["kip"]
