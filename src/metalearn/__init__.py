"""metalearn: gradient-based meta-learning on PyTorch.

The public API is re-exported here; ``docs/architecture.md`` describes the design.
"""

from metalearn import algorithms, chem, datasets, models, tasks, training, updates
from metalearn.algorithms import (
    ANIL,
    CAVIA,
    FOMAML,
    IMAML,
    MAML,
    Learner,
    MAMLPlusPlus,
    MetaOutput,
    MetaSGD,
    Pretrain,
    ProtoMAML,
    ProtoNet,
    Reptile,
    UnicornMAML,
    conjugate_gradient,
    custom_meta_gradient,
    hvp,
)
from metalearn.runtime import tune_cpu_allocator
from metalearn.training import (
    DivergenceError,
    EvalProtocol,
    Evaluation,
    Trainer,
    evaluate,
    evaluate_runs,
    train,
)

__version__ = "0.1.0"

__all__ = [
    "ANIL",
    "CAVIA",
    "FOMAML",
    "IMAML",
    "MAML",
    "DivergenceError",
    "EvalProtocol",
    "Evaluation",
    "Learner",
    "MAMLPlusPlus",
    "MetaOutput",
    "MetaSGD",
    "Pretrain",
    "ProtoMAML",
    "ProtoNet",
    "Reptile",
    "Trainer",
    "UnicornMAML",
    "algorithms",
    "chem",
    "conjugate_gradient",
    "custom_meta_gradient",
    "datasets",
    "evaluate",
    "evaluate_runs",
    "hvp",
    "models",
    "tasks",
    "train",
    "training",
    "tune_cpu_allocator",
    "updates",
]
