"""Shared pieces of the ``ntkit`` command: the user-error exception, list-valued
options, CSV/.npy readers, the progress bar and the ``--threads`` option."""

from __future__ import annotations

import csv
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

__all__ = [
    "MIN_ROWS",
    "THREADS",
    "CLIError",
    "ListOptionCommand",
    "is_float",
    "is_number",
    "list_command_class",
    "load_matrix",
    "load_table",
    "numeric_column",
    "progress_bar",
    "read_csv",
    "remove_file",
    "split_list",
]

MIN_ROWS = 10  # fewer rows than this cannot support a cross-validated comparison


class CLIError(click.ClickException):
    """A user error: printed as one line on stderr, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line

    def show(self, file: Any = None) -> None:
        click.echo(f"ntkit: error: {self.format_message()}", err=True)


# ---- option parsing -------------------------------------------------------------------

def is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return not token.startswith("-")


class ListOptionCommand(click.Command):
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
                while i < len(args) and is_number(args[i]):
                    vals.append(args[i])
                    i += 1
                out.append(",".join(vals))
        return super().parse_args(ctx, out)


def list_command_class(*names: str) -> type[ListOptionCommand]:
    return type("ListCommand", (ListOptionCommand,), {"list_options": names})


def split_list(values: tuple[str, ...], kind: type, name: str) -> list:
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

def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
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


def numeric_column(name: str, cells: list[str], path: Path,
                   hint: str = "encode categorical features as numbers first") -> Any:
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
                           f"{c[:30]!r}); {hint}"
                           ) from None
        if not math.isfinite(out[i]):
            raise CLIError(f"{path}: column {name!r} has a non-finite value ({c!r}) in data "
                           f"row {i + 1}")
    return out


def load_table(path: Path, target: str) -> tuple[Any, list[str], list[str]]:
    """(X (n, d), target cells, feature names) from a CSV with a header row."""
    import numpy as np

    header, rows = read_csv(path)
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
    X = np.stack([numeric_column(c, list(cols[header.index(c)]), path) for c in features],
                 axis=1)
    y = [r[j].strip() for r in rows]
    if any(not v for v in y):
        raise CLIError(f"{path}: the target column {target!r} has missing values "
                       f"(first in data row {[bool(v) for v in y].index(False) + 1})")
    return X, y, features


def load_matrix(path: Path, exclude: Sequence[str] = ()) -> tuple[Any, list[str] | None]:
    """(X, used): (n, d) float64 rows from a .npy array or a numeric CSV (optional
    header row), and for a CSV the names of the columns in X (None for .npy).

    ``exclude`` names CSV columns to leave out (a target, an id); a headerless CSV's
    columns are named "column 1", "column 2", ... A .npy array has no names, so
    ``exclude`` must be empty for it.
    """
    import numpy as np

    suffix = path.suffix.lower()
    used = None
    if suffix == ".npy":
        if exclude:
            raise CLIError(f"--target/--drop name CSV columns, but {path} is a .npy array "
                           "without column names; save it without those columns")
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
        header, rows = read_csv(path)
        if all(is_float(c) for c in header):  # no header row: the first row is data
            rows = [header] + rows
            header = [f"column {i + 1}" for i in range(len(header))]
        missing = [c for c in exclude if c not in header]
        if missing:
            shown = ", ".join(header[:12]) + (", ..." if len(header) > 12 else "")
            raise CLIError(f"{path}: no column named {missing[0]!r} (columns: {shown})")
        if not rows:
            raise CLIError(f"{path}: no data rows")
        used = [h for h in header if h not in exclude]
        if not used:
            raise CLIError(f"{path}: no columns left after leaving out "
                           f"{', '.join(exclude)}")
        cols = dict(zip(header, zip(*rows, strict=True), strict=True))
        X = np.stack([numeric_column(h, list(cols[h]), path,
                                     hint="leave it out with --target or --drop")
                      for h in used], axis=1)
    else:
        raise CLIError(f"{path}: unsupported file type {suffix or '(none)'!r}; "
                       "use .csv or .npy")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise CLIError(f"{path}: empty array, shape {X.shape}")
    return X, used


def is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def progress_bar(total: int, desc: str, unit: str = "it") -> Any:
    from tqdm.auto import tqdm

    # disable=None: draw on a terminal, stay silent when stderr is a file or a pipe.
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None,
                dynamic_ncols=True)


THREADS = click.option(
    "--threads", default=1, show_default=True, type=click.IntRange(min=1),
    help="torch threads. One is fastest for small and medium problems (thread "
         "synchronization dominates, badly so on a busy machine); raise it for large n.")


def remove_file(path: str | Path) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
