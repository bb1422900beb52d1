"""The ``ntkit`` command.

    ntkit demo [--out ntkit-report] [--quick]     finite nets vs the NTK, as an HTML report
    ntkit fit DATA.csv --target COL [...]        cross-validated NTK/NNGP model vs baselines
    ntkit kernel INPUT.{csv,npy} --out K.npy      the kernel matrix of the rows, to .npy
    ntkit kernel INPUT.npy --out K.zarr [--resume] [--upper]  ... to zarr, resumable

User errors (bad files, bad columns, too little data) end with a one-line message on
stderr and exit code 2, never a traceback. Heavy imports (torch, scikit-learn's models,
matplotlib) happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import click

from ntkit import __version__
from ntkit.engine.threads import torch_threads

_MIN_ROWS = 10  # fewer rows than this cannot support a cross-validated comparison


class CLIError(click.ClickException):
    """A user error: printed as one line on stderr, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line

    def show(self, file=None) -> None:
        click.echo(f"ntkit: error: {self.format_message()}", err=True)


# ---- option parsing -------------------------------------------------------------------

def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return not token.startswith("-")


class _ListOptionCommand(click.Command):
    """Lets list options take space-separated values: ``--depth 1 2 3``.

    Click options take one value each; before parsing, numbers that follow a list option
    are joined into one comma-separated value (``--depth 1,2,3`` and repeated
    ``--depth 1 --depth 2`` work too).
    """

    list_options: tuple[str, ...] = ()

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            tok = args[i]
            out.append(tok)
            i += 1
            if tok in self.list_options and i < len(args):
                vals = [args[i]]
                i += 1
                while i < len(args) and _is_number(args[i]):
                    vals.append(args[i])
                    i += 1
                out.append(",".join(vals))
        return super().parse_args(ctx, out)


def _fit_command_class(*names: str) -> type[_ListOptionCommand]:
    return type("ListCommand", (_ListOptionCommand,), {"list_options": names})


def _split_list(values: tuple[str, ...], kind: type, name: str) -> list:
    """Flatten ('1,2', '3') -> [1, 2, 3], validating each item."""
    out = []
    for v in values:
        for item in str(v).split(","):
            item = item.strip()
            if not item:
                continue
            try:
                x = kind(item)
            except ValueError:
                raise CLIError(f"{name}: {item!r} is not a valid {kind.__name__}") from None
            out.append(x)
    return out


# ---- data loading ---------------------------------------------------------------------

def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file; rows with the wrong number of fields are errors."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except UnicodeDecodeError:
        raise CLIError(f"{path}: not a UTF-8 text CSV file") from None
    except csv.Error as e:
        raise CLIError(f"{path}: malformed CSV ({e})") from None
    except OSError as e:
        raise CLIError(f"{path}: cannot read ({e.strerror})") from None
    if not rows:
        raise CLIError(f"{path}: the file is empty")
    header = [c.strip() for c in rows[0]]
    if any(not c for c in header):
        raise CLIError(f"{path}: the header row has an empty column name "
                       f"(column {header.index('') + 1})")
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise CLIError(f"{path}: duplicate column names in the header: {', '.join(dup)}")
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise CLIError(f"{path}: malformed CSV: data row {i - 1} has {len(r)} fields, "
                           f"the header has {len(header)}")
    return header, rows[1:]


def _numeric_column(name: str, cells: list[str], path: Path):
    import numpy as np

    out = np.empty(len(cells))
    for i, c in enumerate(cells):
        c = c.strip()
        try:
            out[i] = float(c)
        except ValueError:
            if not c:
                raise CLIError(f"{path}: column {name!r} has a missing value in data row "
                               f"{i + 1}") from None
            raise CLIError(f"{path}: column {name!r} is not numeric (data row {i + 1}: "
                           f"{c[:30]!r}); encode categorical features as numbers first"
                           ) from None
        if not math.isfinite(out[i]):
            raise CLIError(f"{path}: column {name!r} has a non-finite value ({c!r}) in data "
                           f"row {i + 1}")
    return out


def _load_table(path: Path, target: str):
    """(X (n, d), target cells, feature names) from a CSV with a header row."""
    import numpy as np

    header, rows = _read_csv(path)
    if target not in header:
        shown = ", ".join(header[:12]) + (", ..." if len(header) > 12 else "")
        raise CLIError(f"{path}: no column named {target!r} (columns: {shown})")
    j = header.index(target)
    features = [c for c in header if c != target]
    if not features:
        raise CLIError(f"{path}: no feature columns besides the target {target!r}")
    if not rows:
        raise CLIError(f"{path}: no data rows")
    cols = list(zip(*rows, strict=True))
    X = np.stack([_numeric_column(c, list(cols[header.index(c)]), path) for c in features],
                 axis=1)
    y = [r[j].strip() for r in rows]
    if any(not v for v in y):
        raise CLIError(f"{path}: the target column {target!r} has missing values "
                       f"(first in data row {[bool(v) for v in y].index(False) + 1})")
    return X, y, features


