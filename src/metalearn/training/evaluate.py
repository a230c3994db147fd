"""The evaluation protocol: a fixed, seeded set of test tasks; mean and 95% CI per step count."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from metalearn._checks import check_int
from metalearn.algorithms.base import Learner
from metalearn.tasks.batch import TaskBatch, TaskSampler
from metalearn.training.metrics import check_metrics, ranking_metrics

__all__ = ["Evaluation", "evaluate", "mean_ci95", "task_seed"]


def mean_ci95(values: Tensor) -> tuple[float, float]:
    """Mean and half-width of the normal 95% confidence interval (1.96 standard errors)."""
    values = values.double().flatten()
    n = values.numel()
    if n == 0:
        raise ValueError("cannot summarise an empty set of values")
    std = values.std(unbiased=True).item() if n > 1 else 0.0
    return values.mean().item(), 1.96 * std / math.sqrt(n)


def task_seed(seed: int, index: int) -> int:
    """Seed of test task ``index``: each task has its own stream, whatever the batch size."""
    return (seed * 1_000_003 + index) % (2**63)


@dataclass(frozen=True)
class Evaluation:
    """Query metrics of ``num_tasks`` test tasks after each inner step count.

    Attributes:
        steps: the inner step counts evaluated.
        per_task: metric -> tensor ``[num_tasks, len(steps)]`` (CPU, float64).
    """

    steps: tuple[int, ...]
    per_task: dict[str, Tensor]

    @property
    def num_tasks(self) -> int:
        return next(iter(self.per_task.values())).shape[0]

    def summary(self, metric: str = "loss", steps: int | None = None) -> tuple[float, float]:
        """``(mean, ci95)`` of ``metric`` after ``steps`` inner steps (default: the last)."""
        if metric not in self.per_task:
            raise KeyError(f"no metric {metric!r}; have {sorted(self.per_task)}")
        steps = self.steps[-1] if steps is None else steps
        if steps not in self.steps:
            raise KeyError(f"steps={steps} was not evaluated; have {list(self.steps)}")
        return mean_ci95(self.per_task[metric][:, self.steps.index(steps)])

    def to_dict(self) -> dict:
        """Plain data for JSON: ``num_tasks``, ``steps`` and per metric the means and CIs."""
        return {
            "num_tasks": self.num_tasks,
            "steps": list(self.steps),
            "metrics": {
                metric: {
                    "mean": [self.summary(metric, s)[0] for s in self.steps],
                    "ci95": [self.summary(metric, s)[1] for s in self.steps],
                }
                for metric in sorted(self.per_task)
            },
        }

    def table(self) -> str:
        """A plain-text table: one row per step count, ``mean ± ci95`` per metric."""
        metrics = sorted(self.per_task)
        lines = ["steps  " + "  ".join(f"{m:>22}" for m in metrics)]
        for s in self.steps:
            cells = []
            for m in metrics:
                mean, ci = self.summary(m, s)
                cells.append(f"{mean:>12.4f} ± {ci:<7.4f}")
            lines.append(f"{s:>5}  " + "  ".join(cells))
        return "\n".join(lines)

    def __str__(self) -> str:
        return f"{self.num_tasks} tasks\n{self.table()}"


def evaluate(
    learner: Learner,
    sampler: TaskSampler,
    num_tasks: int = 600,
    steps: int | Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 25,
    metrics: Sequence[str] = (),
) -> Evaluation:
    """Adapt to ``num_tasks`` fixed test tasks and report query metrics per step count.

    Task ``i`` is drawn from ``sampler`` with its own generator seeded by ``(seed, i)``, so the
    set of tasks is the same for every learner, batch size and device. Adaptation uses plain
    (first-order) inner steps: no meta-gradient is built.

    Args:
        learner: any :class:`~metalearn.algorithms.base.Learner`.
        sampler: the test-task sampler (e.g. ``Sine(k_shot=10, k_query=100, query_grid=True)``).
        num_tasks: number of test tasks (600 in the papers).
        steps: inner step count(s) to report; default ``learner.inner_steps``.
        seed: fixes the task set.
        batch_size: tasks adapted at once (memory only; results do not depend on it).
        metrics: ranking metrics of binary tasks to add to loss (and accuracy): ``"roc_auc"``
            and/or ``"pr_auc"`` (average precision), one value per task from its query scores
            (scikit-learn; ``pip install 'metalearn[chem]'``). Each task is adapted once more
            through :meth:`Learner.adapt` and :meth:`Learner.predict` to get the scores.

    Returns:
        An :class:`Evaluation`; ``str(result)`` is a table of mean ± 95% CI.

    Example:
        >>> import torch.nn.functional as F, metalearn as ml
        >>> maml = ml.MAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01)
        >>> result = ml.evaluate(maml, ml.tasks.Sine(10, 100), num_tasks=50, steps=[0, 1, 10])
        >>> mean, ci = result.summary("loss", steps=10)

        Binary tasks (e.g. :class:`metalearn.tasks.MultiAssay`), ranked by the query scores:

        >>> ev = ml.evaluate(learner, data.assay("SR-HSE"), num_tasks=20,
        ...                  metrics=("roc_auc", "pr_auc"))  # doctest: +SKIP
        >>> ev.summary("roc_auc")  # doctest: +SKIP
    """
    check_int("num_tasks", num_tasks, 1)
    check_int("batch_size", batch_size, 1)
    if steps is None:
        steps = [learner.inner_steps]
    elif isinstance(steps, int):
        steps = [steps]
    steps = list(steps)
    if not steps:
        raise ValueError("steps must name at least one inner step count")
    metrics = check_metrics(metrics)
    first = next(learner.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else None
    chunks: list[dict[str, Tensor]] = []
    for start in range(0, num_tasks, batch_size):
        indices = range(start, min(start + batch_size, num_tasks))
        batch = sample_fixed(sampler, [task_seed(seed, i) for i in indices])
        batch = batch.to(device=device, dtype=dtype) if dtype else batch.to(device)
        out = learner.evaluate_batch(batch, steps)
        if metrics:
            out = {**out, **ranking_metrics(learner, batch, steps, metrics)}
        chunks.append({k: v.double().cpu() for k, v in out.items()})
    per_task = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
    return Evaluation(tuple(steps), per_task)


def sample_fixed(sampler: TaskSampler, seeds: Sequence[int]) -> TaskBatch:
    """One task per seed, concatenated into a batch."""
    tasks = [sampler.sample(1, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return TaskBatch.concat(tasks)
