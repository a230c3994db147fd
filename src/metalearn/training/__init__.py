"""Meta-training and the evaluation protocol."""

from metalearn.training.distributed import (
    DistributedError,
    TaskStream,
    average_gradients,
    average_metrics,
    broadcast_parameters,
    cleanup,
    init_distributed,
    is_main_process,
    rank,
    world_size,
)
from metalearn.training.evaluate import Evaluation, evaluate, mean_ci95
from metalearn.training.loop import train

__all__ = ["Evaluation", "evaluate", "mean_ci95", "train"]
__all__ += [  # distributed (issue 7)
    "DistributedError",
    "TaskStream",
    "average_gradients",
    "average_metrics",
    "broadcast_parameters",
    "cleanup",
    "init_distributed",
    "is_main_process",
    "rank",
    "world_size",
]
