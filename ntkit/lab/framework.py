"""The lab's framework: claims, results, the context an experiment runs in, and `run`.

An experiment is a function ``fn(ctx: Context) -> str | None`` registered with
``@ntkit.lab.registry.experiment``. It measures something on real finite networks,
records each prediction-vs-measurement comparison with ``ctx.claim(...)``, raw numbers
with ``ctx.table(...)`` and figures under ``ctx.figure_path(...)``, and returns a summary.
`run_experiment` gives it a seeded, isolated environment and writes

    <out>/<experiment>/<timestamp>/
        result.json     config (quick, seed, ...), environment, claims, tables, figures, time
        <figure>.png    each figure (matplotlib, Agg)
        report.html     self-contained page (figures embedded as base64)

The folder is built as ``<out>/<experiment>/.<timestamp>.partial`` and renamed into place
with `os.replace` only once complete, so an interrupted run never leaves a folder that
reads as a finished one (the partial folder is removed on an exception; one left by a
killed process stays hidden and is ignored by `ntkit.lab.report`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import random
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ntkit
from ntkit.engine.threads import torch_threads
from ntkit.lab import registry
from ntkit.lab.data import digits_subset
from ntkit.lab.records import (
    REPORT_FILE,
    RESULT_FILE,
    Claim,
    Result,
    fmt_value,
    format_claims,
    is_complete_run,
    normalize_table,
)
from ntkit.lab.report import render_run

# Claim, Result, format_claims and is_complete_run live in ntkit.lab.records and
# digits_subset in ntkit.lab.data; they are re-exported here because experiments and users
# have always imported them from here.
__all__ = ["REPORT_FILE", "RESULT_FILE", "Claim", "Context", "LogLogFit", "Result",
           "digits_subset", "environment", "fmt_value", "format_claims", "is_complete_run",
           "loglog_fit", "run_experiment"]



# ---------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class LogLogFit:
    """Least-squares line log(y) = intercept + slope·log(x), with the slope's std. error."""

    slope: float
    intercept: float
    slope_se: float
    n: int

    def __call__(self, x: Any) -> np.ndarray:
        """The fitted power law c·x^slope at x."""
        return np.exp(self.intercept) * np.asarray(x, dtype=np.float64) ** self.slope

    def label(self, what: str = "slope") -> str:
        return f"{what} {self.slope:+.3f} ± {self.slope_se:.3f}"


def loglog_fit(x: Any, y: Any) -> LogLogFit:
    """Fit y ≈ c·x^slope by least squares on logs (non-positive/non-finite points dropped).

    The standard error assumes independent residuals; with few points it understates
    systematic curvature (finite-size corrections), which is why claims on slopes carry a
    tolerance wider than it.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lx, ly = np.log(x[ok]), np.log(y[ok])
    n = int(lx.size)
    if n < 2 or np.ptp(lx) == 0:
        return LogLogFit(float("nan"), float("nan"), float("nan"), n)
    a = np.stack([lx, np.ones_like(lx)], axis=1)
    coef, *_ = np.linalg.lstsq(a, ly, rcond=None)
    slope, intercept = float(coef[0]), float(coef[1])
    se = float("nan")
    if n > 2:
        resid = ly - a @ coef
        s2 = float(resid @ resid) / (n - 2)
        se = math.sqrt(s2 / float(((lx - lx.mean()) ** 2).sum()))
    return LogLogFit(slope, intercept, se, n)


def _as_float(x: Any) -> float:
    if isinstance(x, torch.Tensor):
        return float(x.detach().cpu().reshape(()).item())
    return float(x)


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded with every run."""
    import matplotlib

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "ntkit": getattr(ntkit, "__version__", "unknown"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }


