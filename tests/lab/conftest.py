"""The one shared fixture of the lab tests: a quick run of the module's experiment.

A test module names its experiment in ``EXPERIMENT`` and uses the module-scoped ``result``
fixture; the experiment then runs once per module, in quick mode, seed 0, one thread.
"""

from __future__ import annotations

import pytest

import ntkit.lab as lab


@pytest.fixture(scope="module")
def result(request, tmp_path_factory):
    name = getattr(request.module, "EXPERIMENT", None)
    if name is None:
        raise RuntimeError(f"{request.module.__name__} uses the lab `result` fixture but "
                           "names no EXPERIMENT")
    out = tmp_path_factory.mktemp("runs")
    return lab.run(name, quick=True, seed=0, out=out, progress=False, threads=1)
