"""`help(ntkit.linearize)` documents the function itself, and its examples run."""

from __future__ import annotations

import doctest

import torch
from torch import nn

import ntkit
from ntkit.linearize import linearize, taylor_expand


def _run_examples(fn) -> doctest.TestResults:
    torch.manual_seed(0)
    parser = doctest.DocTestParser()
    test = parser.get_doctest(fn.__doc__, {"torch": torch, "nn": nn, fn.__name__: fn},
                              fn.__name__, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    return runner.summarize(verbose=False)


def test_linearize_docstring_is_complete():
    doc = ntkit.linearize.__doc__
    assert "see the module docstring" not in doc.lower()
    for section in ("Args:", "Returns:", "Raises:", "Example:", "nt.linearize"):
        assert section in doc, section


def test_docstring_examples_run():
    for fn in (linearize, taylor_expand):
        res = _run_examples(fn)
        assert res.attempted >= 2 and res.failed == 0, (fn.__name__, res)
