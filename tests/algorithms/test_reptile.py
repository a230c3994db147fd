"""Reptile: the gradient of its meta-loss is phi - mean(theta)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metalearn as ml


def problem(tasks: int = 3):
    torch.manual_seed(0)
    model = ml.models.MLP([1, 6, 1], activation=nn.Tanh).double()
    batch = ml.tasks.Sine(5, 5, dtype=torch.float64).sample(tasks, torch.Generator().manual_seed(2))
    return model, batch


def sgd_by_hand(model: nn.Module, support, lr: float, steps: int) -> list[torch.Tensor]:
    names = [n for n, _ in model.named_parameters()]
    weights = [p.detach().clone().requires_grad_() for p in model.parameters()]
    for _ in range(steps):
        prediction = torch.func.functional_call(
            model, dict(zip(names, weights, strict=True)), support.x
        )
        grads = torch.autograd.grad(F.mse_loss(prediction, support.y), weights)
        weights = [
            (w - lr * g).detach().requires_grad_() for w, g in zip(weights, grads, strict=True)
        ]
    return [w.detach() for w in weights]


@pytest.mark.parametrize("backend", ["func", "higher"])
@pytest.mark.parametrize("vectorize", ["loop", "auto"])
def test_sgd_meta_step_is_the_hand_computed_interpolation(backend, vectorize):
    if backend == "higher":
        vectorize = "loop"
    model, batch = problem()
    phi = [p.detach().clone() for p in model.parameters()]
    thetas = [sgd_by_hand(model, task.support, 0.1, 4) for task in batch]
    mean_theta = [torch.stack(ts).mean(0) for ts in zip(*thetas, strict=True)]
    reptile = ml.Reptile(model, F.mse_loss, 0.1, 4, vectorize=vectorize, backend=backend)
    epsilon = 0.3
    optimizer = torch.optim.SGD(reptile.parameters(), lr=epsilon)
    out = reptile(batch)
    out.loss.backward()
    for p, start, target in zip(model.parameters(), phi, mean_theta, strict=True):
        torch.testing.assert_close(p.grad, start - target, rtol=1e-10, atol=1e-12)
    optimizer.step()
    for p, start, target in zip(model.parameters(), phi, mean_theta, strict=True):
        torch.testing.assert_close(p.detach(), start + epsilon * (target - start))


def test_one_step_is_inner_lr_times_the_mean_support_gradient():
    model, batch = problem()
    reptile = ml.Reptile(model, F.mse_loss, 0.1, 1)
    reptile(batch).loss.backward()
    params = list(model.parameters())
    expected = [torch.zeros_like(p) for p in params]
    for task in batch:
        loss = F.mse_loss(model(task.support.x), task.support.y)
        grads = torch.autograd.grad(loss, params)
        expected = [e + 0.1 * g / batch.num_tasks for e, g in zip(expected, grads, strict=True)]
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)


def test_inner_adam_matches_torch_adam_per_task():
    model, batch = problem(tasks=2)
    reptile = ml.Reptile(
        model, F.mse_loss, 0.01, 5, update=ml.updates.adam(0.01, betas=(0.0, 0.999))
    )
    for task in batch:
        copy = ml.models.MLP([1, 6, 1], activation=nn.Tanh).double()
        copy.load_state_dict(model.state_dict())
        optimizer = torch.optim.Adam(copy.parameters(), lr=0.01, betas=(0.0, 0.999))
        for _ in range(5):
            optimizer.zero_grad()
            F.mse_loss(copy(task.support.x), task.support.y).backward()
            optimizer.step()
        theta = reptile.adapt(task.support)
        for name, p in copy.named_parameters():
            torch.testing.assert_close(theta[name], p.detach(), rtol=1e-10, atol=1e-12)


def test_no_second_order_graph_and_query_metrics():
    model, batch = problem()
    out = ml.Reptile(model, F.mse_loss, 0.1, 3)(batch)
    assert out.loss.grad_fn is not None and out.metrics["loss"] > 0
    # 0.5 * ||phi - theta||^2 is what the loss is: recompute it from adapt().
    reptile = ml.Reptile(model, F.mse_loss, 0.1, 3)
    by_hand = (
        sum(
            0.5
            * sum(
                (p - reptile.adapt(t.support)[n]).pow(2).sum() for n, p in model.named_parameters()
            )
            for t in batch
        )
        / batch.num_tasks
    )
    assert out.loss.item() == pytest.approx(by_hand.item(), rel=1e-12)


def test_bad_arguments():
    model = ml.models.MLP([1, 4, 1])
    with pytest.raises(TypeError, match=r"update=metalearn.updates.adam\(inner_lr"):
        ml.Reptile(model, F.mse_loss, 0.1, inner_optimizer="adam")
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        ml.Reptile(model, F.mse_loss, 0.1, inner_optimiser="adam")
    with pytest.raises(TypeError, match="not the string 'adam'"):
        ml.Reptile(model, F.mse_loss, 0.1, update="adam")
    with pytest.raises(ValueError, match="betas"):
        ml.updates.adam(0.1, betas=(1.0, 0.9))
    with pytest.raises(TypeError, match="betas"):
        ml.updates.adam(0.1, betas=0.9)
