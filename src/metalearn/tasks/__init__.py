"""Task samplers and the :class:`TaskBatch` they produce."""

from metalearn.tasks.batch import Split, TaskBatch, TaskSampler
from metalearn.tasks.fewshot import FewShot
from metalearn.tasks.grouped import Grouped, GroupSampler
from metalearn.tasks.sine import Sine

__all__ = ["FewShot", "GroupSampler", "Grouped", "Sine", "Split", "TaskBatch", "TaskSampler"]
