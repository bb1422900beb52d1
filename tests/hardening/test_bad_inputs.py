"""The bad-input matrix: public entry points × bad inputs, one table.

Each bad input must raise ValueError or TypeError whose message names the argument
(an error that names nothing, another exception type, or a silent result fail). Valid
but unusual layouts (non-contiguous and negative-stride views) must instead give the
same result as the contiguous array. ``test_counts`` prints tried / clear / accepted.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import ntkit
from ntkit import layers as nl
from ntkit import predict

RNG = np.random.default_rng(0)
X = torch.from_numpy(RNG.standard_normal((5, 3)))
X2 = torch.from_numpy(RNG.standard_normal((4, 3)))
Y = torch.from_numpy(RNG.standard_normal((5, 1)))
NET = nl.serial(nl.Dense(8, 1.2, 0.1), nl.ReLU(), nl.Dense(1))
K = NET.kernel(X, get="ntk")
# An attention net on sequences (n, C, L), channels first.
XS = torch.from_numpy(RNG.standard_normal((4, 3, 5)))
ATT = nl.serial(nl.Conv(4, (1,)), nl.GlobalSelfAttention(4, 4, 4, 2), nl.ReLU(),
                nl.GlobalAvgPool(), nl.Dense(1))


def _module():
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 1)).double()


def _lifted():
    return ntkit.lift(_module(), (3,))


def _bad_arrays(good: torch.Tensor) -> dict:
    nan = good.clone()
    nan.view(-1)[0] = float("nan")
    inf = good.clone()
    inf.view(-1)[0] = float("inf")
    return {
        "nan": nan, "inf": inf,
        "empty": good[:0],
        "0-d": torch.tensor(1.0, dtype=torch.float64),
        "int": good.to(torch.int64), "bool": good > 0,
        "complex": good.to(torch.complex128),
        "1-d": good.reshape(-1),
        "list-of-str": [["a"] * good.shape[-1]] * good.shape[0],
    }


# entry point name -> (callable taking the argument, argument name, good value)
ENTRIES = {
    "net.kernel x1": (lambda v: NET.kernel(v, X2, get="ntk"), "x1", X),
    "net.kernel x2": (lambda v: NET.kernel(X, v, get="ntk"), "x2", X2),
    "empirical_ntk x1": (lambda v: ntkit.empirical_ntk(NET.build(3, seed=0), v), "x1", X),
    "monte_carlo_kernel x1": (lambda v: ntkit.monte_carlo_kernel(
        NET, v, n_samples=2, get="ntk"), "x1", X),
    "gradient_descent_mse k_train_train": (
        lambda v: predict.gradient_descent_mse(v, Y), "k_train_train", K),
    "gradient_descent_mse y_train": (
        lambda v: predict.gradient_descent_mse(K, v), "y_train", Y),
    "gp_inference k_train_train": (lambda v: predict.gp_inference(v, Y), "k_train_train", K),
    "gp_inference y_train": (lambda v: predict.gp_inference(K, v), "y_train", Y),
    "NTKRegressor.fit X": (lambda v: _sk().NTKRegressor().fit(v, Y.numpy()), "X", X),
    "NNGPRegressor.predict X": (
        lambda v: _sk().NNGPRegressor().fit(X.numpy(), Y.numpy()).predict(v), "X", X),
    "fit_marginal_likelihood x": (lambda v: _fit_ml(v, Y), "x", X),
    "fit_marginal_likelihood y": (lambda v: _fit_ml(X, v), "y", Y),
    "kip.distill x": (lambda v: _kip(v), "x", X),
    "attention net.kernel x1": (lambda v: ATT.kernel(v, get="ntk"), "x1", XS),
    "masked net.kernel x1": (lambda v: NET.kernel(v, X2, get="ntk", mask_constant=0.0),
                             "x1", X),
    "lifted net.kernel x1": (lambda v: _lifted().kernel(v, get="ntk"), "x1", X),
}


def _sk():
    from ntkit import sklearn

    return sklearn


def _fit_ml(x, y):
    from ntkit.hyperparameters import fit_marginal_likelihood

    return fit_marginal_likelihood(NET, x, y, max_iter=1)


def _kip(x):
    from ntkit.apps.kip import distill

    return distill(NET, x, Y, n_support=2, steps=1)

# (entry, option) -> callable with a bad option value, and the option's name
OPTIONS = {
    "net.kernel get": (lambda: NET.kernel(X, get="ntkk"), "get"),
    "net.kernel tile 0": (lambda: NET.kernel(X, tile=0), "tile"),
    "net.kernel tile -1": (lambda: NET.kernel(X, tile=-1), "tile"),
    "net.kernel memory_budget -5": (lambda: NET.kernel(X, memory_budget=-5), "memory_budget"),
    "net.kernel dtype int": (lambda: NET.kernel(X, dtype=torch.int64), "dtype"),
    "monte_carlo_kernel n_samples 0": (
        lambda: ntkit.monte_carlo_kernel(NET, X, n_samples=0), "n_samples"),
    "empirical_ntk method": (lambda: ntkit.empirical_ntk(NET.build(3, seed=0), X,
                                                         method="bogus"), "method"),
    "gradient_descent_mse solver": (
        lambda: predict.gradient_descent_mse(K, Y, solver="bogus"), "solver"),
    "gradient_descent_mse learning_rate": (
        lambda: predict.gradient_descent_mse(K, Y, learning_rate=-1.0), "learning_rate"),
    "gp_inference diag_reg": (lambda: predict.gp_inference(K, Y, diag_reg=-1.0), "diag_reg"),
    "Dense out 0": (lambda: nl.Dense(0), "out_features"),
    "Conv padding": (lambda: nl.Conv(2, (3,), padding="FULL"), "padding"),
    "lab.run name": (lambda: _lab_run("no_such_experiment"), "experiment"),
    "kip.distill n_support 0": (lambda: _kip_opt(n_support=0), "n_support"),
    "kip.distill steps -1": (lambda: _kip_opt(steps=-1), "steps"),
    "fit_marginal_likelihood kind": (
        lambda: __import__("ntkit.hyperparameters", fromlist=["x"]).fit_marginal_likelihood(
            NET, X, Y, kind="bogus"), "kind"),
    "net.kernel mask_constant str": (lambda: NET.kernel(X, mask_constant="a"),
                                     "mask_constant"),
    "net.kernel mask_constant nan": (lambda: NET.kernel(X, mask_constant=float("nan")),
                                     "mask_constant"),
    "net.kernel mask_constant vector": (
        lambda: NET.kernel(X, mask_constant=torch.ones(2)), "mask_constant"),
    "lift input_shape str": (lambda: ntkit.lift(_module(), "abc"), "input_shape"),
    "lift input_shape 0": (lambda: ntkit.lift(_module(), (0,)), "input_shape"),
    "lift init": (lambda: ntkit.lift(_module(), (3,), init="bogus"), "init"),
    "lift module": (lambda: ntkit.lift("not a module", (3,)), "Module"),
    "GlobalSelfAttention mechanism": (lambda: nl.GlobalSelfAttention(
        4, 4, 4, 2, attention_mechanism="bogus"), "attention_mechanism"),
    "GlobalSelfAttention n_heads 0": (lambda: nl.GlobalSelfAttention(4, 4, 4, 0), "n_heads"),
    "net.kernel x1 requires_grad int": (
        lambda: NET.kernel(X.clone().requires_grad_(True), get="ntk", tile=0), "tile"),
}

# Accepted by design: predict converts kernels and targets to its dtype (int labels
# are targets; a 1-d y_train is one output column).
ACCEPTED = {(e, b) for e in ENTRIES if e.startswith(("gradient_descent_mse", "gp_inference"))
            for b in ("int", "bool")} | {
    ("gradient_descent_mse y_train", "1-d"), ("gp_inference y_train", "1-d")}
def _lab_run(name):
    from ntkit import lab

    return lab.run(name, quick=True, progress=False)


def _kip_opt(**kw):
    from ntkit.apps.kip import distill

    args = {"n_support": 2, "steps": 1, **kw}
    return distill(NET, X, Y, **args)


# scikit-learn's estimators validate with sklearn's own check_array, by its conventions:
# int/bool X accepted, a ValueError that describes the array (not the argument name).
SKLEARN = {e for e in ENTRIES if "Regressor" in e}
ACCEPTED |= {(e, b) for e in SKLEARN for b in ("int", "bool")}
ACCEPTED |= {("fit_marginal_likelihood y", "1-d")}  # one target column
CASES = [(e, b) for e in ENTRIES for b in _bad_arrays(ENTRIES[e][2])]


def _outcome(fn, name):
    try:
        fn()
    except (ValueError, TypeError) as e:
        return "clear" if name in str(e) else f"unnamed: {type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 -- classified, not hidden
        return f"other: {type(e).__name__}: {e}"
    return "accepted"


@pytest.mark.parametrize("entry,bad", CASES)
def test_bad_array(entry, bad):
    fn, name, good = ENTRIES[entry]
    out = _outcome(lambda: fn(_bad_arrays(good)[bad]), name)
    if entry in SKLEARN and out.startswith("unnamed: ValueError"):
        out = "clear"
    assert out == ("accepted" if (entry, bad) in ACCEPTED else "clear"), (entry, bad, out)


@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_bad_option(case):
    fn, name = OPTIONS[case]
    out = _outcome(fn, name)
    assert out == "clear", (case, out)


@pytest.mark.parametrize("entry", sorted(ENTRIES))
@pytest.mark.parametrize("view", ["transposed", "negative-stride"])
def test_views_equal_contiguous(entry, view):
    """Non-contiguous and negative-stride (numpy) views are valid: same result."""
    fn, _, good = ENTRIES[entry]
    ref = fn(good)
    if view == "transposed":
        rev = tuple(reversed(range(good.ndim)))
        v = good.permute(rev).contiguous().permute(rev)  # same values, column-major strides
    else:
        v = np.ascontiguousarray(good.numpy()[::-1])[::-1]  # negative strides
    got = fn(v)
    a = ref if isinstance(ref, torch.Tensor) else None
    if a is not None:
        torch.testing.assert_close(torch.as_tensor(got), a, rtol=1e-12, atol=0)


def test_counts():
    """The matrix's size (the issue's closing counts)."""
    tried = len(CASES) + len(OPTIONS) + 2 * len(ENTRIES) + len(CLI_NAMES)
    print(f"bad inputs tried: {tried} ({len(CASES)} arrays, {len(OPTIONS)} options, "
          f"{2 * len(ENTRIES)} views, {len(CLI_NAMES)} CLI); accepted by design: "
          f"{len(ACCEPTED)}")
    assert tried >= 90


# ---- the CLI: bad inputs end with a one-line error naming the option, nothing written --
def _cli_cases(d):
    good = np.random.default_rng(1).standard_normal((6, 3))
    nan = good.copy()
    nan[0, 0] = np.nan
    np.save(d / "good.npy", good)
    np.save(d / "nan.npy", nan)
    np.save(d / "empty.npy", good[:0])
    np.save(d / "ints.npy", (good > 0).astype(np.int64))
    np.save(d / "cplx.npy", good.astype(np.complex128))
    return {
        "missing input": (["missing.npy", "--out", "K.npy"], "missing.npy"),
        "NaN input": (["nan.npy", "--out", "K.npy"], "nan"),
        "empty input": (["empty.npy", "--out", "K.npy"], "empty"),
        "complex input": (["cplx.npy", "--out", "K.npy"], "complex"),
        "activation": (["good.npy", "--out", "K.npy", "--activation", "bogus"],
                       "activation"),
        "kernel": (["good.npy", "--out", "K.npy", "--kernel", "bogus"], "kernel"),
        "depth -1": (["good.npy", "--out", "K.npy", "--depth", "-1"], "depth"),
        "tile 0": (["good.npy", "--out", "K.npy", "--tile", "0"], "tile"),
        "out suffix": (["good.npy", "--out", "K.txt"], "out"),
    }


CLI_NAMES = ["missing input", "NaN input", "empty input", "complex input", "activation",
             "kernel", "depth -1", "tile 0", "out suffix"]


@pytest.mark.parametrize("case", CLI_NAMES)
def test_cli_bad_input(tmp_path, case):
    from click.testing import CliRunner

    from ntkit.cli import main

    args, word = _cli_cases(tmp_path)[case]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = CliRunner().invoke(main, ["kernel", *args])
    finally:
        os.chdir(cwd)
    assert r.exit_code != 0, (case, r.output)
    assert r.exception is None or isinstance(r.exception, SystemExit), (case, r.exception)
    assert word.lower() in r.output.lower(), (case, r.output)
    assert not (tmp_path / "K.npy").exists() and not (tmp_path / "K.txt").exists(), case
