"""Evaluation of kernel maps over input batches: plan, tile schedule, output writers.

Importing this package registers `ntkit.engine.evaluate.evaluate` as the evaluator that
``Layer.kernel`` calls (`ntkit.kernel.register_evaluator`): layer specs never import the
engine. ``kernel(net, x1, x2, ...)`` is the same call as ``net.kernel(x1, x2, ...)``.
"""

from ntkit.engine.evaluate import evaluate as kernel
from ntkit.kernel import register_evaluator

register_evaluator(kernel)

__all__ = ["kernel"]
