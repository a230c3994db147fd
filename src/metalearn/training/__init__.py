"""Meta-training and the evaluation protocol: the trainer, checkpoints, metrics and plots."""

from metalearn.training.checkpoint import load_checkpoint, save_checkpoint
from metalearn.training.distributed import (
    DistributedError,
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
from metalearn.training.log import MetricsLog, read_metrics
from metalearn.training.loop import train
from metalearn.training.oneshot import RunsResult, evaluate_runs
from metalearn.training.plot import plot_run
from metalearn.training.task_stream import TaskStream
from metalearn.training.trainer import DivergenceError, EvalProtocol, Trainer

__all__ = [
    "DistributedError",
    "DivergenceError",
    "EvalProtocol",
    "Evaluation",
    "MetricsLog",
    "RunsResult",
    "TaskStream",
    "Trainer",
    "average_gradients",
    "average_metrics",
    "broadcast_parameters",
    "cleanup",
    "evaluate",
    "evaluate_runs",
    "init_distributed",
    "is_main_process",
    "load_checkpoint",
    "mean_ci95",
    "plot_run",
    "rank",
    "read_metrics",
    "save_checkpoint",
    "train",
    "world_size",
]
