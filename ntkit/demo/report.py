"""The demo's report, written by the lab's report code (`ntkit.lab.report.render_run`).

The demo's result becomes a lab document (claims with predicted/measured/tolerance,
tables, captioned figures, configuration and environment), the same document an
``ntkit lab run demo`` writes as ``result.json``; one HTML writer renders both.

`write_report(result, out_dir)` writes ``index.html`` (figures embedded), the three PNG
figures and ``results.json`` (the lab document plus every measured number) into
``out_dir``, atomically: everything is written into a temporary sibling directory that
replaces ``out_dir`` only when complete, so an interrupted run never leaves a half report.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ntkit.demo.experiment import DemoResult, fit_power_law
from ntkit.demo.figures import FIGURES, draw_figures
from ntkit.lab.framework import environment
from ntkit.lab.records import SCHEMA_VERSION, Claim, normalize_table, to_jsonable
from ntkit.lab.report import render_run

__all__ = ["DESCRIPTION", "FIGURES", "MARKER", "SLOPE_TOL", "ReportExistsError", "check_target",
           "demo_captions", "demo_claims", "demo_document", "demo_summary", "demo_tables",
           "recomputed_slope", "write_report"]

MARKER = "ntkit-demo-report"  # in results.json: identifies a directory we may replace
DESCRIPTION = ("Finite ReLU networks trained by gradient descent on digits approach their "
               "infinite-width NTK prediction: the output gap shrinks like width^(-1/2)")
#: Tolerance of the fitted gap-vs-width slope around −1/2. The O(m^(-1/2)) rate is the
#: leading term (Lee et al. 2019, "Wide neural networks of any depth evolve as linear
#: models under gradient descent"); a fit over 7 widths of 1-4 networks each carries the
#: seed noise of the narrow widths and the O(1/m) next term, which 0.15 covers.
SLOPE_TOL = 0.15
#: A gap counts as a width effect when it exceeds the time-discretization floor this much.
FLOOR_FACTOR = 10.0


class ReportExistsError(FileExistsError):
    """The output path exists and is not a previous ntkit demo report."""


def demo_claims(res: DemoResult) -> list[Claim]:
    """The demo's claims: the gap-vs-width slope (−1/2 ± `SLOPE_TOL`) and that every gap
    is a width effect (above `FLOOR_FACTOR` times the time-discretization floor)."""
    slope, _ = res.slope("gap_test")
    rows = res.by_width()
    ratio = min(r["gap_test"] / r["floor_test"] for r in rows)
    quick = " Quick run: few widths and steps, the slope is only indicative." if \
        res.config.quick else ""
    return [
        Claim("test-output gap to the NTK prediction ∝ width^slope: slope", -0.5, slope,
              SLOPE_TOL, bool(np.isfinite(slope) and abs(slope + 0.5) <= SLOPE_TOL),
              "least-squares fit of log RMS(f_net − f_NTK) at t = T over the per-width "
              "means; theory: O(m^(-1/2)) (Lee et al. 2019, 'Wide neural networks of any "
              "depth evolve as linear models under gradient descent')." + quick),
        Claim("smallest gap / time-discretization floor", f"> {FLOOR_FACTOR:g}", ratio,
              "one-sided", bool(ratio > FLOOR_FACTOR),
              "the floor is the gap left at infinite width by discrete steps against the "
              "continuous-time prediction (exact linear recursion); above it, the gap is a "
              "finite-width effect"),
    ]


def demo_tables(res: DemoResult) -> dict[str, Any]:
    """Tables of the report: per-width means, and the infinite-width references."""
    t = int(res.checkpoints[-1])
    return {
        "by_width": res.by_width(),
        "infinite_width": [
            {"model": f"NTK, infinite ensemble (f₀ = 0), t = {t}",
             "test_accuracy": float(res.ntk_mean_acc[-1])},
            {"model": "NTK kernel regression, t = ∞", "test_accuracy": res.ntk_inf_acc},
            {"model": "NNGP posterior mean (Bayesian, t = ∞)", "test_accuracy": res.nngp_acc},
        ],
    }


def demo_summary(res: DemoResult) -> str:
    """The report's opening paragraphs, with the measured numbers."""
    cfg = res.config
    rows = res.by_width()
    slope, _ = res.slope("gap_test")
    w0, w1 = cfg.widths[0], cfg.widths[-1]
    g0, g1 = rows[0]["gap_test"], rows[-1]["gap_test"]
    quick = ("\n\nQuick smoke-test configuration: small sizes, the numbers are not "
             "meaningful.") if cfg.quick else ""
    return (
        f"Networks of width {w0}–{w1}, built from one ntkit layer spec ({cfg.depth} hidden "
        f"layer(s), {cfg.activation}, NTK parameterization), were trained on "
        f"{cfg.n_train} digits by full-batch gradient descent for {cfg.steps} steps and "
        "compared throughout training with the closed-form infinite-width NTK prediction "
        "gradient_descent_mse(Θ, y, η)(t, f₀) started from each network's own initial "
        f"outputs f₀ (Jacot, Gabriel & Hongler 2018, 'Neural tangent kernel: convergence and "
        "generalization in neural networks'). The RMS gap on "
        f"{cfg.n_test} test digits falls from {g0:.3f} at width {w0} to {g1:.4f} at width "
        f"{w1} ({g0 / g1:.1f}×); the fitted slope is {slope:.2f}, theory −0.5.\n\n"
        f"Test accuracy at t = ∞: NTK kernel regression {res.ntk_inf_acc:.1%}, NNGP "
        f"posterior mean {res.nngp_acc:.1%}. Learning rate η = {res.learning_rate:.4g} = "
        f"{cfg.lr_fraction} · N / λ_max(Θ); time is counted in gradient-descent steps, and "
        f"the closed form uses the same units. {len(res.runs)} networks trained in "
        f"{res.seconds:.0f} s." + quick)


