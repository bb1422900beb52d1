"""The ``ntkit`` command.

    ntkit demo [--out ntkit-report] [--quick]     finite nets vs the NTK, as an HTML report
    ntkit fit DATA.csv --target COL [...]        cross-validated NTK/NNGP model vs baselines
    ntkit kernel INPUT.{csv,npy} --out K.npy      the kernel matrix of the rows, to .npy
    ntkit kernel INPUT.npy --out K.zarr [--resume] [--upper]  ... to zarr, resumable

User errors (bad files, bad columns, too little data) end with a one-line message on
stderr and exit code 2, never a traceback. Heavy imports (torch, scikit-learn's models,
matplotlib) happen inside the commands, so ``--help`` stays fast.

One module per command (`demo_command`, `fit_command`, `kernel_command`), their shared
readers and options in `common`; this module assembles the group ``main`` (the
``ntkit`` console script, ``ntkit = "ntkit.cli:main"``).
"""

from __future__ import annotations

import click

from ntkit import __version__
from ntkit.cli.common import CLIError
from ntkit.cli.demo_command import demo
from ntkit.cli.fit_command import fit
from ntkit.cli.kernel_command import kernel

__all__ = ["CLIError", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ntkit")
def main() -> None:
    """ntkit: infinite-width NNGP and NTK kernels of neural networks.

    Start with `ntkit demo`: it trains finite networks of growing width, compares them
    with their infinite-width NTK prediction, and writes an HTML report.
    """


main.add_command(demo)
main.add_command(fit)
main.add_command(kernel)

# Subcommands of the lab (experiments reproducing results), when that package exists.
try:
    from ntkit.lab.cli import lab
except ImportError:
    pass
else:
    main.add_command(lab)
