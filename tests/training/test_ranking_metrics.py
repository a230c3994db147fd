"""ROC-AUC and PR-AUC of binary tasks in ml.evaluate (scikit-learn computes the areas)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import metalearn as ml
from metalearn.training.evaluate import sample_fixed, task_seed
from metalearn.training.metrics import binary_scores

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def separable_assays(rows: int = 400) -> ml.tasks.MultiAssay:
    """Feature 0 is the label of every assay plus noise: a fixed linear scorer ranks well."""
    rng = np.random.default_rng(0)
    labels = (rng.random((rows, 3)) < 0.15).astype(float)
    labels[rng.random((rows, 3)) < 0.2] = np.nan
    signal = np.nan_to_num(labels[:, 0], nan=0.0) + rng.normal(0, 0.7, rows)
    x = np.stack([signal, rng.normal(size=rows)], axis=1)
    labels[:, 1:] = labels[:, :1]
    return ml.tasks.MultiAssay(
        x, labels, ["a", "b", "c"], 3, None, {"train": ["a", "b"], "test": ["c"]}
    )


def fixed_scorer() -> ml.MAML:
    """A 2-logit linear model scoring feature 0; inner_lr 0 so adaptation changes nothing."""
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        model.bias.zero_()
    return ml.MAML(model, F.cross_entropy, inner_lr=0.0, inner_steps=1)


def test_evaluate_reports_sklearn_areas_per_task():
    data = separable_assays()
    learner = fixed_scorer()
    ev = ml.evaluate(
        learner, data.assay("c"), num_tasks=4, steps=[0, 1], metrics=("roc_auc", "pr_auc")
    )
    assert set(ev.per_task) == {"loss", "accuracy", "roc_auc", "pr_auc"}
    assert ev.per_task["roc_auc"].shape == (4, 2)
    batch = sample_fixed(data.assay("c"), [task_seed(0, i) for i in range(4)])
    for i in range(4):
        x, y = batch.query.x[i].double().numpy(), batch.query.y[i].numpy()
        expected_roc = sklearn_metrics.roc_auc_score(y, x[:, 0])
        expected_pr = sklearn_metrics.average_precision_score(y, x[:, 0])
        assert ev.per_task["roc_auc"][i, 0].item() == pytest.approx(expected_roc, abs=1e-6)
        assert ev.per_task["pr_auc"][i, 1].item() == pytest.approx(expected_pr, abs=1e-6)
    mean, ci = ev.summary("roc_auc")
    assert 0.75 < mean < 1.0 and ci > 0


def test_adaptation_changes_the_scores_at_each_step_count():
    data = separable_assays()
    model = torch.nn.Linear(2, 2)
    torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)
    learner = ml.MAML(model, F.cross_entropy, inner_lr=1.0, inner_steps=1)
    ev = ml.evaluate(learner, data.assay("c"), num_tasks=3, steps=[0, 5], metrics=["roc_auc"])
    # Zero weights score every compound alike (AUC 0.5); 5 steps on the support learn feature 0.
    assert torch.allclose(ev.per_task["roc_auc"][:, 0], torch.full((3,), 0.5, dtype=torch.float64))
    assert (ev.per_task["roc_auc"][:, 1] > 0.7).all()


def test_single_output_scores_and_errors():
    scores, labels = binary_scores(torch.tensor([[0.2], [0.9]]), torch.tensor([[0.0], [1.0]]))
    assert scores.tolist() == pytest.approx([0.2, 0.9]) and labels.tolist() == [0, 1]
    with pytest.raises(ValueError, match="binary tasks"):
        binary_scores(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="unknown metrics"):
        ml.evaluate(fixed_scorer(), separable_assays().assay("c"), 1, metrics=["f1"])


def test_query_with_one_class_is_a_clear_error():
    sine = ml.tasks.Sine(k_shot=5, k_query=5)
    learner = ml.MAML(ml.models.MLP([1, 8, 1]), F.mse_loss, inner_lr=0.01)
    with pytest.raises(ValueError, match="labels 0 and 1"):
        ml.evaluate(learner, sine, num_tasks=1, metrics=["roc_auc"])
    data = separable_assays()
    batch = data.assay("c").sample(1)
    one_class = ml.tasks.TaskBatch.from_tensors(
        batch.support.x, batch.support.y, batch.query.x, torch.zeros_like(batch.query.y)
    )

    class Fixed:
        def sample(self, num_tasks, generator=None):
            return one_class

    with pytest.raises(ValueError, match="both classes in every query set"):
        ml.evaluate(fixed_scorer(), Fixed(), num_tasks=1, metrics=["roc_auc"])