def demo_captions(res: DemoResult) -> dict[str, str]:
    """Caption of each figure file."""
    cfg = res.config
    t = int(res.checkpoints[-1])
    return {
        FIGURES["gap"]: (
            f"(a) RMS difference, at t = {t}, between the outputs of a trained width-m "
            "network and the NTK prediction from that network's own f₀, on the test "
            "images (blue; small dots are single networks, large dots their mean) and the "
            "training images (orange), with least-squares fits and the theoretical slope "
            "−1/2 (dotted). Dashed: the gap discrete time steps alone leave at infinite "
            "width. (b) Test outputs of the narrowest and the widest network against their "
            "NTK predictions: the cloud collapses onto the diagonal as width grows."),
        FIGURES["dynamics"]: (
            "(a) Training loss of one network per width (solid, colour = width) and of the "
            "NTK prediction from its f₀ (dashed); black: the infinite-ensemble mean "
            "prediction (f₀ = 0). (b) The test-output gap over training, averaged over the "
            "networks of each width, and (grey dashed) the part that discrete time steps "
            "alone produce. (c) Test accuracy: networks (solid), their NTK predictions "
            "(dashed), NTK infinite ensemble (black), NTK at t = ∞ (dotted), NNGP posterior "
            "mean (red dashed)."),
        FIGURES["kernel"]: (
            f"Infinite-width NTK Θ and NNGP K of the {cfg.n_train} training images, sorted "
            "by digit and normalized to unit diagonal. Blocks along the diagonal are what "
            "lets kernel regression classify: images of one digit are more alike than "
            "images of different digits."),
    }


def demo_document(res: DemoResult, meta: dict[str, Any]) -> dict[str, Any]:
    """The lab document (the schema of the lab's ``result.json``) of a demo result.

    ``meta``: ``started`` (text), ``command`` and ``environment`` (a dict) of the run.
    """
    cfg = res.config
    claims = demo_claims(res)
    config = {"experiment": "demo", "quick": cfg.quick, "seed": cfg.seed, **cfg.as_dict(),
              "learning_rate": res.learning_rate, "lambda_max": res.lambda_max,
              "final_time": int(res.checkpoints[-1]), "command": meta.get("command", "")}
    return to_jsonable({
        "schema": SCHEMA_VERSION, "status": "complete", "name": "demo",
        "description": DESCRIPTION, "config": config,
        "environment": meta.get("environment", {}), "started": meta.get("started", ""),
        "wall_time_s": res.seconds, "summary": demo_summary(res),
        "claims": [c.to_dict() for c in claims], "n_claims": len(claims),
        "n_holding": sum(c.holds for c in claims),
        "tables": {k: normalize_table(k, v) for k, v in demo_tables(res).items()},
        "figures": list(FIGURES.values()), "captions": demo_captions(res), "log": [],
    })


def check_target(out: Path) -> None:
    """Refuse to replace anything but an empty directory or a previous demo report."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise ReportExistsError(f"{out} exists and is not a directory")
    entries = list(out.iterdir())
    if not entries:
        return
    try:
        tag = json.loads((out / "results.json").read_text()).get("generator")
    except (OSError, ValueError, AttributeError):
        tag = None
    if tag != MARKER:
        raise ReportExistsError(f"{out} exists and is not an ntkit demo report; "
                                "choose another --out")


def write_report(res: DemoResult, out_dir: str | os.PathLike, *, command: str = "ntkit demo",
                 started: float | None = None) -> Path:
    """Write the report atomically; returns the path of ``index.html``.

    Raises:
      ReportExistsError: ``out_dir`` exists and is neither empty nor a previous report.
    """
    import sklearn

    out = Path(out_dir).absolute()
    check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time() - res.seconds if started is None else started
    env = {**environment(), "scikit-learn": sklearn.__version__}
    meta = {"command": command, "environment": env,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started))}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        draw_figures(res, tmp)
        doc = demo_document(res, meta)
        data = {**doc, "generator": MARKER, "measurements": to_jsonable(res.summary())}
        (tmp / "results.json").write_text(json.dumps(data, indent=1, ensure_ascii=False),
                                          encoding="utf-8")
        (tmp / "index.html").write_text(render_run(doc, tmp), encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out`` by the finished directory ``tmp`` with renames only."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(old)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)  # put the previous report back
        raise
    shutil.rmtree(old, ignore_errors=True)


def recomputed_slope(results_json: dict[str, Any]) -> float:
    """The log–log slope recomputed from the per-width gaps stored in results.json."""
    rows = results_json["measurements"]["widths"]
    return fit_power_law([r["width"] for r in rows], [r["gap_test"] for r in rows])[0]
