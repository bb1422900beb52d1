"""The Example sections of the estimators' docstrings run and print what they say."""

from __future__ import annotations

import doctest

import pytest

from ntkit import sklearn as ntsk


def _run_examples(obj, globs: dict) -> doctest.TestResults:
    """Run the ``>>>`` examples of ``obj``'s docstring with ``globs`` as namespace."""
    test = doctest.DocTestParser().get_doctest(obj.__doc__, dict(globs), obj.__name__,
                                                None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", ["NTKRegressor", "NNGPRegressor", "NTKClassifier",
                                  "NNGPClassifier"])
def test_estimator_examples_run(name):
    cls = getattr(ntsk, name)
    res = _run_examples(cls, vars(ntsk))
    assert res.attempted >= 3 and res.failed == 0, res
