"""Any learner on Lake et al.'s one-shot benchmark: accuracy over all runs and per run."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metalearn._checks import check_int
from metalearn.algorithms.base import Learner
from metalearn.datasets.oneshot_runs import OneShotRuns
from metalearn.training.evaluate import mean_ci95

__all__ = ["RunsResult", "evaluate_runs"]


@dataclass(frozen=True)
class RunsResult:
    """Accuracy of a learner on the one-shot runs.

    Attributes:
        accuracy: correct test images over all test images of all runs (Lake et al.'s number).
        per_run: run name -> accuracy on that run's test images.
        ci95: half-width of the 95% confidence interval of the mean over runs.
        steps: the inner steps taken on each run's support images.
    """

    accuracy: float
    per_run: dict[str, float]
    ci95: float
    steps: int

    def __str__(self) -> str:
        runs = "  ".join(f"{k}: {100 * v:.1f}" for k, v in self.per_run.items())
        return (
            f"one-shot runs ({len(self.per_run)}), {self.steps} steps: accuracy "
            f"{100 * self.accuracy:.2f}% ± {100 * self.ci95:.2f}\n{runs}"
        )


def evaluate_runs(learner: Learner, runs: OneShotRuns, steps: int = 10) -> RunsResult:
    """Adapt ``learner`` to each run's training images and classify its test images.

    Each run is a 20-way 1-shot task; the learner adapts for ``steps`` inner steps (10 by
    default, as the MAML papers evaluate) through :meth:`Learner.evaluate_batch`, so every
    learner, including one written outside the library, is evaluated the same way. The model's
    head must have as many outputs as a run has classes (20).

    Args:
        learner: any :class:`~metalearn.Learner`.
        runs: the benchmark's runs (:class:`~metalearn.datasets.OneShotRuns`).
        steps: inner steps on each run's support images.

    Returns:
        A :class:`RunsResult` (overall accuracy, per-run accuracy, 95% CI over runs).

    Example:
        >>> import metalearn as ml
        >>> result = ml.evaluate_runs(maml, ml.datasets.OneShotRuns("all_runs"))  # doctest: +SKIP
        >>> print(result)  # doctest: +SKIP
    """
    steps = check_int("steps", steps, 0)
    first = next(learner.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    per_run, correct, total = {}, 0.0, 0
    for i, name in enumerate(runs.runs):
        batch = runs.task(i).to(device=device, dtype=dtype)
        accuracy = learner.evaluate_batch(batch, [steps]).get("accuracy")
        if accuracy is None:
            raise ValueError(
                "the learner reports no accuracy on the runs: its loss must be a classification "
                "loss (e.g. F.cross_entropy) on integer labels"
            )
        n = batch.query.y.shape[1]
        per_run[name] = float(accuracy[0, 0])
        correct += per_run[name] * n
        total += n
    _, ci = mean_ci95(torch.tensor(list(per_run.values())))
    return RunsResult(correct / total, per_run, ci, steps)
