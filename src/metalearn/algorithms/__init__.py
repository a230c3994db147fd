"""Learners; each configures the one inner loop in :mod:`metalearn.algorithms.inner`."""

from metalearn.algorithms.base import Learner, MetaOutput
from metalearn.algorithms.inner import inner_loop, map_tasks, select_parameters
from metalearn.algorithms.maml import FOMAML, MAML
from metalearn.algorithms.pretrain import Pretrain

__all__ = [
    "FOMAML",
    "MAML",
    "Learner",
    "MetaOutput",
    "Pretrain",
    "inner_loop",
    "map_tasks",
    "select_parameters",
]
