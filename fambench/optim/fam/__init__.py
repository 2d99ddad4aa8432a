"""Frequency-Adaptive Momentum: :class:`FAMOptimizer` (read :mod:`.optimizer` first).

The rest of the package, one job per module: ``settings`` (a group's handler and the
validation of its settings), ``layout`` (who takes part in a step), ``plan`` (how the analysed
gradients are sampled and batched), ``analysis`` (running the plan: band shares, their EMA,
momenta), ``trace`` (the trace file, written and read) and ``keys`` (cache keys that hold their
objects).
"""

from fambench.optim.fam.optimizer import FAMOptimizer
from fambench.optim.fam.settings import infer_handler_name

__all__ = ["FAMOptimizer", "infer_handler_name"]
