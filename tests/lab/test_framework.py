"""The lab framework: registry, run folders, result.json, atomic writes, report, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ntkit.lab as lab
from ntkit.lab import registry
from ntkit.lab.cli import lab as lab_cli
from ntkit.lab.framework import (
    Claim,
    Context,
    Result,
    digits_subset,
    format_claims,
    is_complete_run,
    loglog_fit,
)

OK, FAIL = "tst_ok", "tst_fail"


def _ok(ctx: Context) -> str:
    """A tiny experiment that uses every recording method and every source of randomness."""
    ctx.config["width"] = 7
    g = ctx.rng("weights")
    a = torch.randn(3, generator=g)
    b = torch.randn(3)                       # torch's global RNG, seeded by the run
    c = np.random.standard_normal(3)         # numpy's global RNG, seeded by the run
    ctx.claim("exact", 1.0, 1.0 + 1e-12, 1e-9)
    ctx.claim("numeric fails", 0.0, 1.0, 0.5)
    ctx.claim("one-sided", "≤ 2", 1.5, "one-sided", holds=True, note="why")
    ctx.table("cols", {"x": [1, 2, 3], "y": torch.tensor([0.5, float("nan"), 2.0])})
    ctx.table("rows", [{"a": 1, "b": 2.0}, {"a": 2, "c": "z"}])
    ctx.table("draws", {"a": a, "b": b, "c": c, "dtype": [str(torch.get_default_dtype())] * 3})
    fig, ax = ctx.new_figure()
    ax.plot([1, 2, 3], [1, 4, 9])
    ax.set_xlabel("x")
    ctx.savefig(fig, "curve", caption="a parabola <x²>")
    for _ in ctx.progress(range(3), "loop"):
        pass
    ctx.log("done")
    return "summary text"


class Boom(RuntimeError):
    pass


def _fail(ctx: Context) -> None:
    fig, ax = ctx.new_figure()
    ax.plot([0, 1])
    ctx.savefig(fig, "half_done")
    ctx.claim("c", 0.0, 0.0, 1.0)
    raise Boom("interrupted mid-run")


@pytest.fixture(autouse=True)
def toy_experiments():
    registry.experiment(OK, "a toy experiment")(_ok)
    registry.experiment(FAIL, "a toy experiment that fails")(_fail)
    yield
    registry.unregister(OK)
    registry.unregister(FAIL)


def _run(tmp_path: Path, name: str = OK, seed: int = 0, **kw) -> Result:
    return lab.run(name, quick=True, seed=seed, out=tmp_path, progress=False, **kw)


# --------------------------------------------------------------------------- registry
def test_registry_lists_and_rejects():
    names = dict(lab.list())
    assert names[OK] == "a toy experiment"
    for exp in ("kernel_convergence", "linearization", "lazy_training"):
        assert exp in names and names[exp]
    assert [n for n, _ in lab.list()] == sorted(names)
    with pytest.raises(ValueError, match="already registered"):
        registry.experiment(OK, "other")(lambda ctx: None)
    with pytest.raises(ValueError, match="snake_case"):
        registry.experiment("Bad Name", "x")
    with pytest.raises(KeyError):
        lab.run("no_such_experiment", out="/nonexistent/never/written")


def test_claim_rules(tmp_path):
    ctx = Context("x", True, 0, tmp_path, show_progress=False)
    assert ctx.claim("in", 1.0, 1.05, 0.1).holds
    assert not ctx.claim("out", 1.0, 1.2, 0.1).holds
    assert not ctx.claim("nan", 1.0, float("nan"), 10.0).holds
    assert ctx.claim("tensor", 0.0, torch.tensor(0.01), 0.1).measured == pytest.approx(0.01)
    with pytest.raises(ValueError, match="holds="):
        ctx.claim("str", "≤ 1", 0.5, 0.1)
    assert "✓" in format_claims(ctx.claims) and "✗" in format_claims(ctx.claims)


def test_seeds_and_rngs_are_stable(tmp_path):
    a = Context("x", True, 3, tmp_path)
    b = Context("x", True, 3, tmp_path)
    assert a.seed_for("k") == b.seed_for("k") != a.seed_for("j")
    assert torch.equal(torch.randn(4, generator=a.rng()), torch.randn(4, generator=b.rng()))
    assert not torch.equal(torch.randn(4, generator=a.rng()),
                           torch.randn(4, generator=a.rng()))   # sequence advances
    assert Context("x", True, 4, tmp_path).seed_for("k") != a.seed_for("k")


def test_loglog_fit_recovers_power_law():
    x = np.array([2.0, 4, 8, 16, 32])
    fit = loglog_fit(x, 3.0 * x ** -0.5)
    assert fit.slope == pytest.approx(-0.5, abs=1e-12)
    assert fit(8.0) == pytest.approx(3.0 * 8 ** -0.5)
    assert math.isnan(loglog_fit([1.0], [1.0]).slope)


def test_digits_subset_normalization():
    x, y = digits_subset(10, 0)
    assert x.dtype == torch.float64 and x.shape == (10, 64) and y.shape == (10,)
    assert torch.allclose((x * x).sum(1), torch.full((10,), 64.0, dtype=torch.float64))
    xu, _ = digits_subset(10, 0, norm="unit")
    assert torch.allclose(xu.norm(dim=1), torch.ones(10, dtype=torch.float64))
    assert torch.equal(digits_subset(10, 0)[0], x)


# --------------------------------------------------------------------------- run folder
def test_run_folder_layout_and_json(tmp_path):
    state = torch.random.get_rng_state()
    dtype = torch.get_default_dtype()
    res = _run(tmp_path, seed=5, threads=1)
    # globals restored after the run
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.get_default_dtype() == dtype

    assert res.run_dir is not None and res.run_dir.parent == tmp_path / OK
    assert not res.run_dir.name.startswith(".")
    files = sorted(p.name for p in res.run_dir.iterdir())
    assert files == ["curve.png", "report.html", "result.json"]
    assert [p.name for p in (tmp_path / OK).iterdir()] == [res.run_dir.name]  # no leftovers
    assert res.figures == [res.run_dir / "curve.png"]
    assert (res.run_dir / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert res.summary == "summary text" and not res.all_hold

    doc = json.loads((res.run_dir / "result.json").read_text())
    assert doc["status"] == "complete" and doc["name"] == OK
    assert doc["config"] == {"experiment": OK, "quick": True, "seed": 5, "width": 7}
    env = doc["environment"]
    for key in ("python", "torch", "numpy", "ntkit", "platform", "torch_threads"):
        assert key in env
    assert env["torch_threads"] == 1
    assert doc["wall_time_s"] >= 0
    assert [c["name"] for c in doc["claims"]] == ["exact", "numeric fails", "one-sided"]
    assert [c["holds"] for c in doc["claims"]] == [True, False, True]
    assert doc["n_claims"] == 3 and doc["n_holding"] == 2
    assert doc["tables"]["cols"] == {"x": [1, 2, 3], "y": [0.5, None, 2.0]}
    assert doc["tables"]["rows"] == {"a": [1, 2], "b": [2.0, None], "c": [None, "z"]}
    assert doc["tables"]["draws"]["dtype"][0] == "torch.float64"   # runs in float64
    assert doc["figures"] == ["curve.png"]
    assert doc["captions"] == {"curve.png": "a parabola <x²>"}
    assert any("done" in line for line in doc["log"])

    html = (res.run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "✓" in html and "✗" in html
    assert "numeric fails" in html and "summary text" in html
    assert "<figcaption><b>curve.png</b>. a parabola &lt;x²&gt;</figcaption>" in html

    back = Result.load(res.run_dir)
    assert back.name == OK and [c.holds for c in back.claims] == [True, False, True]
    assert isinstance(back.claims[0], Claim) and back.figures == res.figures
    assert back.captions == res.captions == {"curve.png": "a parabola <x²>"}


def test_same_seed_same_numbers(tmp_path):
    a, b, c = _run(tmp_path, seed=1), _run(tmp_path, seed=1), _run(tmp_path, seed=2)
    assert a.run_dir != b.run_dir
    assert a.tables["draws"] == b.tables["draws"]
    assert [x.measured for x in a.claims] == [x.measured for x in b.claims]
    for col in ("a", "b", "c"):
        assert a.tables["draws"][col] != c.tables["draws"][col]


def test_interrupted_run_leaves_nothing_complete(tmp_path):
    with pytest.raises(Boom):
        _run(tmp_path, name=FAIL)
    exp_dir = tmp_path / FAIL
    leftovers = list(exp_dir.iterdir()) if exp_dir.exists() else []
    assert leftovers == []
    assert not list(tmp_path.rglob("result.json"))
    # a process killed mid-run leaves its hidden partial folder: never read as a run
    ghost = exp_dir / ".20990101-000000.partial"
    ghost.mkdir(parents=True)
    (ghost / "result.json").write_text(json.dumps({"status": "complete", "name": FAIL}))
    assert not is_complete_run(ghost)
    index = lab.report(tmp_path)
    assert "20990101" not in index.read_text()


def test_report_index(tmp_path):
    r1, r2 = _run(tmp_path, seed=0), _run(tmp_path, seed=1)
    index = lab.report(tmp_path)
    assert index == tmp_path / "index.html"
    html = index.read_text()
    for r in (r1, r2):
        assert f"{OK}/{r.run_dir.name}/report.html" in html
        assert (index.parent / OK / r.run_dir.name / "report.html").is_file()
    assert "2/3" in html
    empty = lab.report(tmp_path / "empty")
    assert "No finished runs" in empty.read_text()


# --------------------------------------------------------------------------- CLI
def test_cli_list_run_report(tmp_path):
    runner = CliRunner()
    out = runner.invoke(lab_cli, ["list"])
    assert out.exit_code == 0 and OK in out.output and "linearization" in out.output

    out = runner.invoke(lab_cli, ["run", OK, "--quick", "--seed", "3", "--out", str(tmp_path),
                                  "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "exact" in out.output and "2/3 claims hold" in out.output
    run_dirs = [p for p in (tmp_path / OK).iterdir()]
    assert len(run_dirs) == 1 and str(run_dirs[0]) in out.output
    assert json.loads((run_dirs[0] / "result.json").read_text())["config"]["seed"] == 3

    strict = runner.invoke(lab_cli, ["run", OK, "--out", str(tmp_path), "--no-progress",
                                     "--strict"])
    assert strict.exit_code == 1

    out = runner.invoke(lab_cli, ["report", "--out", str(tmp_path)])
    assert out.exit_code == 0 and out.output.strip() == str(tmp_path / "index.html")


def test_cli_unknown_name_exits_2(tmp_path):
    out = CliRunner().invoke(lab_cli, ["run", "nope", "--out", str(tmp_path)])
    assert out.exit_code == 2
    lines = [ln for ln in out.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown experiment 'nope'" in lines[0]
    assert not (tmp_path / "nope").exists()