# ---------------------------------------------------------------------------- context
class Context:
    """What an experiment function gets: run settings and the recording methods.

    Attributes:
      name: the experiment's name.
      quick: True for the CI-sized version (each experiment under ~30 s on 2 cores).
      seed: the run's seed; every random draw must derive from it (`rng`, `seed_for`).
      out_dir: the folder being written (hidden and temporary until the run completes).
      config: experiment parameters to record (widths, steps, ...); update it freely.
    """

    def __init__(self, name: str, quick: bool, seed: int, out_dir: Path,
                 show_progress: bool = True):
        self.name = name
        self.quick = bool(quick)
        self.seed = int(seed)
        self.out_dir = Path(out_dir)
        self.show_progress = bool(show_progress)
        self.config: dict[str, Any] = {}
        self.claims: list[Claim] = []
        self.tables: dict[str, dict[str, list]] = {}
        self.figures: list[str] = []
        self.captions: dict[str, str] = {}
        self.messages: list[str] = []
        self._n_rng = 0
        self._t0 = time.perf_counter()

    # -- randomness ------------------------------------------------------------------
    def seed_for(self, key: str | int) -> int:
        """A seed derived from (run seed, key): stable across runs, distinct across keys.

        Use it where an API takes an int seed (``net.build(d, seed=ctx.seed_for(...))``)
        so that results do not depend on the order in which draws happen.
        """
        h = hashlib.sha256(f"{self.seed}:{key}".encode()).digest()
        return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)

    def rng(self, key: str | int | None = None) -> torch.Generator:
        """A seeded ``torch.Generator``.

        With a key, seeded by ``seed_for(key)``; without, each call gets the next seed of
        a per-run sequence (reproducible as long as the calls happen in the same order).
        """
        if key is None:
            key = f"__rng{self._n_rng}"
            self._n_rng += 1
        g = torch.Generator()
        g.manual_seed(self.seed_for(key))
        return g

    def np_rng(self, key: str | int | None = None) -> np.random.Generator:
        """A seeded numpy Generator (same seeding rules as `rng`)."""
        if key is None:
            key = f"__nprng{self._n_rng}"
            self._n_rng += 1
        return np.random.default_rng(self.seed_for(key))

    # -- outputs ---------------------------------------------------------------------
    def figure_path(self, name: str, caption: str = "") -> Path:
        """Where to save the PNG of figure ``name`` (no extension); records the figure and,
        if given, the caption the report prints under it."""
        name = _safe_name(name)
        if name not in self.figures:
            self.figures.append(name)
        if caption:
            self.captions[name] = str(caption)
        return self.out_dir / f"{name}.png"

    def savefig(self, fig: Any, name: str, dpi: int = 110, caption: str = "") -> Path:
        """Save a matplotlib figure as ``name``.png and close it (if pyplot manages it)."""
        path = self.figure_path(name, caption)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        if "matplotlib.pyplot" in sys.modules:
            import matplotlib.pyplot as plt

            plt.close(fig)
        return path

    @staticmethod
    def new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.0, 3.8)):
        """``(fig, axes)`` on a pyplot-free Agg Figure: no global state, no display needed."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(size[0] * ncols, size[1] * nrows))
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        return fig, (axes[0, 0] if nrows == ncols == 1 else axes.ravel().tolist())

    def claim(self, name: str, predicted: float | str, measured: Any,
              tolerance: float | str, holds: bool | None = None, note: str = "") -> Claim:
        """Record a prediction-vs-measurement comparison.

        With ``holds=None`` the claim holds when |measured − predicted| ≤ tolerance, which
        needs numeric predicted and tolerance; a NaN measurement never holds. Give
        ``holds`` explicitly for one-sided or qualitative criteria (and say which in
        ``tolerance`` or ``note``).
        """
        m = _as_float(measured)
        if holds is None:
            if isinstance(predicted, str) or isinstance(tolerance, str):
                raise ValueError(f"claim {name!r}: give holds= when predicted or tolerance "
                                 "is a string")
            p, tol = _as_float(predicted), _as_float(tolerance)
            holds = bool(math.isfinite(m) and abs(m - p) <= tol)
            predicted, tolerance = p, tol
        c = Claim(str(name), predicted, m, tolerance, bool(holds), str(note))
        self.claims.append(c)
        self.log(f"claim {'✓' if c.holds else '✗'} {c.name}: predicted "
                 f"{fmt_value(c.predicted)}, measured {fmt_value(c.measured)}")
        return c

    def table(self, name: str, data: Any) -> dict[str, list]:
        """Record raw numbers: a dict of columns (lists/arrays) or a list of row dicts."""
        cols = normalize_table(name, data)
        self.tables[str(name)] = cols
        return cols

    def progress(self, iterable: Iterable, desc: str, total: int | None = None) -> Iterable:
        """Wrap ``iterable`` in a tqdm bar (on stderr) unless progress is disabled."""
        if not self.show_progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=f"{self.name}: {desc}", total=total, leave=False,
                    file=sys.stderr, dynamic_ncols=True)

    def log(self, msg: str) -> None:
        """Record a message (kept in result.json; echoed to stderr when progress is on)."""
        line = f"[{time.perf_counter() - self._t0:7.1f}s] {msg}"
        self.messages.append(line)
        if self.show_progress:
            from tqdm.auto import tqdm

            tqdm.write(line, file=sys.stderr)


def _safe_name(name: str) -> str:
    bad = set('/\\:*?"<>| \t\n')
    s = "".join("_" if ch in bad else ch for ch in str(name)).strip("._")
    if not s:
        raise ValueError(f"bad figure name {name!r}")
    return s


# ---------------------------------------------------------------------------- running
@contextlib.contextmanager
def _isolated_state(seed: int, threads: int | None = None) -> Iterator[None]:
    """Seed every global RNG, compute in float64, draw with Agg, optionally set torch's
    thread count; restore all afterwards."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    old_dtype = torch.get_default_dtype()
    plt = sys.modules.get("matplotlib.pyplot")
    old_backend = None
    old_figs: set[int] = set()
    if plt is not None:
        old_figs = set(plt.get_fignums())
        import matplotlib

        old_backend = matplotlib.get_backend()
        if old_backend.lower() != "agg":
            plt.switch_backend("agg")
    # (if pyplot is not imported, nothing to switch: experiments draw on Agg canvases via
    # Context.new_figure, and pyplot imported later resolves to Agg on a headless machine)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed % (2**32))
            random.seed(seed)
            torch.set_default_dtype(torch.float64)
            with torch_threads(threads):
                yield
    finally:
        torch.set_default_dtype(old_dtype)
        np.random.set_state(np_state)
        random.setstate(py_state)
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            for num in set(plt.get_fignums()) - old_figs:
                plt.close(num)
            if old_backend is not None and old_backend.lower() != "agg":
                with contextlib.suppress(Exception):
                    plt.switch_backend(old_backend)


