"""The ``ntkit demo`` as a lab experiment: finite networks vs their NTK prediction.

One-hidden-layer ReLU networks of growing width are trained by full-batch gradient
descent on digits and compared with the closed-form infinite-width prediction started from
their own initial outputs (Jacot et al. 2018, "Neural tangent kernel: convergence and
generalization in neural networks"; Lee et al. 2019, "Wide neural networks of any depth
evolve as linear models under gradient descent"). The measurement, claims, tables and
figures are those of `ntkit.demo` (``ntkit demo`` writes the same document into one
folder); quick mode is ``DemoConfig.quick_config``.
"""

from __future__ import annotations

from pathlib import Path

from ntkit.demo import DemoConfig, run_demo_experiment
from ntkit.demo.figures import FIGURES, draw_figures
from ntkit.demo.report import DESCRIPTION, demo_captions, demo_claims, demo_summary, demo_tables
from ntkit.lab.framework import Context
from ntkit.lab.registry import experiment


@experiment("demo", DESCRIPTION)
def run(ctx: Context) -> str:
    """Train the networks, record the demo's claims, tables and figures."""
    cfg = DemoConfig.quick_config(seed=ctx.seed) if ctx.quick else DemoConfig(seed=ctx.seed)
    res = run_demo_experiment(cfg)
    ctx.config.update({k: v for k, v in cfg.as_dict().items() if k not in ("seed", "quick")},
                      learning_rate=res.learning_rate, lambda_max=res.lambda_max)
    for c in demo_claims(res):
        ctx.claim(c.name, c.predicted, c.measured, c.tolerance, holds=c.holds, note=c.note)
    for name, rows in demo_tables(res).items():
        ctx.table(name, rows)
    captions = demo_captions(res)
    for file in FIGURES.values():
        ctx.figure_path(Path(file).stem, captions[file])
    draw_figures(res, ctx.out_dir)
    return demo_summary(res)
