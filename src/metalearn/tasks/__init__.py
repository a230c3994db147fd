"""Task samplers and the :class:`TaskBatch` they produce."""

from metalearn.tasks.assays import AssaySampler, MultiAssay
from metalearn.tasks.augment import AugmentSupport, RandomAffine
from metalearn.tasks.batch import Split, TaskBatch, TaskSampler
from metalearn.tasks.fewshot import FewShot
from metalearn.tasks.grouped import Grouped, GroupSampler
from metalearn.tasks.sine import Sine

__all__ = [
    "AssaySampler",
    "AugmentSupport",
    "FewShot",
    "GroupSampler",
    "Grouped",
    "MultiAssay",
    "RandomAffine",
    "Sine",
    "Split",
    "TaskBatch",
    "TaskSampler",
]
