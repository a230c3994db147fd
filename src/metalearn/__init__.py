"""metalearn: gradient-based meta-learning on PyTorch.

The public API is re-exported here; see ``docs/`` and ``shared/DESIGN.md`` for the design.
"""

from metalearn import algorithms, datasets, models, tasks, training
from metalearn.algorithms import FOMAML, MAML, Learner, MetaOutput, Pretrain
from metalearn.training import DivergenceError, EvalProtocol, Evaluation, Trainer, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "FOMAML",
    "MAML",
    "DivergenceError",
    "EvalProtocol",
    "Evaluation",
    "Learner",
    "MetaOutput",
    "Pretrain",
    "Trainer",
    "algorithms",
    "datasets",
    "evaluate",
    "models",
    "tasks",
    "train",
    "training",
]
