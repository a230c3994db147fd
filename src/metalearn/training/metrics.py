"""Ranking metrics of binary tasks (ROC-AUC, PR-AUC) on the query set after adaptation.

Accuracy says little when actives are 5% of an assay; the few-shot molecule benchmarks score
how well a model *ranks* the query compounds instead. The areas come from scikit-learn
(``roc_auc_score``, ``average_precision_score``), imported only when a metric is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from metalearn.algorithms.base import Learner
from metalearn.tasks.batch import TaskBatch

__all__ = ["RANKING_METRICS", "binary_scores", "check_metrics", "ranking_metrics"]

#: Metric names :func:`metalearn.evaluate` accepts in ``metrics=``.
RANKING_METRICS = ("roc_auc", "pr_auc")


def check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    """The requested metric names, checked against :data:`RANKING_METRICS`."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    unknown = [m for m in metrics if m not in RANKING_METRICS]
    if unknown:
        raise ValueError(
            f"unknown metrics {unknown}; evaluate reports loss (and accuracy) always and can add "
            f"{list(RANKING_METRICS)}"
        )
    return tuple(dict.fromkeys(metrics))


def binary_scores(prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Scores (higher = more likely class 1) and 0/1 labels of one task's query set.

    Accepts two-class logits ``[rows, 2]`` with labels ``0/1`` (score: logit of class 1 minus
    logit of class 0, the log-odds) or one output per row ``[rows, 1]`` / ``[rows]`` with 0/1
    targets (e.g. for ``binary_cross_entropy_with_logits``; the output is the score).

    Raises:
        ValueError: for more than two classes, or labels other than 0 and 1.
    """
    prediction, target = prediction.detach(), target.detach()
    if prediction.dim() == target.dim() + 1 and prediction.shape[-1] == 2:
        scores = prediction[..., 1] - prediction[..., 0]
    elif prediction.shape[-1:] == (1,) and prediction.numel() == target.numel():
        scores = prediction.reshape(target.shape)
    elif prediction.shape == target.shape:
        scores = prediction
    else:
        raise ValueError(
            "roc_auc and pr_auc are for binary tasks: predictions must be two class logits "
            f"[rows, 2] or one score per row, got {tuple(prediction.shape)} for targets "
            f"{tuple(target.shape)}"
        )
    labels = target.reshape(scores.shape)
    if not torch.isin(labels, torch.tensor([0, 1], dtype=labels.dtype)).all():
        raise ValueError("roc_auc and pr_auc need query labels 0 and 1 (1 = positive)")
    return scores.double().flatten(), labels.flatten().long()


def _area(metric: str, scores: Tensor, labels: Tensor) -> float:
    from metalearn.chem.fingerprints import require

    sklearn_metrics = require("sklearn.metrics")
    if labels.min() == labels.max():
        raise ValueError(
            f"{metric} needs both classes in every query set, but a task's query has only class "
            f"{int(labels[0])}; use a sampler whose query holds both (k_query per class)"
        )
    y, s = labels.cpu().numpy(), scores.cpu().numpy()
    if metric == "roc_auc":
        return float(sklearn_metrics.roc_auc_score(y, s))
    return float(sklearn_metrics.average_precision_score(y, s))


def ranking_metrics(
    learner: Learner, batch: TaskBatch, steps: Sequence[int], metrics: Sequence[str]
) -> dict[str, Tensor]:
    """ROC-AUC / PR-AUC of every task's query set after each of ``steps`` inner steps.

    Each task is adapted with :meth:`Learner.adapt` (no meta-gradient) and its query
    scored with :meth:`Learner.predict`; PR-AUC is scikit-learn's average precision.

    Returns:
        dict metric -> float64 tensor ``[tasks, len(steps)]``.
    """
    metrics = check_metrics(metrics)
    out = {m: torch.empty(batch.num_tasks, len(steps), dtype=torch.float64) for m in metrics}
    with torch.no_grad():
        for i, task in enumerate(batch):
            for s in sorted(set(steps)):
                fast = learner.adapt(task.support, steps=s)
                prediction = learner.predict(fast, task.query.x, s)
                scores, labels = binary_scores(prediction, task.query.y)
                for m in metrics:
                    value = _area(m, scores, labels)
                    for k, wanted in enumerate(steps):
                        if wanted == s:
                            out[m][i, k] = value
    return out
