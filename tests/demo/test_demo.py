"""`ntkit demo`: the report's files and structure (quick run; the page is written by the
lab's report writer), atomic writes, the demo as the lab experiment "demo", and, in the
slow full run, that the measured gap shrinks with width."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ntkit.demo.report as report
from ntkit.cli import main
from ntkit.demo import DemoConfig, run_demo, run_demo_experiment
from ntkit.demo.experiment import _discrete_linear, checkpoint_steps, fit_power_law
from ntkit.demo.figures import FIGURES
from ntkit.demo.report import MARKER, SLOPE_TOL, recomputed_slope
from ntkit.lab.report import render_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report"
    result = CliRunner().invoke(main, ["demo", "--quick", "--out", str(out)],
                                catch_exceptions=False)
    return out, result


def test_quick_demo_writes_report(quick_report):
    out, result = quick_report
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'index.html'}" in result.stdout
    html = (out / "index.html").read_text()
    for name in FIGURES.values():
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
        # embedded by the lab's writer: the page is self-contained
        assert base64.b64encode(data).decode("ascii") in html
    assert html.count("<figure") == 3 and html.count("<figcaption>") == 3
    assert "<h2>Claims</h2>" in html and "<b>by_width</b>" in html
    assert "ntkit" in html and "scikit-learn" in html
    # Nothing else is left around: no temporary directories next to the report.
    assert sorted(p.name for p in out.parent.iterdir()) == ["report"]


def test_page_is_the_lab_rendering_of_the_document(quick_report):
    # One HTML writer: index.html is exactly what the lab renders from the stored document.
    out, _ = quick_report
    doc = json.loads((out / "results.json").read_text())
    lab_doc = {k: v for k, v in doc.items() if k not in ("generator", "measurements")}
    assert (out / "index.html").read_text() == render_run(lab_doc, out)


def test_quick_results_are_self_consistent(quick_report):
    out, _ = quick_report
    doc = json.loads((out / "results.json").read_text())
    assert doc["generator"] == MARKER and doc["status"] == "complete"
    res = doc["measurements"]
    cfg = DemoConfig.quick_config()
    assert [r["width"] for r in res["widths"]] == list(cfg.widths)
    assert [r["seeds"] for r in res["widths"]] == [cfg.seeds_for(m) for m in cfg.widths]
    assert doc["tables"]["by_width"]["width"] == list(cfg.widths)
    # The claimed slope is the least-squares slope of the reported gaps, and its verdict
    # is the stated comparison with -1/2 ± SLOPE_TOL ...
    slope_claim, floor_claim = doc["claims"]
    assert slope_claim["measured"] == pytest.approx(recomputed_slope(doc), abs=1e-12)
    assert res["slope_test"] == slope_claim["measured"]
    assert slope_claim["predicted"] == -0.5 and slope_claim["tolerance"] == SLOPE_TOL
    assert slope_claim["holds"] == (abs(slope_claim["measured"] + 0.5) <= SLOPE_TOL)
    ratio = min(r["gap_test"] / r["floor_test"] for r in res["widths"])
    assert floor_claim["measured"] == pytest.approx(ratio, rel=1e-12)
    assert floor_claim["holds"] == (ratio > 10)
    # ... and the page states it.
    html = (out / "index.html").read_text()
    assert f"fitted slope is {res['slope_test']:.2f}" in html
    for r in res["widths"]:
        assert r["gap_test"] > 0 and 0 <= r["test_acc"] <= 1
    assert 0 <= res["nngp_acc"] <= 1 and 0 <= res["ntk_inf_acc"] <= 1


def test_rerun_replaces_report_and_refuses_foreign_dirs(quick_report, tmp_path):
    out, _ = quick_report
    before = (out / "results.json").read_text()
    result = CliRunner().invoke(main, ["demo", "--quick", "--seed", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "results.json").read_text() != before
    assert sorted(p.name for p in out.parent.iterdir()) == ["report"]

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    result = CliRunner().invoke(main, ["demo", "--quick", "--out", str(foreign)])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("ntkit: error:")
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_interrupted_report_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "render_run", boom)   # after the figures, before the page
    cfg = DemoConfig.quick_config(widths=(16, 32), steps=5, n_train=40, n_test=40)
    with pytest.raises(KeyboardInterrupt):
        run_demo(tmp_path / "rep", config=cfg)
    assert list(tmp_path.iterdir()) == []


def test_threads_restored():
    before = torch.get_num_threads()
    run_demo_experiment(DemoConfig.quick_config(widths=(16,), steps=3, n_train=30, n_test=30))
    assert torch.get_num_threads() == before


def test_discrete_recursion_closed_form():
    """The time-discretization floor uses the exact discrete recursion."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((12, 12))
    k, k_td = a @ a.T, rng.standard_normal((4, 12))
    y, f0, ft0 = (rng.standard_normal(s) for s in ((12, 3), (12, 3), (4, 3)))
    lam, v = np.linalg.eigh(k)
    lr = 0.7 * y.size / lam[-1]
    steps = checkpoint_steps(25, 6)
    f_cf, ft_cf = _discrete_linear(lam, v, k_td, y, f0, ft0, lr, steps)
    f, ft = f0.copy(), ft0.copy()
    for s in range(steps[-1] + 1):
        if s in steps:
            i = list(steps).index(s)
            np.testing.assert_allclose(f_cf[i], f, atol=1e-12)
            np.testing.assert_allclose(ft_cf[i], ft, atol=1e-11)
        r = (f - y) * lr / y.size
        f, ft = f - k @ r, ft - k_td @ r


def test_fit_power_law_exact():
    w = np.array([8, 16, 32, 64])
    slope, pref = fit_power_law(w, 3.0 * w ** -0.5)
    assert slope == pytest.approx(-0.5) and pref == pytest.approx(3.0)


def test_demo_is_a_lab_experiment(tmp_path):
    import ntkit.lab as lab

    cfg = DemoConfig.quick_config()
    res = lab.run("demo", quick=True, seed=0, out=tmp_path, progress=False, threads=1)
    assert [c.name for c in res.claims][0].startswith("test-output gap")
    assert len(res.claims) == 2 and res.config["widths"] == list(cfg.widths)
    assert [p.name for p in res.figures] == list(FIGURES.values())
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in res.figures)
    assert res.tables["by_width"]["width"] == list(cfg.widths)
    html = (res.run_dir / "report.html").read_text()
    assert html.count("<figcaption>") == 3
    # The same numbers as the demo's own run at the same seed and configuration.
    direct = run_demo_experiment(cfg)
    assert res.claims[0].measured == direct.slope("gap_test")[0]


@pytest.mark.slow
def test_full_demo_gap_shrinks_with_width(tmp_path):
    path, res = run_demo(tmp_path / "report")
    rows = res.by_width()
    gaps = [r["gap_test"] for r in rows]
    # Measured: the widest networks are closer to the NTK prediction than the narrowest,
    # by more than the width ratio's fourth root, and every gap is above the time-
    # discretization floor (so it is a width effect).
    ratio = rows[-1]["width"] / rows[0]["width"]
    assert gaps[-1] < gaps[0] / ratio ** 0.25, gaps
    assert all(r["gap_test"] > 10 * r["floor_test"] for r in rows)
    assert res.slope()[0] < 0
    assert re.search(r"report", path.read_text())