def _timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def run_experiment(name: str, quick: bool = False, seed: int = 0, out: str | Path = "runs/",
                   progress: bool = True, threads: int | None = None) -> Result:
    """Run the registered experiment ``name`` and write its run folder (see module doc).

    ``threads`` sets torch's intra-op thread count for the run (restored afterwards); on a
    small shared machine 1 thread avoids OpenMP oversubscription, which can slow the small
    matrix products of these experiments down by orders of magnitude. Results are
    reproducible for a fixed seed *and* thread count (reduction order may change the last
    bits across thread counts).

    Raises:
      UnknownExperimentError (a KeyError) for an unknown name; whatever the experiment
      raises (after removing the partial folder).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    exp = registry.get(name)
    exp_dir = Path(out) / exp.name
    exp_dir.mkdir(parents=True, exist_ok=True)
    stamp = _timestamp()
    partial = exp_dir / f".{stamp}.{os.getpid()}.{time.monotonic_ns()}.partial"
    partial.mkdir()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    ctx = Context(exp.name, quick, int(seed), partial, show_progress=progress)
    t0 = time.perf_counter()
    try:
        with _isolated_state(int(seed), threads):
            env = environment()   # inside: records the thread count the run used
            summary = exp.fn(ctx)
        wall = time.perf_counter() - t0
        figures = [f for f in ctx.figures if (partial / f"{f}.png").is_file()]
        missing = [f for f in ctx.figures if f not in figures]
        if missing:
            ctx.log(f"figures requested but never saved: {', '.join(missing)}")
        config = {"experiment": exp.name, "quick": ctx.quick, "seed": ctx.seed, **ctx.config}
        result = Result(name=exp.name, config=config, claims=ctx.claims, tables=ctx.tables,
                        figures=[partial / f"{f}.png" for f in figures], run_dir=None,
                        summary=str(summary or ""), description=exp.description,
                        environment=env, wall_time_s=wall, started=started,
                        log=ctx.messages,
                        captions={f"{f}.png": ctx.captions[f] for f in figures
                                  if f in ctx.captions})
        doc = result.to_dict()
        (partial / RESULT_FILE).write_text(json.dumps(doc, indent=1, ensure_ascii=False,
                                                      allow_nan=False), encoding="utf-8")
        (partial / REPORT_FILE).write_text(render_run(doc, partial), encoding="utf-8")
        final = _publish(partial, exp_dir, stamp)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    result.run_dir = final
    result.figures = [final / p.name for p in result.figures]
    return result


def _publish(partial: Path, exp_dir: Path, stamp: str) -> Path:
    """Rename the finished partial folder to a free ``<stamp>[-k]`` name, atomically."""
    for k in range(1000):
        final = exp_dir / (stamp if k == 0 else f"{stamp}-{k}")
        if final.exists():
            continue
        try:
            os.replace(partial, final)   # atomic; fails if final appeared meanwhile
        except OSError:
            continue
        return final
    raise RuntimeError(f"could not find a free run folder name under {exp_dir}")


