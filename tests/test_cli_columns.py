"""`ntkit kernel` on a CSV: --target/--drop leave columns out, and the columns used are
printed."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ntkit.cli import main
from ntkit.sklearn import make_network


def _csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture()
def table(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 3))
    ids = np.arange(7.0)
    y = x[:, 0] * 2.0
    rows = [[i, *r, t] for i, r, t in zip(ids, x, y, strict=True)]
    return _csv(tmp_path / "data.csv", ["id", "a", "b", "c", "y"], rows), x


def _run(args):
    return CliRunner().invoke(main, ["kernel", *args], catch_exceptions=False)


def test_target_and_drop_leave_columns_out(table, tmp_path):
    path, x = table
    out = tmp_path / "k.npy"
    res = _run([str(path), "--out", str(out), "--target", "y", "--drop", "id"])
    assert res.exit_code == 0, res.output
    assert "features: 3 columns: a, b, c (left out: y, id)" in res.stderr
    ref = make_network(1).kernel(torch.tensor(x), get="ntk").numpy()
    np.testing.assert_allclose(np.load(out), ref, rtol=1e-12, atol=0)


def test_all_columns_are_announced(table, tmp_path):
    path, _ = table
    res = _run([str(path), "--out", str(tmp_path / "k.npy")])
    assert res.exit_code == 0, res.output
    assert ("features: 5 columns: id, a, b, c, y (all columns; leave a target out with "
            "--target)") in res.stderr
    assert np.load(tmp_path / "k.npy").shape == (7, 7)


def test_drop_takes_comma_lists(table, tmp_path):
    path, x = table
    out = tmp_path / "k.npy"
    res = _run([str(path), "--out", str(out), "--drop", "id,y"])
    assert res.exit_code == 0, res.output
    assert "features: 3 columns: a, b, c (left out: id, y)" in res.stderr


def test_unknown_column_is_a_user_error(table, tmp_path):
    path, _ = table
    res = _run([str(path), "--out", str(tmp_path / "k.npy"), "--target", "label"])
    assert res.exit_code == 2
    assert "no column named 'label' (columns: id, a, b, c, y)" in res.stderr


def test_text_target_suggests_target_option(tmp_path):
    path = _csv(tmp_path / "t.csv", ["a", "label"], [[1.0, "cat"], [2.0, "dog"]])
    res = _run([str(path), "--out", str(tmp_path / "k.npy")])
    assert res.exit_code == 2
    assert "column 'label' is not numeric" in res.stderr
    assert "leave it out with --target or --drop" in res.stderr
    res = _run([str(path), "--out", str(tmp_path / "k.npy"), "--target", "label"])
    assert res.exit_code == 0, res.output


def test_npy_input_refuses_column_names(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    res = _run([str(tmp_path / "x.npy"), "--out", str(tmp_path / "k.npy"), "--drop", "a"])
    assert res.exit_code == 2
    assert "is a .npy array without column names" in res.stderr
