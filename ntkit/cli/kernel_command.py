"""``ntkit kernel``: the infinite-width kernel of a file's rows, to .npy or .zarr."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from ntkit.cli.common import THREADS, CLIError, load_matrix, remove_file
from ntkit.engine import storage
from ntkit.engine.threads import torch_threads

__all__ = ["kernel"]


@click.command()
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
@click.option("--no-fsync", "no_fsync", is_flag=True, default=False,
              help="Skip the fsyncs that make the output durable against a power loss "
                   "or OS crash (by default each .zarr tile's chunks are fsync'ed before "
                   "it is marked done, and a .npy file before it is renamed into place); "
                   "a killed process still loses nothing.")
@click.option("--target", default=None,
              help="A CSV column to leave out of the features (the target of a later fit).")
@click.option("--drop", multiple=True,
              help="CSV columns to leave out (ids, other targets); repeat or separate by "
                   "commas.")
@THREADS
def kernel(input_path: Path, out: Path, resume: bool, kernel_name: str, depth: int,
           activation: str, w_std: float, b_std: float, tile: int | None,
           upper: bool, no_fsync: bool, target: str | None, drop: tuple[str, ...],
           threads: int) -> None:
    """Compute the infinite-width kernel between all rows of INPUT (.csv or .npy).

    Every column of a CSV is a feature unless --target or --drop leaves it out; the
    columns used are printed (on stderr) before the kernel is computed.

    The architecture is DEPTH × [Dense, activation] + Dense, with the input kernel
    x·x'/d (rows are used as given: standardize them first if their scales differ).

    With --out K.npy the (n, n) result is written straight to disk through a memory
    map, so it may exceed RAM; it appears under --out only once complete. With
    --out K.zarr it goes into a chunked zarr array tile by tile, each tile marked done
    once on disk: after a crash or kill -9, the same command with --resume computes
    only the missing tiles, and the result is bit-identical to an uninterrupted run. A
    float .npy INPUT is then read through a memory map, tile by tile, so it may exceed
    RAM too. (.zarr needs the scale extra: pip install -e ".[scale]".)

    Both outputs are fsync'ed (unless --no-fsync), so that a power loss or OS crash
    cannot leave a .zarr tile marked done whose values are not on disk, nor a .npy
    file under --out that is not complete.
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
    exclude = ([target] if target else []) + [c.strip() for v in drop for c in v.split(",")
                                              if c.strip()]
    if suffix == ".zarr":
        _kernel_zarr(net, input_path, out, resume, kernel_name, tile, threads, upper,
                     exclude, durable=not no_fsync)
        return
    if out.is_dir():
        raise CLIError(f"--out: {out} is a directory")
    import numpy as np

    X = _report_columns(*load_matrix(input_path, exclude), exclude)
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
        if not no_fsync:  # the bytes on disk before the name that says they are complete
            storage.fsync_path(tmp)
        os.replace(tmp, out)
        if not no_fsync:
            storage.fsync_path(str(parent))
    except BaseException:
        remove_file(tmp)
        raise
    click.echo(f"wrote {out}")


def _report_columns(X, used: list[str] | None, exclude: list[str]):
    """Say on stderr which CSV columns are the features (a target left in silently
    would make the kernel see the answer); returns X."""
    if used is not None:
        click.echo(f"features: {len(used)} columns: {', '.join(used)}"
                   + (f" (left out: {', '.join(exclude)})" if exclude else
                      " (all columns; leave a target out with --target)"), err=True)
    return X


def _load_rows_lazily(path: Path, exclude: list[str]):
    """A float .npy as a read-only memory map (read per tile by the engine); anything
    else through `load_matrix` (in RAM)."""
    import numpy as np

    if path.suffix.lower() == ".npy" and not exclude:
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
    return _report_columns(*load_matrix(path, exclude), exclude)


def _kernel_zarr(net, input_path: Path, out: Path, resume: bool, kernel_name: str,
                 tile: int | None, threads: int, upper: bool = False,
                 exclude: list[str] | None = None, durable: bool = True) -> None:
    """`ntkit kernel ... --out K.zarr [--resume]` (see `kernel`)."""
    try:
        from ntkit.engine.evaluate import DEFAULT_TILE

        zarr = storage.require_zarr()
    except ImportError as e:
        raise CLIError(str(e)) from None
    X = _load_rows_lazily(input_path, exclude or [])
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
        if storage.is_durable(arr) != durable:  # --no-fsync applies to this run
            arr.update_attributes({storage.DURABLE_ATTR: durable})
    else:
        arr = storage.create_kernel_array(str(out), n, tile=tile or DEFAULT_TILE,
                                          upper=upper, durable=durable)
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
