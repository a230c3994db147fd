"""MAML and FOMAML against the closed form of one inner step on linear regression."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metalearn as ml


def linear_tasks(tasks: int = 3, seed: int = 0) -> ml.tasks.TaskBatch:
    g = torch.Generator().manual_seed(seed)
    slopes = torch.randn(tasks, 1, 1, generator=g, dtype=torch.float64)
    sx = torch.randn(tasks, 4, 1, generator=g, dtype=torch.float64)
    qx = torch.randn(tasks, 5, 1, generator=g, dtype=torch.float64)
    return ml.tasks.TaskBatch.from_tensors(sx, slopes * sx, qx, slopes * qx)


def closed_form(w: float, alpha: float, batch: ml.tasks.TaskBatch) -> dict[str, float]:
    """Per-task: w' = w - alpha * L_s'(w); d L_q(w') / dw = L_q'(w') * (1 - alpha * L_s'')."""
    maml, fomaml, alpha_grad = [], [], []
    for task in batch:
        (xs, ys), (xq, yq) = task.support, task.query
        g = 2 * (xs * (w * xs - ys)).mean()
        h = 2 * (xs * xs).mean()
        adapted = w - alpha * g
        query_grad = 2 * (xq * (adapted * xq - yq)).mean()
        maml.append(query_grad * (1 - alpha * h))
        fomaml.append(query_grad)
        alpha_grad.append(query_grad * -g)
    mean = lambda xs: torch.stack(xs).mean().item()  # noqa: E731
    return {"maml": mean(maml), "fomaml": mean(fomaml), "alpha": mean(alpha_grad)}


def one_weight() -> nn.Module:
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(0.7)
    return model


@pytest.mark.parametrize(
    ("backend", "vectorize"), [("func", "loop"), ("func", "vmap"), ("higher", "loop")]
)
def test_maml_and_fomaml_match_the_closed_form(backend, vectorize):
    batch = linear_tasks()
    expected = closed_form(0.7, 0.1, batch)
    for cls, key in ((ml.MAML, "maml"), (ml.FOMAML, "fomaml")):
        learner = cls(one_weight(), F.mse_loss, 0.1, 1, vectorize=vectorize, backend=backend)
        learner(batch).loss.backward()
        assert learner.model.weight.grad.item() == pytest.approx(expected[key], rel=1e-12)
    assert expected["maml"] != pytest.approx(expected["fomaml"], rel=1e-3)  # the test can tell


def test_fomaml_gradient_is_the_query_gradient_at_the_adapted_weights(float64):
    torch.manual_seed(0)
    model = ml.models.MLP([1, 6, 1], activation=nn.Tanh).double()
    batch = ml.tasks.Sine(5, 5, dtype=torch.float64).sample(2, torch.Generator().manual_seed(1))
    learner = ml.FOMAML(model, F.mse_loss, 0.05, 3)
    learner(batch).loss.backward()
    expected = [torch.zeros_like(p) for p in model.parameters()]
    for task in batch:
        # An independent inner loop on a copy of the model, with plain autograd.
        weights = [p.detach().clone().requires_grad_() for p in model.parameters()]
        names = [n for n, _ in model.named_parameters()]
        for _ in range(3):
            prediction = torch.func.functional_call(
                model, dict(zip(names, weights, strict=True)), task.support.x
            )
            grads = torch.autograd.grad(F.mse_loss(prediction, task.support.y), weights)
            weights = [
                (w - 0.05 * g).detach().requires_grad_()
                for w, g in zip(weights, grads, strict=True)
            ]
        prediction = torch.func.functional_call(
            model, dict(zip(names, weights, strict=True)), task.query.x
        )
        grads = torch.autograd.grad(F.mse_loss(prediction, task.query.y), weights)
        expected = [e + g / batch.num_tasks for e, g in zip(expected, grads, strict=True)]
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)
