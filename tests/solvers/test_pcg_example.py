"""The Example section of `ntkit.solvers.pcg` runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib

# (ntkit.solvers.pcg, the attribute, is the function; the module by its full name.)
pcg_module = importlib.import_module("ntkit.solvers.pcg")


def _run_examples(obj, globs: dict) -> doctest.TestResults:
    """Run the ``>>>`` examples of ``obj``'s docstring with ``globs`` as namespace."""
    test = doctest.DocTestParser().get_doctest(obj.__doc__, dict(globs), obj.__name__,
                                                None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    return runner.summarize(verbose=False)


def test_pcg_example_runs():
    res = _run_examples(pcg_module.pcg, vars(pcg_module))
    assert res.attempted >= 6 and res.failed == 0, res