def _load_matrix(path: Path):
    """(n, d) float64 rows from a .npy array or a numeric CSV (optional header row)."""
    import numpy as np

    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            X = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise CLIError(f"{path}: cannot read as a .npy array ({e})") from None
        if X.ndim != 2:
            raise CLIError(f"{path}: expected a 2-D array (rows × features), got shape "
                           f"{X.shape}")
        if X.dtype.kind not in "biuf":
            raise CLIError(f"{path}: expected a numeric array, got dtype {X.dtype}")
        X = X.astype(np.float64)
        if not np.isfinite(X).all():
            raise CLIError(f"{path}: the array contains NaN or inf")
    elif suffix == ".csv":
        header, rows = _read_csv(path)
        if all(_is_float(c) for c in header):  # no header row: the first row is data
            rows = [header] + rows
            header = [f"column {i + 1}" for i in range(len(header))]
        if not rows:
            raise CLIError(f"{path}: no data rows")
        cols = list(zip(*rows, strict=True))
        X = np.stack([_numeric_column(h, list(c), path)
                      for h, c in zip(header, cols, strict=True)], axis=1)
    else:
        raise CLIError(f"{path}: unsupported file type {suffix or '(none)'!r}; "
                       "use .csv or .npy")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise CLIError(f"{path}: empty array, shape {X.shape}")
    return X


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _progress(total: int, desc: str, unit: str = "it"):
    from tqdm.auto import tqdm

    # disable=None: draw on a terminal, stay silent when stderr is a file or a pipe.
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None,
                dynamic_ncols=True)


_THREADS = click.option(
    "--threads", default=1, show_default=True, type=click.IntRange(min=1),
    help="torch threads. One is fastest for small and medium problems (thread "
         "synchronization dominates, badly so on a busy machine); raise it for large n.")


# ---- the command group -----------------------------------------------------------------

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ntkit")
def main() -> None:
    """ntkit: infinite-width NNGP and NTK kernels of neural networks.

    Start with `ntkit demo`: it trains finite networks of growing width, compares them
    with their infinite-width NTK prediction, and writes an HTML report.
    """


@main.command()
@click.option("--out", "out", default="ntkit-report", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Report directory (index.html, figures, results.json). A previous "
                   "report there is replaced; any other non-empty directory is refused.")
@click.option("--quick", is_flag=True, help="A few-second smoke run (small sizes).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the data split and of the network initializations.")
def demo(out: Path, quick: bool, seed: int) -> None:
    """Finite networks vs their NTK prediction on digits, as an HTML report.

    Trains one-hidden-layer ReLU networks of width 64 to 4096 (built from one ntkit layer
    spec) by full-batch gradient descent on digits, and compares their train and test
    outputs over training with the closed-form infinite-width NTK prediction started
    from the same initial outputs. Writes OUT/index.html with the gap-vs-width plot and
    its fitted slope (theory: -1/2), accuracy over time (networks, NTK, NNGP) and the
    kernel matrices. About 1-2 minutes on 2 CPU cores; --quick: seconds.
    """
    from ntkit.demo import DemoConfig, ReportExistsError, run_demo
    from ntkit.demo.report import check_target

    try:  # before minutes of training, and before any other output
        check_target(out.absolute())
    except ReportExistsError as e:
        raise CLIError(str(e)) from None
    cfg = DemoConfig.quick_config(seed=seed) if quick else DemoConfig(seed=seed)
    cmd = "ntkit demo" + (f" --out {out}" if str(out) != "ntkit-report" else "") + (
        " --quick" if quick else "") + (f" --seed {seed}" if seed else "")
    click.echo(f"ntkit demo: {len(cfg.widths)} widths {cfg.widths[0]}–{cfg.widths[-1]}, "
               f"{cfg.n_train} train / {cfg.n_test} test digits, {cfg.steps} GD steps"
               + (" (quick)" if quick else ""), err=True)
    try:
        path, result = run_demo(out, config=cfg, progress=_progress, command=cmd,
                                log=lambda s: click.echo(f"  {s}", err=True))
    except ReportExistsError as e:
        raise CLIError(str(e)) from None
    s = result.summary()
    click.echo(f"gap slope vs width: {s['slope_test']:.3f} (theory -0.5); test accuracy: "
               f"NTK {s['ntk_inf_acc']:.1%}, NNGP {s['nngp_acc']:.1%}; "
               f"{result.seconds:.0f} s")
    click.echo(f"report: {path}")


