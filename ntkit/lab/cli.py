"""``ntkit lab`` commands: ``list``, ``run NAME``, ``report``.

The group is registered in the top-level CLI with ``from ntkit.lab.cli import lab``.
"""

from __future__ import annotations

import sys

import click

import ntkit.lab as nlab
from ntkit.lab import registry
from ntkit.lab.registry import UnknownExperimentError

__all__ = ["lab"]


@click.group("lab")
def lab() -> None:
    """Experiments that measure the theory's claims on finite networks."""


@lab.command("list")
def list_cmd() -> None:
    """List the experiments with their one-line descriptions."""
    items = nlab.list()
    width = max((len(n) for n, _ in items), default=0)
    for name, desc in items:
        click.echo(f"{name.ljust(width)}  {desc}")


@lab.command("run")
@click.argument("name")
@click.option("--quick", is_flag=True, help="CI-sized version (under ~30 s on 2 cores).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of all draws.")
@click.option("--out", type=click.Path(file_okay=False), default="runs/", show_default=True,
              help="Runs folder.")
@click.option("--progress/--no-progress", default=True, help="Progress bars on stderr.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads for the run (default: torch's).")
@click.option("--strict", is_flag=True, help="Exit with status 1 if a claim fails.")
def run_cmd(name: str, quick: bool, seed: int, out: str, progress: bool,
            threads: int | None, strict: bool) -> None:
    """Run experiment NAME, print its claims and the run folder."""
    try:
        registry.get(name)
    except UnknownExperimentError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    res = nlab.run(name, quick=quick, seed=seed, out=out, progress=progress, threads=threads)
    click.echo(res.claims_table())
    if res.summary:
        click.echo("")
        click.echo(res.summary)
    click.echo(f"\nrun folder: {res.run_dir}")
    click.echo(f"report:     {res.run_dir / 'report.html'}")
    if strict and not res.all_hold:
        sys.exit(1)


@lab.command("report")
@click.option("--out", type=click.Path(file_okay=False), default="runs/", show_default=True,
              help="Runs folder.")
def report_cmd(out: str) -> None:
    """Write the index page over all finished runs and print its path."""
    click.echo(str(nlab.report(out)))
