"""Meta-training and the evaluation protocol."""

from metalearn.training.evaluate import Evaluation, evaluate, mean_ci95
from metalearn.training.loop import train

__all__ = ["Evaluation", "evaluate", "mean_ci95", "train"]
