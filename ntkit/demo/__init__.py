"""The ``ntkit demo`` experiment: finite networks trained by gradient descent on digits,
compared with their infinite-width NTK prediction, written up as an HTML report.

- `DemoConfig`, `run_demo_experiment` (:mod:`ntkit.demo.experiment`): the measurements;
- `write_report` (:mod:`ntkit.demo.report`): claims, tables and figures
  (:mod:`ntkit.demo.figures`) as a lab document, rendered by the lab's report writer
  into ``index.html``;
- `run_demo`: both, as the command line runs them.

The same experiment runs in the lab as ``ntkit lab run demo`` (`ntkit.lab.run("demo")`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from ntkit.demo.experiment import DemoConfig, DemoResult, run_demo_experiment
from ntkit.demo.report import ReportExistsError, check_target, write_report

__all__ = ["DemoConfig", "DemoResult", "ReportExistsError", "check_target", "run_demo",
           "run_demo_experiment", "write_report"]


def run_demo(out_dir: str | os.PathLike = "ntkit-report", *, quick: bool = False,
             config: DemoConfig | None = None, progress=None,
             log: Callable[[str], None] | None = None,
             command: str = "ntkit demo") -> tuple[Path, DemoResult]:
    """Run the experiment and write the report; returns (path of index.html, result).

    Args:
      out_dir: report directory (replaced atomically when it holds a previous report).
      quick: the few-second smoke configuration (ignored when ``config`` is given).
      config: a full `DemoConfig`.
      progress, log: see `run_demo_experiment`.
      command: the command line recorded in the report.
    """
    started = time.time()
    check_target(Path(out_dir).absolute())  # fail before minutes of training, not after
    cfg = config or (DemoConfig.quick_config() if quick else DemoConfig())
    result = run_demo_experiment(cfg, progress=progress, log=log)
    t0 = time.perf_counter()
    path = write_report(result, out_dir, command=command, started=started)
    if log is not None:
        log(f"figures and report written in {time.perf_counter() - t0:.1f} s")
    return path, result
