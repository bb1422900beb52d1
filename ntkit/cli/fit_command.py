"""``ntkit fit``: a cross-validated NTK/NNGP model against scikit-learn baselines."""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import click

from ntkit.cli.common import (
    MIN_ROWS,
    THREADS,
    CLIError,
    is_float,
    list_command_class,
    load_table,
    numeric_column,
    progress_bar,
    remove_file,
    split_list,
)
from ntkit.engine.threads import torch_threads

__all__ = ["fit"]


def _baselines(task: str, seed: int) -> list[tuple[str, Any, dict]]:
    """(name, estimator, grid) of the scikit-learn baselines, each standardized."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, SVR

    def pipe(est):
        return Pipeline([("scale", StandardScaler()), ("model", est)])

    if task == "classify":
        return [
            ("random forest", pipe(RandomForestClassifier(n_estimators=200, random_state=seed)),
             {}),
            ("RBF SVM", pipe(SVC(kernel="rbf")), {"model__C": [1.0, 10.0, 100.0]}),
            ("k-nearest neighbours", pipe(KNeighborsClassifier()),
             {"model__n_neighbors": [1, 5, 15]}),
            ("logistic regression", pipe(LogisticRegression(max_iter=2000)),
             {"model__C": [0.1, 1.0, 10.0]}),
        ]
    return [
        ("random forest", pipe(RandomForestRegressor(n_estimators=200, random_state=seed)), {}),
        ("RBF SVR", pipe(SVR(kernel="rbf")), {"model__C": [1.0, 10.0, 100.0]}),
        ("k-nearest neighbours", pipe(KNeighborsRegressor()), {"model__n_neighbors": [3, 5, 15]}),
        ("ridge", pipe(Ridge()), {"model__alpha": [0.1, 1.0, 10.0, 100.0]}),
    ]


def _infer_task(y: list[str]) -> str:
    """classify unless the target is numeric with many distinct or non-integer values."""
    if not all(is_float(v) for v in y):
        return "classify"
    vals = [float(v) for v in y]
    integral = all(math.isfinite(v) and v == int(v) for v in vals)
    return "classify" if integral and len(set(vals)) <= max(2, min(20, len(vals) // 5)) \
        else "regress"


@click.command(cls=list_command_class("--depth", "--diag-reg"))
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", required=True, help="Name of the column to predict.")
@click.option("--task", type=click.Choice(["classify", "regress"]), default=None,
              help="Default: classify when the target is text or has few integer values.")
@click.option("--kernel", "kernel_name", type=click.Choice(["ntk", "nngp"]), default="ntk",
              show_default=True, help="Infinite-width kernel of the model.")
@click.option("--depth", multiple=True, default=("1,2,3",), show_default=True,
              metavar="D [D ...]", help="Hidden-layer counts to cross-validate.")
@click.option("--diag-reg", multiple=True, default=("1e-4,1e-3,1e-2,1e-1",),
              show_default=True, metavar="R [R ...]",
              help="Ridge values (relative to the kernel's mean diagonal) to cross-validate.")
@click.option("--activation", default="relu", show_default=True,
              help="Activation of the hidden layers (relu, erf, tanh, gelu, ...).")
@click.option("--cv", default=5, show_default=True, type=click.IntRange(min=2),
              help="Number of cross-validation folds (shared by every model).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the folds.")
@click.option("--out", "out", default="model.pkl", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to save the chosen model (a joblib pickle of a scikit-learn "
                   "pipeline: StandardScaler + ntkit estimator).")
@THREADS
def fit(data: Path, target: str, task: str | None, kernel_name: str, depth: tuple[str, ...],
        diag_reg: tuple[str, ...], activation: str, cv: int, seed: int, out: Path,
        threads: int) -> None:
    """Cross-validate an NTK/NNGP model on a CSV file and compare it with baselines.

    DATA is a CSV file with a header row; every column except --target must be numeric.
    The kernel model (standardized features, then kernel regression on centred one-hot
    targets for classification) is cross-validated over --depth and --diag-reg with
    GridSearchCV; random forest, RBF-SVM, k-NN and logistic/ridge regression get small
    grids of their own on the same folds. Prints accuracy (classify) or R² (regress),
    and saves the chosen kernel model refit on all rows.

    Example: ntkit fit iris.csv --target species --depth 1 2 3 --cv 5
    """
    import numpy as np

    from ntkit.sklearn import ACTIVATIONS

    depths = split_list(depth, int, "--depth")
    regs = split_list(diag_reg, float, "--diag-reg")
    if not depths or any(d < 0 for d in depths):
        raise CLIError("--depth needs one or more integers >= 0")
    if not regs or any(not (r >= 0 and math.isfinite(r)) for r in regs):
        raise CLIError("--diag-reg needs one or more finite numbers >= 0")
    if activation.lower() not in ACTIVATIONS:
        raise CLIError(f"--activation: unknown {activation!r}; choose from "
                       f"{', '.join(sorted(ACTIVATIONS))}")
    if out.parent != Path("") and not out.parent.is_dir():
        raise CLIError(f"--out: directory {out.parent} does not exist")

    X, y_cells, features = load_table(data, target)
    n = len(y_cells)
    task = task or _infer_task(y_cells)
    if n < max(MIN_ROWS, 2 * cv):
        raise CLIError(f"{data}: too few rows ({n}); need at least {max(MIN_ROWS, 2 * cv)} "
                       f"for {cv}-fold cross-validation")
    if task == "regress":
        y = numeric_column(target, y_cells, data)
    else:
        labels, counts = np.unique(np.array(y_cells), return_counts=True)
        if len(labels) < 2:
            raise CLIError(f"{data}: the target {target!r} has a single class "
                           f"({labels[0]!r}); nothing to classify")
        if counts.min() < cv:
            raise CLIError(f"{data}: class {labels[counts.argmin()]!r} has {counts.min()} "
                           f"rows, fewer than --cv {cv}; lower --cv or add data")
        # Numeric labels stay numbers in the saved model's predictions.
        y = np.array([float(v) for v in y_cells]) if all(map(is_float, y_cells)) \
            else np.array(y_cells)
        if y.dtype.kind == "f" and np.all(y == np.round(y)):
            y = y.astype(np.int64)

    with torch_threads(threads):
        _fit_and_report(X, y, task, kernel_name, depths, regs, activation.lower(), cv, seed,
                        out, n_features=len(features), data=data, target=target)


def _fit_and_report(X, y, task: str, kernel_name: str, depths: list[int], regs: list[float],
                    activation: str, cv: int, seed: int, out: Path, *, n_features: int,
                    data: Path, target: str) -> None:
    import joblib
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from ntkit.sklearn import NNGPClassifier, NNGPRegressor, NTKClassifier, NTKRegressor

    classify = task == "classify"
    cls = {("ntk", True): NTKClassifier, ("ntk", False): NTKRegressor,
           ("nngp", True): NNGPClassifier, ("nngp", False): NNGPRegressor}[
        (kernel_name, classify)]
    kernel_model = Pipeline([("scale", StandardScaler()),
                             ("model", cls(activation=activation))])
    models = [(f"{kernel_name.upper()} (ntkit)", kernel_model,
               {"model__depth": depths, "model__diag_reg": regs})]
    models += _baselines(task, seed)
    folds = (StratifiedKFold if classify else KFold)(n_splits=cv, shuffle=True,
                                                     random_state=seed)
    metric = "accuracy" if classify else "r2"
    base_scorer = get_scorer(metric)
    n_fits = sum(cv * max(1, int(np.prod([len(v) for v in g.values()]))) for _, _, g in models)
    click.echo(f"{data.name}: {len(y)} rows, {n_features} features, task {task} "
               f"({metric}), {cv}-fold CV", err=True)

    bar = progress_bar(n_fits, "cross-validating", "fit")

    def scorer(est, X_, y_):  # counts finished fits for the progress bar
        bar.update(1)
        return base_scorer(est, X_, y_)

    results = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", FitFailedWarning)
            for name, est, grid in models:
                bar.set_postfix_str(name)
                t0 = time.perf_counter()
                gs = GridSearchCV(est, grid or {}, scoring=scorer, cv=folds,
                                  refit=name.endswith("(ntkit)"), error_score=np.nan)
                gs.fit(X, y)
                i = gs.best_index_
                results.append(dict(
                    name=name, mean=float(gs.cv_results_["mean_test_score"][i]),
                    std=float(gs.cv_results_["std_test_score"][i]),
                    params={k.removeprefix("model__"): v for k, v in gs.best_params_.items()},
                    seconds=time.perf_counter() - t0, search=gs))
    finally:
        bar.close()

    label = "accuracy" if classify else "R²"
    width = max(len(r["name"]) for r in results)
    click.echo(f"\n{'model':<{width}}  {label + f' ({cv}-fold CV)':>20}  {'time':>7}  "
               "best parameters")
    for r in results:
        params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r["params"].items()) or "(defaults)"
        score = (f"{r['mean']:.3f} ± {r['std']:.3f}" if math.isfinite(r["mean"])
                 else "failed")
        click.echo(f"{r['name']:<{width}}  {score:>20}  {r['seconds']:>6.1f}s  {params}")
    click.echo("(each model's best over its grid, on the same folds; ± is the std over folds)")

    best = results[0]["search"]
    if not math.isfinite(results[0]["mean"]):
        raise CLIError("the kernel model failed on every fold; try larger --diag-reg")
    _atomic_dump(best.best_estimator_, out, joblib)
    click.echo(f"saved the chosen {results[0]['name']} model (refit on all rows) to {out}; "
               f"load it with joblib.load, predict on the {n_features} feature columns "
               f"(all but {target!r}, in file order)")


def _atomic_dump(obj, out: Path, joblib) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part",
                               dir=out.parent if str(out.parent) else ".")
    os.close(fd)
    try:
        joblib.dump(obj, tmp)
        os.replace(tmp, out)
    except BaseException:
        remove_file(tmp)
        raise
