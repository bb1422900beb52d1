"""The Example sections of ntkit.predict's entry points run and print what they say."""

from __future__ import annotations

import doctest

import pytest

import ntkit.predict as P
from ntkit.predict import ensemble, gp, mse


def _run_examples(obj, globs: dict) -> doctest.TestResults:
    """Run the ``>>>`` examples of ``obj``'s docstring with ``globs`` as namespace."""
    test = doctest.DocTestParser().get_doctest(obj.__doc__, dict(globs), obj.__name__,
                                                None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("module, name", [(gp, "gp_inference"), (mse, "gradient_descent_mse"),
                                          (ensemble, "gradient_descent_mse_ensemble")])
def test_examples_run(module, name):
    res = _run_examples(getattr(module, name), vars(module))
    assert res.attempted >= 5 and res.failed == 0, res
    assert getattr(P, name) is getattr(module, name)
