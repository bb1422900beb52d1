"""The `ntkit` command: help, error paths (exit 2, one line), `fit` and `kernel` outputs."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from click.testing import CliRunner
from kernel_compare import assert_kernels_close
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ntkit.cli import main
from ntkit.sklearn import NTKClassifier, make_network

MY_COMMANDS = ["demo", "fit", "kernel"]


def _run(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture()
def iris_csv(tmp_path) -> Path:
    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])
    rows = [list(r) + [names[t]] for r, t in zip(x, y, strict=True)]
    return _write_csv(tmp_path / "iris.csv", ["sl", "sw", "pl", "pw", "species"], rows)


def _assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("ntkit: error:"), err
    assert "Traceback" not in result.output
    for frag in fragments:
        assert frag in err, (frag, err)


# ---- help ---------------------------------------------------------------------------

@pytest.mark.parametrize("args", [[], *[[c] for c in MY_COMMANDS]])
def test_help(args):
    result = _run(args + ["--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_every_registered_command_has_help():
    for name in main.commands:
        result = _run([name, "--help"])
        assert result.exit_code == 0, name


def test_console_script_entry_point():
    """The `ntkit` script declared in pyproject.toml is this click group."""
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "ntkit"]
    assert ep.value == "ntkit.cli:main" and ep.load() is main


# ---- fit: error paths ---------------------------------------------------------------

def test_fit_missing_target(iris_csv):
    _assert_user_error(_run(["fit", str(iris_csv), "--target", "nope"]), "nope", "species")


def test_fit_malformed_csv(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b,y\n1,2,0\n3,4\n5,6,1\n")
    _assert_user_error(_run(["fit", str(p), "--target", "y"]), "malformed")


def test_fit_non_numeric_column(tmp_path):
    rows = [[i, "red" if i % 2 else "blue", i % 2] for i in range(30)]
    p = _write_csv(tmp_path / "cat.csv", ["x", "colour", "y"], rows)
    _assert_user_error(_run(["fit", str(p), "--target", "y"]), "colour", "not numeric")


def test_fit_missing_value(tmp_path):
    rows = [[i, "" if i == 7 else i * 2, i % 2] for i in range(30)]
    p = _write_csv(tmp_path / "gap.csv", ["x", "z", "y"], rows)
    _assert_user_error(_run(["fit", str(p), "--target", "y"]), "missing value")


def test_fit_too_few_rows(tmp_path):
    p = _write_csv(tmp_path / "few.csv", ["x", "y"], [[i, i % 2] for i in range(6)])
    _assert_user_error(_run(["fit", str(p), "--target", "y"]), "too few rows")


def test_fit_class_smaller_than_folds(tmp_path):
    rows = [[i, 0] for i in range(20)] + [[99, 1], [98, 1]]
    p = _write_csv(tmp_path / "rare.csv", ["x", "y"], rows)
    _assert_user_error(_run(["fit", str(p), "--target", "y", "--task", "classify"]), "--cv")


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage\x00\x81"])
def test_fit_empty_or_binary_file(tmp_path, content):
    p = tmp_path / "weird.csv"
    p.write_bytes(content)
    _assert_user_error(_run(["fit", str(p), "--target", "y"]))


def test_fit_bad_option_values(iris_csv):
    _assert_user_error(_run(["fit", str(iris_csv), "--target", "species", "--depth", "x"]),
                       "--depth")
    _assert_user_error(_run(["fit", str(iris_csv), "--target", "species", "--activation",
                             "nope"]), "--activation")


def test_fit_error_in_a_real_process(tmp_path):
    """The installed program, not just CliRunner: exit 2, one stderr line, no traceback."""
    p = tmp_path / "bad.csv"
    p.write_text("a,b,y\n1,2,0\n3,4\n")
    script = shutil.which("ntkit")
    cmd = [script] if script else [sys.executable, "-m", "ntkit.cli"]
    proc = subprocess.run(cmd + ["fit", str(p), "--target", "y"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


# ---- fit: success ---------------------------------------------------------------------

def test_fit_classify_saves_model(iris_csv, tmp_path):
    out = tmp_path / "model.pkl"
    # "--depth 1 2" before the positional argument: space-separated list values.
    result = _run(["fit", "--depth", "1", "2", str(iris_csv), "--target", "species",
                   "--diag-reg", "1e-3", "1e-1", "--cv", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("NTK (ntkit)", "random forest", "RBF SVM", "k-nearest neighbours",
                 "logistic regression"):
        assert name in result.stdout
    ntk_line = next(line for line in result.stdout.splitlines() if "NTK (ntkit)" in line)
    assert float(ntk_line.split()[2]) > 0.85  # iris accuracy
    # The chosen depth is the one scikit-learn's own grid search picks on the same
    # pipeline, grid and folds (computed here without the CLI).
    x, codes = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[codes]
    ref = GridSearchCV(Pipeline([("scale", StandardScaler()), ("model", NTKClassifier())]),
                       {"model__depth": [1, 2], "model__diag_reg": [1e-3, 1e-1]},
                       scoring="accuracy",
                       cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
                       ).fit(x, labels)
    depth = ref.best_params_["model__depth"]
    assert f"depth={depth}," in ntk_line, (ref.best_params_, ntk_line)
    model = joblib.load(out)
    assert model.named_steps["model"].depth == depth
    assert set(model.predict(x)) <= {"setosa", "versicolor", "virginica"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_fit_regress(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1]
    p = _write_csv(tmp_path / "reg.csv", ["a", "b", "c", "target"],
                   [list(r) + [t] for r, t in zip(x, y, strict=True)])
    result = _run(["fit", str(p), "--target", "target", "--kernel", "nngp", "--depth", "1",
                   "--cv", "3", "--out", str(tmp_path / "m.pkl")])
    assert result.exit_code == 0, result.output
    assert "R²" in result.stdout and "ridge" in result.stdout
    ntk_line = next(line for line in result.stdout.splitlines() if "NNGP (ntkit)" in line)
    assert float(ntk_line.split()[2]) > 0.5


# ---- kernel ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["npy", "csv", "csv-header"])
def test_kernel_matches_net_kernel(tmp_path, fmt):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((37, 5))
    if fmt == "npy":
        src = tmp_path / "x.npy"
        np.save(src, x)
    else:
        src = tmp_path / "x.csv"
        with open(src, "w", newline="") as f:
            w = csv.writer(f)
            if fmt == "csv-header":
                w.writerow([f"f{i}" for i in range(5)])
            w.writerows(x.tolist())
    out = tmp_path / "K.npy"
    result = _run(["kernel", str(src), "--out", str(out), "--kernel", "nngp", "--depth", "2",
                   "--activation", "erf", "--w-std", "1.3", "--b-std", "0.2", "--tile", "16"])
    assert result.exit_code == 0, result.output
    expected = make_network(2, "erf", 1.3, 0.2).kernel(x, get="nngp").numpy()
    assert_kernels_close(np.load(out), expected, identical="diagonal", name="ntkit kernel csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, "K.npy"])


def test_kernel_default_is_ntk(tmp_path):
    x = np.random.default_rng(2).standard_normal((9, 3))
    np.save(tmp_path / "x.npy", x)
    result = _run(["kernel", str(tmp_path / "x.npy"), "--out", str(tmp_path / "K.npy")])
    assert result.exit_code == 0, result.output
    assert_kernels_close(np.load(tmp_path / "K.npy"), make_network(1).kernel(x, get="ntk"),
                         identical="diagonal", name="ntkit kernel npy")


def test_kernel_interrupted_leaves_no_file(tmp_path, monkeypatch):
    """A failure mid-computation removes the partial memmap; --out never appears."""
    import ntkit.sklearn

    class Boom:
        def kernel(self, x, get, out, **kw):
            out[:2] = 1.0  # some rows written already
            raise KeyboardInterrupt

    monkeypatch.setattr(ntkit.sklearn, "make_network", lambda *a, **k: Boom())
    np.save(tmp_path / "x.npy", np.ones((5, 2)))
    result = CliRunner().invoke(main, ["kernel", str(tmp_path / "x.npy"), "--out",
                                       str(tmp_path / "K.npy")])
    assert result.exit_code != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


@pytest.mark.parametrize("case", ["suffix", "nan", "3d", "text", "outdir"])
def test_kernel_errors(tmp_path, case):
    src, out = tmp_path / "x.npy", tmp_path / "K.npy"
    np.save(src, np.ones((4, 2)))
    if case == "suffix":
        src = tmp_path / "x.txt"
        src.write_text("1,2\n")
    elif case == "nan":
        np.save(src, np.array([[1.0, np.nan]]))
    elif case == "3d":
        np.save(src, np.ones((2, 2, 2)))
    elif case == "text":
        src = _write_csv(tmp_path / "x.csv", ["a", "b"], [[1, 2], ["x", 3]])
    else:
        out = tmp_path / "missing" / "K.npy"
    _assert_user_error(_run(["kernel", str(src), "--out", str(out)]))
