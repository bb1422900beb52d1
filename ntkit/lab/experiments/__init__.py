"""Experiments of the lab: every module in this package is imported on discovery.

Adding an experiment is adding a module here that decorates its function with
``@ntkit.lab.registry.experiment(name, description)``; no shared list to edit. A module
that fails to import is skipped with a warning (its error is kept in `IMPORT_ERRORS`),
so one broken experiment does not take the others down.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings

#: module name -> the error raised while importing it.
IMPORT_ERRORS: dict[str, BaseException] = {}


def _import_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        full = f"{__name__}.{info.name}"
        try:
            importlib.import_module(full)
        except Exception as e:  # noqa: BLE001 - report and keep the other experiments
            IMPORT_ERRORS[full] = e
            warnings.warn(f"ntkit.lab: skipping experiment module {full}: "
                          f"{type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)


_import_all()