# ---- fit -------------------------------------------------------------------------------

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
    if not all(_is_float(v) for v in y):
        return "classify"
    vals = [float(v) for v in y]
    integral = all(math.isfinite(v) and v == int(v) for v in vals)
    return "classify" if integral and len(set(vals)) <= max(2, min(20, len(vals) // 5)) \
        else "regress"


@main.command(cls=_fit_command_class("--depth", "--diag-reg"))
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
@_THREADS
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

    depths = _split_list(depth, int, "--depth")
    regs = _split_list(diag_reg, float, "--diag-reg")
    if not depths or any(d < 0 for d in depths):
        raise CLIError("--depth needs one or more integers >= 0")
    if not regs or any(not (r >= 0 and math.isfinite(r)) for r in regs):
        raise CLIError("--diag-reg needs one or more finite numbers >= 0")
    if activation.lower() not in ACTIVATIONS:
        raise CLIError(f"--activation: unknown {activation!r}; choose from "
                       f"{', '.join(sorted(ACTIVATIONS))}")
    if out.parent != Path("") and not out.parent.is_dir():
        raise CLIError(f"--out: directory {out.parent} does not exist")

    X, y_cells, features = _load_table(data, target)
    n = len(y_cells)
    task = task or _infer_task(y_cells)
    if n < max(_MIN_ROWS, 2 * cv):
        raise CLIError(f"{data}: too few rows ({n}); need at least {max(_MIN_ROWS, 2 * cv)} "
                       f"for {cv}-fold cross-validation")
    if task == "regress":
        y = _numeric_column(target, y_cells, data)
    else:
        labels, counts = np.unique(np.array(y_cells), return_counts=True)
        if len(labels) < 2:
            raise CLIError(f"{data}: the target {target!r} has a single class "
                           f"({labels[0]!r}); nothing to classify")
        if counts.min() < cv:
            raise CLIError(f"{data}: class {labels[counts.argmin()]!r} has {counts.min()} "
                           f"rows, fewer than --cv {cv}; lower --cv or add data")
        # Numeric labels stay numbers in the saved model's predictions.
        y = np.array([float(v) for v in y_cells]) if all(map(_is_float, y_cells)) \
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

    bar = _progress(n_fits, "cross-validating", "fit")

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
        _remove(tmp)
        raise


def _remove(path: str | Path) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


# ---- kernel ----------------------------------------------------------------------------

@main.command()
@click.argument("input_path", metavar="INPUT",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output: a .npy file, or a .zarr directory (chunked, resumable with "
                   "--resume): the (n, n) float64 kernel of INPUT's rows.")
@click.option("--resume", is_flag=True, default=False,
              help="Finish an interrupted .zarr output: compute only the tiles it lacks.")
@click.option("--kernel", "kernel_name", type=click.Choice(["ntk", "nngp"]), default="ntk",
              show_default=True, help="Which kernel.")
@click.option("--depth", default=1, show_default=True, type=click.IntRange(min=0),
              help="Number of hidden layers.")
@click.option("--activation", default="relu", show_default=True,
              help="Activation of the hidden layers (relu, erf, tanh, gelu, ...).")
@click.option("--w-std", default=1.5, show_default=True, type=click.FloatRange(min=0),
              help="Weight standard deviation (NTK parameterization).")
@click.option("--b-std", default=0.05, show_default=True, type=click.FloatRange(min=0),
              help="Bias standard deviation.")
@click.option("--tile", default=None, type=click.IntRange(min=1),
              help="Rows per tile (memory/speed trade-off; default: automatic, 256 for "
                   ".zarr, whose chunks are the tiles).")
@click.option("--upper", is_flag=True, default=False,
              help="With .zarr: store only the tiles on and above the diagonal (half "
                   "the disk); ntkit's solvers read it as the full symmetric kernel.")
@_THREADS
def kernel(input_path: Path, out: Path, resume: bool, kernel_name: str, depth: int,
           activation: str, w_std: float, b_std: float, tile: int | None,
           upper: bool, threads: int) -> None:
    """Compute the infinite-width kernel between all rows of INPUT (.csv or .npy).

    The architecture is DEPTH × [Dense, activation] + Dense, with the input kernel
    x·x'/d (rows are used as given: standardize them first if their scales differ).

    With --out K.npy the (n, n) result is written straight to disk through a memory
    map, so it may exceed RAM; it appears under --out only once complete. With
    --out K.zarr it goes into a chunked zarr array tile by tile, each tile marked done
    once on disk: after a crash or kill -9, the same command with --resume computes
    only the missing tiles, and the result is bit-identical to an uninterrupted run. A
    float .npy INPUT is then read through a memory map, tile by tile, so it may exceed
    RAM too. (.zarr needs the scale extra: pip install -e ".[scale]".)
    """
    from ntkit.sklearn import ACTIVATIONS, make_network

    if activation.lower() not in ACTIVATIONS:
        raise CLIError(f"--activation: unknown {activation!r}; choose from "
                       f"{', '.join(sorted(ACTIVATIONS))}")
    suffix = out.suffix.lower()
    if suffix not in (".npy", ".zarr"):
        raise CLIError(f"--out must end in .npy or .zarr, got {out.name!r}")
    if resume and suffix != ".zarr":
        raise CLIError("--resume needs a .zarr --out (a .npy output is written whole)")
    if upper and suffix != ".zarr":
        raise CLIError("--upper needs a .zarr --out (a .npy output is one dense array)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise CLIError(f"--out: directory {parent} does not exist")
    net = make_network(depth, activation.lower(), w_std, b_std)
    if suffix == ".zarr":
        _kernel_zarr(net, input_path, out, resume, kernel_name, tile, threads, upper)
        return
    if out.is_dir():
        raise CLIError(f"--out: {out} is a directory")
    import numpy as np

    X = _load_matrix(input_path)
    n = X.shape[0]
    click.echo(f"{kernel_name.upper()} of {n} rows × {X.shape[1]} features "
               f"({n * n * 8 / 2**20:.1f} MiB)", err=True)
    # A temporary name in the same directory, renamed when complete: an interrupted run
    # never leaves a file that looks like a finished kernel.
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part.npy", dir=parent)
    os.close(fd)
    try:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=(n, n))
        with torch_threads(threads):
            net.kernel(X, get=kernel_name, out=mm, progress=True, tile=tile)
        mm.flush()
        del mm
        os.replace(tmp, out)
    except BaseException:
        _remove(tmp)
        raise
    click.echo(f"wrote {out}")


def _load_rows_lazily(path: Path):
    """A float .npy as a read-only memory map (read per tile by the engine); anything
    else through `_load_matrix` (in RAM)."""
    import numpy as np

    if path.suffix.lower() == ".npy":
        try:
            X = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise CLIError(f"{path}: cannot read as a .npy array ({e})") from None
        if X.ndim != 2:
            raise CLIError(f"{path}: expected a 2-D array (rows × features), got shape "
                           f"{X.shape}")
        if X.dtype.kind == "f":
            if X.shape[0] == 0 or X.shape[1] == 0:
                raise CLIError(f"{path}: empty array, shape {X.shape}")
            return X
    return _load_matrix(path)


def _kernel_zarr(net, input_path: Path, out: Path, resume: bool, kernel_name: str,
                 tile: int | None, threads: int, upper: bool = False) -> None:
    """`ntkit kernel ... --out K.zarr [--resume]` (see `kernel`)."""
    try:
        from ntkit.engine import storage
        from ntkit.engine.evaluate import DEFAULT_TILE

        zarr = storage.require_zarr()
    except ImportError as e:
        raise CLIError(str(e)) from None
    X = _load_rows_lazily(input_path)
    n = X.shape[0]
    if out.exists():
        if not resume:
            raise CLIError(f"--out: {out} exists; pass --resume to finish it, or delete it "
                           "to start over")
        try:
            arr = zarr.open_array(str(out), mode="r+")
        except Exception as e:  # noqa: BLE001 - any unreadable store is a user error here
            raise CLIError(f"--out: cannot open {out} as a zarr array ({e})") from None
        if tuple(arr.shape) != (n, n):
            raise CLIError(f"--out: {out} holds a {tuple(arr.shape)} array, but INPUT has "
                           f"{n} rows")
        if tile is not None and tuple(arr.chunks) != (tile, tile):
            raise CLIError(f"--tile {tile} differs from the tiles of {out} "
                           f"({arr.chunks[0]}); leave --tile out to resume")
        if upper != storage.is_upper(arr):
            was = "with" if storage.is_upper(arr) else "without"
            raise CLIError(f"--out: {out} was written {was} --upper; resume it the same "
                           "way")
    else:
        arr = storage.create_kernel_array(str(out), n, tile=tile or DEFAULT_TILE,
                                          upper=upper)
    done, total = storage.kernel_progress(arr)
    click.echo(f"{kernel_name.upper()} of {n} rows × {X.shape[1]} features "
               f"({n * n * 8 / 2**20:.1f} MiB) into {out}"
               + (f", resuming: {done} of {total} tiles done" if resume and total else ""),
               err=True)
    try:
        with torch_threads(threads):
            net.kernel(X, get=kernel_name, out=arr, progress=True, resume=resume)
    except ValueError as e:  # a mismatching array to resume, NaN rows in the input
        raise CLIError(str(e)) from None
    done, total = storage.kernel_progress(arr)
    click.echo(f"wrote {out} ({done} of {total} tiles complete)")


# Subcommands of the lab (experiments reproducing results), when that package exists.
try:
    from ntkit.lab.cli import lab
except ImportError:
    pass
else:
    main.add_command(lab)


if __name__ == "__main__":  # pragma: no cover
    main()
