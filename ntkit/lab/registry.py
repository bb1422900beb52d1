"""The experiment registry: ``@experiment(name, description)`` and lookups.

Experiments live in ``ntkit/lab/experiments/<name>.py``; that package imports every
module in it (pkgutil), so registering is just decorating a function there::

    from ntkit.lab.registry import experiment

    @experiment("my_check", "one line: which published claim this measures")
    def my_check(ctx):            # ctx: ntkit.lab.framework.Context
        ...
        return "a one-paragraph summary"   # or None
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Experiment", "ExperimentFn", "UnknownExperimentError", "all_experiments", "discover",
           "experiment", "get", "unregister"]

ExperimentFn = Callable[..., "str | None"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its name, one-line description and function."""

    name: str
    description: str
    fn: ExperimentFn

    @property
    def qualname(self) -> str:
        return f"{self.fn.__module__}.{self.fn.__qualname__}"


_REGISTRY: dict[str, Experiment] = {}


class UnknownExperimentError(KeyError, ValueError):
    """Raised for a name no experiment is registered under (a KeyError for lookups, a
    ValueError as every other bad argument of a public entry point)."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name, self.known = name, known

    def __str__(self) -> str:
        return f"unknown experiment {self.name!r}; known: {', '.join(self.known) or '(none)'}"


def experiment(name: str, description: str) -> Callable[[ExperimentFn], ExperimentFn]:
    """Register ``fn(ctx: Context) -> str | None`` as the experiment ``name``.

    Args:
      name: lower_snake_case identifier, used on the command line and as the run folder.
      description: one line saying which claim the experiment measures.

    The function is returned unchanged. Registering a second, different function under a
    taken name raises ValueError; re-registering the same function (a module reload)
    replaces the entry.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"experiment name must be lower_snake_case, got {name!r}")
    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"experiment {name!r} needs a one-line description")

    def register(fn: ExperimentFn) -> ExperimentFn:
        if not callable(fn):
            raise TypeError(f"@experiment({name!r}) must decorate a function")
        entry = Experiment(name, " ".join(description.split()), fn)
        old = _REGISTRY.get(name)
        if old is not None and old.qualname != entry.qualname:
            raise ValueError(f"experiment {name!r} is already registered by {old.qualname}")
        _REGISTRY[name] = entry
        return fn

    return register


def discover() -> None:
    """Import ``ntkit.lab.experiments`` (which imports each experiment module)."""
    importlib.import_module("ntkit.lab.experiments")


def all_experiments() -> dict[str, Experiment]:
    """Every registered experiment, by name (sorted), after discovery."""
    discover()
    return {k: _REGISTRY[k] for k in sorted(_REGISTRY)}


def get(name: str) -> Experiment:
    """The experiment registered as ``name``; UnknownExperimentError if none."""
    exps = all_experiments()
    if name not in exps:
        raise UnknownExperimentError(name, sorted(exps))
    return exps[name]


def unregister(name: str) -> None:
    """Remove an entry (for tests that register throwaway experiments)."""
    _REGISTRY.pop(name, None)
