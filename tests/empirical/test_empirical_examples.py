"""The Example section of `empirical_ntk` runs and prints what it says."""

from __future__ import annotations

import doctest

from ntkit.empirical import api


def _run_examples(obj, globs: dict) -> doctest.TestResults:
    """Run the ``>>>`` examples of ``obj``'s docstring with ``globs`` as namespace."""
    test = doctest.DocTestParser().get_doctest(obj.__doc__, dict(globs), obj.__name__,
                                                None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    return runner.summarize(verbose=False)


def test_empirical_ntk_example_runs():
    res = _run_examples(api.empirical_ntk, vars(api))
    assert res.attempted >= 5 and res.failed == 0, res
