"""``ntkit demo``: finite networks vs their NTK prediction, as an HTML report."""

from __future__ import annotations

from pathlib import Path

import click

from ntkit.cli.common import CLIError, progress_bar

__all__ = ["demo"]


@click.command()
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
        path, result = run_demo(out, config=cfg, progress=progress_bar, command=cmd,
                                log=lambda s: click.echo(f"  {s}", err=True))
    except ReportExistsError as e:
        raise CLIError(str(e)) from None
    s = result.summary()
    click.echo(f"gap slope vs width: {s['slope_test']:.3f} (theory -0.5); test accuracy: "
               f"NTK {s['ntk_inf_acc']:.1%}, NNGP {s['nngp_acc']:.1%}; "
               f"{result.seconds:.0f} s")
    click.echo(f"report: {path}")
