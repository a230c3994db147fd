"""Meta-training and the evaluation protocol: the trainer, checkpoints, metrics and plots."""

from metalearn.training.checkpoint import load_checkpoint, save_checkpoint
from metalearn.training.evaluate import Evaluation, evaluate, mean_ci95
from metalearn.training.log import MetricsLog, read_metrics
from metalearn.training.loop import train
from metalearn.training.plot import plot_run
from metalearn.training.trainer import DivergenceError, EvalProtocol, Trainer

__all__ = [
    "DivergenceError",
    "EvalProtocol",
    "Evaluation",
    "MetricsLog",
    "Trainer",
    "evaluate",
    "load_checkpoint",
    "mean_ci95",
    "plot_run",
    "read_metrics",
    "save_checkpoint",
    "train",
]
