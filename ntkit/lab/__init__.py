"""The lab: experiments that measure claims from the theory on real finite networks.

Each experiment compares a prediction (a rate, a bound, a limit) with a measurement,
records the comparison as a `Claim` (✓ when they agree within a stated tolerance, ✗ and
a note when they do not, e.g. a bound that holds but is loose), and writes figures,
tables and a self-contained HTML report::

    import ntkit.lab as lab
    lab.list()                                   # [(name, description), ...]
    res = lab.run("linearization", quick=True)   # -> Result; writes runs/linearization/<ts>/
    print(res.claims_table())
    lab.report()                                 # runs/index.html over all finished runs

Command line: ``ntkit lab list | run NAME [--quick] [--seed N] [--out DIR] | report``.
"""

from __future__ import annotations

import builtins
from pathlib import Path

from ntkit.lab.framework import (
    Claim,
    Context,
    LogLogFit,
    Result,
    format_claims,
    loglog_fit,
    run_experiment,
)
from ntkit.lab.registry import UnknownExperimentError, all_experiments, experiment
from ntkit.lab.report import write_index

__all__ = [
    "Claim", "Context", "LogLogFit", "Result", "UnknownExperimentError", "experiment",
    "format_claims", "list", "loglog_fit", "report", "run",
]


def list() -> builtins.list[tuple[str, str]]:  # noqa: A001 - the documented lab.list()
    """Names and one-line descriptions of every registered experiment, sorted by name."""
    return [(e.name, e.description) for e in all_experiments().values()]


def run(name: str, quick: bool = False, seed: int = 0, out: str | Path = "runs/",
        progress: bool = True, threads: int | None = None) -> Result:
    """Run experiment ``name``; write ``<out>/<name>/<timestamp>/`` and return its Result.

    Args:
      name: a name from `list()`.
      quick: the CI-sized version (each experiment under ~30 s on 2 CPU cores).
      seed: every random draw derives from it; the same seed gives the same numbers.
      out: the runs folder.
      progress: show tqdm bars and log lines on stderr.
      threads: torch intra-op threads for the run (None: leave as is; restored after).

    Returns:
      `Result`: ``claims`` (each with predicted, measured, tolerance, whether it holds
      and its source), ``tables``, ``figures`` (PNG paths), ``summary`` and ``run_dir``
      (with ``result.json`` and ``report.html``).

    Raises:
      UnknownExperimentError (a KeyError) for an unknown name.

    Example:
      >>> import tempfile
      >>> import ntkit.lab as lab
      >>> r = lab.run("kernel_limits", quick=True, out=tempfile.mkdtemp(),
      ...             progress=False, threads=1)
      >>> print(r.claims_table())                    # doctest: +SKIP
    """
    return run_experiment(name, quick=quick, seed=seed, out=out, progress=progress,
                          threads=threads)


def report(out: str | Path = "runs/") -> Path:
    """Write ``<out>/index.html`` over all finished runs (partial ones ignored); its path."""
    return write_index(out)
