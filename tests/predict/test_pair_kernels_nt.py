"""(n, n, k, k) kernels in predict against neural-tangents 0.6.5 (``trace_axes=()``).

Fixture: tests/fixtures/nt_predict_pairs.npz from tests/fixtures/make_nt_empirical.py:
coupled NNGP/NTK kernels (K[i, j, a, b] ≠ 0 for a ≠ b) and neural-tangents'
gradient_descent_mse and gp_inference on them.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from ntkit.predict import gp_inference, gradient_descent_mse

FIXTURE = Path(__file__).parents[1] / "fixtures" / "nt_predict_pairs.npz"


@pytest.fixture(scope="module")
def nt():
    d = {k: torch.as_tensor(v) for k, v in np.load(FIXTURE).items()}
    n = int(d["n"])
    for g in ("nngp", "ntk"):
        d[f"{g}_dd"], d[f"{g}_td"], d[f"{g}_tt"] = (d[g][:n, :n], d[g][n:, :n], d[g][n:, n:])
    return d


def _close(a, b, tol=1e-9):
    # relative to the largest entry; the flattened 18×18 kernels have condition ~1e2
    assert a.shape == b.shape, (a.shape, b.shape)
    assert float((a - b).abs().max() / b.abs().max()) < tol


@pytest.mark.parametrize("tag", ["noreg", "reg"])
def test_gradient_descent_mse_matches_nt(nt, tag):
    reg = float(nt["diag_reg"]) if tag == "reg" else 0.0
    fn = gradient_descent_mse(nt["ntk_dd"], nt["y"], float(nt["lr"]), reg)
    fx_train, fx_test = fn(nt["t"], nt["f0"], nt["ft0"], nt["ntk_td"])
    _close(fx_train, nt[f"mse/{tag}/train"])
    _close(fx_test, nt[f"mse/{tag}/test"])
    fx_train, fx_test = fn(None, nt["f0"], nt["ft0"], nt["ntk_td"])
    _close(fx_train, nt[f"mse/{tag}/train_inf"])
    _close(fx_test, nt[f"mse/{tag}/test_inf"])


@pytest.mark.parametrize("g", ["nngp", "ntk", "ntkgp"])
def test_gp_inference_matches_nt(nt, g):
    def kern(s):
        return {"nngp": nt[f"nngp_{s}"], "ntk": nt[f"ntk_{s}"]}

    post = gp_inference(kern("dd"), nt["y"], float(nt["diag_reg"]))(g, kern("td"), kern("tt"))
    _close(post.mean, nt[f"gp/{g}/mean"])
    _close(post.covariance, nt[f"gp/{g}/cov"])
